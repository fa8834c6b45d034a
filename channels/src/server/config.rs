//! [`ServerConfig`]: the server's limits, timeouts and buffer sizes, with documented defaults.

use std::time::Duration;

/// Limits, timeouts and buffer sizes of a [`Server`](crate::Server). `Default` gives the documented values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest WebSocket message (all frames of it) a client may send; a bigger one closes the
    /// connection with 1009. Default 1 MiB (Daphne's).
    pub max_message_size: usize,
    /// Largest single WebSocket frame; a bigger one closes with 1009. Default 1 MiB.
    pub max_frame_size: usize,
    /// Largest request head (request line and headers); a bigger one gets 431. Default 64 KiB.
    pub max_header_size: usize,
    /// Largest HTTP request body; a bigger one gets 413. Default 2 MiB.
    pub max_request_body: usize,
    /// Time a client has to send a whole request body, counted from the first read that has to
    /// wait for it; a body not complete by then gets 408 and the connection is closed. A body
    /// that is malformed (bad chunked encoding) or cut short gets 400 and the connection is
    /// closed; the application hears `HttpDisconnect` either way. `None` waits forever.
    /// Default 30 s (a 2 MiB body then needs about 70 KB/s).
    pub body_timeout: Option<Duration>,
    /// Time a client has to send its request head. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time the application has to accept or refuse a WebSocket before it is refused with 403.
    /// Default 5 s (Daphne's).
    pub connect_timeout: Duration,
    /// Send a ping when the client has sent nothing for this long; `None` disables pings and
    /// the idle timeout. Default 20 s (Daphne's). One sweeper per server checks its WebSockets
    /// four times per interval (at most once a second, as daphne's timeout checker walks its
    /// connections), so a ping goes out up to a quarter of the interval (1 s at most) late.
    pub ping_interval: Option<Duration>,
    /// Close the connection (code 1001) when nothing, not even a pong, arrives this long after
    /// a ping. Default 30 s (Daphne's).
    pub ping_timeout: Duration,
    /// Outgoing messages queued per connection before sends wait. Default 64.
    pub write_queue: usize,
    /// Outgoing payload bytes queued per connection before sends wait, so that a client that
    /// does not read holds at most this much (plus one write buffer) until the
    /// [`write_timeout`](Self::write_timeout) closes it. A message larger than this is still
    /// sent, once the queue is empty. Default 1 MiB.
    pub write_queue_bytes: usize,
    /// How long a send may wait on a full queue before the client counts as too slow and the
    /// connection is closed; `None` waits forever. Default 10 s.
    pub write_timeout: Option<Duration>,
    /// How long closing may take: writing the last frames and the close frame, and waiting for
    /// the client's answer to our close. Default 5 s.
    pub close_timeout: Duration,
    /// How long a shutdown waits for connections to finish, counted once the listener has
    /// stopped accepting. Default 10 s.
    pub shutdown_timeout: Duration,
    /// After a shutdown starts, how long the server goes on accepting and serving while its
    /// [`readiness_path`](Self::readiness_path) answers 503, so that a load balancer takes it
    /// out of rotation before it stops accepting. Default zero.
    pub shutdown_delay: Duration,
    /// On shutdown, WebSockets are closed (code 1012, "service restart", and each consumer's
    /// `disconnect` runs) this many at a time, every [`drain_interval`](Self::drain_interval),
    /// so that their clients reconnect spread over time instead of all in the same second.
    /// Those still open when half the [`shutdown_timeout`](Self::shutdown_timeout) has passed
    /// are closed together. Default 1,000.
    pub drain_batch: usize,
    /// The pause between two batches of [`drain_batch`](Self::drain_batch). Default 100 ms.
    pub drain_interval: Duration,
    /// A path the server itself answers, before any application, for load balancers: `200 ok`
    /// while serving, `503 draining` once a shutdown has started (GET and HEAD; other methods
    /// get 405). `None` (the default) answers nothing itself.
    pub readiness_path: Option<String>,
    /// Bytes read from the socket at once per WebSocket while data flows. The chunk is
    /// allocated only while it holds unread data: an idle connection keeps a 512-byte frame
    /// buffer, not this. Default 4 KiB (tokio-tungstenite's is 128 KiB, allocated up front).
    pub read_buffer_size: usize,
    /// Outgoing bytes buffered before they are written, within one batch. Default 64 KiB.
    pub write_buffer_size: usize,
    /// Trust `X-Forwarded-For` / `X-Forwarded-Port` / `X-Forwarded-Proto` for the client
    /// address and scheme. Only behind a proxy that sets them. Default off.
    pub proxy_headers: bool,
    /// The path the application is mounted at (ASGI `root_path`). Default empty.
    pub root_path: String,
    /// The host names this server answers for (Django's `ALLOWED_HOSTS`): a request whose
    /// `Host` header is missing, doubled, malformed or not matched gets 400 before any
    /// application sees it. `"*"` allows any valid host, `".example.com"` the domain and its
    /// subdomains, anything else exactly that name (ports are not compared). Default
    /// `[".localhost", "127.0.0.1", "[::1]"]` (Django's development default): add your public
    /// names when you deploy. See [`security::host_is_allowed`](crate::security::host_is_allowed).
    pub allowed_hosts: Vec<String>,
    /// How fast one WebSocket client may send messages; `None` (the default) for no limit.
    /// Past the rate, the server stops reading that connection until it is back under it: the
    /// client's messages wait in its own socket buffers and then its TCP window, nothing is
    /// dropped and the connection stays open, and one flooding client cannot fill its groups'
    /// channels for everybody else. Control frames wait too.
    pub inbound_rate: Option<RateLimit>,
    /// The level of the `connection` span that every line a connection's task logs is in
    /// (`conn` number, `protocol`, `path`, `client`, and `user` once the auth stack knows it).
    /// Default DEBUG, as tower-http's `TraceLayer`: a subscriber that keeps spans' fields
    /// (`tracing_subscriber::fmt` does) holds ~460 B per open connection for it, a sixteenth of
    /// an idle chat socket. Set INFO to have it under an INFO subscriber, or enable
    /// `channels::server=debug` in the subscriber's filter.
    pub connection_span: tracing::Level,
}

/// A message rate: `per_second` on average, `burst` messages at once (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per second on average.
    pub per_second: u32,
    /// Messages accepted at once after a quiet spell.
    pub burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_header_size: 64 << 10,
            max_request_body: 2 << 20,
            body_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(30),
            write_queue: 64,
            write_queue_bytes: 1 << 20,
            write_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            drain_batch: 1000,
            drain_interval: Duration::from_millis(100),
            readiness_path: None,
            read_buffer_size: 4 << 10,
            write_buffer_size: 64 << 10,
            proxy_headers: false,
            root_path: String::new(),
            allowed_hosts: [".localhost", "127.0.0.1", "[::1]"].map(str::to_owned).to_vec(),
            inbound_rate: None,
            connection_span: tracing::Level::DEBUG,
        }
    }
}
