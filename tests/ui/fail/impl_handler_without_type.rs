use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    #[handler]
    async fn chat_message(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_text(event.to_string()).await?;
        Ok(())
    }
}

fn main() {}
