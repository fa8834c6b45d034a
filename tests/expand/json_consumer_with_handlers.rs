use channels::consumer;
use channels::prelude::*;
use serde_json::Value;
use std::collections::HashMap;

#[consumer(json)]
pub struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    async fn receive_json(&mut self, ws: &mut Websocket, content: Value) -> Result<(), ConsumerError> {
        ws.send_json(&content).await
    }

    #[handler("chat.joined")]
    async fn joined(&mut self, ws: &mut Websocket, event: HashMap<String, String>) -> Result<(), ConsumerError> {
        ws.send_json(&event).await
    }

    #[handler("chat.left")]
    async fn left(&mut self, ws: &mut Websocket, _event: Value) -> Result<(), ConsumerError> {
        ws.send_text(self.room.clone()).await?;
        Ok(())
    }
}

fn main() {}
