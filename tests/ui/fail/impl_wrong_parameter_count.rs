use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    async fn receive(&mut self, message: Message) -> Result<(), ConsumerError> {
        let _ = message;
        Ok(())
    }
}

fn main() {}
