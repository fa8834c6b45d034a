//! The protocol's clients over a real socket: the JavaScript files as served (types, ETag, 304,
//! methods), and the Rust client against a server with a group that keeps a history: ids, a
//! heartbeat answered by the runtime, a resume after the server closes the socket (1012, as a
//! draining server does), presence merged from state and diffs.

mod support;

use std::time::Duration;

use channels::client::{Client, ClientConfig, ClientScript, Event, HEARTBEAT, JS, TYPES};
use channels::layers::{HistoryConfig, InMemoryChannelLayer, Layer, LayerConfig, Track, close_message};
use channels::prelude::*;
use channels::{consumer, routing};
use serde_json::{Value, json};
use support::*;

#[consumer(websocket)]
struct Room {
    #[url]
    user: String,
}

#[consumer]
impl Room {
    fn groups(&self) -> Vec<String> {
        vec!["room.main".to_owned(), format!("user.{}", self.user)]
    }

    fn presence(&self) -> Option<Track> {
        Some(Track::new("room.main", &self.user, json!({ "user": self.user })))
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        // An echo, to show that the heartbeat never reaches the consumer.
        ws.send_json(&json!({ "echo": message.as_text() })).await
    }

    #[handler("room.say")]
    async fn say(&mut self, ws: &mut Websocket, event: Value) -> Result<(), ConsumerError> {
        ws.send_json(&json!({ "n": event["n"], "id": event["__position__"] })).await
    }
}

fn app(layer: &Layer) -> impl Application {
    routing! {
        http: [
            "static/channels.js" => { ClientScript::as_app() },
            "static/channels.d.ts" => { ClientScript::as_app() },
        ],
        websocket: [ "room/<slug:user>/" => Room ],
    }
    .channel_layer(layer.clone())
}

fn layer() -> Layer {
    InMemoryChannelLayer::with_config(LayerConfig::default().with_history("room.", HistoryConfig::last(100)))
        .into_layer()
}

#[tokio::test]
async fn the_javascript_client_is_served_with_its_types_and_an_etag() {
    let server = TestServer::start(app(&layer())).await;
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n", server.addr)
    };
    let js = raw_http(server.addr, get("/static/channels.js", "").as_bytes()).await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(js.to_ascii_lowercase().contains("content-type: text/javascript"), "{js}");
    assert!(js.ends_with(JS) && JS.contains("export class Socket"), "the module itself");
    let etag = js.lines().find_map(|line| line.strip_prefix("etag: ").or(line.strip_prefix("ETag: "))).expect("etag");
    let again =
        raw_http(server.addr, get("/static/channels.js", &format!("If-None-Match: {etag}\r\n")).as_bytes()).await;
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    let types = raw_http(server.addr, get("/static/channels.d.ts", "").as_bytes()).await;
    assert!(types.to_ascii_lowercase().contains("content-type: application/typescript") && types.ends_with(TYPES));
    let post = format!(
        "POST /static/channels.js HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.addr
    );
    assert!(raw_http(server.addr, post.as_bytes()).await.starts_with("HTTP/1.1 405"));
}

/// The next application message, skipping presence events.
async fn next_message(client: &mut Client) -> Value {
    loop {
        match within(client.next()).await.expect("open") {
            Event::Message(message) => return message,
            Event::Presence => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_resumes_answers_heartbeats_and_merges_presence() {
    let layer = layer();
    let server = TestServer::start(app(&layer)).await;
    let url = |user: &str| format!("ws://{}/room/{user}/", server.addr);
    let config = ClientConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(20),
        presence: true,
        ..ClientConfig::default()
    };
    let mut ann = Client::connect(&url("ann"), config.clone()).await.unwrap();
    assert_eq!(within(ann.next()).await, Some(Event::Presence), "the state comes first");
    assert_eq!(ann.presence().keys().collect::<Vec<_>>(), ["ann"]);
    let mut bo = Client::connect(&url("bo"), config.clone()).await.unwrap();
    while ann.presence().len() < 2 {
        assert_eq!(within(ann.next()).await, Some(Event::Presence));
    }
    // Heartbeats go out every 100 ms and are answered by the runtime (the consumer would echo).
    tokio::time::sleep(Duration::from_millis(350)).await;
    ann.send_json(&json!("hello")).await.unwrap();
    assert_eq!(next_message(&mut ann).await, json!({ "echo": "\"hello\"" }));
    assert!(ann.is_connected(), "heartbeats answered: still connected");

    for n in 0..3 {
        layer.group_send("room.main", json!({ "type": "room.say", "n": n }).into()).await.unwrap();
    }
    for n in 0..3 {
        assert_eq!(next_message(&mut ann).await["n"], n);
    }
    let seen = ann.last_id().expect("ids are remembered").to_owned();
    // The server closes ann's socket (as a draining server does); messages are sent meanwhile.
    layer.group_send("user.ann", close_message(1012)).await.unwrap();
    assert_eq!(within(ann.next()).await, Some(Event::Disconnected(1012)));
    for n in 3..6 {
        layer.group_send("room.main", json!({ "type": "room.say", "n": n }).into()).await.unwrap();
    }
    assert_eq!(within(ann.next()).await, Some(Event::Reconnected));
    for n in 3..6 {
        assert_eq!(next_message(&mut ann).await["n"], n, "resumed after {seen}");
    }
    // bo leaves: ann's merged state drops him.
    bo.close().await;
    while ann.presence().len() > 1 {
        assert_eq!(within(ann.next()).await, Some(Event::Presence));
    }
    assert_eq!(ann.presence().keys().collect::<Vec<_>>(), ["ann"]);
    assert_eq!(HEARTBEAT, r#"{"heartbeat":true}"#);
    // An application's close code (logged out): the client does not come back.
    layer.group_send("user.ann", close_message(4001)).await.unwrap();
    assert_eq!(within(ann.next()).await, Some(Event::Disconnected(4001)));
    assert_eq!(within(ann.next()).await, None);
    assert!(!ann.is_connected());
}
