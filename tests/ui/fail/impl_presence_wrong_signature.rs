use channels::consumer;
use channels::layers::{Since, Track};

#[consumer(websocket)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    async fn presence(&mut self, room: &str) -> Option<Track> {
        let _ = room;
        None
    }

    fn since(&self) -> Since {
        Since::now()
    }
}

fn main() {}
