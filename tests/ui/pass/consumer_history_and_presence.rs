use channels::consumer;
use channels::layers::{Since, Track};
use channels::prelude::*;

#[consumer(websocket)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    fn groups(&self) -> Vec<String> {
        vec![format!("chat.{}", self.room)]
    }

    fn since(&self, requested: Since) -> Since {
        Since { last: 50, ..requested }
    }

    fn presence(&self) -> Option<Track> {
        Some(Track::new(format!("chat.{}", self.room), "someone", serde_json::json!({})))
    }

    #[handler("group.not_recovered")]
    async fn lost(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_json(&serde_json::json!({ "reload": event["group"] })).await
    }
}

fn main() {
    let _ = <Chat as channels::consumer::WebsocketConsumer>::as_app();
}
