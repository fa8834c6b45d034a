//! One connection's plumbing: the [`Inbox`] an application receives from (fed by an
//! [`EventSource`]: the server's reader, a test's queue, a worker's channel), the [`Outbox`] it
//! sends through (a bounded queue drained by the server's writer), and the state they share
//! (cancellation, the close reason, the slow-client policy).

pub(crate) mod keepalive;
mod queue;

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::queue::{Queue, TryPushError};
use crate::BoxFuture;
use crate::error::SendError;
use crate::event::{Close, Inbound, Outbound, close_code};
use crate::layers::Subscription;

/// The close reason of a client too slow to read.
pub(crate) const SLOW_CLIENT: &str = "client too slow to read";

/// Per-connection state shared by the application's inbox and outbox and the server's writer.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// An HTTP connection's: a child of the server's closing token, so that it ends when the
    /// server stops accepting. A WebSocket has none (it ends by [`cancel`](Self::cancel) or
    /// [`abort`](Self::abort), the drain's a batch at a time): a token is a 112 B allocation
    /// per open socket.
    token: Option<CancellationToken>,
    /// Set when the connection ends by its own methods: what [`CancelWait`] reads on every poll
    /// (a token's check takes two locks).
    cancelled: AtomicBool,
    /// The tasks of a WebSocket's reader and writer ([`CancelWait`]), woken by
    /// [`cancel`](Self::cancel).
    waiters: [AtomicWaker; 2],
    /// Set by the reader on every frame; the server's keepalive sweeper clears it.
    pub(crate) seen: AtomicBool,
    /// A WebSocket's socket may have something to read: it woke the reader (see the [`Wake`]
    /// impl), or the last read found a frame and there may be more.
    readable: AtomicBool,
    /// The reader's task, woken (by reference: it stays registered) with `readable` set.
    socket_waiter: Mutex<Option<Waker>>,
    /// Keepalive pings: the sweeper's count of silence, and a ping due for the writer.
    pub(crate) keepalive: keepalive::Keepalive,
    /// Set by the reader when the client's close frame arrived: the writer then only sends the
    /// reply that the WebSocket protocol queued for it (RFC 6455 section 5.5.1).
    pub(crate) peer_closed: AtomicBool,
    /// The HTTP status a WebSocket's handshake answers with if its application ended without
    /// accepting (0 until it ends): see [`finish_app`](Self::finish_app).
    app_status: AtomicU16,
    /// How long a send may wait for queue space before the client counts as too slow.
    pub(crate) write_timeout: Option<Duration>,
    /// Why the connection ends, when something other than the application decided it.
    /// (Boxed: set only when a connection ends for such a reason, and 32 B less for every
    /// connection that has not.)
    close: OnceLock<Box<Close>>,
    shutdown: CancellationToken,
    /// What the application sends, until the server writes it.
    queue: Queue<Outbound>,
}

impl ConnState {
    /// The state of a new connection whose outgoing queue holds `capacity` events and about
    /// `bytes` of payload; `token`, if any, ends it too; `shutdown` is the server's.
    pub(crate) fn new(
        token: Option<CancellationToken>,
        shutdown: &CancellationToken,
        write_timeout: Option<Duration>,
        capacity: usize,
        bytes: usize,
    ) -> Self {
        ConnState {
            token,
            cancelled: AtomicBool::new(false),
            waiters: [AtomicWaker::new(), AtomicWaker::new()],
            seen: AtomicBool::new(false),
            readable: AtomicBool::new(true),
            socket_waiter: Mutex::new(None),
            keepalive: Default::default(),
            peer_closed: AtomicBool::new(false),
            app_status: AtomicU16::new(0),
            write_timeout,
            close: OnceLock::new(),
            shutdown: shutdown.clone(),
            queue: Queue::new(capacity, bytes),
        }
    }

    /// A WebSocket-like connection's state for unit tests: no token, a queue of 4.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        ConnState::new(None, &CancellationToken::new(), None, 4, 1024)
    }

    /// Ends the connection with `code`; the first reason given wins.
    pub(crate) fn abort(&self, code: u16, reason: &str) {
        let _ = self.close.set(Box::new(Close::with_reason(code, reason)));
        self.cancel();
    }

    /// Ends the connection (with the recorded reason, if any).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(token) = &self.token {
            token.cancel();
        }
        // Whoever waits in `cancelled` without a token (and senders waiting for room, which
        // look again).
        self.queue.notify().notify_waiters();
        for waiter in &self.waiters {
            waiter.wake();
        }
    }

    /// The application ended; a handshake still waiting answers `status`. Then the connection
    /// ends (the writer sends what is queued, then the close frame).
    pub(crate) fn finish_app(&self, status: u16) {
        self.app_status.store(status, Ordering::Release);
        self.cancel();
    }

    /// The status [`finish_app`](Self::finish_app) gave, once the application has ended.
    pub(crate) fn app_status(&self) -> Option<u16> {
        Some(self.app_status.load(Ordering::Acquire)).filter(|status| *status != 0)
    }

    /// Whether the connection has ended.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.token.as_ref().is_some_and(CancellationToken::is_cancelled)
    }

    /// Ready once the connection has ended.
    pub(crate) async fn cancelled(&self) {
        if let Some(token) = &self.token {
            return token.cancelled().await;
        }
        // The queue's notify (see `cancel`): also woken when room is made, so look again.
        loop {
            let mut notified = std::pin::pin!(self.queue.notify().notified());
            // Listening before the look: a cancel after it wakes this.
            notified.as_mut().enable();
            if self.cancelled.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Wakes `waiter`'s task (its [`CancelWait`] registers again on its next poll).
    pub(crate) fn wake(&self, waiter: Waiter) {
        self.waiters[waiter as usize].wake();
    }

    /// Whether the reader should read the socket: it woke the task, or may hold more (and
    /// `false` from now until it wakes again). The reader's [`CancelWait`] registers its task
    /// for the socket's wakes (through the [`Wake`] impl).
    pub(crate) fn take_readable(&self) -> bool {
        self.readable.swap(false, Ordering::AcqRel)
    }

    /// The reader found something on the socket: there may be more, look again.
    pub(crate) fn keep_readable(&self) {
        self.readable.store(true, Ordering::Release);
    }

    /// Why the connection was cancelled: the recorded reason, else server shutdown, else normal.
    pub(crate) fn close_reason(&self) -> Close {
        match self.close.get() {
            Some(close) => Close::clone(close),
            None if self.shutdown.is_cancelled() => Close::with_reason(close_code::AWAY, "server shutting down"),
            None => Close::new(close_code::NORMAL),
        }
    }
}

/// The waker a WebSocket's reader gives its socket: a wake from the socket marks it readable
/// before waking the reader's task. The task also wakes for channel messages, queued sends,
/// timers; a read on each of those wakes found the socket empty and cost ~1,200 instructions
/// per broadcast delivery (callgrind), a quarter of the server's own work.
impl std::task::Wake for ConnState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.keep_readable();
        if let Some(waker) = &*self.socket_waiter.lock().unwrap_or_else(PoisonError::into_inner) {
            waker.wake_by_ref();
        }
    }
}

/// Where an application receives its [`Inbound`] events from.
///
/// `recv` is cancel safe, so it can sit in a `tokio::select!` next to other event sources.
pub struct Inbox {
    source: Box<dyn EventSource>,
    /// The consumer's channel-layer subscription, polled alternately with the connection so
    /// that neither a chatty client nor a busy group starves the other.
    channel: Option<Subscription>,
    channel_turn: bool,
    /// The subscription is not polled until the consumer's `connect` ran (a catch-up of
    /// groups with history is only sent to an accepted socket).
    channel_held: bool,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("channel", &self.channel).finish_non_exhaustive()
    }
}

/// Where a connection's events come from: the server's WebSocket reader and HTTP body reader,
/// a test communicator's queue, a worker's channel. Implement it to feed applications from a
/// protocol server of your own, and make an [`Inbox`] with [`Inbox::from_source`].
pub trait EventSource: Send + 'static {
    /// Polls for the next event; `Ready(None)` once the connection is gone and nothing is left.
    /// Called again after `Pending` only when `cx`'s waker was woken; it must be cancel safe
    /// (an event is returned once, or stays for the next poll).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>>;
}

impl EventSource for mpsc::Receiver<Inbound> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        mpsc::Receiver::poll_recv(self, cx)
    }
}

impl Inbox {
    /// An inbox fed by a queue; the sender side is how a custom protocol server (or a test)
    /// delivers events. The inbox ends when every sender is dropped.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Inbound>, Inbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, Inbox::from_source(rx))
    }

    /// An inbox fed by `source`.
    pub fn from_source(source: impl EventSource) -> Self {
        Inbox { source: Box::new(source), channel: None, channel_turn: false, channel_held: false }
    }

    /// Also delivers the messages of a channel-layer subscription, as [`Inbound::Channel`].
    pub(crate) fn attach(&mut self, subscription: Subscription) {
        self.channel = Some(subscription);
    }

    /// Holds the subscription's messages back until [`release_channel`](Self::release_channel).
    pub(crate) fn hold_channel(&mut self) {
        self.channel_held = true;
    }

    /// Delivers the subscription's messages again (the caller polls next, so no wake-up is
    /// needed).
    pub(crate) fn release_channel(&mut self) {
        self.channel_held = false;
    }

    /// The next event, or `None` once the connection is gone and no events remain.
    pub async fn recv(&mut self) -> Option<Inbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event; see [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.channel_turn
            && !self.channel_held
            && let Some(channel) = &mut self.channel
        {
            self.channel_turn = false;
            if let Poll::Ready(message) = channel.poll_recv(cx) {
                return Poll::Ready(Some(Inbound::Channel(message)));
            }
        }
        let connection = self.source.poll_recv(cx);
        if connection.is_ready() {
            self.channel_turn = true;
            return connection;
        }
        match &mut self.channel {
            Some(channel) if !self.channel_held => channel.poll_recv(cx).map(|message| Some(Inbound::Channel(message))),
            _ => Poll::Pending,
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
    /// The future is small (the event and a pointer): it lives inside every consumer method
    /// that sends, and so inside the consumer's future for as long as its connection lives.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the connection is gone; [`SendError::SlowClient`] when the
    /// queue stayed full for the write timeout (the connection is then closed).
    pub fn send(&self, event: Outbound) -> impl Future<Output = Result<(), SendError>> + Send + '_ {
        Sending::new(self, event)
    }

    /// True once the connection's receiving side is gone.
    pub fn is_closed(&self) -> bool {
        match &self.tx {
            Tx::Channel(tx) => tx.is_closed(),
            Tx::Connection(conn) => conn.queue.is_closed() || conn.is_cancelled(),
        }
    }
}

/// Waits for a connection's cancellation in a task that polls it on every event (a WebSocket's
/// reader and writer): reads the connection's `cancelled` flag, and registers the task's waker
/// in the connection's state only when it changed. A token's wait would take two locks per poll
/// (~4 % of the server's time per echoed message, `perf`) and a boxed future per waiter.
///
/// Only for a connection that nothing ends but [`ConnState::cancel`] and [`ConnState::abort`]
/// (a WebSocket, which has no token); an HTTP connection's token is a child of the server's,
/// waited for through [`ConnState::cancelled`].
pub(crate) struct CancelWait {
    /// The waker registered in this waiter's slot.
    registered: Option<Waker>,
}

/// A connection's waiters for [`CancelWait`]: one slot each, so that neither overwrites the
/// other's waker when they run in different tasks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Waiter {
    Reader = 0,
    Writer = 1,
}

impl CancelWait {
    pub(crate) fn new() -> Self {
        CancelWait { registered: None }
    }

    /// Registers the waker again on the next poll: the slot was emptied by a
    /// [`ConnState::wake`].
    pub(crate) fn rearm(&mut self) {
        self.registered = None;
    }

    /// Ready once `conn` is cancelled.
    #[inline]
    pub(crate) fn poll(&mut self, conn: &ConnState, slot: Waiter, cx: &mut Context<'_>) -> Poll<()> {
        if conn.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !self.registered.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            return self.register(conn, slot, cx.waker());
        }
        Poll::Pending
    }

    /// Registers `waker` in `slot` (once per task: not on the per-message path).
    #[cold]
    fn register(&mut self, conn: &ConnState, slot: Waiter, waker: &Waker) -> Poll<()> {
        conn.waiters[slot as usize].register(waker);
        if let Waiter::Reader = slot {
            // For its socket's wakes too (which leave it registered).
            *conn.socket_waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        }
        self.registered = Some(waker.clone());
        // Cancelled between the look and the registration: that wake may have been missed.
        if conn.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// [`Outbox::send`]'s future: the event is queued on the first poll; only a send that must wait
/// for room boxes its waiting (a timer and the cancellation), so a send costs the event and a
/// few words, not the waiting path's state.
#[derive(Debug)]
pub(crate) struct Sending<'a> {
    outbox: &'a Outbox,
    state: SendState<'a>,
}

enum SendState<'a> {
    Start(Outbound),
    Waiting(BoxFuture<'a, Result<(), SendError>>),
    Done,
}

impl fmt::Debug for SendState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendState::Start(_) => "Start",
            SendState::Waiting(_) => "Waiting",
            SendState::Done => "Done",
        })
    }
}

impl<'a> Sending<'a> {
    pub(crate) fn new(outbox: &'a Outbox, event: Outbound) -> Self {
        Sending { outbox, state: SendState::Start(event) }
    }
}

impl Future for Sending<'_> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outbox = this.outbox;
        match std::mem::replace(&mut this.state, SendState::Done) {
            SendState::Start(event) => {
                let waiting: BoxFuture<'_, _> = match &outbox.tx {
                    // Pushed with this task's waker: the server's writer runs in the
                    // connection's task after the application, so a send from the consumer
                    // needs no wake.
                    Tx::Connection(conn) => match conn.queue.try_push(event, Some(cx.waker())) {
                        Ok(()) => return Poll::Ready(Ok(())),
                        Err(TryPushError::Full(event)) => Box::pin(send_when_room(conn, event)),
                        Err(TryPushError::Closed(_)) => return Poll::Ready(Err(SendError::Closed)),
                    },
                    Tx::Channel(tx) => match tx.try_send(event) {
                        Ok(()) => return Poll::Ready(Ok(())),
                        Err(mpsc::error::TrySendError::Closed(_)) => return Poll::Ready(Err(SendError::Closed)),
                        Err(mpsc::error::TrySendError::Full(event)) => {
                            Box::pin(async move { tx.send(event).await.map_err(|_| SendError::Closed) })
                        }
                    },
                };
                this.state = SendState::Waiting(waiting);
                Pin::new(this).poll(cx)
            }
            SendState::Waiting(mut waiting) => {
                let poll = waiting.as_mut().poll(cx);
                if poll.is_pending() {
                    this.state = SendState::Waiting(waiting);
                }
                poll
            }
            // Polled again after it finished.
            SendState::Done => Poll::Ready(Err(SendError::Closed)),
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
        () = conn.cancelled() => Err(SendError::Closed),
        () = tokio::time::sleep(limit) => {
            tracing::warn!(timeout = ?limit, "client too slow to read; closing the connection");
            conn.abort(close_code::POLICY, SLOW_CLIENT);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::WakeCount as Count;

    fn conn() -> ConnState {
        ConnState::for_tests()
    }

    #[test]
    fn a_cancel_wakes_both_waiters_even_in_different_tasks() {
        let conn = conn();
        let (reader, writer) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (reader_waker, writer_waker) = (Waker::from(reader.clone()), Waker::from(writer.clone()));
        let mut waits = [CancelWait::new(), CancelWait::new()];
        let slots = [(Waiter::Reader, &reader_waker), (Waiter::Writer, &writer_waker)];
        for (wait, (slot, waker)) in waits.iter_mut().zip(slots) {
            // Polled twice with the same waker: pending, registered once.
            for _ in 0..2 {
                assert!(wait.poll(&conn, slot, &mut Context::from_waker(waker)).is_pending());
            }
        }
        conn.abort(close_code::AWAY, "test");
        assert_eq!((reader.get(), writer.get()), (1, 1));
        assert!(conn.is_cancelled());
        for (wait, (slot, waker)) in waits.iter_mut().zip(slots) {
            assert!(wait.poll(&conn, slot, &mut Context::from_waker(waker)).is_ready());
        }
    }

    #[test]
    fn the_socket_wakes_the_reader_task_and_only_its_wakes_make_it_readable() {
        let conn = Arc::new(conn());
        let (task, other) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let socket = Waker::from(conn.clone());
        let mut wait = CancelWait::new();
        assert!(wait.poll(&conn, Waiter::Reader, &mut Context::from_waker(&Waker::from(task.clone()))).is_pending());
        // A new socket is read at once (hyper may have read its first frames); then not until
        // its socket wakes it, however often the task wakes for other things.
        assert!(conn.take_readable());
        assert!(!conn.take_readable());
        socket.wake_by_ref();
        assert_eq!(task.get(), 1);
        assert!(conn.take_readable());
        assert!(!conn.take_readable());
        // The wake left it registered: the next one finds it too.
        socket.wake_by_ref();
        assert_eq!(task.get(), 2);
        // A frame was found: look again, there may be more.
        assert!(conn.take_readable());
        conn.keep_readable();
        assert!(conn.take_readable());
        // Polled from another task: the socket's wakes go there.
        assert!(wait.poll(&conn, Waiter::Reader, &mut Context::from_waker(&Waker::from(other.clone()))).is_pending());
        socket.wake();
        assert_eq!((task.get(), other.get()), (2, 1));
    }

    #[tokio::test]
    async fn waiting_for_the_end_without_a_token() {
        let conn = Arc::new(conn());
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished() && !conn.is_cancelled());
        // Room made in the outgoing queue wakes the same notify: the waiter looks again and waits on.
        conn.queue.notify().notify_waiters();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a wake for room is not the end");
        conn.abort(close_code::AWAY, "test");
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("no panic");
        // After the end, at once.
        tokio::time::timeout(Duration::from_secs(5), conn.cancelled()).await.expect("already ended");
    }

    #[tokio::test]
    async fn an_http_connection_ends_with_its_parent_token() {
        let server = CancellationToken::new();
        let conn = ConnState::new(Some(server.child_token()), &CancellationToken::new(), None, 4, 1024);
        assert!(!conn.is_cancelled());
        server.cancel();
        assert!(conn.is_cancelled());
        tokio::time::timeout(Duration::from_secs(5), conn.cancelled()).await.expect("ended with the server");
    }

    #[test]
    fn a_waiter_woken_for_a_ping_and_rearmed_still_hears_the_cancel() {
        let conn = conn();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut wait = CancelWait::new();
        assert!(wait.poll(&conn, Waiter::Writer, &mut Context::from_waker(&waker)).is_pending());
        // The keepalive sweeper's wake empties the slot; the writer rearms and polls again.
        conn.wake(Waiter::Writer);
        assert_eq!(count.get(), 1);
        wait.rearm();
        assert!(wait.poll(&conn, Waiter::Writer, &mut Context::from_waker(&waker)).is_pending());
        conn.cancel();
        assert_eq!(count.get(), 2);
    }

    #[test]
    fn a_waiter_polled_with_a_new_waker_moves_its_registration() {
        let conn = conn();
        let (old, new) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut wait = CancelWait::new();
        assert!(wait.poll(&conn, Waiter::Writer, &mut Context::from_waker(&Waker::from(old.clone()))).is_pending());
        assert!(wait.poll(&conn, Waiter::Writer, &mut Context::from_waker(&Waker::from(new.clone()))).is_pending());
        conn.cancel();
        assert_eq!((old.get(), new.get()), (0, 1));
    }
}
