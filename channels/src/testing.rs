//! In-process test communicators: drive an application without sockets.
//!
//! Every wait has a timeout (1 s by default, [`with_timeout`](WebsocketCommunicator::with_timeout)
//! to change it) that fails the test with [`TestError::Timeout`] instead of hanging.
//!
//! ```
//! use channels::consumer::{ConsumerApp, ConsumerError, Websocket, WebsocketConsumer};
//! use channels::event::Message;
//! use channels::testing::WebsocketCommunicator;
//!
//! struct Echo;
//! impl WebsocketConsumer for Echo {
//!     async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
//!         ws.send(message).await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels::testing::TestError> {
//! let mut ws = WebsocketCommunicator::new(ConsumerApp::websocket(|_| Ok(Echo)), "/ws/echo/");
//! assert!(ws.connect().await?.accepted);
//! ws.send_text("hello").await?;
//! assert_eq!(ws.receive_text().await?, "hello");
//! ws.disconnect(1000).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Testing logged-in consumers
//!
//! A consumer behind the auth stack (`#[auth(stack)]`, `AuthMiddlewareStack`) reads its user
//! from the session cookie, so setting `scope_mut().user` is not enough: the stack loads the
//! user again from the (absent) session. Log the user in as Django's `force_login` does, and
//! let the communicator carry the cookie:
//!
//! ```
//! use channels::middleware::{AuthConfig, AuthUser, UserBackend};
//! use channels::prelude::*;
//! use channels::testing::{WebsocketCommunicator, force_login};
//! use channels::{auth, consumer, routing};
//!
//! #[derive(Clone)]
//! struct Account { id: u64 }
//!
//! impl AuthUser for Account {
//!     fn id(&self) -> String { self.id.to_string() }
//!     fn session_auth_hash(&self) -> String { "v1".into() }
//! }
//!
//! struct Accounts;
//!
//! impl UserBackend for Accounts {
//!     type User = Account;
//!     async fn get_user(&self, id: &str) -> Result<Option<Account>, channels::application::BoxError> {
//!         Ok(id.parse().ok().map(|id| Account { id }))
//!     }
//! }
//!
//! #[auth(stack, required)]
//! #[consumer(websocket)]
//! struct Private;
//!
//! #[consumer]
//! impl Private {
//!     async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
//!         ws.accept().await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels::testing::TestError> {
//! let app = routing! { websocket: [ "ws/private/" => Private ] }.auth(AuthConfig::new(Accounts));
//! let alice = force_login(&app, Account { id: 7 }).await?;
//! let mut ws = WebsocketCommunicator::new(app, "/ws/private/").cookie(&alice.name, &alice.value);
//! assert!(ws.connect().await?.accepted);
//!
//! // Without the cookie: refused, and the handshake says why.
//! let app = routing! { websocket: [ "ws/private/" => Private ] }.auth(AuthConfig::new(Accounts));
//! let refused = WebsocketCommunicator::new(app, "/ws/private/").connect().await?;
//! assert_eq!((refused.accepted, refused.close_reason.as_deref()), (false, Some("login required")));
//! # Ok(())
//! # }
//! ```
//!
//! An HTTP response's cookies: [`TestResponse::cookie`]; carry one on with
//! [`HttpCommunicator::cookie`]. Over a real socket, [`LiveServer`] serves the same app.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{COOKIE, HeaderName, SEC_WEBSOCKET_PROTOCOL, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tracing::instrument::WithSubscriber;

use self::capture::{Capture, LastError};
use crate::application::{Application, Inbox, Outbox};
use crate::error::AppError;
use crate::event::{ChannelMessage, Close, Inbound, Message, Outbound, RequestChunk};
use crate::middleware::{AuthConfig, AuthUser};
use crate::routing::ProtocolTypeRouter;
use crate::scope::{Protocol, Scope};

mod capture;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// A communicator call failed; the test should fail with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// Nothing happened within the timeout.
    #[error(
        "timed out after {timeout:?} waiting for {waiting_for}{}",
        last_logged.as_deref().map(|line| format!("; the application last logged {line}")).unwrap_or_default()
    )]
    Timeout {
        /// The timeout.
        timeout: Duration,
        /// What the communicator waited for.
        waiting_for: &'static str,
        /// The last warning or error the application logged, if any: often why it went quiet
        /// (a message that did not decode, a refused send). Recorded whether or not the test
        /// installed a log subscriber.
        last_logged: Option<String>,
    },
    /// The application ended with an error (returned or panicked).
    #[error("the application failed: {0}")]
    App(AppError),
    /// The application finished and sends nothing more.
    #[error("the application finished")]
    Finished,
    /// The WebSocket was closed instead of sending a message.
    #[error("the WebSocket was closed with code {} ({:?})", .0.code, .0.reason.as_str())]
    Closed(Close),
    /// The application sent something the call did not expect.
    #[error("unexpected event: {0}")]
    Unexpected(String),
    /// JSON could not be encoded or decoded.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs an application in a task and exchanges raw events with it (asgiref's
/// `ApplicationCommunicator`). The typed communicators below build on it.
#[derive(Debug)]
pub struct ApplicationCommunicator {
    input: Option<mpsc::Sender<Inbound>>,
    output: mpsc::Receiver<Outbound>,
    peeked: VecDeque<Outbound>,
    task: Option<JoinHandle<Result<(), AppError>>>,
    finished: Option<Result<(), String>>,
    timeout: Duration,
    last_logged: LastError,
}

impl ApplicationCommunicator {
    /// Starts `app` with `scope`.
    pub fn new(app: impl Application, scope: Scope) -> Self {
        let app: Arc<dyn Application> = Arc::new(app);
        let (input, inbox) = Inbox::channel(64);
        let (outbox, output) = Outbox::channel(64);
        let (dispatch, last_logged) = Capture::around_current();
        let task = tokio::spawn(crate::application::run_app(app, scope, inbox, outbox).with_subscriber(dispatch));
        ApplicationCommunicator {
            input: Some(input),
            output,
            peeked: VecDeque::new(),
            task: Some(task),
            finished: None,
            timeout: DEFAULT_TIMEOUT,
            last_logged,
        }
    }

    /// Changes the timeout of every wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn timed_out(&self, waiting_for: &'static str) -> TestError {
        TestError::Timeout { timeout: self.timeout, waiting_for, last_logged: self.last_logged.get() }
    }

    /// Sends an event to the application.
    ///
    /// # Errors
    /// [`TestError::App`] if the application already failed, [`TestError::Finished`] if it ended.
    pub async fn send_input(&mut self, event: Inbound) -> Result<(), TestError> {
        let sent = match &self.input {
            Some(input) => input.send(event).await.is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.ended().await) }
    }

    /// The next event from the application.
    ///
    /// # Errors
    /// [`TestError::Timeout`] when nothing arrives in time; [`TestError::App`] /
    /// [`TestError::Finished`] when the application ended with nothing left to receive.
    pub async fn receive_output(&mut self) -> Result<Outbound, TestError> {
        if let Some(event) = self.peeked.pop_front() {
            return Ok(event);
        }
        match tokio::time::timeout(self.timeout, self.output.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(self.ended().await),
            Err(_) => Err(self.timed_out("an event from the application")),
        }
    }

    /// True if the application sends nothing for `timeout`. An event that does arrive is kept
    /// for the next `receive_output`.
    pub async fn receive_nothing(&mut self, timeout: Duration) -> bool {
        if !self.peeked.is_empty() {
            return false;
        }
        match tokio::time::timeout(timeout, self.output.recv()).await {
            Ok(Some(event)) => {
                self.peeked.push_back(event);
                false
            }
            Ok(None) | Err(_) => true,
        }
    }

    /// Waits for the application to finish and returns its result.
    ///
    /// # Errors
    /// [`TestError::Timeout`] if it is still running after the timeout, [`TestError::App`] if it
    /// failed.
    pub async fn wait(&mut self) -> Result<(), TestError> {
        self.input = None;
        let Some(task) = self.task.as_mut() else {
            return match &self.finished {
                Some(Err(message)) => Err(TestError::App(AppError::Other(message.clone().into()))),
                _ => Ok(()),
            };
        };
        let joined = match tokio::time::timeout(self.timeout, task).await {
            Ok(joined) => joined,
            Err(_) => {
                return Err(self.timed_out("the application to finish"));
            }
        };
        self.task = None;
        let result = match joined {
            Ok(result) => result,
            Err(err) => Err(AppError::Panicked(err.to_string())),
        };
        self.finished = Some(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        result.map_err(TestError::App)
    }

    /// Why no more events come: the application's error, or `Finished`.
    async fn ended(&mut self) -> TestError {
        match self.wait().await {
            Ok(()) => TestError::Finished,
            Err(err) => err,
        }
    }
}

impl Drop for ApplicationCommunicator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The answer to [`WebsocketCommunicator::connect`].
#[derive(Debug, Clone)]
pub struct Handshake {
    /// True if the consumer accepted.
    pub accepted: bool,
    /// The subprotocol it chose.
    pub subprotocol: Option<String>,
    /// The extra headers it accepted with.
    pub headers: HeaderMap,
    /// When refused: the close code the consumer gave (1006 if it ended without deciding).
    pub close_code: Option<u16>,
    /// When refused: the close reason given, e.g. `origin not allowed` or `login required` from
    /// this crate's middleware (empty when none was given).
    pub close_reason: Option<String>,
}

/// The scope a communicator starts from for `url`, as Channels' communicators read theirs: a
/// path (`/chat/lobby/?x=1`) or a full URL (`wss://user:pw@example.com:8443/caf%C3%A9/?x=1#top`).
/// `scope.path` is the percent-decoded path (`/café/`), `raw_path` the path as written,
/// `query_string` the query without the fragment; a URL's scheme sets `scope.scheme` and its
/// host and port the `Host` header (the user and password are dropped, as browsers do).
pub fn scope_for_url(protocol: Protocol, url: &str) -> Scope {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if !scheme.contains(['/', '?']) => (Some(scheme.to_ascii_lowercase()), Some(rest)),
        _ => (None, None),
    };
    let (authority, path_and_query) = match rest {
        Some(rest) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            (Some(&rest[..end]), &rest[end..])
        }
        None => (None, url),
    };
    let path_and_query = match path_and_query {
        "" => "/".to_owned(),
        query if query.starts_with('?') => format!("/{query}"),
        other => other.to_owned(),
    };
    let mut scope = Scope::new(protocol, &path_and_query);
    if let Some(scheme) = scheme {
        scope.scheme = match scheme.as_str() {
            "http" => "http".into(),
            "https" => "https".into(),
            "ws" => "ws".into(),
            "wss" => "wss".into(),
            _ => scheme.into(),
        };
    }
    if let Some(host) = authority.map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        && let Ok(value) = HeaderValue::from_str(host)
        && !host.is_empty()
    {
        scope.headers.insert(http::header::HOST, value);
    }
    scope
}

/// Tests a WebSocket application in-process (Channels' `WebsocketCommunicator`).
pub struct WebsocketCommunicator {
    app: Option<Arc<dyn Application>>,
    scope: Scope,
    inner: Option<ApplicationCommunicator>,
    timeout: Duration,
}

impl WebsocketCommunicator {
    /// A communicator for `app` at `path`: a path with an optional query string, or a full URL
    /// (see [`scope_for_url`]).
    pub fn new(app: impl Application, path: &str) -> Self {
        WebsocketCommunicator {
            app: Some(Arc::new(app)),
            scope: scope_for_url(Protocol::Websocket, path),
            inner: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes the timeout of every wait.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a request header.
    ///
    /// # Panics
    /// On an invalid header name or value (a bug in the test).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        add_header(&mut self.scope.headers, name, value);
        self
    }

    /// Adds a cookie to the `Cookie` header (e.g. the one [`force_login`] made).
    ///
    /// # Panics
    /// On a name or value a header cannot carry (a bug in the test).
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        add_cookie(&mut self.scope.headers, name, value);
        self
    }

    /// Offers a subprotocol (in `scope.subprotocols` and the `Sec-WebSocket-Protocol` header).
    pub fn subprotocol(mut self, subprotocol: &str) -> Self {
        self.scope.subprotocols.push(subprotocol.to_owned());
        let joined = self.scope.subprotocols.join(", ");
        self.scope.headers.remove(SEC_WEBSOCKET_PROTOCOL);
        self.header("sec-websocket-protocol", &joined)
    }

    /// The scope the application will get, to preset anything (client address, extensions...).
    /// Behind the auth stack `scope.user` is loaded from the session: use [`force_login`].
    pub fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    fn inner(&mut self) -> Result<&mut ApplicationCommunicator, TestError> {
        self.inner.as_mut().ok_or_else(|| TestError::Unexpected("call connect() first".to_owned()))
    }

    /// Starts the application and sends the connect event; answers whether it accepted.
    ///
    /// # Errors
    /// [`TestError::App`] when the application failed (no route: [`AppError::NoRoute`]),
    /// [`TestError::Timeout`] when it neither accepted nor refused in time.
    pub async fn connect(&mut self) -> Result<Handshake, TestError> {
        let app = self.app.take().ok_or_else(|| TestError::Unexpected("connect() called twice".to_owned()))?;
        let mut inner = ApplicationCommunicator::new(app, self.scope.clone());
        inner.set_timeout(self.timeout);
        self.inner = Some(inner);
        let inner = self.inner()?;
        inner.send_input(Inbound::WebsocketConnect).await?;
        let refused = |close_code, close_reason: &str| Handshake {
            accepted: false,
            subprotocol: None,
            headers: HeaderMap::new(),
            close_code: Some(close_code),
            close_reason: Some(close_reason.to_owned()),
        };
        match inner.receive_output().await {
            Ok(Outbound::WebsocketAccept(accept)) => Ok(Handshake {
                accepted: true,
                subprotocol: accept.subprotocol,
                headers: accept.headers,
                close_code: None,
                close_reason: None,
            }),
            Ok(Outbound::WebsocketClose(close)) => {
                // As the server does: the consumer hears that the connection is gone.
                let _ = inner.send_input(Inbound::WebsocketDisconnect { code: close.code }).await;
                Ok(refused(close.code, &close.reason))
            }
            Ok(other) => Err(TestError::Unexpected(format!("{other:?} before accept or close"))),
            Err(TestError::Finished) => Ok(refused(crate::event::close_code::ABNORMAL, "")),
            Err(err) => Err(err),
        }
    }

    /// Sends a text or binary message as the client.
    ///
    /// # Errors
    /// When the application already ended.
    pub async fn send_to(&mut self, message: impl Into<Message>) -> Result<(), TestError> {
        self.inner()?.send_input(Inbound::WebsocketReceive(message.into())).await
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub async fn send_text(&mut self, text: &str) -> Result<(), TestError> {
        self.send_to(text).await
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub async fn send_bytes(&mut self, bytes: impl Into<Bytes>) -> Result<(), TestError> {
        self.send_to(Message::Binary(bytes.into())).await
    }

    /// Sends `value` as a JSON text message.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to), or a JSON error.
    pub async fn send_json_to<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TestError> {
        let text = serde_json::to_string(value)?;
        self.send_to(text).await
    }

    /// Delivers a channel-layer message to the consumer (as a group send would).
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub async fn send_channel_message(&mut self, message: ChannelMessage) -> Result<(), TestError> {
        self.inner()?.send_input(Inbound::Channel(message)).await
    }

    /// The next message the application sends.
    ///
    /// # Errors
    /// [`TestError::Closed`] if it closed instead; timeouts and application errors.
    pub async fn receive_from(&mut self) -> Result<Message, TestError> {
        match self.inner()?.receive_output().await? {
            Outbound::WebsocketSend(message) => Ok(message),
            Outbound::WebsocketClose(close) => Err(TestError::Closed(close)),
            other => Err(TestError::Unexpected(format!("expected a WebSocket message, got {other:?}"))),
        }
    }

    /// The next message, which must be text.
    ///
    /// # Errors
    /// As [`receive_from`](Self::receive_from), or [`TestError::Unexpected`] for binary.
    pub async fn receive_text(&mut self) -> Result<String, TestError> {
        match self.receive_from().await? {
            Message::Text(text) => Ok(text.as_str().to_owned()),
            Message::Binary(_) => Err(TestError::Unexpected("expected a text frame, got a binary frame".to_owned())),
        }
    }

    /// The next message, decoded from JSON text.
    ///
    /// # Errors
    /// As [`receive_text`](Self::receive_text), or a JSON error.
    pub async fn receive_json_from<T: DeserializeOwned>(&mut self) -> Result<T, TestError> {
        Ok(serde_json::from_str(&self.receive_text().await?)?)
    }

    /// The next event, which must be a close; returns it.
    ///
    /// # Errors
    /// [`TestError::Unexpected`] when a message arrives instead.
    pub async fn receive_close(&mut self) -> Result<Close, TestError> {
        match self.inner()?.receive_output().await? {
            Outbound::WebsocketClose(close) => Ok(close),
            other => Err(TestError::Unexpected(format!("expected a close, got {other:?}"))),
        }
    }

    /// True if the application sends nothing for `timeout`.
    pub async fn receive_nothing(&mut self, timeout: Duration) -> bool {
        match self.inner.as_mut() {
            Some(inner) => inner.receive_nothing(timeout).await,
            None => true,
        }
    }

    /// Disconnects as the client with `code` and waits for the application to finish.
    ///
    /// # Errors
    /// The application's error, or a timeout.
    pub async fn disconnect(&mut self, code: u16) -> Result<(), TestError> {
        let inner = self.inner()?;
        match inner.send_input(Inbound::WebsocketDisconnect { code }).await {
            Ok(()) | Err(TestError::Finished) => {}
            Err(err) => return Err(err),
        }
        inner.wait().await
    }
}

/// A cookie for a communicator to carry; [`force_login`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCookie {
    /// The cookie's name (the app's session cookie name, `sessionid` by default).
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Logs `user` in without going through a login view (Django's `Client.force_login`): saves a
/// session for `user` in the store of `app`'s [`AuthConfig`]
/// and returns its cookie, for a communicator's `cookie(..)`. The consumers behind the auth
/// stack then see `user` as `scope.user`; see [Testing logged-in consumers](self#testing-logged-in-consumers).
///
/// # Errors
/// [`AppError::Misconfigured`] when `app` has no [`auth`](ProtocolTypeRouter::auth);
/// [`AppError::Other`] when the session store failed.
pub async fn force_login(app: &ProtocolTypeRouter, user: impl AuthUser) -> Result<TestCookie, TestError> {
    let config = app.extension_value::<Arc<AuthConfig>>().ok_or_else(|| {
        TestError::App(AppError::Misconfigured(
            "force_login needs the app's authentication: ProtocolTypeRouter::auth(AuthConfig::new(backend))".to_owned(),
        ))
    })?;
    let (name, value) = crate::middleware::auth::session_for(&config, user)
        .await
        .map_err(|err| TestError::App(AppError::Other(Box::new(err))))?;
    Ok(TestCookie { name, value })
}

/// A whole HTTP response, as [`HttpCommunicator::get_response`] returns it.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body chunks as sent.
    pub chunks: Vec<Bytes>,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    ///
    /// # Errors
    /// A JSON error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, TestError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The value the response sets cookie `name` to (`Set-Cookie`, percent-decoded), if it sets
    /// it; `Some("")` when it deletes it. Carry it to the next request with
    /// [`HttpCommunicator::cookie`] or [`WebsocketCommunicator::cookie`].
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| cookie::Cookie::parse_encoded(value).ok())
            .find(|cookie| cookie.name() == name)
            .map(|cookie| cookie.value().to_owned())
    }
}

/// Tests an HTTP application in-process (Channels' `HttpCommunicator`).
pub struct HttpCommunicator {
    app: Arc<dyn Application>,
    scope: Scope,
    body: Bytes,
    timeout: Duration,
}

impl HttpCommunicator {
    /// A request with `method` to `path`: a path with an optional query string, or a full URL
    /// (see [`scope_for_url`]).
    pub fn new(app: impl Application, method: Method, path: &str) -> Self {
        let mut scope = scope_for_url(Protocol::Http, path);
        scope.method = method;
        HttpCommunicator { app: Arc::new(app), scope, body: Bytes::new(), timeout: DEFAULT_TIMEOUT }
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a request header.
    ///
    /// # Panics
    /// On an invalid header name or value (a bug in the test).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        add_header(&mut self.scope.headers, name, value);
        self
    }

    /// Adds a cookie to the `Cookie` header (e.g. the one [`force_login`] made, or one a
    /// previous response set: [`TestResponse::cookie`]).
    ///
    /// # Panics
    /// On a name or value a header cannot carry (a bug in the test).
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        add_cookie(&mut self.scope.headers, name, value);
        self
    }

    /// Changes the timeout of every wait.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The scope the application will get.
    pub fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    /// Sends the request and collects the whole response.
    ///
    /// # Errors
    /// [`TestError::App`] when the application failed before finishing the response (no route:
    /// [`AppError::NoRoute`]); timeouts.
    pub async fn get_response(self) -> Result<TestResponse, TestError> {
        self.send().await?.response().await
    }

    /// Sends the request and returns at once: the response is read later from the
    /// [`PendingResponse`], so a test can run several requests side by side (a long-poll that
    /// waits for another request's message) without an `ApplicationCommunicator`.
    ///
    /// # Errors
    /// Timeouts, or the application ended before reading the request.
    pub async fn send(self) -> Result<PendingResponse, TestError> {
        let mut inner = ApplicationCommunicator::new(self.app, self.scope);
        inner.set_timeout(self.timeout);
        inner.send_input(Inbound::HttpRequest(RequestChunk { body: self.body, more_body: false })).await?;
        Ok(PendingResponse { inner })
    }
}

/// A request [`HttpCommunicator::send`] sent, whose response is still to be read.
#[derive(Debug)]
pub struct PendingResponse {
    inner: ApplicationCommunicator,
}

impl PendingResponse {
    /// Waits for the whole response.
    ///
    /// # Errors
    /// [`TestError::App`] when the application failed before finishing the response; timeouts.
    pub async fn response(mut self) -> Result<TestResponse, TestError> {
        let start = match self.inner.receive_output().await? {
            Outbound::HttpResponseStart(start) => start,
            other => return Err(TestError::Unexpected(format!("expected a response start, got {other:?}"))),
        };
        let mut chunks = Vec::new();
        let mut body = BytesMut::new();
        loop {
            match self.inner.receive_output().await? {
                Outbound::HttpResponseBody { body: chunk, more_body } => {
                    body.extend_from_slice(&chunk);
                    chunks.push(chunk);
                    if !more_body {
                        break;
                    }
                }
                other => return Err(TestError::Unexpected(format!("expected a body chunk, got {other:?}"))),
            }
        }
        // As the server does once the response is sent.
        let _ = self.inner.send_input(Inbound::HttpDisconnect).await;
        Ok(TestResponse { status: start.status, headers: start.headers, chunks, body: body.freeze() })
    }
}

/// Adds `name=value` (percent-encoded, as browsers send what `Set-Cookie` gave them) to the one
/// `Cookie` header.
fn add_cookie(headers: &mut HeaderMap, name: &str, value: &str) {
    let pair = cookie::Cookie::new(name, value).encoded().to_string();
    let cookie = match headers.get(COOKIE).and_then(|value| value.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}; {pair}"),
        _ => pair,
    };
    headers.remove(COOKIE);
    add_header(headers, COOKIE.as_str(), &cookie);
}

fn add_header(headers: &mut HeaderMap, name: &str, value: &str) {
    let name =
        HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|err| panic!("invalid header name {name:?}: {err}"));
    let value = HeaderValue::from_str(value).unwrap_or_else(|err| panic!("invalid header value {value:?}: {err}"));
    headers.append(name, value);
}

impl std::fmt::Debug for WebsocketCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebsocketCommunicator").field("path", &self.scope.path).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HttpCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCommunicator").field("path", &self.scope.path).finish_non_exhaustive()
    }
}

/// The real server on a free port of 127.0.0.1, for tests over real sockets, in one line:
/// `let server = LiveServer::start(app).await;` then `server.url("/health/")` or
/// `server.ws_url("/ws/echo/")` for any HTTP or WebSocket client, and `server.shutdown().await`
/// (dropping it stops the server too).
#[derive(Debug)]
pub struct LiveServer {
    addr: std::net::SocketAddr,
    handle: crate::server::ShutdownHandle,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl LiveServer {
    /// Serves `app` with the default [`ServerConfig`](crate::ServerConfig).
    ///
    /// # Panics
    /// When no port can be bound on 127.0.0.1 (the machine, not the test, is broken).
    pub async fn start(app: impl Application) -> LiveServer {
        LiveServer::start_with(app, crate::ServerConfig::default()).await
    }

    /// Serves `app` with `config`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_with(app: impl Application, config: crate::ServerConfig) -> LiveServer {
        let listening = match crate::Server::new(app).config(config).bind("127.0.0.1:0").await {
            Ok(listening) => listening,
            Err(err) => panic!("LiveServer could not bind 127.0.0.1:0: {err}"),
        };
        let addr = listening.local_addr();
        let handle = listening.shutdown_handle();
        LiveServer { addr, handle, task: Some(tokio::spawn(listening.run())) }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://127.0.0.1:PORT` followed by `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Shuts down gracefully (WebSockets get 1012, `disconnect` runs) and waits for the end.
    ///
    /// # Errors
    /// What the server's run returned (an I/O error), or a panic in it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.handle.shutdown();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}
