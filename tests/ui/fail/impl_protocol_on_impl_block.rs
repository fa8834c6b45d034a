use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer(websocket)]
impl Chat {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

fn main() {}
