//! Shutting down without a reconnect storm: the readiness path turns 503 while the server still
//! serves, then WebSockets are closed with 1012 a batch at a time, every consumer's
//! `disconnect` running; over a real socket with real WebSocket clients.

mod support;

use std::time::{Duration, Instant};

use channels::ServerConfig;
use channels::prelude::*;
use futures_util::StreamExt;
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Accepts; records when and how its connection ended.
struct Member {
    ended: mpsc::UnboundedSender<(Instant, u16)>,
}

impl WebsocketConsumer for Member {
    async fn disconnect(&mut self, code: u16) -> Result<(), ConsumerError> {
        let _ = self.ended.send((Instant::now(), code));
        Ok(())
    }
}

fn app(ended: mpsc::UnboundedSender<(Instant, u16)>) -> ProtocolTypeRouter {
    ProtocolTypeRouter::new().websocket(URLRouter::new(vec![path(
        "ws/member/",
        ConsumerApp::websocket(move |_| Ok(Member { ended: ended.clone() })),
    )]))
}

/// The status line's code of a plain GET.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let response = raw_http(addr, request.as_bytes()).await;
    response.split(' ').nth(1).unwrap_or("").to_owned()
}

#[tokio::test]
async fn two_thousand_websockets_drain_in_the_configured_batches() {
    const CONNECTIONS: usize = 2000;
    const BATCH: usize = 500;
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let mut config = ServerConfig::default();
    config.drain_batch = BATCH;
    config.drain_interval = Duration::from_millis(300);
    config.shutdown_timeout = Duration::from_secs(30);
    config.shutdown_delay = Duration::from_millis(500);
    config.readiness_path = Some("/ready/".to_owned());
    let server = TestServer::start_with(app(ended_tx), config).await;
    assert_eq!(get_status(server.addr, "/ready/").await, "200");

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS / 100 {
        let opened = futures_util::future::join_all((0..100).map(|_| server.connect("/ws/member/"))).await;
        clients.extend(opened);
    }
    // Each client waits for its close frame.
    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                while let Some(Ok(message)) = client.next().await {
                    if let WsMessage::Close(frame) = message {
                        return frame.map(|frame| u16::from(frame.code));
                    }
                }
                None
            })
        })
        .collect();

    let TestServer { addr, handle, task } = server;
    handle.shutdown();
    // During the delay: still serving, but not ready.
    assert_eq!(get_status(addr, "/ready/").await, "503");
    let mut late = connect(addr, "/ws/member/").await;

    let mut codes = Vec::new();
    for close in closes {
        codes.push(tokio::time::timeout(Duration::from_secs(60), close).await.expect("closed in time").unwrap());
    }
    assert!(codes.iter().all(|code| *code == Some(1012)), "every client is told to reconnect: {codes:?}");
    assert_eq!(close_code(&mut late).await, 1012);
    tokio::time::timeout(Duration::from_secs(60), task).await.expect("shutdown ends").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is gone");

    let mut times = Vec::new();
    while let Ok((at, code)) = ended.try_recv() {
        assert_eq!(code, 1012);
        times.push(at);
    }
    assert_eq!(times.len(), CONNECTIONS + 1, "every consumer's disconnect ran");
    // Batches: disconnects close together, batches 300 ms apart.
    times.sort();
    let mut batches = vec![1usize];
    for pair in times.windows(2) {
        if pair[1] - pair[0] > Duration::from_millis(150) {
            batches.push(0);
        }
        *batches.last_mut().unwrap() += 1;
    }
    assert_eq!(batches, [BATCH, BATCH, BATCH, BATCH, 1], "closed in batches of {BATCH}");
}

#[tokio::test]
async fn the_readiness_path_answers_before_any_application() {
    let (ended_tx, _ended) = mpsc::unbounded_channel();
    let mut config = ServerConfig::default();
    config.readiness_path = Some("/ready/".to_owned());
    let server = TestServer::start_with(app(ended_tx), config).await;
    assert_eq!(get_status(server.addr, "/ready/").await, "200");
    // A probe that names the instance by its address (not an allowed host) is answered too.
    let probe =
        raw_http(server.addr, b"GET /ready/ HTTP/1.1\r\nHost: 10.1.2.3:8000\r\nConnection: close\r\n\r\n").await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    let other =
        raw_http(server.addr, b"GET /other/ HTTP/1.1\r\nHost: 10.1.2.3:8000\r\nConnection: close\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 400"), "other paths still check the Host: {other}");
    let post = "POST /ready/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let response = raw_http(server.addr, post.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(response.to_ascii_lowercase().contains("allow: get, head"), "{response}");
    // Other paths still go to the application (which has no HTTP routes here).
    assert_eq!(get_status(server.addr, "/other/").await, "404");
    server.shutdown().await;
}
