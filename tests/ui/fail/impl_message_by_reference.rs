use channels::consumer;
use channels::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Incoming {
    text: String,
}

#[consumer(json)]
struct Chat;

#[consumer]
impl Chat {
    async fn receive_json(&mut self, ws: &mut Websocket, content: &Incoming) -> Result<(), ConsumerError> {
        ws.send_text(content.text.clone()).await?;
        Ok(())
    }

    #[handler("chat.message")]
    async fn message(&mut self, _ws: &mut Websocket, event: &Incoming) -> Result<(), ConsumerError> {
        let _ = &event.text;
        Ok(())
    }
}

fn main() {}
