use channels::consumer;

#[consumer(websocket)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    fn groups(&self) -> String {
        format!("chat.{}", self.room)
    }
}

fn main() {}
