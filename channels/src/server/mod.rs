//! The server: HTTP/1.1 (hyper) with WebSocket upgrade (tokio-tungstenite).
//!
//! ```no_run
//! # async fn run(app: impl channels::Application) -> std::io::Result<()> {
//! // Serve on 127.0.0.1:8000 until ctrl-c or SIGTERM, then shut down gracefully.
//! channels::serve(app, "127.0.0.1:8000").await
//! # }
//! ```
//!
//! Use [`Server`] for the knobs ([`ServerConfig`]) and a [`ShutdownHandle`].
//!
//! # How a connection flows
//! Each TCP connection gets a task running hyper. Under tokio's multi-thread runtime
//! (`#[tokio::main]`) these tasks run on the server's own one-thread runtimes, one thread
//! (`channels-io-N`) per runtime worker and core at most, so that under load every connection
//! is served in turn (tokio's multi-thread scheduler starves some; see `workers.rs`). Consumers
//! therefore run there: `tokio::spawn` works as usual, `block_in_place` does not (use
//! `spawn_blocking`). A plain request becomes an HTTP scope and
//! the application runs in its own task; its `HttpResponseStart` becomes the response head and
//! its body chunks stream out. A WebSocket upgrade request becomes a WebSocket scope; the
//! handshake waits for the application: accept answers `101` (with the chosen subprotocol and
//! any extra headers), a close answers `403`, no decision within
//! [`connect_timeout`](ServerConfig::connect_timeout) answers `403`, no route answers `404`.
//! After the `101`, the connection's one task runs the application, which reads frames itself,
//! and beside it the writer, which drains the bounded outgoing queue (batching frames into few
//! writes) and sends keepalive pings.
//!
//! # Slow clients
//! Each connection's outgoing queue holds [`write_queue`](ServerConfig::write_queue) messages
//! and [`write_queue_bytes`](ServerConfig::write_queue_bytes) of payload. When it is full, the consumer's send waits (backpressure on that consumer alone). If the
//! client reads nothing for [`write_timeout`](ServerConfig::write_timeout) while the queue is
//! full, the connection is closed (close code 1008 when it can still be written), the send
//! returns [`SendError::SlowClient`](crate::SendError::SlowClient) and `disconnect` runs.
//!
//! # Shutdown
//! On ctrl-c/SIGTERM (with [`serve`]) or [`ShutdownHandle::shutdown`]:
//! 1. the [`readiness_path`](ServerConfig::readiness_path), if set, answers 503, and the server
//!    goes on serving for [`shutdown_delay`](ServerConfig::shutdown_delay) (default zero) so a
//!    load balancer can take it out of rotation;
//! 2. the listener stops accepting, idle HTTP connections close, requests in flight finish;
//! 3. WebSockets are closed with code 1012 ("service restart": clients should reconnect)
//!    [`drain_batch`](ServerConfig::drain_batch) at a time every
//!    [`drain_interval`](ServerConfig::drain_interval), so their clients come back spread over
//!    time rather than in one storm; each consumer's `disconnect` runs. Those still open when
//!    half the [`shutdown_timeout`](ServerConfig::shutdown_timeout) is spent are closed
//!    together;
//! 4. the server waits for connections to finish, at most `shutdown_timeout` after step 2.
//!
//! ```
//! # use std::time::Duration;
//! # let app = channels::routing::ProtocolTypeRouter::new();
//! let server = channels::Server::new(app).shutdown_on_signals().configure(|config| {
//!     config.readiness_path = Some("/ready/".into()); // for the load balancer's health check
//!     config.shutdown_delay = Duration::from_secs(5);  // its check interval, or a bit more
//!     config.drain_batch = 500;                       // WebSockets closed per batch...
//!     config.drain_interval = Duration::from_millis(200); // ...every 200 ms
//! });
//! ```

mod body;
mod chunked;
mod config;
mod drain;
pub(crate) mod http;
pub(crate) mod keepalive;
mod scope;
#[cfg(feature = "tls")]
mod tls;
pub(crate) mod websocket;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::application::Application;
pub(crate) use crate::application::run_app;
use crate::error::AppError;
use crate::scope::Protocol;

pub(crate) use self::body::{Body, RequestBody};
pub use self::config::{RateLimit, ServerConfig};
pub(crate) use self::scope::build_scope;
#[cfg(feature = "tls")]
pub use self::tls::{TlsConfig, TlsError};
use self::workers::Workers;

/// Marks a request that arrived over TLS (its scope's scheme is then `https`/`wss`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls;

/// Triggers a graceful shutdown of the server it came from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    pub(crate) fn from_token(token: CancellationToken) -> Self {
        ShutdownHandle { token }
    }

    /// Starts the graceful shutdown (see the [module docs](self)).
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// True once shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }
}

pub(crate) struct ServerState {
    pub(crate) app: Arc<dyn Application>,
    pub(crate) config: ServerConfig,
    /// Cancelled when a shutdown is asked for (the readiness path turns 503).
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the server stops accepting, [`shutdown_delay`](ServerConfig::shutdown_delay)
    /// later: idle HTTP connections close, HTTP applications are cancelled.
    pub(crate) closing: CancellationToken,
    /// The WebSockets, drained in batches after `closing`.
    pub(crate) connections: Arc<drain::Connections>,
    pub(crate) tracker: TaskTracker,
    pub(crate) metrics: crate::metrics::ServerMetrics,
}

impl ServerState {
    /// Steps 2 to 4 of a shutdown (see the module docs), once no connection is accepted.
    pub(crate) async fn finish(&self) {
        self.shutdown.cancel();
        self.closing.cancel();
        self.tracker.close();
        let config = &self.config;
        let timeout = config.shutdown_timeout;
        let started = tokio::time::Instant::now();
        self.connections.drain(config.drain_batch, config.drain_interval, started + timeout / 2).await;
        if tokio::time::timeout_at(started + timeout, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = self.tracker.len(),
                ?timeout,
                "shutdown timed out; connections still open end with the runtime (on tokio's multi-thread runtime: now, with the server's connection workers)"
            );
        } else {
            tracing::info!("shutdown complete");
        }
    }

    pub(crate) fn new(app: Arc<dyn Application>, config: ServerConfig, shutdown: CancellationToken) -> Self {
        let sweep = keepalive::Sweep::new(config.ping_interval, config.ping_timeout);
        ServerState {
            app,
            config,
            shutdown,
            closing: CancellationToken::new(),
            connections: Arc::new(drain::Connections::new(sweep)),
            tracker: TaskTracker::new(),
            metrics: crate::metrics::ServerMetrics::new(),
        }
    }
}

/// A server builder: an application, a [`ServerConfig`], and how it stops.
pub struct Server {
    app: Arc<dyn Application>,
    config: ServerConfig,
    shutdown: CancellationToken,
    signals: bool,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `app` with the default configuration.
    pub fn new(app: impl Application) -> Self {
        Server {
            app: Arc::new(app),
            config: ServerConfig::default(),
            shutdown: CancellationToken::new(),
            signals: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place: `server.configure(|c| c.ping_interval = None)`.
    pub fn configure(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Terminates TLS itself (the `tls` feature): every connection is HTTPS/WSS, and scopes
    /// say `https`/`wss`. The handshake counts against
    /// [`handshake_timeout`](ServerConfig::handshake_timeout).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Also shut down gracefully on ctrl-c and (on Unix) SIGTERM; with [`tls`](Self::tls),
    /// reload the certificate on SIGHUP.
    pub fn shutdown_on_signals(mut self) -> Self {
        self.signals = true;
        self
    }

    /// A handle that shuts this server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { token: self.shutdown.clone() }
    }

    /// Binds `addr` (port 0 picks a free port; see [`Listening::local_addr`]).
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Listening> {
        let listener = TcpListener::bind(addr).await?;
        self.listen(listener)
    }

    /// Serves on an already bound listener.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn listen(self, listener: TcpListener) -> io::Result<Listening> {
        let local_addr = listener.local_addr()?;
        let state = Arc::new(ServerState::new(self.app, self.config, self.shutdown));
        Ok(Listening {
            listener,
            local_addr,
            state,
            signals: self.signals,
            #[cfg(feature = "tls")]
            tls: self.tls,
        })
    }
}

/// A bound server, ready to [`run`](Listening::run).
pub struct Listening {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    signals: bool,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Listening {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that shuts this server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { token: self.state.shutdown.clone() }
    }

    /// Serves until shut down, then waits (bounded) for connections to finish.
    ///
    /// # Errors
    /// Only if installing the signal handlers fails; accept errors are logged and retried.
    pub async fn run(self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        let Listening { listener, local_addr, state, signals, tls } = self;
        #[cfg(not(feature = "tls"))]
        let Listening { listener, local_addr, state, signals } = self;
        #[cfg(all(feature = "tls", unix))]
        if let (true, Some(tls)) = (signals, &tls) {
            reload_on_sighup(tls.clone(), state.shutdown.clone())?;
        }
        if signals {
            let token = state.shutdown.clone();
            let signal = shutdown_signal()?;
            tokio::spawn(async move {
                tokio::select! {
                    () = signal => {
                        tracing::info!("shutdown signal received");
                        token.cancel();
                    }
                    () = token.cancelled() => {}
                }
            });
        }
        warn_if_unheard();
        // On tokio's multi-thread runtime, connections are served on one-thread runtimes of
        // the server's own: see `workers` for why.
        let workers = Workers::for_current_runtime();
        tracing::info!(addr = %local_addr, workers = workers.as_ref().map_or(0, Workers::len), "listening");
        let stop_accepting = async {
            state.shutdown.cancelled().await;
            if !state.config.shutdown_delay.is_zero() {
                tracing::info!(delay = ?state.config.shutdown_delay, "shutdown: still serving, readiness now 503");
                tokio::time::sleep(state.config.shutdown_delay).await;
            }
        };
        tokio::pin!(stop_accepting);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stop_accepting => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, remote)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(error = %err, "set_nodelay failed");
                    }
                    #[cfg(feature = "tls")]
                    let secure = tls.as_ref().map(TlsConfig::acceptor);
                    #[cfg(not(feature = "tls"))]
                    let secure = ();
                    match &workers {
                        Some(workers) => hand_over(workers, &state, stream, remote, local_addr, secure),
                        None => spawn_connection(state.clone(), stream, remote, local_addr, secure),
                    }
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        state.finish().await;
        // The workers' threads end now, with what is left on them.
        drop(workers);
        Ok(())
    }
}

/// How an accepted connection is secured: the TLS acceptor, if the server terminates TLS.
#[cfg(feature = "tls")]
type Secure = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
type Secure = ();

/// Serves an accepted connection in a task of its own, on the current runtime.
fn spawn_connection(state: Arc<ServerState>, stream: TcpStream, remote: SocketAddr, local: SocketAddr, secure: Secure) {
    #[cfg(feature = "tls")]
    if let Some(acceptor) = secure {
        state.tracker.spawn(serve_tls(state.clone(), acceptor, stream, remote, local));
        return;
    }
    #[cfg(not(feature = "tls"))]
    let () = secure;
    state.tracker.spawn(serve_connection(state.clone(), stream, remote, local, false));
}

/// Hands an accepted connection to a worker, which registers its socket with its own reactor
/// and serves it there (in place when the worker is gone).
fn hand_over(
    workers: &Workers,
    state: &Arc<ServerState>,
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    secure: Secure,
) {
    // Deregistered from this runtime's reactor (and still non-blocking).
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(%remote, error = %err, "could not hand a connection to a worker");
            return;
        }
    };
    let state = state.clone();
    // Tracked from now on: a shutdown waits for the connection even while it is still queued
    // for its worker.
    let tracked = state.tracker.token();
    let handed = workers.run(Box::new(move || {
        match TcpStream::from_std(stream) {
            Ok(stream) => spawn_connection(state, stream, remote, local, secure),
            Err(err) => tracing::warn!(%remote, error = %err, "could not register a connection with its worker"),
        }
        drop(tracked);
    }));
    if let Err(job) = handed {
        job();
    }
}

/// Serves `app` on `addr` with the default configuration until ctrl-c or SIGTERM, then shuts
/// down gracefully.
///
/// # Errors
/// When binding fails.
pub async fn serve(app: impl Application, addr: impl ToSocketAddrs) -> io::Result<()> {
    Server::new(app).shutdown_on_signals().bind(addr).await?.run().await
}

pub(crate) fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The TLS handshake (bounded by `handshake_timeout`), then the connection as any other.
#[cfg(feature = "tls")]
async fn serve_tls(
    state: Arc<ServerState>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let handshake = tokio::time::timeout(state.config.handshake_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        accepted = handshake => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%remote, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
        () = state.closing.cancelled() => return,
    };
    serve_connection(state, stream, remote, local, true).await;
}

/// Reloads `tls` on every SIGHUP until the server shuts down.
#[cfg(all(feature = "tls", unix))]
fn reload_on_sighup(tls: TlsConfig, shutdown: CancellationToken) -> io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                () = shutdown.cancelled() => return,
            }
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(err) => tracing::error!(%err, "SIGHUP: TLS certificate not reloaded; the previous one stays"),
            }
        }
    });
    Ok(())
}

async fn serve_connection<I>(state: Arc<ServerState>, io: I, remote: SocketAddr, local: SocketAddr, tls: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _open = crate::metrics::Open::new("http");
    let service_state = state.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let state = service_state.clone();
        let mut request = request.map(RequestBody::Hyper);
        if tls {
            request.extensions_mut().insert(OverTls);
        }
        async move { Ok::<_, Infallible>(route_request(state, request, Some(remote), Some(local)).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(state.config.max_header_size.max(8192));
    let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = state.closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%remote, error = %err, "HTTP connection ended with an error");
    }
}

pub(crate) async fn route_request(
    state: Arc<ServerState>,
    request: Request<RequestBody>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Response<Body> {
    // Before the Host check: load balancers' probes name the instance by its address.
    if state.config.readiness_path.as_deref() == Some(request.uri().path()) {
        let response = readiness(&state, request.method());
        crate::metrics::http_response(response.status());
        return response;
    }
    let upgrade = websocket::is_upgrade_request(&request);
    if let Err(refusal) = check_request(&state.config, &request) {
        if !upgrade {
            crate::metrics::http_response(refusal.status());
        }
        return *refusal;
    }
    if upgrade {
        websocket::handshake(state, request, remote, local).await
    } else {
        let response = http::handle(state, request, remote, local).await;
        crate::metrics::http_response(response.status());
        response
    }
}

/// What the server refuses before any application sees a request (as Django and daphne do).
fn check_request<B>(config: &ServerConfig, request: &Request<B>) -> Result<(), Box<Response<Body>>> {
    use ::http::StatusCode;
    // hyper refuses a head larger than its read buffer only when the head arrives in pieces: a
    // head that comes in one read is parsed whatever its size. Measured here, the limit holds
    // however the client sends it.
    let uri = request.uri();
    let head = request.method().as_str().len()
        + uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri.authority().map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(1, |target| target.as_str().len())
        + 12
        + request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    if head > config.max_header_size {
        return Err(Box::new(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header fields too large")));
    }
    if !request.uri().path_and_query().is_none_or(|target| target.as_str().is_ascii()) {
        return Err(Box::new(refuse(StatusCode::BAD_REQUEST, "non-ASCII bytes in the request target")));
    }
    let mut hosts = request.headers().get_all(::http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host,
        (None, _) => return Err(Box::new(refuse(StatusCode::BAD_REQUEST, "missing Host header"))),
        (Some(_), Some(_)) => return Err(Box::new(refuse(StatusCode::BAD_REQUEST, "more than one Host header"))),
    };
    let host = host.to_str().unwrap_or("");
    if !crate::security::host_is_allowed(host, &config.allowed_hosts) {
        if DISALLOWED_HOST_LOG.allow() {
            tracing::warn!(
                host,
                "invalid Host header: add it to ServerConfig::allowed_hosts (Django's ALLOWED_HOSTS) if it is yours"
            );
        }
        return Err(Box::new(refuse(StatusCode::BAD_REQUEST, "invalid Host header")));
    }
    Ok(())
}

/// The answer of [`ServerConfig::readiness_path`].
fn readiness(state: &ServerState, method: &::http::Method) -> Response<Body> {
    use ::http::{Method, StatusCode};
    if method != Method::GET && method != Method::HEAD {
        let mut response = body::plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response.headers_mut().insert(::http::header::ALLOW, ::http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = if state.shutdown.is_cancelled() {
        body::plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        body::plain(StatusCode::OK, "ok")
    };
    response.headers_mut().insert(::http::header::CACHE_CONTROL, ::http::HeaderValue::from_static("no-store"));
    response
}

/// A refused request: a plain status page, and the connection closes after it.
pub(crate) fn refuse(status: ::http::StatusCode, reason: &'static str) -> Response<Body> {
    tracing::debug!(%status, reason, "request refused");
    let mut response = body::plain(status, reason);
    response.headers_mut().insert(::http::header::CONNECTION, ::http::HeaderValue::from_static("close"));
    response
}

/// Disallowed hosts come from clients (scanners send thousands): a few warnings a minute.
static DISALLOWED_HOST_LOG: crate::ratelog::LogLimit = crate::ratelog::LogLimit::new("invalid Host header");

/// What every connection starts with, HTTP or WebSocket: its scope, its state and the two ends
/// of its outgoing queue (`queue` events deep, `write_queue_bytes` of payload).
pub(crate) struct Opening {
    pub(crate) scope: crate::scope::Scope,
    /// The connection's span (see [`connection_span`]): its task runs in it.
    pub(crate) span: tracing::Span,
    pub(crate) conn: Arc<crate::connection::ConnState>,
    pub(crate) outbox: crate::connection::Outbox,
    pub(crate) events: crate::connection::Events,
}

impl Opening {
    pub(crate) fn new(
        state: &ServerState,
        protocol: Protocol,
        parts: ::http::request::Parts,
        (remote, local): (Option<SocketAddr>, Option<SocketAddr>),
        queue: usize,
    ) -> Opening {
        let config = &state.config;
        // A WebSocket ends when the drain gets to it, an HTTP request as soon as the server
        // stops accepting.
        let token = match protocol {
            Protocol::Websocket => None,
            _ => Some(state.closing.child_token()),
        };
        // The close reason a WebSocket falls back to is never "server shutting down": the drain
        // gives its own (1012), and one that ends by itself meanwhile ends normally.
        static NEVER: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
        let fallback = match protocol {
            Protocol::Websocket => NEVER.get_or_init(CancellationToken::new).clone(),
            _ => state.closing.clone(),
        };
        let scope = build_scope(protocol, parts, remote, local, config);
        let conn = Arc::new(crate::connection::ConnState::new(
            token,
            &fallback,
            config.write_timeout,
            queue,
            config.write_queue_bytes,
        ));
        let (outbox, events) = crate::connection::Outbox::for_connection(conn.clone());
        Opening { span: connection_span(&scope, config.connection_span), scope, conn, outbox, events }
    }
}

/// The span every log line of a connection's task is in, at `level`
/// ([`ServerConfig::connection_span`]): `conn` (a number unique in this process), `protocol`,
/// `path`, `client`, and `user` (the user's id, recorded by the auth middleware once it is
/// known). Consumer events get `event` spans inside it at DEBUG.
fn connection_span(scope: &crate::scope::Scope, level: tracing::Level) -> tracing::Span {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Level;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // A span's level is part of its static callsite: one callsite per level.
    macro_rules! span_at {
        ($level:expr) => {{
            if !tracing::level_enabled!($level) {
                return tracing::Span::none();
            }
            let protocol = match &scope.protocol {
                Protocol::Http => "http",
                Protocol::Websocket => "websocket",
                Protocol::Custom(_) => "custom",
            };
            tracing::span!(
                $level,
                "connection",
                conn = NEXT.fetch_add(1, Ordering::Relaxed),
                protocol = %protocol,
                path = %scope.path,
                client = tracing::field::display(scope.client.map_or_else(|| "-".to_owned(), |client| client.to_string())),
                user = tracing::field::Empty,
            )
        }};
    }
    match level {
        Level::ERROR => span_at!(Level::ERROR),
        Level::WARN => span_at!(Level::WARN),
        Level::INFO => span_at!(Level::INFO),
        Level::DEBUG => span_at!(Level::DEBUG),
        Level::TRACE => span_at!(Level::TRACE),
    }
}

/// Says once per process, on stderr, that nothing will be logged: every diagnostic (a refused
/// connection, a consumer's error, the cause of a 500) goes through `tracing`, and without a
/// subscriber it is dropped.
fn warn_if_unheard() {
    static SAID: std::sync::Once = std::sync::Once::new();
    let unheard = tracing::dispatcher::get_default(|dispatch| dispatch.is::<tracing::subscriber::NoSubscriber>());
    if unheard {
        SAID.call_once(|| {
            eprintln!(
                "channels: no tracing subscriber is installed, so this server's diagnostics (refused connections, \
                 consumer errors, the causes of 500s) are not printed; install one before serving, e.g. \
                 `tracing_subscriber::fmt::init()`"
            );
        });
    }
}

/// The HTTP status for an application that ended (or never started) without a response.
pub(crate) fn error_status(error: &AppError, protocol: &Protocol) -> ::http::StatusCode {
    use ::http::StatusCode;
    match error {
        AppError::NoRoute { .. } | AppError::NoProtocol { .. } => StatusCode::NOT_FOUND,
        AppError::LoginRequired(_) => StatusCode::FORBIDDEN,
        AppError::Refused(_) if *protocol == Protocol::Websocket => StatusCode::FORBIDDEN,
        AppError::Refused(_) => StatusCode::NOT_FOUND,
        AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        // The channel layer's backend (Redis) is out of reach: the groups could not be joined.
        AppError::Other(err) if matches!(err.downcast_ref(), Some(crate::layers::LayerError::Backend(backend)) if backend.is_unreachable()) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
