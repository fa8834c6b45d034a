use channels::prelude::*;
use channels::{auth, consumer};

#[consumer(websocket)]
#[auth(stack, required)]
pub struct Private;

#[consumer]
impl Private {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        Ok(())
    }
}

fn main() {}
