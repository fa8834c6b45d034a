//! The reading side of an open WebSocket: frames from the client become the application's
//! [`Inbound`] events, read in the application's own task (no hop through another task).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};

use super::Opened;
use super::socket::WsReader;
use crate::connection::{CancelWait, ConnState, EventSource, Waiter};
use crate::event::{Inbound, Message, Utf8Bytes, close_code};
use crate::server::{RateLimit, ServerState};

enum ReadState {
    /// Before the connect event was delivered.
    Connecting(oneshot::Receiver<Opened>),
    /// Connect delivered; waiting for the handshake to finish (or be refused).
    Upgrading(oneshot::Receiver<Opened>),
    Open(WsReader),
    /// Disconnect delivered.
    Done,
}

/// The inbox of a WebSocket application. It reads frames in the application's own task, so a
/// message from the client reaches the consumer without a hop through another task.
pub(super) struct WsSource {
    state: ReadState,
    /// [`ServerConfig::inbound_rate`](super::ServerConfig::inbound_rate), when set, from the
    /// first message on (a socket that has sent nothing is within any rate): an idle socket
    /// holds none.
    throttle: Option<Box<Throttle>>,
    cancelled: CancelWait,
    conn: Arc<ConnState>,
    /// The socket's waker: `conn`, which notes that the socket woke the task.
    socket_waker: Waker,
    /// For its metrics.
    server: Arc<ServerState>,
}

impl std::fmt::Debug for WsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSource").finish_non_exhaustive()
    }
}

/// The close code for a read error, and the reason sent to the client.
fn classify(err: &WsError) -> (u16, &'static str) {
    match err {
        WsError::Capacity(_) => (close_code::SIZE, "message too big"),
        WsError::Utf8(_) => (close_code::INVALID, "invalid UTF-8 in a text frame"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => (close_code::ABNORMAL, "connection lost"),
        WsError::Protocol(_) => (close_code::PROTOCOL, "protocol error"),
        WsError::AttackAttempt => (close_code::POLICY, "attack attempt"),
        _ => (close_code::ABNORMAL, "connection lost"),
    }
}

impl WsSource {
    /// The reader of a connection whose stream arrives through `opened` once the handshake is
    /// accepted.
    pub(super) fn new(opened: oneshot::Receiver<Opened>, conn: Arc<ConnState>, server: Arc<ServerState>) -> Self {
        let socket_waker = Waker::from(conn.clone());
        WsSource {
            throttle: None,
            state: ReadState::Connecting(opened),
            cancelled: CancelWait::new(),
            conn,
            socket_waker,
            server,
        }
    }

    fn count(&mut self, bytes: usize) {
        if let Some(rate) = self.server.config.inbound_rate {
            self.throttle.get_or_insert_with(|| Box::new(Throttle::new(rate))).consume();
        }
        let metrics = &self.server.metrics;
        metrics.received.increment(1);
        metrics.received_bytes.increment(bytes as u64);
    }

    fn disconnect(&mut self, code: u16) -> Poll<Option<Inbound>> {
        self.state = ReadState::Done;
        Poll::Ready(Some(Inbound::WebsocketDisconnect { code }))
    }

    fn poll_recv_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        loop {
            if !matches!(self.state, ReadState::Connecting(_) | ReadState::Done)
                && self.cancelled.poll(&self.conn, Waiter::Reader, cx).is_ready()
            {
                return self.disconnect(self.conn.close_reason().code);
            }
            match &mut self.state {
                ReadState::Connecting(_) => {
                    let ReadState::Connecting(opened) = std::mem::replace(&mut self.state, ReadState::Done) else {
                        unreachable!("matched above")
                    };
                    self.state = ReadState::Upgrading(opened);
                    return Poll::Ready(Some(Inbound::WebsocketConnect));
                }
                ReadState::Upgrading(opened) => match Pin::new(opened).poll(cx) {
                    Poll::Ready(Ok(Ok(stream))) => self.state = ReadState::Open(stream),
                    Poll::Ready(Ok(Err(code))) => return self.disconnect(code),
                    Poll::Ready(Err(_)) => return self.disconnect(close_code::ABNORMAL),
                    Poll::Pending => return Poll::Pending,
                },
                ReadState::Open(stream) => match self.throttle.as_mut().map_or(Poll::Ready(()), |t| t.poll_ready(cx)) {
                    Poll::Pending => return Poll::Pending,
                    // The socket is read only when it woke the task (or may hold more): a wake for
                    // a channel message or a queued send does not read it to find nothing.
                    Poll::Ready(()) if !self.conn.take_readable() => return Poll::Pending,
                    Poll::Ready(()) => match stream.poll_next(&mut Context::from_waker(&self.socket_waker)) {
                        Poll::Ready(Some(Ok(frame))) => {
                            self.conn.keep_readable();
                            self.conn.seen.store(true, Ordering::Relaxed);
                            match frame {
                                WsMessage::Text(text) => {
                                    self.count(text.len());
                                    return Poll::Ready(Some(Inbound::WebsocketReceive(Message::Text(
                                        Utf8Bytes::from_socket(text),
                                    ))));
                                }
                                WsMessage::Binary(bytes) => {
                                    self.count(bytes.len());
                                    return Poll::Ready(Some(Inbound::WebsocketReceive(Message::Binary(bytes))));
                                }
                                WsMessage::Close(frame) => {
                                    // The protocol queued the reply; the writer sends it now, even
                                    // while the consumer's `disconnect` still runs.
                                    let code = frame.map_or(close_code::STATUS, |frame| frame.code.into());
                                    self.conn.peer_closed.store(true, Ordering::Relaxed);
                                    self.conn.abort(code, "");
                                    return self.disconnect(code);
                                }
                                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
                            }
                        }
                        Poll::Ready(Some(Err(err))) => {
                            let (code, reason) = classify(&err);
                            tracing::debug!(error = %err, code, "WebSocket read failed");
                            self.conn.abort(code, reason);
                            return self.disconnect(code);
                        }
                        Poll::Ready(None) => {
                            self.conn.abort(close_code::ABNORMAL, "connection lost");
                            return self.disconnect(close_code::ABNORMAL);
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                },
                ReadState::Done => return Poll::Ready(None),
            }
        }
    }
}

/// The inbound rate limit of one connection (GCRA: one instant per connection, no refill task).
struct Throttle {
    /// Time one message "costs".
    interval: std::time::Duration,
    /// How far ahead of now the budget may run: the burst.
    tolerance: std::time::Duration,
    /// When the budget is spent up to (the theoretical arrival time).
    spent_until: Instant,
    /// The wait while over the rate.
    wait: Option<Pin<Box<Sleep>>>,
}

impl Throttle {
    fn new(rate: RateLimit) -> Self {
        let interval = std::time::Duration::from_secs(1) / rate.per_second.max(1);
        // Budget spent up to now: the same as from the socket's opening, since nothing was read.
        Throttle { interval, tolerance: interval * rate.burst.max(1), spent_until: Instant::now(), wait: None }
    }

    /// Ready when the next message may be read.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let Some(allowed_at) = self.spent_until.checked_sub(self.tolerance).filter(|at| *at > now) else {
            self.wait = None;
            return Poll::Ready(());
        };
        let wait = self.wait.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(allowed_at)));
        if wait.deadline() != allowed_at {
            wait.as_mut().reset(allowed_at);
        }
        std::task::ready!(wait.as_mut().poll(cx));
        self.wait = None;
        Poll::Ready(())
    }

    /// A message was read.
    fn consume(&mut self) {
        self.spent_until = self.spent_until.max(Instant::now()) + self.interval;
    }
}

impl EventSource for WsSource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.poll_recv_inner(cx)
    }
}
