//! The real server on 127.0.0.1:0, driven by a real WebSocket client (tokio-tungstenite) and by
//! raw TCP for what a well-behaved client never sends.

mod support;

use std::time::Duration;

use bytes::Bytes;
use channels::prelude::*;
use channels::{SendError, ServerConfig};
use futures_util::SinkExt;
use http::{HeaderMap, StatusCode};
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Log = mpsc::UnboundedSender<String>;

/// Echoes; `panic` panics; `flood` floods the client; `thread` answers the name of the thread
/// it runs on; connect refuses on `?refuse`.
struct Probe {
    scope: Scope,
    log: Log,
}

impl WebsocketConsumer for Probe {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        match self.scope.query_string.as_str() {
            "refuse" => ws.close(1000).await?,
            "hang" => {}
            _ if self.scope.subprotocols.iter().any(|p| p == "v2") => ws.accept_subprotocol("v2").await?,
            _ => {
                let mut headers = HeaderMap::new();
                headers.insert("x-consumer", http::HeaderValue::from_static("probe"));
                ws.accept_with(channels::event::Accept { subprotocol: None, headers }).await?;
            }
        }
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        match message.as_text() {
            Some("panic") => panic!("consumer panicked on purpose"),
            Some("close") => ws.close_with_reason(4001, "bye now").await?,
            Some("thread") => ws.send_text(std::thread::current().name().unwrap_or("").to_owned()).await?,
            Some("flood") => {
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                for _ in 0..100_000 {
                    if let Err(err) = ws.send_bytes(chunk.clone()).await {
                        let _ = self.log.send(format!("send failed: {err:?}"));
                        return Ok(());
                    }
                }
            }
            _ => ws.send(message).await?,
        }
        Ok(())
    }

    async fn disconnect(&mut self, code: u16) -> Result<(), ConsumerError> {
        let _ = self.log.send(format!("disconnect {code}"));
        Ok(())
    }
}

struct Health {
    log: Log,
}

impl HttpConsumer for Health {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        if body.is_empty() {
            response.text(StatusCode::OK, "ok").await?;
        } else {
            response.text(StatusCode::OK, format!("got {} bytes", body.len())).await?;
        }
        Ok(())
    }

    async fn disconnect(&mut self) -> Result<(), ConsumerError> {
        let _ = self.log.send("http disconnect".to_owned());
        Ok(())
    }
}

struct Chunks;

impl HttpConsumer for Chunks {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.send_headers(StatusCode::OK, HeaderMap::new()).await?;
        for part in ["alpha-", "beta-", "gamma"] {
            response.send_body(part, true).await?;
        }
        response.send_body(Bytes::new(), false).await?;
        Ok(())
    }
}

struct Broken;

impl HttpConsumer for Broken {
    async fn handle(&mut self, _body: Bytes, _response: &mut HttpResponse) -> Result<(), ConsumerError> {
        panic!("http consumer panicked on purpose");
    }
}

fn app(log: Log) -> ProtocolTypeRouter {
    let http_log = log.clone();
    ProtocolTypeRouter::new()
        .websocket(URLRouter::new(vec![path(
            "ws/probe/",
            ConsumerApp::websocket(move |scope| Ok(Probe { scope, log: log.clone() })),
        )]))
        .http(URLRouter::new(vec![
            path("health/", ConsumerApp::http(move |_| Ok(Health { log: http_log.clone() }))),
            path("chunks/", ConsumerApp::http(|_| Ok(Chunks))),
            path("broken/", ConsumerApp::http(|_| Ok(Broken))),
        ]))
}

async fn start(config: ServerConfig) -> (TestServer, mpsc::UnboundedReceiver<String>) {
    let (log, rx) = mpsc::unbounded_channel();
    (TestServer::start_with(app(log), config).await, rx)
}

async fn expect_log(log: &mut mpsc::UnboundedReceiver<String>, expected: &str) {
    let line = within(log.recv()).await.expect("log closed");
    assert_eq!(line, expected);
}

#[tokio::test]
async fn echo_over_a_real_socket() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let (mut client, response) = server.try_connect(server.request("/ws/probe/")).await.unwrap();
    assert_eq!(response.headers().get("x-consumer").unwrap(), "probe");
    send_text(&mut client, "hello").await;
    assert_eq!(next_message(&mut client).await, WsMessage::Text("hello".into()));
    within(client.send(WsMessage::Binary(Bytes::from_static(&[1, 2, 3])))).await.unwrap();
    assert_eq!(next_message(&mut client).await, WsMessage::Binary(Bytes::from_static(&[1, 2, 3])));
    send_text(&mut client, "").await;
    assert_eq!(next_message(&mut client).await, WsMessage::Text("".into()));
    // Far larger than the read chunk (read in chunks, not in codec-buffer steps), then many
    // small messages sent in one write.
    let big: String = (0..300_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    send_text(&mut client, &big).await;
    assert_eq!(next_message(&mut client).await, WsMessage::Text(big.into()));
    for i in 0..50 {
        within(client.feed(WsMessage::Text(format!("burst {i}").into()))).await.unwrap();
    }
    within(client.flush()).await.unwrap();
    for i in 0..50 {
        assert_eq!(next_message(&mut client).await, WsMessage::Text(format!("burst {i}").into()));
    }
    within(client.close(None)).await.unwrap();
    expect_log(&mut log, "disconnect 1005").await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_close_is_answered_with_a_close_frame_and_reaches_disconnect() {
    let (server, mut log) = start(ServerConfig::default()).await;
    for code in [1000u16, 1001, 3000, 4999] {
        let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"done");
        raw.send_frame(0x8, &payload).await;
        let frames = raw.read_until_eof().await;
        let close = frames.iter().find(|(opcode, _)| *opcode == 0x8);
        assert_eq!(close.and_then(|(_, payload)| close_payload_code(payload)), Some(code), "{frames:?}");
        expect_log(&mut log, &format!("disconnect {code}")).await;
    }
    // A real client sees a clean close handshake.
    let mut client = server.connect("/ws/probe/").await;
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "bye".into() };
    within(client.close(Some(frame))).await.unwrap();
    match within(futures_util::StreamExt::next(&mut client)).await {
        Some(Ok(WsMessage::Close(Some(reply)))) => assert_eq!(u16::from(reply.code), 1000),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    assert!(within(futures_util::StreamExt::next(&mut client)).await.is_none());
    expect_log(&mut log, "disconnect 1000").await;
    server.shutdown().await;
}

#[tokio::test]
async fn inbound_rate_limit_slows_a_flooding_client_without_dropping_anything() {
    let mut config = ServerConfig::default();
    config.inbound_rate = Some(channels::RateLimit { per_second: 50, burst: 10 });
    let (server, _log) = start(config).await;
    let mut flooder = server.connect("/ws/probe/").await;
    let started = std::time::Instant::now();
    for i in 0..60 {
        within(flooder.feed(WsMessage::Text(format!("m{i}").into()))).await.unwrap();
    }
    within(flooder.flush()).await.unwrap();
    // Another client meanwhile is served at once.
    let mut other = server.connect("/ws/probe/").await;
    send_text(&mut other, "quick").await;
    assert_eq!(next_message(&mut other).await, WsMessage::Text("quick".into()));
    for i in 0..60 {
        assert_eq!(next_message(&mut flooder).await, WsMessage::Text(format!("m{i}").into()), "in order, none lost");
    }
    // 60 messages at 50/s after a burst of 10: at least a second (a lower bound only).
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test]
async fn subprotocol_is_returned_in_the_handshake() {
    let (server, _log) = start(ServerConfig::default()).await;
    let mut request = server.request("/ws/probe/");
    request.headers_mut().insert("sec-websocket-protocol", "v1, v2".parse().unwrap());
    let (_client, response) = server.try_connect(request).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "v2");
    server.shutdown().await;
}

#[tokio::test]
async fn refused_handshake_returns_403_and_runs_disconnect() {
    let (server, mut log) = start(ServerConfig::default()).await;
    assert_eq!(server.handshake_status("/ws/probe/?refuse").await, 403);
    expect_log(&mut log, "disconnect 1000").await;
    server.shutdown().await;
}

#[tokio::test]
async fn undecided_handshake_is_refused_after_the_connect_timeout() {
    let mut config = ServerConfig::default();
    config.connect_timeout = Duration::from_millis(100);
    let (server, mut log) = start(config).await;
    assert_eq!(server.handshake_status("/ws/probe/?hang").await, 403);
    expect_log(&mut log, "disconnect 1006").await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_path_returns_404_for_websocket_and_http() {
    let (server, _log) = start(ServerConfig::default()).await;
    assert_eq!(server.handshake_status("/ws/nope/").await, 404);
    let response = raw_http(server.addr, b"GET /nope/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn close_code_and_reason_reach_the_client() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let mut client = server.connect("/ws/probe/").await;
    send_text(&mut client, "close").await;
    match next_message(&mut client).await {
        WsMessage::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye now");
        }
        other => panic!("expected close, got {other:?}"),
    }
    // Reading on lets the client send its answer to the close; the consumer then hears it.
    while let Some(Ok(_)) = within(futures_util::StreamExt::next(&mut client)).await {}
    expect_log(&mut log, "disconnect 4001").await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mut config = ServerConfig::default();
    config.max_message_size = 1024;
    config.max_frame_size = 1024;
    let (server, mut log) = start(config).await;
    let mut client = server.connect("/ws/probe/").await;
    within(client.send(WsMessage::Binary(Bytes::from(vec![0u8; 4096])))).await.unwrap();
    assert_eq!(close_code(&mut client).await, 1009);
    expect_log(&mut log, "disconnect 1009").await;
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
    raw.send_frame(0x1, &[0xff, 0xfe, 0xfd]).await;
    let frames = raw.read_until_eof().await;
    let close = frames.iter().find(|(opcode, _)| *opcode == 0x8).expect("a close frame");
    assert_eq!(close_payload_code(&close.1), Some(1007));
    expect_log(&mut log, "disconnect 1007").await;
    server.shutdown().await;
}

#[tokio::test]
async fn panicking_consumer_closes_its_connection_with_1011_and_others_go_on() {
    let (server, _log) = start(ServerConfig::default()).await;
    let mut healthy = server.connect("/ws/probe/").await;
    let mut doomed = server.connect("/ws/probe/").await;
    send_text(&mut doomed, "panic").await;
    assert_eq!(close_code(&mut doomed).await, 1011);
    send_text(&mut healthy, "still alive").await;
    assert_eq!(next_message(&mut healthy).await, WsMessage::Text("still alive".into()));
    let mut fresh = server.connect("/ws/probe/").await;
    send_text(&mut fresh, "new").await;
    assert_eq!(next_message(&mut fresh).await, WsMessage::Text("new".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_1012_and_runs_disconnect() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let mut first = server.connect("/ws/probe/").await;
    let mut second = server.connect("/ws/probe/").await;
    let TestServer { addr, handle, task } = server;
    handle.shutdown();
    assert_eq!(close_code(&mut first).await, 1012);
    assert_eq!(close_code(&mut second).await, 1012);
    expect_log(&mut log, "disconnect 1012").await;
    expect_log(&mut log, "disconnect 1012").await;
    within(task).await.unwrap().unwrap();
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn abruptly_dropped_tcp_connection_runs_disconnect() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let raw = RawClient::connect(server.addr, "/ws/probe/").await;
    drop(raw);
    expect_log(&mut log, "disconnect 1006").await;
    server.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_pinged_then_closed() {
    let mut config = ServerConfig::default();
    config.ping_interval = Some(Duration::from_millis(100));
    config.ping_timeout = Duration::from_millis(100);
    let (server, mut log) = start(config).await;
    // A raw client reads but never answers pings.
    let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
    let frames = raw.read_until_eof().await;
    let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
    assert!(opcodes.contains(&0x9), "expected a ping first: {opcodes:?}");
    let close = frames.iter().find(|(opcode, _)| *opcode == 0x8).expect("a close frame");
    assert_eq!(close_payload_code(&close.1), Some(1001));
    expect_log(&mut log, "disconnect 1001").await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected() {
    let mut config = ServerConfig::default();
    config.ping_interval = Some(Duration::from_millis(50));
    config.ping_timeout = Duration::from_millis(50);
    let (server, _log) = start(config).await;
    let mut client = server.connect("/ws/probe/").await;
    // Reading answers pings automatically; wait for a few of them.
    let mut pings = 0;
    while pings < 4 {
        match within(futures_util::StreamExt::next(&mut client)).await {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    send_text(&mut client, "after pings").await;
    assert_eq!(next_message(&mut client).await, WsMessage::Text("after pings".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn client_pings_are_answered_with_their_payload_between_messages() {
    let (server, _log) = start(ServerConfig::default()).await;
    let mut client = server.connect("/ws/probe/").await;
    // Pings and messages interleaved, sent in one go: the protocol answers each ping from the
    // reading side while the consumer echoes the messages.
    for round in 0..20u8 {
        client.feed(WsMessage::Ping(Bytes::from(vec![round; 3]))).await.unwrap();
        client.feed(WsMessage::Text(format!("m{round}").into())).await.unwrap();
    }
    client.flush().await.unwrap();
    let (mut pongs, mut texts) = (Vec::new(), Vec::new());
    while pongs.len() < 20 || texts.len() < 20 {
        match within(futures_util::StreamExt::next(&mut client)).await {
            Some(Ok(WsMessage::Pong(payload))) => pongs.push(payload),
            Some(Ok(WsMessage::Text(text))) => texts.push(text.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs, (0..20u8).map(|round| Bytes::from(vec![round; 3])).collect::<Vec<_>>());
    assert_eq!(texts, (0..20).map(|round| format!("m{round}")).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test]
async fn a_lone_ping_is_answered_at_once() {
    let (server, _log) = start(ServerConfig::default()).await;
    let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
    // After a message (nothing left unread), then on its own: nothing follows it to push the
    // pong out.
    raw.send_frame(0x1, b"first").await;
    assert_eq!(raw.read_frames(1).await, [(0x1, b"first".to_vec())]);
    for payload in [&b"one"[..], b"two"] {
        raw.send_frame(0x9, payload).await;
        assert_eq!(raw.read_frames(1).await, [(0xA, payload.to_vec())]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn frames_sent_with_the_handshake_request_are_not_lost() {
    let (server, _log) = start(ServerConfig::default()).await;
    let mut early = client_frame(0x1, b"early one");
    early.extend(client_frame(0x1, b"early two"));
    let mut raw = RawClient::connect_sending(server.addr, "/ws/probe/", &early).await;
    let frames = raw.read_frames(2).await;
    assert_eq!(frames, [(0x1, b"early one".to_vec()), (0x1, b"early two".to_vec())]);
    server.shutdown().await;
}

#[tokio::test]
async fn fragmented_and_loosely_encoded_frames_are_read_and_so_is_what_comes_after_them() {
    use tokio::io::AsyncWriteExt;
    let (server, _log) = start(ServerConfig::default()).await;
    let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
    // The reader keeps count of what tungstenite holds from a message's frame; these frames
    // are longer than that count (two headers for one message; a 16-bit length for 5 bytes).
    let mut first = client_frame(0x1, b"frag");
    first[0] &= 0x7f; // not final
    let mut loose = vec![0x81, 0x80 | 126, 0, 5, 0x11, 0x22, 0x33, 0x44];
    loose.extend(b"loose".iter().zip([0x11u8, 0x22, 0x33, 0x44].iter().cycle()).map(|(b, m)| b ^ m));
    let sent = [(first, None), (client_frame(0x0, b"mented"), Some("fragmented")), (loose, Some("loose"))];
    for (frame, echo) in sent {
        raw.tcp.write_all(&frame).await.expect("write frame");
        if let Some(echo) = echo {
            assert_eq!(raw.read_frames(1).await, [(0x1, echo.as_bytes().to_vec())]);
        }
    }
    // Each later message, sent alone once the one before was answered, is read all the same.
    for round in 0..3 {
        let text = format!("later {round}");
        raw.send_frame(0x1, text.as_bytes()).await;
        assert_eq!(raw.read_frames(1).await, [(0x1, text.into_bytes())]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_close_goes_after_the_messages_sent_before_it() {
    let (server, _log) = start(ServerConfig::default()).await;
    // Read in one go: the echoes and the close are written in one batch.
    let mut early = client_frame(0x1, b"first");
    early.extend(client_frame(0x2, &[0u8; 70_000]));
    early.extend(client_frame(0x1, b"close"));
    let mut raw = RawClient::connect_sending(server.addr, "/ws/probe/", &early).await;
    // (Not read to the end: the server waits for the close reply this client never sends.)
    let frames = raw.read_frames(3).await;
    let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
    assert_eq!(opcodes, [0x1, 0x2, 0x8]);
    assert_eq!(frames[0].1, b"first");
    assert_eq!(frames[1].1.len(), 70_000, "a frame with a 64-bit length");
    assert_eq!(close_payload_code(&frames[2].1), Some(4001));
    server.shutdown().await;
}

#[tokio::test]
async fn client_too_slow_to_read_is_disconnected() {
    let mut config = ServerConfig::default();
    config.write_queue = 4;
    config.write_timeout = Some(Duration::from_millis(200));
    config.close_timeout = Duration::from_millis(200);
    let (server, mut log) = start(config).await;
    let mut raw = RawClient::connect(server.addr, "/ws/probe/").await;
    raw.send_frame(0x1, b"flood").await;
    // The client reads nothing; the consumer's sends back up until the write timeout.
    let line = within(log.recv()).await.unwrap();
    assert_eq!(line, format!("send failed: {:?}", SendError::SlowClient(Duration::from_millis(200))));
    expect_log(&mut log, "disconnect 1008").await;
    // Other clients are unaffected.
    let mut other = server.connect("/ws/probe/").await;
    send_text(&mut other, "fine").await;
    assert_eq!(next_message(&mut other).await, WsMessage::Text("fine".into()));
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn http_consumers_answer_over_a_real_socket() {
    let (server, _log) = start(ServerConfig::default()).await;
    let response = raw_http(server.addr, b"GET /health/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    let response =
        raw_http(server.addr, b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello").await;
    assert!(response.ends_with("got 5 bytes"), "{response}");
    let response = raw_http(server.addr, b"GET /chunks/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{response}");
    for part in ["alpha-", "beta-", "gamma"] {
        assert!(response.contains(part), "{response}");
    }
    let response = raw_http(server.addr, b"GET /broken/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    // Still healthy after the panic.
    let response = raw_http(server.addr, b"GET /health/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_request_body_gets_413() {
    let mut config = ServerConfig::default();
    config.max_request_body = 16;
    let (server, _log) = start(config).await;
    let response =
        raw_http(server.addr, b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let mut chunked = b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"a\r\n0123456789\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = raw_http(server.addr, &chunked).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    server.shutdown().await;
}

/// The open file descriptors of this process (the test and its in-process server).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(0)
}

#[tokio::test]
async fn cut_short_bodies_are_answered_and_their_sockets_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, mut log) = start(ServerConfig::default()).await;
    // A body cut short by the client: the consumer hears the disconnect and the socket closes.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(tcp.read_to_end(&mut answer)).await.unwrap();
    expect_log(&mut log, "http disconnect").await;
    // A malformed chunked body: 400, then the server closes the connection.
    let response = raw_http(
        server.addr,
        b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
    expect_log(&mut log, "http disconnect").await;

    let baseline = open_fds();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx").await.unwrap();
        clients.push(tcp);
    }
    drop(clients);
    for _ in 0..1000 {
        expect_log(&mut log, "http disconnect").await;
    }
    // Every server-side socket is closed once its connection task ends.
    within(async {
        while open_fds() > baseline {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let response = raw_http(server.addr, b"GET /health/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn slow_request_body_gets_408_and_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = ServerConfig::default();
    config.body_timeout = Some(Duration::from_millis(300));
    let (server, mut log) = start(config).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /health/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n").await.unwrap();
    // One byte every 100 ms would take 10 s.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    within(async {
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => { let _ = tcp.write_all(b"x").await; }
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    expect_log(&mut log, "http disconnect").await;
    server.shutdown().await;
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn requests_are_checked_as_django_and_daphne_check_them() {
    let (server, _log) = start(ServerConfig::default()).await;
    let addr = server.addr;
    let status = |response: String| response.get(9..12).unwrap_or("").to_owned();
    let get = |head: String| async move { status(raw_http(addr, head.as_bytes()).await) };
    // Host: allowed names (with any port) pass; others, none or two are 400.
    assert_eq!(get("GET /health/ HTTP/1.1\r\nHost: localhost:8000\r\n\r\n".into()).await, "200");
    assert_eq!(get("GET /health/ HTTP/1.1\r\nHost: [::1]\r\n\r\n".into()).await, "200");
    assert_eq!(get("GET /health/ HTTP/1.1\r\nHost: evil.example\r\n\r\n".into()).await, "400");
    assert_eq!(get("GET /health/ HTTP/1.1\r\n\r\n".into()).await, "400");
    assert_eq!(get("GET /health/ HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n".into()).await, "400");
    assert_eq!(
        get(format!("GET /ws/probe/ HTTP/1.1\r\nHost: evil.example\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n"))
            .await,
        "400"
    );
    // Raw non-ASCII bytes in the request target.
    let mut raw = b"GET /health/\xc3\xa9/ HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    assert_eq!(status(raw_http(addr, &raw).await), "400");
    raw = b"GET /health/?q=\xff HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    assert_eq!(status(raw_http(addr, &raw).await), "400");
    // WebSocket version other than 13: 426 naming 13.
    let response = raw_http(
        addr,
        format!("GET /ws/probe/ HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}Sec-WebSocket-Version: 8\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(response.clone()), "426", "{response}");
    assert!(response.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{response}");
    // Two keys, or an upgrade over HTTP/1.0.
    let two_keys = format!(
        "GET /ws/probe/ HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(get(two_keys).await, "400");
    assert_eq!(
        get(format!("GET /ws/probe/ HTTP/1.0\r\nHost: localhost\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n")).await,
        "400"
    );
    server.shutdown().await;

    let mut config = ServerConfig::default();
    config.allowed_hosts = vec!["*".into()];
    let (server, _log) = start(config).await;
    let response = raw_http(server.addr, b"GET /health/ HTTP/1.1\r\nHost: anything.example\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn head_size_limit_holds_however_the_head_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _log) = start(ServerConfig::default()).await;
    let head = |size: usize| {
        let mut head = b"GET /health/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', size));
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    for (size, expected) in [(60 << 10, "200"), (112 << 10, "431")] {
        let response = raw_http(server.addr, &head(size)).await;
        assert_eq!(response.get(9..12), Some(expected), "one write of {size} bytes");
        // The same head in 1 KiB writes.
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut response = Vec::new();
        within(async {
            for piece in head(size).chunks(1024) {
                if tcp.write_all(piece).await.is_err() {
                    break;
                }
                tcp.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = tcp.read_to_end(&mut response).await;
        })
        .await;
        let response = String::from_utf8_lossy(&response);
        assert!(response.is_empty() || response.get(9..12) == Some(expected), "trickled {size} bytes: {response}");
        if expected == "200" {
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_never_takes_the_server_down() {
    let (server, _log) = start(ServerConfig::default()).await;
    let addr = server.addr;
    // Malformed HTTP.
    let response = raw_http(addr, b"this is not http\r\n\r\n").await;
    assert!(response.is_empty() || response.starts_with("HTTP/1.1 400"), "{response}");
    // A bad Sec-WebSocket-Key.
    let response = raw_http(
        addr,
        b"GET /ws/probe/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: nope\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // Upgrade asked for without `Connection: upgrade`.
    let response = raw_http(
        addr,
        b"GET /ws/probe/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // A WebSocket request without any Upgrade header is plain HTTP: no such HTTP route.
    let response = raw_http(
        addr,
        b"GET /ws/probe/ HTTP/1.1\r\nHost: localhost\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    // A huge header.
    let mut huge = b"GET /health/ HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 << 10));
    huge.extend_from_slice(b"\r\n\r\n");
    let response = raw_http(addr, &huge).await;
    assert!(response.is_empty() || response.starts_with("HTTP/1.1 431"), "{}", &response[..response.len().min(80)]);
    // Still serving.
    let mut client = server.connect("/ws/probe/").await;
    send_text(&mut client, "ok").await;
    assert_eq!(next_message(&mut client).await, WsMessage::Text("ok".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn scope_is_built_from_the_request() {
    struct Report {
        scope: Scope,
    }
    impl WebsocketConsumer for Report {
        async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
            ws.accept_subprotocol("two").await?;
            let scope = &self.scope;
            let handshake_headers: Vec<&str> = ["connection", "upgrade", "sec-websocket-key", "sec-websocket-version"]
                .into_iter()
                .filter(|name| scope.headers.contains_key(*name))
                .collect();
            ws.send_json(&serde_json::json!({
                "path": scope.path,
                "raw_path": scope.raw_path,
                "query": scope.query_string,
                "scheme": scope.scheme,
                "client_ip": scope.client.map(|c| c.ip().to_string()),
                "server_port": scope.server.map(|s| s.port()),
                "agent": scope.header("user-agent"),
                "subprotocols": scope.subprotocols,
                "protocol_header": scope.header("sec-websocket-protocol"),
                "handshake_headers": handshake_headers,
                "headers": scope.headers.len(),
            }))
            .await
        }
    }
    let app = URLRouter::new(vec![re_path(r"^ws/", ConsumerApp::websocket(|scope| Ok(Report { scope })))]);
    let server = TestServer::start(app).await;
    let mut request = server.request("/ws/a%20b/?x=1%202");
    request.headers_mut().insert("user-agent", "probe/1".parse().unwrap());
    request.headers_mut().insert("sec-websocket-protocol", "one, two".parse().unwrap());
    let (mut client, _) = server.try_connect(request).await.unwrap();
    let WsMessage::Text(text) = next_message(&mut client).await else { panic!("expected text") };
    let seen: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(seen["path"], "/ws/a b/");
    assert_eq!(seen["raw_path"], "/ws/a%20b/");
    assert_eq!(seen["query"], "x=1%202");
    assert_eq!(seen["scheme"], "ws");
    assert_eq!(seen["client_ip"], "127.0.0.1");
    assert_eq!(seen["server_port"], server.addr.port());
    assert_eq!(seen["agent"], "probe/1");
    assert_eq!(seen["subprotocols"], serde_json::json!(["one", "two"]));
    // The handshake's own headers are answered by the server and left out of the scope.
    assert_eq!(seen["protocol_header"], "one, two");
    assert_eq!(seen["handshake_headers"], serde_json::json!([]));
    assert_eq!(seen["headers"], 3, "host, user-agent, sec-websocket-protocol: {seen}");
    server.shutdown().await;
}

/// The names of this process's threads (Linux).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// On tokio's multi-thread runtime (`#[tokio::main]`), connections are served on the server's
/// own one-thread runtimes (fair under load: see BENCHMARKS.md), handed out in turn; HTTP
/// too; a panicking consumer there closes its connection only; the threads end with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_multi_thread_runtime_connections_are_served_on_the_servers_workers() {
    let (server, mut log) = start(ServerConfig::default()).await;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut names = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = server.connect("/ws/probe/").await;
        client.send(WsMessage::text("thread")).await.unwrap();
        let WsMessage::Text(name) = next_message(&mut client).await else { panic!("a text answer") };
        assert!(name.starts_with("channels-io-"), "served on {name:?}");
        names.push(name.to_string());
        clients.push(client);
    }
    // In turn over min(2 runtime workers, cores) workers.
    let workers = names.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(workers, 2.min(cores), "{names:?}");
    assert_eq!(names[0], names[workers], "handed out in turn: {names:?}");
    // A panic on a worker closes that connection alone.
    send_text(&mut clients[0], "panic").await;
    assert_eq!(close_code(&mut clients[0]).await, 1011);
    send_text(&mut clients[1], "still here").await;
    assert_eq!(next_message(&mut clients[1]).await, WsMessage::Text("still here".into()));
    let response =
        raw_http(server.addr, b"GET /health/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("ok"), "{response}");
    assert!(thread_names().iter().any(|name| name.starts_with("channels-io-")));
    server.shutdown().await;
    // The three live WebSockets were drained (their consumers ran `disconnect`).
    let mut drained = 0;
    while drained < 3 {
        if within(log.recv()).await.expect("log closed") == "disconnect 1012" {
            drained += 1;
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    while thread_names().iter().any(|name| name.starts_with("channels-io-")) {
        assert!(std::time::Instant::now() < deadline, "the workers' threads end with the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
