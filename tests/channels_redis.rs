//! `RedisChannelLayer` speaking channels_redis's wire format (`Wire::ChannelsRedis`), against the
//! real channels_redis 4.x driven from Python: a Django process's `group_send` reaches a
//! consumer here, this server's `group_send` and `send` reach Python receivers, both ways on
//! process-specific channels; a message it cannot decode is dropped and counted, not fatal.
//!
//! Needs `REDIS_URL` and `CHANNELS_TEST_PYTHON` with channels_redis installed (`.ci/run`).

mod support;

use std::process::Stdio;
use std::time::Duration;

use channels::layers::{Layer, RedisChannelLayer, RedisLayerConfig};
use channels::prelude::*;
use channels::testing::WebsocketCommunicator;
use channels::{consumer, routing};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::BufRead;
use support::django::unique;

/// The tutorial's room: joins `chat_lobby`, forwards `chat.message` events to the client.
#[consumer(json)]
struct Room;

#[derive(Deserialize, Serialize)]
struct ChatMessage {
    message: String,
}

#[consumer]
impl Room {
    fn groups(&self) -> [&'static str; 1] {
        ["chat_lobby"]
    }

    async fn receive_json(&mut self, _ws: &mut Websocket, _incoming: Value) -> Result<(), ConsumerError> {
        Ok(())
    }

    #[handler("chat.message")]
    async fn chat_message(&mut self, ws: &mut Websocket, event: ChatMessage) -> Result<(), ConsumerError> {
        ws.send_json(&event).await
    }
}

struct Python {
    python: std::path::PathBuf,
    url: String,
    prefix: String,
}

impl Python {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django/channels_redis_helper.py");
        let mut command = std::process::Command::new(&self.python);
        command.arg(helper).arg(&self.url).arg(&self.prefix).args(args);
        command
    }

    async fn run(&self, args: &[&str]) {
        let mut command = self.command(args);
        let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run the helper");
        assert!(out.status.success(), "helper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts a listener; its channel name, and the message it prints when one arrives (the
    /// helper itself gives up after 20 s).
    async fn listen(&self, args: &[&str]) -> (String, tokio::task::JoinHandle<Value>) {
        let mut child = self.command(args).stdout(Stdio::piped()).spawn().expect("start the helper");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (channel, lines) = tokio::task::spawn_blocking(move || {
            let channel = lines.next().expect("the helper prints its channel").unwrap();
            (channel, lines)
        })
        .await
        .unwrap();
        let received = tokio::task::spawn_blocking(move || {
            let mut lines = lines;
            let line = lines.next().expect("the helper prints the message it received").unwrap();
            let _ = child.wait();
            serde_json::from_str(&line).unwrap()
        });
        (channel, received)
    }
}

/// A layer in channels_redis's format under a fresh prefix, and the Python side of it.
async fn setup(test: &str) -> Option<(Layer, Python)> {
    let url = support::redis_url(test)?;
    let Some(python) = std::env::var_os("CHANNELS_TEST_PYTHON").map(std::path::PathBuf::from).filter(|python| {
        std::process::Command::new(python)
            .args(["-c", "import channels_redis"])
            .output()
            .is_ok_and(|out| out.status.success())
    }) else {
        assert!(std::env::var_os("CI").is_none(), "CI=true but CHANNELS_TEST_PYTHON has no channels_redis");
        eprintln!("SKIPPED {test}: CHANNELS_TEST_PYTHON has no channels_redis");
        return None;
    };
    let prefix = unique("crtest");
    let config = RedisLayerConfig { prefix: prefix.clone(), ..RedisLayerConfig::new(url.clone()) }.channels_redis();
    let layer = RedisChannelLayer::connect_with(config).await.expect("connect").into_layer();
    Some((layer, Python { python, url, prefix }))
}

#[tokio::test]
async fn a_django_group_send_reaches_a_consumer_here() {
    let Some((layer, python)) = setup("a_django_group_send_reaches_a_consumer_here").await else { return };
    let app = routing! { websocket: [ "ws/chat/lobby/" => Room ] }.channel_layer(layer.clone());
    let mut ws = WebsocketCommunicator::new(app, "/ws/chat/lobby/").with_timeout(Duration::from_secs(10));
    assert!(ws.connect().await.unwrap().accepted);
    python.run(&["group-send", "chat_lobby", r#"{"type": "chat.message", "message": "hi from Django"}"#]).await;
    assert_eq!(ws.receive_json_from::<Value>().await.unwrap(), json!({"message": "hi from Django"}));
    layer.flush().await.unwrap();
}

#[tokio::test]
async fn group_send_and_send_here_reach_channels_redis_receivers() {
    let Some((layer, python)) = setup("group_send_and_send_here_reach_channels_redis_receivers").await else { return };
    // A group with a Python member: this server's group_send reaches it.
    let (channel, received) = python.listen(&["listen", "watchers"]).await;
    assert!(channel.starts_with("specific.") && channel.contains('!'), "{channel}");
    layer.group_send("watchers", json!({"type": "note", "text": "from Rust", "n": 3}).into()).await.unwrap();
    assert_eq!(received.await.unwrap(), json!({"n": 3, "text": "from Rust", "type": "note"}));

    // A process-specific channel both ways.
    let (theirs, received) = python.listen(&["listen-channel"]).await;
    layer.send(&theirs, json!({"type": "ping", "list": [1, 2.5, null, true]}).into()).await.unwrap();
    assert_eq!(received.await.unwrap(), json!({"list": [1, 2.5, null, true], "type": "ping"}));
    let ours = layer.new_channel("specific").unwrap();
    let _subscription = layer.subscribe(&ours).unwrap();
    python.run(&["send", &ours, r#"{"type": "pong", "text": "from Python"}"#]).await;
    let message = tokio::time::timeout(Duration::from_secs(10), layer.receive(&ours)).await.unwrap().unwrap();
    assert_eq!(message.value(), &json!({"type": "pong", "text": "from Python"}));
    layer.flush().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_message_is_dropped_and_counted_not_fatal() {
    let Some((layer, python)) = setup("an_undecodable_message_is_dropped_and_counted_not_fatal").await else { return };
    let ours = layer.new_channel("specific").unwrap();
    let _subscription = layer.subscribe(&ours).unwrap();
    // Garbage in this process's key, as a broken or hostile writer could leave it.
    let key = format!("{}{}", python.prefix, &ours[..=ours.find('!').unwrap()]);
    python.run(&["garbage", &key]).await;
    python.run(&["send", &ours, r#"{"type": "after", "ok": true}"#]).await;
    let message = tokio::time::timeout(Duration::from_secs(10), layer.receive(&ours)).await.unwrap().unwrap();
    assert_eq!(message.value(), &json!({"type": "after", "ok": true}));
    assert!(layer.stats().dropped >= 1, "{:?}", layer.stats());
    layer.flush().await.unwrap();
}

/// Kills a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_group_send_here_reaches_a_channels_consumer_under_daphne() {
    let Some((layer, python)) = setup("a_group_send_here_reaches_a_channels_consumer_under_daphne").await else {
        return;
    };
    let daphne = python.python.with_file_name("daphne");
    let site = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/django_sidecar/site");
    let addr = support::free_addr().await;
    let database = std::env::temp_dir().join(format!("{}.sqlite3", unique("daphne")));
    let _daphne = KillOnDrop(
        std::process::Command::new(&daphne)
            .args(["-b", "127.0.0.1", "-p", &addr.port().to_string(), "sidecar_site.asgi:application"])
            .current_dir(site)
            .env("DJANGO_SECRET_KEY", support::django::SECRET)
            .env("DJANGO_DATABASE_URL", format!("sqlite:///{}", database.display()))
            .env("DJANGO_CHANNEL_LAYER_URL", &python.url)
            .env("DJANGO_CHANNEL_LAYER_PREFIX", &python.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start daphne"),
    );
    support::wait_until_listening(addr).await;
    // The tutorial's ChatConsumer, served by daphne, joins `chat_lobby` before it accepts.
    let mut client = support::connect(addr, "/ws/chat/lobby/").await;
    layer.group_send("chat_lobby", json!({"type": "chat.message", "message": "from Rust"}).into()).await.unwrap();
    match support::next_message(&mut client).await {
        tokio_tungstenite::tungstenite::Message::Text(text) => {
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"message": "from Rust"}));
        }
        other => panic!("expected the chat message, got {other:?}"),
    }
    layer.flush().await.unwrap();
}

#[tokio::test]
async fn channels_redis_sharding_over_several_hosts_is_refused_at_startup() {
    let config = RedisLayerConfig {
        hosts: vec!["redis://127.0.0.1:6379".to_owned(), "redis://127.0.0.1:6380".to_owned()],
        ..RedisLayerConfig::new("unused")
    }
    .channels_redis();
    let Err(err) = RedisChannelLayer::connect_with(config).await else {
        panic!("two hosts on the channels_redis wire")
    };
    assert!(err.to_string().contains("one Redis host"), "{err}");
}
