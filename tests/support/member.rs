//! A consumer the layer tests share.

use channels::layers::user_group;
use channels::prelude::*;
use serde::Deserialize;
use serde_json::json;

/// A test consumer: joins `room.<room>` and the user's group; forwards `room.say` messages to
/// the client; in the room "echo" it says hello to its own room from `connect`; the text
/// "panic" makes it panic.
#[channels::consumer(websocket)]
pub struct Member {
    #[url]
    room: String,
    #[url]
    user: String,
}

#[derive(Deserialize)]
pub struct Say {
    text: String,
}

#[channels::consumer]
impl Member {
    fn groups(&self) -> Vec<String> {
        vec![format!("room.{}", self.room), user_group(&self.user).unwrap_or_default()]
    }

    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        if self.room == "echo" {
            // Already a member: a message to the room comes back to this consumer.
            let hello = json!({ "type": "room.say", "text": format!("{} joined", self.user) });
            self.scope.layer()?.group_send("room.echo", hello.into()).await?;
        }
        Ok(())
    }

    async fn receive(&mut self, _ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        if message.as_text() == Some("panic") {
            panic!("a consumer bug");
        }
        Ok(())
    }

    #[handler("room.say")]
    async fn say(&mut self, ws: &mut Websocket, event: Say) -> Result<(), ConsumerError> {
        ws.send_text(event.text).await?;
        Ok(())
    }
}
