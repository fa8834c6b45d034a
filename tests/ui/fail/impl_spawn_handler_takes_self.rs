use channels::consumer;
use channels::consumer::WebsocketSender;
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {
    #[handler("report.build", spawn)]
    async fn build(&mut self, sender: WebsocketSender, event: serde_json::Value) -> Result<(), ConsumerError> {
        sender.send_text(event.to_string()).await?;
        Ok(())
    }
}

fn main() {}
