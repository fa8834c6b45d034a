use channels::consumer;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    #[handler("chat.message")]
    async fn first(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_text(event.to_string()).await?;
        Ok(())
    }

    #[handler("chat.message")]
    async fn second(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_text(event.to_string()).await?;
        Ok(())
    }

    #[handler("chat message")]
    async fn third(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_text(event.to_string()).await?;
        Ok(())
    }
}

fn main() {}
