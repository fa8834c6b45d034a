use channels::consumer;
use channels::prelude::*;

struct ChatMessage {
    text: String,
}

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    #[handler("chat.message")]
    async fn chat_message(&mut self, ws: &mut Websocket, event: ChatMessage) -> Result<(), ConsumerError> {
        ws.send_text(event.text).await?;
        Ok(())
    }
}

fn main() {}
