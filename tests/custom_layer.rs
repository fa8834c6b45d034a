//! A channel layer written outside the crate, the way a third party would (a NATS or Postgres
//! backend, say): its process's channels are the crate's public `LocalChannels`, which feed the
//! consumers' subscriptions; groups are its own. Consumers, groups and handlers work over it
//! unchanged, in-process and over a real socket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use channels::BoxFuture;
use channels::event::ChannelMessage;
use channels::layers::{ChannelLayer, LayerConfig, LayerError, LayerStats, LocalChannels, Subscription};
use channels::prelude::*;
use channels::testing::{LiveServer, WebsocketCommunicator};
use channels::{consumer, routing};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};

/// The smallest layer that works: one process, groups in a map.
#[derive(Default)]
struct ToyLayer {
    channels: Option<LocalChannels>,
    groups: Mutex<HashMap<String, HashSet<String>>>,
    next: AtomicU64,
    sent: AtomicU64,
}

impl ToyLayer {
    fn new() -> Self {
        ToyLayer { channels: Some(LocalChannels::new(LayerConfig::default())), ..ToyLayer::default() }
    }

    fn channels(&self) -> Result<&LocalChannels, LayerError> {
        self.channels.as_ref().ok_or_else(|| LayerError::Backend(channels::error::BackendError::msg("not started")))
    }
}

impl ChannelLayer for ToyLayer {
    fn send<'a>(&'a self, channel: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            self.channels()?.deliver(channel, message)?;
            self.sent.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn receive<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelMessage, LayerError>> {
        Box::pin(async move { Ok(self.channels()?.receive(channel).await) })
    }

    fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        Ok(format!("{prefix}.toy!{}", self.next.fetch_add(1, Ordering::Relaxed)))
    }

    fn group_add<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        self.groups.lock().unwrap().entry(group.to_owned()).or_default().insert(channel.to_owned());
        Box::pin(std::future::ready(Ok(())))
    }

    fn group_discard<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        if let Some(members) = self.groups.lock().unwrap().get_mut(group) {
            members.remove(channel);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn group_send<'a>(&'a self, group: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        let members: Vec<String> = self.groups.lock().unwrap().get(group).into_iter().flatten().cloned().collect();
        Box::pin(async move {
            for member in members {
                let _ = self.send(&member, message.clone()).await;
            }
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), LayerError>> {
        self.groups.lock().unwrap().clear();
        if let Some(channels) = &self.channels {
            channels.clear();
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn stats(&self) -> LayerStats {
        LayerStats { sent: self.sent.load(Ordering::Relaxed), ..LayerStats::default() }
    }

    /// What feeds consumers: a subscription to one of this process's channels.
    fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError> {
        self.channels()?.subscribe(channel)
    }
}

#[derive(Serialize, Deserialize)]
struct Said {
    text: String,
}

/// Repeats to its room whatever a member says.
#[consumer(websocket)]
struct Room;

#[consumer]
impl Room {
    fn groups(&self) -> [&'static str; 1] {
        ["room"]
    }

    async fn receive(&mut self, _ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        let text = message.as_text().unwrap_or_default().to_owned();
        self.scope.layer()?.group_send("room", serde_json::json!({ "type": "room.said", "text": text }).into()).await?;
        Ok(())
    }

    #[handler("room.said")]
    async fn said(&mut self, ws: &mut Websocket, said: Said) -> Result<(), ConsumerError> {
        ws.send_text(said.text).await?;
        Ok(())
    }
}

fn app(layer: Arc<ToyLayer>) -> ProtocolTypeRouter {
    routing! { websocket: [ "ws/room/" => Room ] }.channel_layer(layer)
}

#[tokio::test]
async fn consumers_and_groups_work_over_a_third_party_layer() {
    let layer = Arc::new(ToyLayer::new());
    let app = Arc::new(app(layer.clone()));
    let mut ann = WebsocketCommunicator::new(app.clone(), "/ws/room/");
    let mut bob = WebsocketCommunicator::new(app.clone(), "/ws/room/");
    assert!(ann.connect().await.unwrap().accepted && bob.connect().await.unwrap().accepted);
    ann.send_text("hello").await.unwrap();
    assert_eq!(ann.receive_text().await.unwrap(), "hello");
    assert_eq!(bob.receive_text().await.unwrap(), "hello");
    // From outside any consumer, through the layer the app was given.
    layer.group_send("room", serde_json::json!({ "type": "room.said", "text": "from outside" }).into()).await.unwrap();
    assert_eq!(bob.receive_text().await.unwrap(), "from outside");
    // A consumer that ends leaves its group and frees its channel.
    ann.disconnect(1000).await.unwrap();
    bob.disconnect(1000).await.unwrap();
    assert!(layer.groups.lock().unwrap().get("room").is_none_or(HashSet::is_empty));
    assert_eq!(layer.channels().unwrap().channel_count(), 0);
}

#[tokio::test]
async fn a_third_party_layer_serves_real_sockets() {
    let server = LiveServer::start(app(Arc::new(ToyLayer::new()))).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        clients.push(tokio_tungstenite::client_async(server.ws_url("/ws/room/"), tcp).await.unwrap().0);
    }
    clients[0].send(tokio_tungstenite::tungstenite::Message::Text("over tcp".into())).await.unwrap();
    for client in &mut clients {
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(5), client.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), "over tcp");
    }
    server.shutdown().await.unwrap();
}
