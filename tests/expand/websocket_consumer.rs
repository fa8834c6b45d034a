use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
pub struct Room {
    #[url]
    name: String,
    #[url("n")]
    seat: Option<u32>,
    count: usize,
    #[init(Vec::with_capacity(8))]
    history: Vec<String>,
}

#[consumer]
impl Room {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        self.history.push(self.name.clone());
        ws.send(message).await?;
        Ok(())
    }

    async fn disconnect(&mut self, _code: u16) {}
}

fn main() {}
