use channels::consumer;
use channels::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct In {
    text: String,
}

#[consumer(json)]
struct Chat {}

#[consumer]
impl Chat {
    async fn receive_json(&mut self, ws: &mut Websocket, content: In) -> Result<(), ConsumerError> {
        ws.send_text(content.text).await?;
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

fn main() {}
