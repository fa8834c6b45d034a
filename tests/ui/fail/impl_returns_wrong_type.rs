use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> String {
        let _ = ws.send(message).await;
        String::new()
    }
}

fn main() {}
