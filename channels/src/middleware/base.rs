//! The one shape of a middleware: [`Middleware`] (prepare the scope: continue, watch the
//! response, or refuse), run around an application by one generic wrapper, [`Wrapped`].

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use crate::BoxFuture;
use crate::application::{Application, Inbox, Outbox, Router};
use crate::error::AppError;
use crate::event::{Close, Outbound, ResponseStart, close_code};
use crate::scope::{Protocol, Scope};

/// A middleware: it prepares each connection's scope before the inner application runs, and may
/// refuse the connection or see the start of its HTTP response. Channels' `BaseMiddleware`;
/// every middleware of this crate is one. Put it around an application with
/// [`wrap`](Middleware::wrap).
///
/// ```
/// use channels::middleware::{Middleware, Refusal, Step};
/// use channels::prelude::*;
///
/// /// INSECURE, for demos only: trusts a user id in the query string.
/// struct QueryAuthMiddleware;
///
/// impl Middleware for QueryAuthMiddleware {
///     type State = ();
///
///     async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
///         let id = scope.query_pairs().find(|(key, _)| key == "user_id").map(|(_, id)| id);
///         match id {
///             Some(id) => {
///                 scope.user = User::with_id(id.clone(), id);
///                 Ok(Step::Continue)
///             }
///             None => Ok(Step::Refuse(Refusal::forbidden("a user_id is needed"))),
///         }
///     }
/// }
///
/// # let inner = channels::application_fn(|_, _, _| async { Ok(()) });
/// let app = QueryAuthMiddleware.wrap(inner);
/// # let _ = app;
/// ```
///
/// A middleware around a [`URLRouter`](crate::URLRouter) is a [`Router`] too, so it can be
/// nested under a prefix; nothing to forward by hand.
#[doc(alias = "BaseMiddleware")]
pub trait Middleware: Send + Sync + Sized + 'static {
    /// What [`prepare`](Middleware::prepare) hands to
    /// [`response_start`](Middleware::response_start) through [`Step::Watch`] (`()` when the
    /// middleware never watches a response).
    type State: Send + 'static;

    /// Fills in the scope (user, session, extensions...) and decides: [`Step::Continue`] runs the
    /// inner application, [`Step::Watch`] runs it and shows its HTTP response start to
    /// [`response_start`](Middleware::response_start), [`Step::Refuse`] answers the connection
    /// here. An error fails the connection (e.g. `AppError::Misconfigured`, logged, HTTP 500).
    fn prepare(&self, scope: &mut Scope) -> impl Future<Output = Result<Step<Self::State>, AppError>> + Send;

    /// Sees an HTTP response start before the client does (after a [`Step::Watch`]): add
    /// headers, save what the response depends on. An `Err` replaces the response with the
    /// refusal; the inner application's events after it are dropped. The default does nothing.
    fn response_start(
        &self,
        state: &mut Self::State,
        start: &mut ResponseStart,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        let _ = (state, start);
        std::future::ready(Ok(()))
    }

    /// This middleware around `inner`.
    fn wrap<A: Application>(self, inner: A) -> Wrapped<Self, A> {
        Wrapped { middleware: self, inner }
    }
}

/// What a middleware decided for one connection; see [`Middleware::prepare`].
#[derive(Debug)]
pub enum Step<S = ()> {
    /// Run the inner application.
    Continue,
    /// Run the inner application and, for an HTTP request, call
    /// [`Middleware::response_start`] with this state when its response starts (one extra hop
    /// for each of the response's events; WebSocket connections just continue).
    Watch(S),
    /// Answer the connection with this; the inner application does not run.
    Refuse(Refusal),
}

/// How a middleware answers a connection it does not let through: an HTTP response, or for a
/// WebSocket handshake a close before accept (the server answers the handshake with 403, and a
/// test communicator's [`connect`](crate::testing::WebsocketCommunicator::connect) shows the
/// code and the reason).
#[derive(Debug, Clone)]
pub struct Refusal {
    status: StatusCode,
    reason: Cow<'static, str>,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Refusal {
    /// `status` with `reason` as the HTTP response's text body and the WebSocket close reason
    /// (close code 1008, truncated to the 123 bytes a close frame carries).
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal { status, reason: reason.into(), headers: HeaderMap::new(), body: None }
    }

    /// HTTP 403 Forbidden with `reason`.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, reason)
    }

    /// HTTP 302 to `location` with an empty body; a WebSocket handshake is refused with
    /// `reason`. A `location` a header cannot carry is left out (and logged).
    pub fn redirect(location: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        let refusal = Refusal { body: Some(Bytes::new()), ..Refusal::new(StatusCode::FOUND, reason) };
        match HeaderValue::from_str(location) {
            Ok(value) => refusal.header(LOCATION, value),
            Err(_) => {
                tracing::warn!(location, "redirect location is not a valid header value; sent without it");
                refusal
            }
        }
    }

    /// Adds a header to the HTTP response.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Sends the refusal as what `protocol` answers with. A protocol other than HTTP and
    /// WebSocket has no answer of its own: the connection ends with [`AppError::Refused`].
    pub(crate) async fn send(self, protocol: &Protocol, outbox: &Outbox) -> Result<(), AppError> {
        match protocol {
            Protocol::Http => {
                let mut headers = self.headers;
                let body = match self.body {
                    Some(body) => body,
                    None => {
                        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                        Bytes::from(self.reason.into_owned())
                    }
                };
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                let start = ResponseStart { status: self.status, headers };
                let _ = outbox.send(Outbound::HttpResponseStart(Box::new(start))).await;
                let _ = outbox.send(Outbound::HttpResponseBody { body, more_body: false }).await;
                Ok(())
            }
            Protocol::Websocket => {
                let close = Close::with_reason(close_code::POLICY, &self.reason);
                let _ = outbox.send(Outbound::WebsocketClose(close)).await;
                Ok(())
            }
            Protocol::Custom(_) => Err(AppError::Refused(self.reason.into_owned())),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

/// A [`Middleware`] around an application: an [`Application`], and a [`Router`] when the
/// inner application is one.
#[derive(Debug, Clone)]
pub struct Wrapped<M, A> {
    middleware: M,
    inner: A,
}

impl<M, A> Wrapped<M, A> {
    /// The middleware.
    pub fn middleware(&self) -> &M {
        &self.middleware
    }

    /// The application inside.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<M: Middleware, A: Application> Application for Wrapped<M, A> {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let prepare = async move {
            match self.middleware.prepare(&mut scope).await {
                Ok(Step::Continue) => Prepared::Run(self.inner.call(scope, inbox, outbox)),
                Ok(Step::Watch(state)) if scope.protocol == Protocol::Http => {
                    let (inner_outbox, events) = Outbox::channel(16);
                    let app = self.inner.call(scope, inbox, inner_outbox);
                    let watch = watch(&self.middleware, state, events, outbox);
                    Prepared::Run(Box::pin(async move {
                        let (result, ()) = tokio::join!(app, watch);
                        result
                    }))
                }
                Ok(Step::Watch(_)) => Prepared::Run(self.inner.call(scope, inbox, outbox)),
                Ok(Step::Refuse(refusal)) => {
                    crate::metrics::middleware_refused(std::any::type_name::<M>());
                    tracing::info!(path = %scope.path, reason = %refusal, "connection refused by a middleware");
                    Prepared::Done(refusal.send(&scope.protocol, &outbox).await)
                }
                Err(err) => Prepared::Done(Err(err)),
            }
        };
        Box::pin(ThenInner::Preparing(Box::pin(prepare)))
    }
}

impl<M: Middleware, A: Router> Router for Wrapped<M, A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}

/// Forwards the inner application's events, showing the response start to the middleware.
async fn watch<M: Middleware>(
    middleware: &M,
    mut state: M::State,
    mut events: mpsc::Receiver<Outbound>,
    outbox: Outbox,
) {
    while let Some(mut event) = events.recv().await {
        if let Outbound::HttpResponseStart(start) = &mut event
            && let Err(refusal) = middleware.response_start(&mut state, start).await
        {
            tracing::info!(reason = %refusal, "response replaced by a middleware");
            let _ = refusal.send(&Protocol::Http, &outbox).await;
            // The inner application's response is dropped; let it finish.
            while events.recv().await.is_some() {}
            return;
        }
        if outbox.send(event).await.is_err() {
            return;
        }
    }
}

/// How a middleware's own async work ends.
enum Prepared<'a> {
    /// The inner application's future (with the response watch, if any).
    Run(BoxFuture<'a, Result<(), AppError>>),
    /// The middleware answered the connection itself (refused it, or failed).
    Done(Result<(), AppError>),
}

/// A middleware's future: its own async work (`prepare`), then the inner application.
///
/// An `async` block doing both would stay as large as its largest step (the scope it captured,
/// the loading futures) for the whole connection; here `prepare` is freed when it is done and
/// only a pointer to the inner application's future stays, so a middleware costs a few words
/// per open connection.
enum ThenInner<'a> {
    Preparing(BoxFuture<'a, Prepared<'a>>),
    Running(BoxFuture<'a, Result<(), AppError>>),
}

impl Future for ThenInner<'_> {
    type Output = Result<(), AppError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut *self {
                ThenInner::Preparing(prepare) => match ready!(prepare.as_mut().poll(cx)) {
                    Prepared::Run(running) => *self = ThenInner::Running(running),
                    Prepared::Done(result) => return Poll::Ready(result),
                },
                ThenInner::Running(running) => return running.as_mut().poll(cx),
            }
        }
    }
}
