//! Every consumer kind, driven in-process with the communicators.

use std::time::Duration;

use bytes::Bytes;
use channels::prelude::*;
use channels::testing::{HttpCommunicator, TestError, WebsocketCommunicator};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

/// Records lifecycle calls so tests can assert on them.
type Log = mpsc::UnboundedSender<String>;

struct Lifecycle {
    log: Log,
    refuse: bool,
}

impl WebsocketConsumer for Lifecycle {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let _ = self.log.send("connect".into());
        if self.refuse {
            ws.close(4003).await?;
        } else {
            ws.accept().await?;
        }
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        match message.as_text() {
            Some("close") => ws.close_with_reason(4000, "asked to").await?,
            _ => ws.send(message).await?,
        }
        Ok(())
    }

    async fn handle_message(&mut self, ws: &mut Websocket, message: ChannelMessage) -> Result<(), ConsumerError> {
        match message.message_type() {
            Some("chat.message") => {
                #[derive(Deserialize)]
                struct Chat {
                    text: String,
                }
                let chat: Chat = message.deserialize()?;
                ws.send_text(format!("chat: {}", chat.text)).await?;
                Ok(())
            }
            _ => channels::consumer::unhandled_message(&message),
        }
    }

    async fn disconnect(&mut self, code: u16) -> Result<(), ConsumerError> {
        let _ = self.log.send(format!("disconnect {code}"));
        Ok(())
    }
}

fn lifecycle(refuse: bool) -> (ConsumerApp<Lifecycle>, mpsc::UnboundedReceiver<String>) {
    let (log, rx) = mpsc::unbounded_channel();
    (ConsumerApp::websocket(move |_| Ok(Lifecycle { log: log.clone(), refuse })), rx)
}

#[tokio::test]
async fn websocket_consumer_accepts_echoes_and_runs_disconnect() {
    let (app, mut log) = lifecycle(false);
    let mut ws = WebsocketCommunicator::new(app, "/ws/");
    let handshake = ws.connect().await.unwrap();
    assert!(handshake.accepted);
    assert_eq!(handshake.subprotocol, None);
    ws.send_text("hi").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "hi");
    ws.send_bytes(Bytes::from_static(&[0, 1, 2])).await.unwrap();
    assert_eq!(ws.receive_from().await.unwrap(), Message::Binary(Bytes::from_static(&[0, 1, 2])));
    // Empty frames are delivered, not dropped (daphne drops them).
    ws.send_text("").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "");
    assert!(ws.receive_nothing(Duration::from_millis(20)).await);
    ws.disconnect(1000).await.unwrap();
    assert_eq!(log.recv().await.unwrap(), "connect");
    assert_eq!(log.recv().await.unwrap(), "disconnect 1000");
}

#[tokio::test]
async fn close_before_accept_refuses_and_still_runs_disconnect() {
    let (app, mut log) = lifecycle(true);
    let mut ws = WebsocketCommunicator::new(app, "/ws/");
    let handshake = ws.connect().await.unwrap();
    assert!(!handshake.accepted);
    assert_eq!(handshake.close_code, Some(4003));
    assert_eq!(log.recv().await.unwrap(), "connect");
    assert_eq!(log.recv().await.unwrap(), "disconnect 4003");
}

#[tokio::test]
async fn consumer_close_carries_code_and_reason() {
    let (app, _log) = lifecycle(false);
    let mut ws = WebsocketCommunicator::new(app, "/ws/");
    ws.connect().await.unwrap();
    ws.send_text("close").await.unwrap();
    let close = ws.receive_close().await.unwrap();
    assert_eq!((close.code, close.reason.as_str()), (4000, "asked to"));
}

#[tokio::test]
async fn channel_messages_are_dispatched_by_type_and_unknown_types_do_not_crash() {
    let (app, _log) = lifecycle(false);
    let mut ws = WebsocketCommunicator::new(app, "/ws/");
    ws.connect().await.unwrap();
    ws.send_channel_message(ChannelMessage::new(json!({"type": "chat.message", "text": "yo"}))).await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "chat: yo");
    // Unknown type: logged, the connection goes on.
    ws.send_channel_message(ChannelMessage::new(json!({"type": "no.such"}))).await.unwrap();
    ws.send_text("still here").await.unwrap();
    assert_eq!(ws.receive_text().await.unwrap(), "still here");
}

struct Picky;

impl WebsocketConsumer for Picky {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let mut headers = HeaderMap::new();
        headers.insert("x-picked", HeaderValue::from_static("yes"));
        ws.accept_with(channels::event::Accept { subprotocol: Some("v2.chat".into()), headers }).await?;
        Ok(())
    }
}

#[tokio::test]
async fn subprotocol_choice_and_accept_headers_reach_the_client() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Picky)), "/")
        .subprotocol("v1.chat")
        .subprotocol("v2.chat");
    let handshake = ws.connect().await.unwrap();
    assert!(handshake.accepted);
    assert_eq!(handshake.subprotocol.as_deref(), Some("v2.chat"));
    assert_eq!(handshake.headers.get("x-picked").unwrap(), "yes");
}

struct Eager;

impl WebsocketConsumer for Eager {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let err = ws.send_text("too early").await.unwrap_err();
        assert!(matches!(err.downcast_ref::<SendError>(), Some(SendError::InvalidState(_))));
        ws.accept().await?;
        let again = ws.accept().await.unwrap_err();
        assert!(matches!(again.downcast_ref::<SendError>(), Some(SendError::InvalidState(_))));
        // A method can end with a send: the handle's errors are the methods' own type.
        ws.send_text("now").await
    }
}

#[tokio::test]
async fn send_before_accept_is_an_error_not_a_frame() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Eager)), "/");
    assert!(ws.connect().await.unwrap().accepted);
    assert_eq!(ws.receive_text().await.unwrap(), "now");
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Command {
    Add { a: i64, b: i64 },
    Ping,
}

struct Calculator;

impl JsonWebsocketConsumer for Calculator {
    type Incoming = Command;

    async fn receive_json(&mut self, ws: &mut Websocket, content: Command) -> Result<(), ConsumerError> {
        match content {
            Command::Add { a, b } => ws.send_json(&json!({"sum": a + b})).await,
            Command::Ping => ws.send_json(&json!({"pong": true})).await,
        }
    }
}

#[tokio::test]
async fn json_consumer_decodes_into_serde_types() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::json(|_| Ok(Calculator)), "/");
    ws.connect().await.unwrap();
    ws.send_json_to(&json!({"action": "add", "a": 2, "b": 40})).await.unwrap();
    assert_eq!(ws.receive_json_from::<serde_json::Value>().await.unwrap(), json!({"sum": 42}));
    ws.send_json_to(&json!({"action": "ping"})).await.unwrap();
    assert_eq!(ws.receive_json_from::<serde_json::Value>().await.unwrap(), json!({"pong": true}));
}

#[tokio::test]
async fn json_decode_failure_closes_with_1007_and_binary_with_1003() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::json(|_| Ok(Calculator)), "/");
    ws.connect().await.unwrap();
    ws.send_text("{not json").await.unwrap();
    let close = ws.receive_close().await.unwrap();
    assert_eq!(close.code, close_code::INVALID);
    assert!(close.reason.as_str().starts_with("invalid JSON message"), "{}", close.reason.as_str());

    let mut ws = WebsocketCommunicator::new(ConsumerApp::json(|_| Ok(Calculator)), "/");
    ws.connect().await.unwrap();
    ws.send_json_to(&json!({"action": "divide"})).await.unwrap();
    assert_eq!(ws.receive_close().await.unwrap().code, close_code::INVALID);

    let mut ws = WebsocketCommunicator::new(ConsumerApp::json(|_| Ok(Calculator)), "/");
    ws.connect().await.unwrap();
    ws.send_bytes(Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(ws.receive_close().await.unwrap().code, close_code::UNSUPPORTED);
}

struct Failing;

impl WebsocketConsumer for Failing {
    async fn receive(&mut self, _ws: &mut Websocket, _message: Message) -> Result<(), ConsumerError> {
        Err(ConsumerError::msg("database is down"))
    }
}

#[tokio::test]
async fn consumer_error_ends_the_application_with_that_error() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Failing)), "/");
    ws.connect().await.unwrap();
    ws.send_text("x").await.unwrap();
    match ws.receive_from().await {
        Err(TestError::App(AppError::Consumer(err))) => assert_eq!(err.to_string(), "database is down"),
        other => panic!("expected the consumer error, got {other:?}"),
    }
}

struct Panicky;

impl WebsocketConsumer for Panicky {
    async fn receive(&mut self, _ws: &mut Websocket, _message: Message) -> Result<(), ConsumerError> {
        panic!("boom");
    }
}

#[tokio::test]
async fn panicking_consumer_is_reported_as_panicked() {
    let mut ws = WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Panicky)), "/");
    ws.connect().await.unwrap();
    ws.send_text("x").await.unwrap();
    assert!(matches!(ws.receive_from().await, Err(TestError::App(AppError::Panicked(msg))) if msg == "boom"));
}

#[tokio::test]
async fn from_scope_failure_refuses_with_the_reason() {
    let app = ConsumerApp::websocket(|scope: Scope| -> Result<Lifecycle, ConsumerError> {
        let id: u32 = scope.url_route.parse("id")?;
        unreachable!("{id}")
    });
    let mut ws = WebsocketCommunicator::new(app, "/");
    match ws.connect().await {
        Err(TestError::App(AppError::Refused(reason))) => assert!(reason.contains("`id`"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

struct Greeter;

impl HttpConsumer for Greeter {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let name = String::from_utf8_lossy(&body).into_owned();
        response.text(StatusCode::CREATED, format!("hello {name}")).await?;
        Ok(())
    }
}

#[tokio::test]
async fn http_consumer_gets_the_body_and_sends_a_whole_response() {
    let response = HttpCommunicator::new(ConsumerApp::http(|_| Ok(Greeter)), Method::POST, "/greet/")
        .body("ada")
        .get_response()
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.text(), "hello ada");
    assert_eq!(response.headers.get("content-length").unwrap(), "9");
    assert_eq!(response.headers.get("content-type").unwrap(), "text/plain; charset=utf-8");
}

struct Streamer;

impl HttpConsumer for Streamer {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.send_headers(StatusCode::OK, HeaderMap::new()).await?;
        for part in ["one ", "two ", "three"] {
            response.send_body(part, true).await?;
        }
        response.send_body(Bytes::new(), false).await?;
        Ok(())
    }
}

#[tokio::test]
async fn http_consumer_streams_its_body_in_chunks() {
    let response =
        HttpCommunicator::new(ConsumerApp::http(|_| Ok(Streamer)), Method::GET, "/").get_response().await.unwrap();
    assert_eq!(response.text(), "one two three");
    assert_eq!(response.chunks.len(), 4);
}

/// Starts the response, returns, and finishes it when a channel message arrives (long-poll).
struct LongPoll;

impl HttpConsumer for LongPoll {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.send_headers(StatusCode::OK, HeaderMap::new()).await?;
        Ok(())
    }

    async fn handle_message(
        &mut self,
        response: &mut HttpResponse,
        message: ChannelMessage,
    ) -> Result<(), ConsumerError> {
        let text = message.value()["text"].as_str().unwrap_or_default().to_owned();
        response.send_body(text, false).await?;
        Ok(())
    }
}

#[tokio::test]
async fn http_consumer_keeps_streaming_after_handle_returns() {
    use channels::event::RequestChunk;
    use channels::testing::ApplicationCommunicator;
    let mut comm =
        ApplicationCommunicator::new(ConsumerApp::http(|_| Ok(LongPoll)), Scope::new(Protocol::Http, "/poll/"));
    comm.send_input(Inbound::HttpRequest(RequestChunk::default())).await.unwrap();
    assert!(matches!(comm.receive_output().await.unwrap(), Outbound::HttpResponseStart(_)));
    assert!(comm.receive_nothing(Duration::from_millis(20)).await);
    comm.send_input(Inbound::Channel(ChannelMessage::new(json!({"type": "poll.result", "text": "done"}))))
        .await
        .unwrap();
    match comm.receive_output().await.unwrap() {
        Outbound::HttpResponseBody { body, more_body } => assert_eq!((body.as_ref(), more_body), (&b"done"[..], false)),
        other => panic!("unexpected {other:?}"),
    }
    comm.wait().await.unwrap();
}

struct Silent;

impl HttpConsumer for Silent {
    async fn handle(&mut self, _body: Bytes, _response: &mut HttpResponse) -> Result<(), ConsumerError> {
        Ok(())
    }
}

#[tokio::test]
async fn http_consumer_that_never_responds_is_an_error() {
    let err =
        HttpCommunicator::new(ConsumerApp::http(|_| Ok(Silent)), Method::GET, "/").get_response().await.unwrap_err();
    assert!(matches!(err, TestError::App(AppError::Consumer(_))), "{err:?}");
}

#[tokio::test]
async fn communicator_waits_fail_instead_of_hanging() {
    struct Mute;
    impl WebsocketConsumer for Mute {}
    let mut ws =
        WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Mute)), "/").with_timeout(Duration::from_millis(50));
    ws.connect().await.unwrap();
    assert!(matches!(ws.receive_from().await, Err(TestError::Timeout { .. })));
}

/// Reports the scope it was opened with.
struct ScopeReport {
    scope: Scope,
}

impl WebsocketConsumer for ScopeReport {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let scope = &self.scope;
        ws.send_json(&json!({
            "path": scope.path, "raw_path": scope.raw_path, "query": scope.query_string,
            "scheme": scope.scheme, "host": scope.header("host"),
        }))
        .await
    }
}

impl HttpConsumer for ScopeReport {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let scope = &self.scope;
        response
            .json(StatusCode::OK, &json!({ "path": scope.path, "query": scope.query_string, "scheme": scope.scheme }))
            .await
    }
}

#[tokio::test]
async fn communicators_take_full_urls_as_channels_does() {
    let ws_app = || ConsumerApp::websocket(|scope| Ok(ScopeReport { scope }));
    let mut ws = WebsocketCommunicator::new(
        ws_app(),
        "wss://ann:secret@chat.example.com:8443/caf%C3%A9/room/?x=1%202&y=%C3%A9#frag",
    );
    assert!(ws.connect().await.unwrap().accepted);
    let seen: serde_json::Value = ws.receive_json_from().await.unwrap();
    assert_eq!(seen["path"], "/café/room/");
    assert_eq!(seen["raw_path"], "/caf%C3%A9/room/");
    assert_eq!(seen["query"], "x=1%202&y=%C3%A9", "no fragment in the query string");
    assert_eq!(seen["scheme"], "wss");
    assert_eq!(seen["host"], "chat.example.com:8443", "no user or password in Host");

    // A plain path still works; a fragment is dropped there too.
    let mut ws = WebsocketCommunicator::new(ws_app(), "/plain/?q=1#ignored");
    assert!(ws.connect().await.unwrap().accepted);
    let seen: serde_json::Value = ws.receive_json_from().await.unwrap();
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str(), seen["scheme"].as_str()),
        (Some("/plain/"), Some("q=1"), Some("ws"))
    );

    let response = HttpCommunicator::new(
        ConsumerApp::http(|scope| Ok(ScopeReport { scope })),
        Method::GET,
        "https://example.com?z=%E2%9C%93#x",
    )
    .get_response()
    .await
    .unwrap();
    let seen: serde_json::Value = response.json().unwrap();
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str(), seen["scheme"].as_str()),
        (Some("/"), Some("z=%E2%9C%93"), Some("https"))
    );
}

/// `GET /wait/`: a long poll answered by the next `poll.ready` message of its group;
/// `POST /wait/` publishes one.
#[derive(Default)]
struct WaitForIt {
    scope: Option<Scope>,
}

impl HttpConsumer for WaitForIt {
    fn groups(&self) -> Vec<String> {
        vec!["polls".to_owned()]
    }

    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let scope = self.scope.as_ref().ok_or_else(|| ConsumerError::msg("no scope"))?;
        if scope.method == Method::POST {
            let message = json!({ "type": "poll.ready", "text": String::from_utf8_lossy(&body) });
            scope.layer()?.group_send("polls", message.into()).await?;
            response.text(StatusCode::OK, "published").await?;
        } else {
            response.send_headers(StatusCode::OK, HeaderMap::new()).await?;
        }
        Ok(())
    }

    async fn handle_message(
        &mut self,
        response: &mut HttpResponse,
        message: ChannelMessage,
    ) -> Result<(), ConsumerError> {
        let text = message.value()["text"].as_str().unwrap_or_default().to_owned();
        response.send_body(text, false).await?;
        Ok(())
    }
}

#[tokio::test]
async fn http_communicators_run_side_by_side() {
    let app: std::sync::Arc<dyn Application> = std::sync::Arc::new(
        ProtocolTypeRouter::new()
            .http(URLRouter::new([path("wait/", ConsumerApp::http(|scope| Ok(WaitForIt { scope: Some(scope) })))])),
    );
    // The long poll is sent and waits; another request wakes it.
    let waiting = HttpCommunicator::new(app.clone(), Method::GET, "/wait/").send().await.unwrap();
    let published =
        HttpCommunicator::new(app.clone(), Method::POST, "/wait/").body("fresh").get_response().await.unwrap();
    assert_eq!(published.text(), "published");
    let answered = waiting.response().await.unwrap();
    assert_eq!(answered.text(), "fresh");
}

#[tokio::test]
async fn a_live_server_in_one_line() {
    use futures_util::{SinkExt, StreamExt};
    let app = URLRouter::new([path("ws/echo/", ConsumerApp::websocket(|_| Ok(Echoing)))]);
    let server = channels::testing::LiveServer::start(app).await;
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(server.ws_url("/ws/echo/"), tcp).await.unwrap();
    client.send(tokio_tungstenite::tungstenite::Message::Text("over TCP".into())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over TCP");
    server.shutdown().await.unwrap();
}

struct Echoing;

impl WebsocketConsumer for Echoing {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}
