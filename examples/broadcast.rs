//! Group broadcast over a channel layer. Run with
//! `cargo run --release --example broadcast [-- --addr 127.0.0.1:8000] [--redis redis://127.0.0.1:6379]`.
//!
//! Stable endpoint (load tests and other clients rely on it):
//! - `ws://HOST:PORT/ws/broadcast/<group>/` (`<group>`: letters, digits, `-`, `_`): every text
//!   message a client sends goes, unchanged, to every client connected to the same group,
//!   the sender included. Binary messages are ignored.
//!
//! With `--redis`, several processes sharing one Redis form one set of groups.

use channels::layers::{InMemoryChannelLayer, Layer, RedisChannelLayer};
use channels::prelude::*;
use channels::{consumer, routing};
use serde::Deserialize;

#[consumer(websocket)]
struct Broadcast {
    #[url]
    group: String,
}

#[derive(Deserialize)]
struct Relay {
    text: String,
}

impl Broadcast {
    fn group_name(&self) -> String {
        format!("broadcast.{}", self.group)
    }
}

#[consumer]
impl Broadcast {
    fn groups(&self) -> [String; 1] {
        [self.group_name()]
    }

    async fn receive(&mut self, _ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        let Message::Text(text) = message else { return Ok(()) };
        let relay = serde_json::json!({ "type": "broadcast.relay", "text": text.as_str() });
        // A layer outage must not cost the client its socket: log, and keep the connection.
        if let Err(err) = self.scope.layer()?.group_send(&self.group_name(), relay.into()).await {
            tracing::warn!(%err, group = %self.group, "broadcast not sent");
        }
        Ok(())
    }

    #[handler("broadcast.relay")]
    async fn relay(&mut self, ws: &mut Websocket, event: Relay) -> Result<(), ConsumerError> {
        ws.send_text(event.text).await?;
        Ok(())
    }
}

/// The broadcast example: every message sent to /ws/broadcast/ reaches every socket there.
#[derive(clap::Parser)]
#[command(name = "broadcast")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    addr: String,
    /// A Redis channel layer (several processes share the broadcast); in-memory without it.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = <Args as clap::Parser>::parse();
    let layer: Layer = match &args.redis {
        Some(url) => RedisChannelLayer::connect(url).await?.into_layer(),
        None => InMemoryChannelLayer::new().into_layer(),
    };
    let app = routing! { websocket: [ "ws/broadcast/<slug:group>/" => Broadcast ] }.channel_layer(layer);
    let server = channels::Server::new(app).shutdown_on_signals().bind(&args.addr).await?;
    let backend = if args.redis.is_some() { "redis" } else { "in-memory" };
    println!("broadcast server on ws://{}/ws/broadcast/<group>/ ({backend} layer)", server.local_addr());
    server.run().await?;
    Ok(())
}
