//! An application built only with `#[consumer]` and `routing!`, driven in-process with the
//! communicators and over a real socket.

mod support;

use std::time::Duration;

use bytes::Bytes;
use channels::consumer::WebsocketSender;
use channels::event::{CustomEvent, Outbound};
use channels::prelude::*;
use channels::testing::{ApplicationCommunicator, HttpCommunicator, TestError, WebsocketCommunicator};
use channels::{BoxFuture, consumer, routing};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use support::{TestServer, next_message, raw_http, send_text};

/// A room: URL kwargs in fields, client text echoed with them, layer messages by type.
#[consumer(websocket)]
struct Room {
    #[url]
    name: String,
    #[url("seat")]
    seat: u32,
    #[url]
    lang: Option<String>,
    #[init(String::from("> "))]
    prompt: String,
    received: usize,
}

#[derive(Deserialize)]
struct Announce {
    text: String,
}

#[consumer]
impl Room {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let lang = self.lang.as_deref().unwrap_or("-");
        ws.send_text(format!("{}room={} seat={} lang={lang}", self.prompt, self.name, self.seat)).await?;
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        self.received += 1;
        let text = message.as_text().unwrap_or("<binary>");
        ws.send_text(format!("{}#{} {text}", self.prompt, self.received)).await?;
        Ok(())
    }

    #[handler("room.announce")]
    async fn announce(&mut self, ws: &mut Websocket, event: Announce) -> Result<(), ConsumerError> {
        ws.send_text(format!("announce: {} (in {})", event.text, self.scope.path)).await?;
        Ok(())
    }

    #[handler("room.kick")]
    async fn kick(&mut self, ws: &mut Websocket, _event: serde_json::Value) -> Result<(), ConsumerError> {
        ws.close_with_reason(4001, "kicked").await?;
        Ok(())
    }
}

/// A JSON consumer: typed client messages, a handler, and `()`-returning methods.
#[consumer(json)]
struct Counter {
    total: i64,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    Add { n: i64 },
    Get,
}

#[derive(Deserialize)]
struct Reset {
    to: i64,
}

#[consumer]
impl Counter {
    async fn receive_json(&mut self, ws: &mut Websocket, op: Op) -> Result<(), ConsumerError> {
        if let Op::Add { n } = op {
            self.total += n;
        }
        ws.send_json(&json!({ "total": self.total })).await?;
        Ok(())
    }

    #[handler("counter.reset")]
    async fn reset(&mut self, ws: &mut Websocket, event: Reset) -> Result<(), ConsumerError> {
        self.total = event.to;
        ws.send_json(&json!({ "reset": event.to })).await?;
        Ok(())
    }
}

/// An HTTP consumer under a nested route: kwargs from the outer and inner pattern.
#[consumer(http)]
struct Item {
    #[url]
    shop: String,
    #[url]
    id: u64,
}

#[consumer]
impl Item {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let tag = self.scope.extensions.get::<Tag>().map_or("none", |tag| tag.0);
        let text = format!("shop={} item={} body={} tag={tag}", self.shop, self.id, body.len());
        response.text(StatusCode::OK, text).await?;
        Ok(())
    }
}

/// A consumer of a custom protocol: `handle` sees raw events and answers with a `Flow`.
#[consumer(protocol = "lines")]
struct Lines {
    count: u32,
}

#[consumer]
impl Lines {
    async fn handle(&mut self, outbox: &Outbox, event: Inbound) -> Result<Flow, ConsumerError> {
        match event {
            Inbound::Custom(line) if line.kind == "line" => {
                self.count += 1;
                let echo = CustomEvent::new("echo", json!({ "n": self.count, "line": line.payload }));
                outbox.send(Outbound::Custom(echo)).await?;
                Ok(Flow::Continue)
            }
            _ => Ok(Flow::Stop),
        }
    }

    #[handler("lines.flush")]
    async fn flush(&mut self, outbox: &Outbox, _event: serde_json::Value) -> Result<(), ConsumerError> {
        outbox.send(Outbound::Custom(CustomEvent::new("flushed", json!(self.count)))).await?;
        Ok(())
    }
}

/// Opened by the test to let the spawned job finish.
static JOB_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A slow job runs as its own task (`spawn`); the consumer keeps answering meanwhile.
#[consumer(websocket)]
struct Worker;

#[consumer]
impl Worker {
    async fn receive(&mut self, ws: &mut Websocket, _message: Message) -> Result<(), ConsumerError> {
        ws.send_text("pong").await?;
        Ok(())
    }

    #[handler("job.slow", spawn)]
    async fn slow_job(sender: WebsocketSender, _event: serde_json::Value) -> Result<(), ConsumerError> {
        JOB_GATE.notified().await;
        sender.send_text("job done").await?;
        Ok(())
    }
}

/// A value a middleware leaves in the scope.
#[derive(Clone)]
struct Tag(&'static str);

/// Test middleware: tags the scope, then runs the inner application.
struct Tagged<A> {
    inner: A,
    tag: &'static str,
}

fn tagged<A: Application>(inner: A, tag: &'static str) -> Tagged<A> {
    Tagged { inner, tag }
}

impl<A: Application> Application for Tagged<A> {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        scope.extensions.insert(Tag(self.tag));
        self.inner.call(scope, inbox, outbox)
    }
}

impl<A: channels::routing::Router> channels::routing::Router for Tagged<A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}

fn app() -> impl Application {
    routing! {
        websocket: [
            r"^ws/rooms/(?P<name>\w+)/(?P<seat>\d+)/$" => Room,
            "ws/lang/<slug:lang>/<name>/<int:seat>/" => Room,
            "ws/counter/" => Counter,
            "ws/worker/" => Worker,
            "ws/raw/" => { ConsumerApp::websocket(|_scope| Ok(RawEcho)) },
        ],
        http: [
            "shops/<slug:shop>/" => tagged([
                "items/<int:id>/" => Item,
            ], "v1"),
            "plain/<slug:shop>/<int:id>/" => Item,
        ],
        "lines": Lines,
    }
}

/// A hand-written consumer, routed as an expression.
struct RawEcho;

impl WebsocketConsumer for RawEcho {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

#[tokio::test]
async fn url_kwargs_reach_the_consumer_fields() {
    let mut ws = WebsocketCommunicator::new(app(), "/ws/rooms/lobby/7/");
    assert!(ws.connect().await.unwrap().accepted);
    assert_eq!(ws.receive_text().await.unwrap(), "> room=lobby seat=7 lang=-");
    ws.send_text("hi").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "> #1 hi");
    ws.send_text("again").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "> #2 again");

    let mut ws = WebsocketCommunicator::new(app(), "/ws/lang/fr/salon/3/");
    assert!(ws.connect().await.unwrap().accepted);
    assert_eq!(ws.receive_text().await.unwrap(), "> room=salon seat=3 lang=fr");
}

#[tokio::test]
async fn url_kwarg_that_does_not_parse_refuses_the_connection() {
    // 99999999999 matches `\d+` but overflows u32: FromStr fails, the handshake is refused.
    let mut ws = WebsocketCommunicator::new(app(), "/ws/rooms/lobby/99999999999/");
    match ws.connect().await {
        Err(TestError::App(AppError::Refused(reason))) => {
            assert!(reason.contains("seat"), "the reason names the parameter: {reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn handlers_are_dispatched_by_message_type() {
    let mut ws = WebsocketCommunicator::new(app(), "/ws/rooms/lobby/1/");
    assert!(ws.connect().await.unwrap().accepted);
    ws.receive_text().await.unwrap();
    let announce = ChannelMessage::from_serialize(&json!({ "type": "room.announce", "text": "doors open" })).unwrap();
    ws.send_channel_message(announce).await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "announce: doors open (in /ws/rooms/lobby/1/)");

    // Unknown type, and a known type whose payload does not decode: logged, the connection goes on.
    ws.send_channel_message(ChannelMessage::from_serialize(&json!({ "type": "room.nope" })).unwrap()).await.unwrap();
    ws.send_channel_message(ChannelMessage::from_serialize(&json!({ "type": "room.announce", "text": 5 })).unwrap())
        .await
        .unwrap();
    ws.send_text("still here").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "> #1 still here");

    let kick = ChannelMessage::from_serialize(&json!({ "type": "room.kick" })).unwrap();
    ws.send_channel_message(kick).await.unwrap();
    let close = ws.receive_close().await.unwrap();
    assert_eq!((close.code, close.reason.as_str()), (4001, "kicked"));
}

#[tokio::test]
async fn json_consumer_decodes_messages_and_handles_layer_messages() {
    let mut ws = WebsocketCommunicator::new(app(), "/ws/counter/");
    assert!(ws.connect().await.unwrap().accepted);
    ws.send_json_to(&json!({ "op": "add", "n": 5 })).await.unwrap();
    assert_eq!(ws.receive_json_from::<serde_json::Value>().await.unwrap(), json!({ "total": 5 }));
    let reset = ChannelMessage::from_serialize(&json!({ "type": "counter.reset", "to": 100 })).unwrap();
    ws.send_channel_message(reset).await.unwrap();
    assert_eq!(ws.receive_json_from::<serde_json::Value>().await.unwrap(), json!({ "reset": 100 }));
    ws.send_json_to(&json!({ "op": "get" })).await.unwrap();
    assert_eq!(ws.receive_json_from::<serde_json::Value>().await.unwrap(), json!({ "total": 100 }));
    // Not JSON: the JsonWebsocketConsumer default closes 1007.
    ws.send_text("{oops").await.unwrap();
    assert_eq!(ws.receive_close().await.unwrap().code, 1007);
}

#[tokio::test]
async fn nested_routes_and_middleware_wrapping() {
    let response =
        HttpCommunicator::new(app(), Method::POST, "/shops/corner/items/42/").body("abc").get_response().await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.text(), "shop=corner item=42 body=3 tag=v1");

    let response = HttpCommunicator::new(app(), Method::GET, "/plain/corner/42/").get_response().await.unwrap();
    assert_eq!(response.text(), "shop=corner item=42 body=0 tag=none");

    // A nested route with no match, and an id that overflows u64 (the server answers both 404).
    let missing = HttpCommunicator::new(app(), Method::GET, "/shops/corner/nothing/").get_response().await;
    assert!(matches!(missing, Err(TestError::App(AppError::NoRoute { .. }))), "{missing:?}");
    let overflow =
        HttpCommunicator::new(app(), Method::GET, "/plain/corner/184467440737095516150/").get_response().await;
    assert!(matches!(overflow, Err(TestError::App(AppError::Refused(_)))), "{overflow:?}");
}

#[tokio::test]
async fn custom_protocol_consumer_handles_events_and_handlers() {
    let scope = Scope::new(Protocol::from_name("lines"), "/");
    let mut comm = ApplicationCommunicator::new(app(), scope);
    comm.send_input(Inbound::Custom(CustomEvent::new("line", json!("hello")))).await.unwrap();
    let Outbound::Custom(echo) = comm.receive_output().await.unwrap() else { panic!("expected a custom event") };
    assert_eq!((echo.kind.as_str(), echo.payload), ("echo", json!({ "n": 1, "line": "hello" })));
    let flush = ChannelMessage::from_serialize(&json!({ "type": "lines.flush" })).unwrap();
    comm.send_input(Inbound::Channel(flush)).await.unwrap();
    let Outbound::Custom(flushed) = comm.receive_output().await.unwrap() else { panic!("expected a custom event") };
    assert_eq!((flushed.kind.as_str(), flushed.payload), ("flushed", json!(1)));
    comm.send_input(Inbound::Custom(CustomEvent::new("bye", json!(null)))).await.unwrap();
    comm.wait().await.unwrap();
}

#[tokio::test]
async fn expression_routes_hold_hand_written_consumers() {
    let mut ws = WebsocketCommunicator::new(app(), "/ws/raw/");
    assert!(ws.connect().await.unwrap().accepted);
    ws.send_text("raw").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "raw");
    assert!(ws.receive_nothing(Duration::from_millis(10)).await);
}

#[tokio::test]
async fn macro_built_app_over_a_real_socket() {
    let server = TestServer::start(app()).await;
    let mut client = server.connect("/ws/rooms/hall/12/").await;
    assert_eq!(next_message(&mut client).await.into_text().unwrap().as_str(), "> room=hall seat=12 lang=-");
    send_text(&mut client, "over tcp").await;
    assert_eq!(next_message(&mut client).await.into_text().unwrap().as_str(), "> #1 over tcp");
    assert_eq!(server.handshake_status("/ws/rooms/hall/99999999999/").await, 403);
    assert_eq!(server.handshake_status("/ws/nowhere/").await, 404);
    let response = raw_http(server.addr, b"GET /shops/corner/items/7/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("shop=corner item=7 body=0 tag=v1"), "{response}");
    let response =
        raw_http(server.addr, b"GET /plain/corner/184467440737095516150/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn spawned_handlers_do_not_block_the_connection() {
    let mut ws = WebsocketCommunicator::new(app(), "/ws/worker/");
    assert!(ws.connect().await.unwrap().accepted);
    let job = ChannelMessage::from_serialize(&json!({ "type": "job.slow" })).unwrap();
    ws.send_channel_message(job).await.unwrap();
    // The job waits on the gate; the consumer still answers.
    ws.send_text("ping").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "pong");
    JOB_GATE.notify_one();
    assert_eq!(ws.receive_text().await.unwrap(), "job done");
    ws.disconnect(1000).await.unwrap();
}

/// App-wide state: a vote store every connection shares, given once with `.extension(..)`.
#[derive(Clone, Default)]
struct Votes(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

#[consumer(json)]
struct Ballot {
    #[state]
    votes: Votes,
    /// A plain field: a fresh `Default` per connection, not shared.
    cast_here: u32,
}

#[consumer]
impl Ballot {
    async fn receive_json(&mut self, ws: &mut Websocket, vote: u32) -> Result<(), ConsumerError> {
        self.cast_here += 1;
        let total = {
            let mut votes = self.votes.0.lock().map_err(|_| ConsumerError::msg("poisoned"))?;
            votes.push(vote);
            votes.len()
        };
        ws.send_json(&json!({ "total": total, "here": self.cast_here })).await
    }
}

#[tokio::test]
async fn state_fields_share_the_apps_extension() {
    let votes = Votes::default();
    let app = std::sync::Arc::new(routing! { websocket: [ "ws/ballot/" => Ballot ] }.extension(votes.clone()));
    let mut first = WebsocketCommunicator::new(app.clone(), "/ws/ballot/");
    let mut second = WebsocketCommunicator::new(app.clone(), "/ws/ballot/");
    assert!(first.connect().await.unwrap().accepted && second.connect().await.unwrap().accepted);
    first.send_json_to(&1).await.unwrap();
    assert_eq!(first.receive_json_from::<serde_json::Value>().await.unwrap(), json!({ "total": 1, "here": 1 }));
    second.send_json_to(&2).await.unwrap();
    assert_eq!(second.receive_json_from::<serde_json::Value>().await.unwrap(), json!({ "total": 2, "here": 1 }));
    assert_eq!(*votes.0.lock().unwrap(), [1, 2], "one store for the app and every connection");

    // Without the extension: a wiring error that names the fix, not a silent default.
    let bare = routing! { websocket: [ "ws/ballot/" => Ballot ] };
    let mut ws = WebsocketCommunicator::new(bare, "/ws/ballot/");
    match ws.connect().await {
        Err(TestError::App(AppError::Misconfigured(message))) => {
            assert!(message.contains("`votes` of `Ballot`") && message.contains(".extension("), "{message}");
        }
        other => panic!("expected a misconfiguration, got {other:?}"),
    }
}
