use channels::consumer;
use channels::prelude::*;

#[consumer(json)]
struct Chat {}

#[consumer]
impl Chat {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        Ok(())
    }
}

fn main() {}
