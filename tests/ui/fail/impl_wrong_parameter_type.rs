use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    async fn receive(&mut self, ws: &mut Websocket, message: String) -> Result<(), ConsumerError> {
        ws.send_text(message).await?;
        Ok(())
    }
}

fn main() {}
