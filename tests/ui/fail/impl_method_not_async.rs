use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let _ = ws;
        Ok(())
    }

    async fn disconnect(&self, code: u16) {
        let _ = code;
    }
}

fn main() {}
