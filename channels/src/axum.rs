//! With axum (the `axum` feature): a channels application inside an axum `Router`, and an axum
//! `Router` (or any tower `Service`) inside `routing!`.
//!
//! # Channels inside axum: one listener, one process
//!
//! [`ChannelsService`] serves an application as a tower `Service`, WebSocket upgrades included,
//! with everything the standalone [`Server`](crate::Server) does per connection (the checks of
//! [`ServerConfig`], the auth stack, layers, metrics, spans) and its shutdown: the WebSockets
//! drain in batches with 1012.
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use channels::axum::ChannelsService;
//! # fn app() -> channels::routing::ProtocolTypeRouter { channels::routing::ProtocolTypeRouter::new() }
//!
//! # async fn run() -> std::io::Result<()> {
//! let channels = ChannelsService::new(app()); // routes written as usual: "ws/echo/" => Echo
//! let router = Router::new()
//!     .route("/api/health/", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
//!     .nest_service("/ws", channels.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! // ConnectInfo gives the consumers `scope.client`.
//! let make_service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, make_service).with_graceful_shutdown(channels.shutdown_signal()).await?;
//! channels.drain().await; // close the WebSockets in batches (1012) and wait, bounded
//! # Ok(()) }
//! ```
//!
//! Consumers see the request's whole path (axum's `OriginalUri`), so the same `routing!` table
//! serves standalone or nested. `scope.client` comes from axum's `ConnectInfo<SocketAddr>`
//! when the router is served with it; `scope.server` is unknown (`None`).
//!
//! # axum inside channels
//!
//! [`TowerApp`] runs a tower `Service` (an axum `Router`) as an HTTP application, so it can sit
//! behind this crate's middleware: `"api/<path:rest>" => { TowerApp::new(router) }` in a
//! `routing!` table. The request it gets carries the connection's [`Scope`] as an extension.
//!
//! # Logging in on the axum side
//!
//! Put the axum routes that log users in behind the auth stack (`AuthMiddlewareStack([ ...
//! TowerApp ...])`), take the `Scope` extension in the handler, and call
//! [`login`](crate::middleware::login) with it: the stack sets the session cookie on the axum
//! response, and from then on the user is `self.scope.user` in every consumer behind the stack.
//! One session store and one set of keys, no second session system to keep in step.
//!
//! ```
//! use axum::Extension;
//! use channels::scope::Scope;
//! # #[derive(Clone)] struct Account(String);
//! # impl channels::middleware::AuthUser for Account {
//! #     fn id(&self) -> String { self.0.clone() }
//! #     fn session_auth_hash(&self) -> String { String::new() }
//! # }
//!
//! async fn log_in(Extension(mut scope): Extension<Scope>, username: String) -> &'static str {
//!     // ... check the password ...
//!     match channels::middleware::login(&mut scope, Account(username)).await {
//!         Ok(()) => "logged in",
//!         Err(_) => "could not save the session",
//!     }
//! }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tokio_util::sync::CancellationToken;

use crate::application::{Application, BoxError, BoxFuture};
use crate::connection::{Inbox, Outbox};
use crate::error::{AppError, ConsumerError};
use crate::event::{Inbound, Outbound, ResponseStart};
use crate::scope::{Protocol, Scope};
use crate::server::{RequestBody, ServerConfig, ServerState, ShutdownHandle};

/// An application as a tower `Service` for axum (see the [module docs](self)). Cheap to clone:
/// clones share the connections, the configuration and the shutdown.
#[derive(Clone)]
pub struct ChannelsService {
    state: Arc<ServerState>,
}

impl std::fmt::Debug for ChannelsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelsService").field("config", &self.state.config).finish_non_exhaustive()
    }
}

impl ChannelsService {
    /// Serves `app` with the default [`ServerConfig`].
    pub fn new(app: impl Application) -> Self {
        ChannelsService::with_config(app, ServerConfig::default())
    }

    /// Serves `app` with `config` (its limits, timeouts, allowed hosts, drain).
    pub fn with_config(app: impl Application, config: ServerConfig) -> Self {
        let state = ServerState::new(Arc::new(app), config, CancellationToken::new());
        ChannelsService { state: Arc::new(state) }
    }

    /// A handle that starts the shutdown (as [`Server::shutdown_handle`](crate::Server::shutdown_handle)).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::from_token(self.state.shutdown.clone())
    }

    /// Resolves once a shutdown is asked for, by ctrl-c, SIGTERM or a
    /// [`shutdown_handle`](Self::shutdown_handle), and then
    /// [`shutdown_delay`](ServerConfig::shutdown_delay) later (the readiness path answers 503
    /// meanwhile). For axum's `with_graceful_shutdown`; HTTP applications of this service are
    /// then cancelled, WebSockets wait for [`drain`](Self::drain).
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let state = self.state.clone();
        async move {
            match crate::server::shutdown_signal() {
                Ok(signal) => {
                    tokio::select! {
                        () = signal => tracing::info!("shutdown signal received"),
                        () = state.shutdown.cancelled() => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "could not listen for signals; shutdown only by handle");
                    state.shutdown.cancelled().await;
                }
            }
            state.shutdown.cancel();
            if !state.config.shutdown_delay.is_zero() {
                tokio::time::sleep(state.config.shutdown_delay).await;
            }
            state.closing.cancel();
        }
    }

    /// Closes the WebSockets in batches (1012) and waits for every connection's task, at most
    /// [`shutdown_timeout`](ServerConfig::shutdown_timeout): call it once axum's `serve` has
    /// returned. Starts the shutdown itself if nothing else did.
    pub async fn drain(&self) {
        self.state.finish().await;
    }
}

impl<B> tower_service::Service<Request<B>> for ChannelsService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let state = self.state.clone();
        let (mut parts, body) = request.into_parts();
        if let Some(original) = parts.extensions.get::<axum::extract::OriginalUri>() {
            parts.uri = original.0.clone();
        }
        let remote = parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|info| info.0);
        let body = RequestBody::Boxed(Box::pin(ErrInto(Box::pin(body))));
        let request = Request::from_parts(parts, body);
        Box::pin(async move {
            let response = crate::server::route_request(state, request, remote, None).await;
            Ok(response.map(axum::body::Body::new))
        })
    }
}

/// A body whose errors become [`BoxError`]s (the body is boxed first, so it is `Unpin`).
struct ErrInto<B>(Pin<Box<B>>);

impl<B> http_body::Body for ErrInto<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.get_mut().0.as_mut().poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// A tower `Service` (an axum `Router`) as an HTTP application (see the [module docs](self)).
///
/// The request it builds has the scope's method, whole path and query, headers and body, and
/// the [`Scope`] itself as an extension (with axum's `ConnectInfo<SocketAddr>` when the
/// client's address is known). The response is streamed back as it comes.
#[derive(Clone, Debug)]
pub struct TowerApp<S> {
    service: S,
}

impl<S> TowerApp<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        TowerApp { service }
    }
}

impl<S, RB> Application for TowerApp<S>
where
    S: tower_service::Service<Request<axum::body::Body>, Response = Response<RB>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let service = self.service.clone();
        Box::pin(serve_tower(service, scope, inbox, outbox))
    }
}

async fn serve_tower<S, RB>(mut service: S, scope: Scope, mut inbox: Inbox, outbox: Outbox) -> Result<(), AppError>
where
    S: tower_service::Service<Request<axum::body::Body>, Response = Response<RB>, Error = Infallible>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    if scope.protocol != Protocol::Http {
        return Err(AppError::Refused("a tower service serves HTTP only".to_owned()));
    }
    let target = request_target(&scope);
    // The whole body first (the server bounds it by `max_request_body`).
    let mut body = Vec::new();
    loop {
        match inbox.recv().await {
            Some(Inbound::HttpRequest(chunk)) => {
                body.extend_from_slice(&chunk.body);
                if !chunk.more_body {
                    break;
                }
            }
            // The client left before the body was complete.
            Some(Inbound::HttpDisconnect) | None => return Ok(()),
            Some(_) => {}
        }
    }
    let mut request = Request::new(axum::body::Body::from(body));
    *request.method_mut() = scope.method.clone();
    *request.uri_mut() = target.parse().map_err(|err| AppError::Other(Box::new(err)))?;
    *request.version_mut() = scope.http_version;
    *request.headers_mut() = scope.headers.clone();
    if let Some(client) = scope.client {
        request.extensions_mut().insert(axum::extract::ConnectInfo(client));
    }
    request.extensions_mut().insert(scope);
    std::future::poll_fn(|cx| service.poll_ready(cx)).await.map_err(|never| match never {})?;
    let response = service.call(request).await.map_err(|never: Infallible| match never {})?;
    let (parts, body) = response.into_parts();
    let start = ResponseStart { status: parts.status, headers: parts.headers };
    if !sent(outbox.send(Outbound::HttpResponseStart(Box::new(start))).await)? {
        return Ok(());
    }
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
            .await
            .map(|frame| frame.map(|frame| frame.into_data().ok()).map_err(Into::<BoxError>::into));
        match frame {
            Some(Ok(Some(data))) => {
                let event = Outbound::HttpResponseBody { body: data, more_body: true };
                if !sent(outbox.send(event).await)? {
                    return Ok(());
                }
            }
            // Trailers: not carried.
            Some(Ok(None)) => {}
            Some(Err(err)) => return Err(AppError::Other(err)),
            None => break,
        }
    }
    sent(outbox.send(Outbound::HttpResponseBody { body: Bytes::new(), more_body: false }).await)?;
    Ok(())
}

/// The request target as the client sent it: the still percent-encoded path (not the decoded
/// `scope.path`, which may hold `?`, `#` or spaces) and the query.
fn request_target(scope: &Scope) -> String {
    if scope.query_string.is_empty() {
        scope.raw_path.clone()
    } else {
        format!("{}?{}", scope.raw_path, scope.query_string)
    }
}

/// Whether a send reached the client: a client that left is not the application failing.
fn sent(result: Result<(), crate::error::SendError>) -> Result<bool, AppError> {
    match result {
        Ok(()) => Ok(true),
        Err(crate::error::SendError::Closed) => Ok(false),
        Err(err) => Err(AppError::Consumer(ConsumerError::from(err))),
    }
}
