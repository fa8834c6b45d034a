//! Helpers shared by the integration tests: a real server on 127.0.0.1:0, a real WebSocket
//! client (tokio-tungstenite), and a raw TCP client for what a well-behaved client never sends.
#![allow(dead_code)]

pub mod django;

use std::net::SocketAddr;
use std::time::Duration;

use channels::{Application, Server, ServerConfig, ShutdownHandle};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// Log lines kept in memory: a `tracing_subscriber::fmt` writer (`with_writer(move ||
/// lines.clone())`) whose text a test reads back.
#[derive(Clone, Default)]
pub struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogLines {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Upper bound for any single wait in a test; only reached when something is broken.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Client = WebSocketStream<TcpStream>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(app: impl Application) -> Self {
        Self::start_with(app, ServerConfig::default()).await
    }

    pub async fn start_with(app: impl Application, config: ServerConfig) -> Self {
        let listening = Server::new(app).config(config).bind("127.0.0.1:0").await.expect("bind");
        let addr = listening.local_addr();
        let handle = listening.shutdown_handle();
        let task = tokio::spawn(listening.run());
        TestServer { addr, handle, task }
    }

    pub fn request(&self, path: &str) -> Request {
        format!("ws://{}{}", self.addr, path).into_client_request().expect("request")
    }

    /// Opens a WebSocket; `Err` carries the handshake failure (e.g. an HTTP 403 response).
    pub async fn try_connect(
        &self,
        request: Request,
    ) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
        let tcp = TcpStream::connect(self.addr).await.expect("tcp connect");
        within(tokio_tungstenite::client_async(request, tcp)).await
    }

    pub async fn connect(&self, path: &str) -> Client {
        self.try_connect(self.request(path)).await.expect("handshake").0
    }

    /// The HTTP status a refused handshake got.
    pub async fn handshake_status(&self, path: &str) -> u16 {
        match self.try_connect(self.request(path)).await {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("unexpected handshake error: {other}"),
        }
    }

    pub async fn shutdown(self) {
        self.handle.shutdown();
        within(self.task).await.expect("server task").expect("server run");
    }
}

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// The next data or close message (pings and pongs skipped).
pub async fn next_message(client: &mut Client) -> Message {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            Some(Err(err)) => panic!("read error: {err}"),
            None => panic!("connection ended"),
        }
    }
}

/// Waits for the server's close frame and returns its code.
pub async fn close_code(client: &mut Client) -> u16 {
    match next_message(client).await {
        Message::Close(Some(CloseFrame { code, .. })) => code.into(),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

pub async fn send_text(client: &mut Client, text: &str) {
    within(client.send(Message::Text(text.into()))).await.expect("send");
}

/// Sends a raw HTTP request and returns the whole response text (until the server closes or
/// the response is complete according to Content-Length).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = match within(tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        response.extend_from_slice(&buf[..read]);
        if response_complete(&response) {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn response_complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some(head_end) = text.find("\r\n\r\n") else { return false };
    let head = text[..head_end].to_ascii_lowercase();
    match head.lines().find_map(|line| line.strip_prefix("content-length:")) {
        Some(length) => response.len() >= head_end + 4 + length.trim().parse::<usize>().unwrap_or(0),
        None => head.contains("transfer-encoding: chunked") && text.ends_with("0\r\n\r\n"),
    }
}

/// A raw WebSocket client: does the handshake by hand, then reads and writes raw frames.
pub struct RawClient {
    pub tcp: TcpStream,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        Self::connect_sending(addr, path, &[]).await
    }

    /// Connects, writing `early` (raw frames) in the same write as the handshake request,
    /// before any answer: the server reads them along with the request.
    pub async fn connect_sending(addr: SocketAddr, path: &str, early: &[u8]) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut request = request.into_bytes();
        request.extend_from_slice(early);
        tcp.write_all(&request).await.expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = within(tcp.read(&mut byte)).await.expect("read handshake");
            assert_eq!(read, 1, "connection closed during handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "handshake failed: {head}");
        RawClient { tcp }
    }

    /// Writes one masked frame with `opcode` (0x1 text, 0x2 binary...).
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.tcp.write_all(&client_frame(opcode, payload)).await.expect("write frame");
    }

    /// Reads server frames until `count` have come; returns (opcode, payload) of each.
    pub async fn read_frames(&mut self, count: usize) -> Vec<(u8, Vec<u8>)> {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let frames = parse_frames(&data);
            if frames.len() >= count {
                return frames;
            }
            let read = within(self.tcp.read(&mut buf)).await.expect("read frames");
            assert!(read > 0, "connection closed after {frames:?}");
            data.extend_from_slice(&buf[..read]);
        }
    }

    /// Reads server frames until the connection ends; returns (opcode, payload) of each.
    pub async fn read_until_eof(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match within(self.tcp.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(read) => data.extend_from_slice(&buf[..read]),
            }
        }
        parse_frames(&data)
    }
}

/// One masked client frame with `opcode` (0x1 text, 0x2 binary...).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn parse_frames(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while data.len() >= 2 {
        let opcode = data[0] & 0x0f;
        let (len, header) = match data[1] & 0x7f {
            126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
            127 if data.len() >= 10 => (u64::from_be_bytes(data[2..10].try_into().unwrap()) as usize, 10),
            len @ 0..=125 => (len as usize, 2),
            _ => break,
        };
        if data.len() < header + len {
            break;
        }
        frames.push((opcode, data[header..header + len].to_vec()));
        data = &data[header + len..];
    }
    frames
}

/// The close code in a close frame's payload.
pub fn close_payload_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Which channel-layer backend a shared test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Memory,
    Redis,
}

/// The Redis URL for tests: `REDIS_URL`. Without it the Redis variants print that they are
/// skipped and pass, except under `CI=true`, where `.ci/run` provides Redis and they must run.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "CI=true but REDIS_URL is not set (.ci/run sets it)");
            eprintln!("SKIPPED {test}: REDIS_URL is not set (e.g. REDIS_URL=redis://127.0.0.1:6379)");
            None
        }
    }
}

/// A fresh layer of `backend` with `config`; Redis layers get a key prefix of their own, so
/// tests running at once do not see each other. `None`: Redis is not configured (skipped).
pub async fn make_layer(
    backend: Backend,
    config: channels::layers::LayerConfig,
    test: &str,
) -> Option<channels::layers::Layer> {
    use channels::layers::{InMemoryChannelLayer, RedisChannelLayer, RedisLayerConfig};
    match backend {
        Backend::Memory => Some(InMemoryChannelLayer::with_config(config).into_layer()),
        Backend::Redis => {
            let url = redis_url(test)?;
            let prefix = format!("test-{}-{}", test.replace("::", "-"), std::process::id());
            let config = RedisLayerConfig { prefix, layer: config, ..RedisLayerConfig::new(url) };
            let layer = RedisChannelLayer::connect_with(config).await.expect("connect to REDIS_URL");
            let layer = layer.into_layer();
            layer.flush().await.expect("flush the test prefix");
            Some(layer)
        }
    }
}

/// One `#[tokio::test]` per case and backend: modules `$memory` and `$redis` each get a test
/// per case calling `$cases::$case(layer)` with a fresh layer of that backend made from the
/// case's config (Redis ones, named `$prefix` + the case, skip without `REDIS_URL`).
#[macro_export]
macro_rules! backend_tests {
    ($memory:ident, $redis:ident, $cases:ident, $prefix:literal: $($case:ident: $config:expr;)*) => {
        mod $memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let layer = support::make_layer(support::Backend::Memory, $config, stringify!($case)).await;
                    $cases::$case(layer.unwrap()).await;
                }
            )*
        }
        mod $redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let name = concat!($prefix, stringify!($case));
                    let Some(layer) = support::make_layer(support::Backend::Redis, $config, name).await else {
                        return;
                    };
                    $cases::$case(layer).await;
                }
            )*

            /// Every case again, one after the other, on a Redis Cluster of this test's own
            /// (3 masters): the keys of a group share a slot, deliveries go slot by slot.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_case_on_a_redis_cluster() {
                let test = concat!($prefix, "cluster");
                if support::redis_url(test).is_none() || !support::redis_server_available(test) {
                    return;
                }
                let cluster = support::OwnCluster::start(3, 0).await;
                $(
                    let name = concat!($prefix, "cluster-", stringify!($case));
                    $cases::$case(support::make_cluster_layer(&cluster.url(), $config, name).await).await;
                )*
            }
        }
    };
}

/// A `redis-server` of the test's own on `port`, without persistence (a replica loads its sync
/// from the socket: it would otherwise leave a `dump.rdb` in the working directory), killed when
/// dropped.
pub struct OwnRedis(pub std::process::Child);

impl OwnRedis {
    /// Starts it (`redis-server` must be on the PATH: see [`redis_server_available`]).
    pub fn start(port: u16) -> OwnRedis {
        OwnRedis::start_with(port, &[])
    }

    /// Starts it with more arguments (`--replicaof 127.0.0.1 6390`, say).
    pub fn start_with(port: u16, args: &[&str]) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-load", "swapdb"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        OwnRedis(child)
    }

    /// Starts a Redis Sentinel from the configuration file `config` (written by the test: a
    /// sentinel rewrites its file).
    pub fn sentinel(config: &std::path::Path) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .arg(config)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        OwnRedis(child)
    }

    /// Kills it and starts a fresh one (empty: no persistence) on the same port.
    pub fn restart(&mut self, port: u16) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        *self = OwnRedis::start(port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 100 ms for up to `limit`; fails the test with `what` if it never holds.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis Cluster of the test's own: `masters` masters with `replicas` replicas each, on spare
/// ports, in a directory of its own (nodes write their cluster configuration there); every
/// node killed and the directory removed when dropped.
pub struct OwnCluster {
    /// The nodes and their ports, in creation order (`redis-cli --cluster create` makes the
    /// first `masters` the masters).
    pub nodes: Vec<(u16, OwnRedis)>,
    dir: std::path::PathBuf,
}

impl OwnCluster {
    /// Starts the nodes, creates the cluster and waits until every node reports it ok.
    pub async fn start(masters: usize, replicas: usize) -> OwnCluster {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("channels-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port().await;
            let dir = dir.to_str().unwrap();
            let node = OwnRedis::start_with(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--dir",
                    dir,
                ],
            );
            nodes.push((port, node));
        }
        for (port, _) in &nodes {
            wait_until_listening(([127, 0, 0, 1], *port).into()).await;
        }
        let addresses = nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect::<Vec<_>>();
        let output = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(output.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&output.stdout));
        let cluster = OwnCluster { nodes, dir };
        eventually(Duration::from_secs(30), "the cluster's state ok on every node", || {
            cluster.nodes.iter().all(|(port, _)| {
                let info = redis_cli(*port, &["cluster", "info"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", cluster.nodes.len()))
            })
        })
        .await;
        if replicas > 0 {
            eventually(Duration::from_secs(30), "every replica in sync", || {
                cluster
                    .nodes
                    .iter()
                    .skip(masters)
                    .all(|(port, _)| redis_cli(*port, &["info", "replication"]).contains("master_link_status:up"))
            })
            .await;
        }
        cluster
    }

    /// The `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let hosts = self.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect::<Vec<_>>();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The port of the master now serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        // Asked of any live node.
        let slot: u16 = self
            .nodes
            .iter()
            .find_map(|(port, _)| redis_cli(*port, &["cluster", "keyslot", key]).trim().parse().ok())
            .expect("a live node");
        for (port, _) in &self.nodes {
            let output = redis_cli(*port, &["cluster", "nodes"]);
            for line in output.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                    Some((low, high)) => (low.parse().unwrap_or(u16::MAX)..=high.parse().unwrap_or(0)).contains(&slot),
                    None => range.parse() == Ok(slot),
                });
                if serves {
                    let address = fields[1].split('@').next().unwrap_or_default();
                    return address.rsplit(':').next().unwrap().parse().unwrap();
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let (_, node) = self.nodes.iter_mut().find(|(known, _)| *known == port).expect("a node of this cluster");
        let _ = node.0.kill();
        let _ = node.0.wait();
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spare port whose cluster bus port (+10000) is spare too.
async fn cluster_port() -> u16 {
    loop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A fresh layer on `cluster` (a `redis+cluster://` URL) with `config` and a key prefix of
/// the test's own.
pub async fn make_cluster_layer(
    cluster: &str,
    config: channels::layers::LayerConfig,
    test: &str,
) -> channels::layers::Layer {
    use channels::layers::{RedisChannelLayer, RedisLayerConfig};
    let prefix = format!("test-{}-{}", test.replace("::", "-"), std::process::id());
    let config = RedisLayerConfig { prefix, layer: config, ..RedisLayerConfig::new(cluster) };
    let layer = RedisChannelLayer::connect_with(config).await.expect("connect to the cluster").into_layer();
    layer.flush().await.expect("flush the test prefix");
    layer
}

/// Whether `redis-server` can be started; without it a test says it skipped (not under CI).
pub fn redis_server_available(test: &str) -> bool {
    if std::process::Command::new("redis-server").arg("--version").output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI=true but redis-server is not on the PATH");
    eprintln!("SKIPPED {test}: redis-server is not on the PATH");
    false
}

/// `redis-cli -p <port> <args>`'s output (for tests that administer their own Redis).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running example binary, killed when dropped.
pub struct Example(pub std::process::Child);

impl Example {
    /// Builds (if needed) and starts `target/<profile>/examples/<name>` with `args`.
    pub async fn start(name: &str, args: &[&str]) -> Example {
        Example::start_with_env(name, args, &[]).await
    }

    /// Runs the example to its end (it is expected to exit, e.g. on a bad configuration);
    /// its exit status and output.
    pub fn run_to_end(name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let binary = Example::binary(name);
        std::process::Command::new(&binary)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run the example")
    }

    /// The example's binary, built first if it is missing or older than its sources.
    fn binary(name: &str) -> std::path::PathBuf {
        // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
        let exe = std::env::current_exe().expect("current exe");
        let binary = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("examples").join(name);
        // `cargo test` builds the examples with the tests; a filtered run (`--test x`) does not,
        // so rebuild when an example source is newer than the binary (never test stale code).
        if example_is_stale(name, &binary) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let built = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--example", name])
                .status()
                .expect("run cargo");
            assert!(built.success() && binary.exists(), "could not build {}", binary.display());
        }
        binary
    }

    /// As [`start`](Self::start), with extra environment variables.
    pub async fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Example {
        let child = std::process::Command::new(Example::binary(name))
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the example");
        Example(child)
    }
}

/// True when the example's binary is missing or older than one of its source files.
fn example_is_stale(name: &str, binary: &std::path::Path) -> bool {
    fn newest(path: &std::path::Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.is_file() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path).ok()?.filter_map(|entry| newest(&entry.ok()?.path())).max()
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("examples");
    // The example's own sources, and the crates it is built from.
    let source = [
        examples.join(format!("{name}.rs")),
        examples.join(name),
        root.join("channels/src"),
        root.join("channels-macros/src"),
    ]
    .iter()
    .filter_map(|p| newest(p))
    .max();
    let built = std::fs::metadata(binary).and_then(|meta| meta.modified()).ok();
    match (built, source) {
        (Some(built), Some(source)) => source > built,
        _ => true,
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A memory figure of process `pid` in bytes, from `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A loopback address with a free port.
pub async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_until_listening(addr: SocketAddr) {
    within(async {
        loop {
            // A loopback connect to a port nobody listens on can connect to itself (TCP
            // simultaneous open, when the kernel picks that very port as the source): that is
            // not the server.
            match TcpStream::connect(addr).await {
                Ok(stream) if stream.local_addr().ok() != Some(addr) => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

/// A WebSocket client connected to `path` on `addr`.
pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://{addr}{path}").into_client_request().unwrap();
    within(tokio_tungstenite::client_async(request, tcp)).await.unwrap().0
}

mod member;
#[allow(unused_imports)]
pub use member::Member;

/// `cookie` with its last character changed: a tampered cookie. (Always another character:
/// appending a fixed one in place of the last kept the cookie unchanged whenever it already ended
/// with it, one run in 36 for a Django session key, and the test then failed.)
pub fn tampered(cookie: &str) -> String {
    let mut chars: Vec<char> = cookie.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == 'x' { 'y' } else { 'x' };
    }
    chars.into_iter().collect()
}
