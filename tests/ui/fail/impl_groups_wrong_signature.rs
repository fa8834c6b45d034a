use channels::consumer;

#[consumer(websocket)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    async fn groups(&mut self) -> Vec<String> {
        vec![self.room.clone()]
    }
}

fn main() {}
