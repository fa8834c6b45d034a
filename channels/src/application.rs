//! The [`Application`] trait and the two ends every application talks through: the
//! [`Inbox`] it receives events from and the [`Outbox`] it sends events to.

use std::any::Any;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::error::{AppError, SendError};
use crate::event::{Close, Inbound, Outbound, close_code};
use crate::layers::Subscription;
use crate::queue::{Queue, TryPushError};
use crate::scope::Scope;
pub use crate::{BoxError, BoxFuture};

/// Anything that can serve a connection: a router, a middleware, a consumer.
///
/// This is the ASGI idea in Rust: the application gets the connection's [`Scope`], an [`Inbox`]
/// of [`Inbound`] events and an [`Outbox`] for [`Outbound`] events, and runs until the
/// connection is done. Routers and middleware are applications that own an inner application.
///
/// The trait is object safe; routers store `Arc<dyn Application>`.
pub trait Application: Send + Sync + 'static {
    /// Serves one connection.
    ///
    /// # Errors
    /// [`AppError::NoRoute`] when no route matched (the server answers 404); other variants
    /// when the connection failed (the server answers 500 or closes the WebSocket with 1011).
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>>;

    /// For routers: whether `path` (what is left of the URL path for this router) reaches an
    /// application. `None` for endpoints, which take any path.
    ///
    /// `URLRouter` uses it to match a nested router's prefix and to fall through to the next
    /// route when the nested router has no match. Middleware forwards it to its inner
    /// application, so wrapping a nested router in middleware keeps nested routing working.
    fn route_match(&self, path: &str) -> Option<bool> {
        let _ = path;
        None
    }
}

impl<A: Application + ?Sized> Application for Arc<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        (**self).call(scope, inbox, outbox)
    }

    fn route_match(&self, path: &str) -> Option<bool> {
        (**self).route_match(path)
    }
}

impl<A: Application + ?Sized> Application for Box<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        (**self).call(scope, inbox, outbox)
    }

    fn route_match(&self, path: &str) -> Option<bool> {
        (**self).route_match(path)
    }
}

/// An application made from an async function; see [`application_fn`].
pub struct ApplicationFn<F> {
    f: F,
}

/// Makes an application from an async function of `(scope, inbox, outbox)`.
///
/// ```
/// use channels::{application_fn, event::{Inbound, Outbound, Close}};
///
/// // Refuses every WebSocket.
/// let deny = application_fn(|_scope, mut inbox, outbox| async move {
///     if let Some(Inbound::WebsocketConnect) = inbox.recv().await {
///         let _ = outbox.send(Outbound::WebsocketClose(Close::new(1000))).await;
///     }
///     Ok(())
/// });
/// # let _: &dyn channels::Application = &deny;
/// ```
pub fn application_fn<F, Fut>(f: F) -> ApplicationFn<F>
where
    F: Fn(Scope, Inbox, Outbox) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), AppError>> + Send + 'static,
{
    ApplicationFn { f }
}

impl<F, Fut> Application for ApplicationFn<F>
where
    F: Fn(Scope, Inbox, Outbox) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), AppError>> + Send + 'static,
{
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        Box::pin((self.f)(scope, inbox, outbox))
    }
}

impl<F> fmt::Debug for ApplicationFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApplicationFn")
    }
}

/// Per-connection state shared by the application's inbox and outbox and the server's writer.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Cancelled when the connection must end (child of the server's shutdown token).
    pub(crate) token: CancellationToken,
    /// Set by the reader on every frame; the writer's ping timer clears it.
    pub(crate) seen: AtomicBool,
    /// Set by the reader when the client's close frame arrived: the writer then only sends the
    /// reply that the WebSocket protocol queued for it (RFC 6455 section 5.5.1).
    pub(crate) peer_closed: AtomicBool,
    /// How long a send may wait for queue space before the client counts as too slow.
    pub(crate) write_timeout: Option<Duration>,
    /// Why the connection ends, when something other than the application decided it.
    close: OnceLock<Close>,
    shutdown: CancellationToken,
    /// What the application sends, until the server writes it.
    queue: Queue<Outbound>,
}

impl ConnState {
    /// The state of a new connection whose outgoing queue holds `capacity` events and about
    /// `bytes` of payload.
    pub(crate) fn new(
        shutdown: &CancellationToken,
        write_timeout: Option<Duration>,
        capacity: usize,
        bytes: usize,
    ) -> Self {
        ConnState {
            token: shutdown.child_token(),
            seen: AtomicBool::new(false),
            peer_closed: AtomicBool::new(false),
            write_timeout,
            close: OnceLock::new(),
            shutdown: shutdown.clone(),
            queue: Queue::new(capacity, bytes),
        }
    }

    /// Ends the connection with `code`; the first reason given wins.
    pub(crate) fn abort(&self, code: u16, reason: &str) {
        let _ = self.close.set(Close::with_reason(code, reason));
        self.token.cancel();
    }

    /// Why the connection was cancelled: the recorded reason, else server shutdown, else normal.
    pub(crate) fn close_reason(&self) -> Close {
        match self.close.get() {
            Some(close) => close.clone(),
            None if self.shutdown.is_cancelled() => Close::with_reason(close_code::AWAY, "server shutting down"),
            None => Close::new(close_code::NORMAL),
        }
    }
}

/// Where an application receives its [`Inbound`] events from.
///
/// `recv` is cancel safe, so it can sit in a `tokio::select!` next to other event sources.
#[derive(Debug)]
pub struct Inbox {
    source: Source,
    /// The consumer's channel-layer subscription, polled alternately with the connection so
    /// that neither a chatty client nor a busy group starves the other.
    channel: Option<Subscription>,
    channel_turn: bool,
}

#[derive(Debug)]
pub(crate) enum Source {
    Queue(mpsc::Receiver<Inbound>),
    Websocket(Box<crate::server::websocket::WsSource>),
    Http(Box<crate::server::http::HttpSource>),
    /// A worker's hand-off slot: one channel message at a time.
    Worker(std::sync::Arc<crate::worker::Slot>),
}

impl Inbox {
    /// An inbox fed by a queue; the sender side is how a custom protocol server (or a test)
    /// delivers events. The inbox ends when every sender is dropped.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Inbound>, Inbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, Inbox { source: Source::Queue(rx), channel: None, channel_turn: false })
    }

    pub(crate) fn from_source(source: Source) -> Self {
        Inbox { source, channel: None, channel_turn: false }
    }

    /// Also delivers the messages of a channel-layer subscription, as [`Inbound::Channel`].
    pub(crate) fn attach(&mut self, subscription: Subscription) {
        self.channel = Some(subscription);
    }

    /// The next event, or `None` once the connection is gone and no events remain.
    pub async fn recv(&mut self) -> Option<Inbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event; see [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.channel_turn
            && let Some(channel) = &mut self.channel
        {
            self.channel_turn = false;
            if let Poll::Ready(message) = channel.poll_recv(cx) {
                return Poll::Ready(Some(Inbound::Channel(message)));
            }
        }
        let connection = match &mut self.source {
            Source::Queue(rx) => rx.poll_recv(cx),
            Source::Websocket(ws) => ws.poll_recv(cx),
            Source::Http(http) => http.poll_recv(cx),
            Source::Worker(slot) => slot.poll_take(cx),
        };
        if connection.is_ready() {
            self.channel_turn = true;
            return connection;
        }
        match &mut self.channel {
            Some(channel) => channel.poll_recv(cx).map(|message| Some(Inbound::Channel(message))),
            None => Poll::Pending,
        }
    }
}

/// Where an application sends its [`Outbound`] events. Cheap to clone: a background task can
/// hold a clone and send to the same connection.
///
/// Backed by a bounded queue drained by the connection's writer. When the queue is full,
/// `send` waits; if the client reads nothing for the server's write timeout, the connection is
/// closed and `send` returns [`SendError::SlowClient`].
#[derive(Debug)]
pub struct Outbox {
    tx: Tx,
}

#[derive(Debug)]
enum Tx {
    /// [`Outbox::channel`]: a tokio queue read by a test or a custom protocol server.
    Channel(mpsc::Sender<Outbound>),
    /// A server connection's own queue (see [`Events`]).
    Connection(Arc<ConnState>),
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        let tx = match &self.tx {
            Tx::Channel(tx) => Tx::Channel(tx.clone()),
            Tx::Connection(conn) => {
                conn.queue.add_sender();
                Tx::Connection(conn.clone())
            }
        };
        Outbox { tx }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Tx::Connection(conn) = &self.tx {
            conn.queue.drop_sender();
        }
    }
}

impl Outbox {
    /// An outbox and the receiver its events arrive at (for custom protocol servers and tests).
    pub fn channel(capacity: usize) -> (Outbox, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Outbox { tx: Tx::Channel(tx) }, rx)
    }

    /// The outbox of a server connection and the server's end of it. `conn` must be new: its
    /// queue counts this outbox as its one sender.
    pub(crate) fn for_connection(conn: Arc<ConnState>) -> (Outbox, Events) {
        (Outbox { tx: Tx::Connection(conn.clone()) }, Events { conn })
    }

    /// Sends one event, waiting for queue space if needed.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the connection is gone; [`SendError::SlowClient`] when the
    /// queue stayed full for the write timeout (the connection is then closed).
    pub async fn send(&self, event: Outbound) -> Result<(), SendError> {
        // The waiting paths are boxed: they are rare (the queue is full), and their timer and
        // cancellation futures would otherwise be part of every send's future, and so of every
        // consumer's future for as long as its connection lives.
        match &self.tx {
            Tx::Connection(conn) => {
                // Pushed with this task's waker: the server's writer runs in the connection's
                // task after the application, so a send from the consumer needs no wake.
                let mut event = Some(event);
                let pushed =
                    poll_fn(|cx| Poll::Ready(event.take().map(|event| conn.queue.try_push(event, Some(cx.waker())))))
                        .await;
                match pushed {
                    Some(Ok(())) => Ok(()),
                    Some(Err(TryPushError::Full(event))) => Box::pin(send_when_room(conn, event)).await,
                    Some(Err(TryPushError::Closed(_))) | None => Err(SendError::Closed),
                }
            }
            Tx::Channel(tx) => match tx.try_send(event) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    Box::pin(tx.send(event)).await.map_err(|_| SendError::Closed)
                }
            },
        }
    }

    /// True once the connection's receiving side is gone.
    pub fn is_closed(&self) -> bool {
        match &self.tx {
            Tx::Channel(tx) => tx.is_closed(),
            Tx::Connection(conn) => conn.queue.is_closed() || conn.token.is_cancelled(),
        }
    }
}

/// Waits for room in a full connection queue, up to the write timeout (the slow-client policy).
async fn send_when_room(conn: &ConnState, event: Outbound) -> Result<(), SendError> {
    let Some(limit) = conn.write_timeout else {
        return conn.queue.push(event).await.map_err(|_| SendError::Closed);
    };
    tokio::select! {
        sent = conn.queue.push(event) => sent.map_err(|_| SendError::Closed),
        () = conn.token.cancelled() => Err(SendError::Closed),
        () = tokio::time::sleep(limit) => {
            tracing::warn!(timeout = ?limit, "client too slow to read; closing the connection");
            conn.abort(close_code::POLICY, "client too slow to read");
            Err(SendError::SlowClient(limit))
        }
    }
}

/// The server's end of a connection's outgoing queue. Dropping it closes the queue: sends fail
/// with [`SendError::Closed`].
#[derive(Debug)]
pub(crate) struct Events {
    conn: Arc<ConnState>,
}

impl Events {
    /// The next event; `None` once every [`Outbox`] is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        self.conn.queue.poll_pop(cx)
    }

    /// The next event if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.conn.queue.try_pop()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.conn.queue.close();
    }
}

/// Runs an application, turning a panic into [`AppError::Panicked`].
///
/// The scope, inbox and outbox wait in one box until the call: an async block keeps room for
/// what it captured for as long as it lives, and this future lives as long as the connection.
pub(crate) fn run_app(
    app: Arc<dyn Application>,
    scope: Scope,
    inbox: Inbox,
    outbox: Outbox,
) -> impl Future<Output = Result<(), AppError>> + Send + 'static {
    run_boxed(app, Box::new((scope, inbox, outbox)))
}

async fn run_boxed(app: Arc<dyn Application>, call: Box<(Scope, Inbox, Outbox)>) -> Result<(), AppError> {
    let path = call.0.path.clone();
    let result = match AssertUnwindSafe(async move {
        // Unboxed in a block of its own, so the box is freed before the call, not after it.
        let (scope, inbox, outbox) = {
            let call = call;
            *call
        };
        app.call(scope, inbox, outbox).await
    })
    .catch_unwind()
    .await
    {
        Ok(result) => result,
        Err(panic) => Err(AppError::Panicked(panic_message(&*panic))),
    };
    match &result {
        Ok(()) => {}
        Err(
            err @ (AppError::NoRoute { .. }
            | AppError::NoProtocol { .. }
            | AppError::Refused(_)
            | AppError::LoginRequired(_)),
        ) => {
            tracing::info!(%path, error = %err, "connection not served");
        }
        Err(err) => tracing::error!(%path, error = %err, "application failed"),
    }
    result
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
