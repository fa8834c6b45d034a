//! The writing side of an open WebSocket: the outgoing queue in batches, keepalive pings and
//! the close handshake, polled in the connection's task right after the application.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage};

use super::socket::{self, WsWriter};
use super::{BATCH, Opened, ws_config};
use crate::connection::{CancelWait, ConnState, Events, Waiter};
use crate::event::{Close, Message, Outbound, close_code};
use crate::server::ServerState;
use crate::server::chunked::ChunkedRead;
use crate::server::keepalive::PING_TIMEOUT;

/// Why the write loop stopped.
enum Stop {
    /// The application closed the connection.
    CloseSent,
    /// The connection was cancelled, or every outbox is gone.
    Finished,
    /// Writing failed: the client is gone.
    Broken,
}

/// The write loop's state between polls. A hand-written loop, not an `async` one: an `async`
/// loop kept room for every step's future (feeding, flushing, pinging) for the connection's
/// whole life, ~500 B per socket.
#[derive(Default)]
struct Writing {
    /// A keepalive ping is due (the server's sweeper asked for it): fed first.
    ping: bool,
    /// Frames fed since the last flush (at most [`BATCH`] and a ping).
    fed: u32,
    /// What was fed since the last flush, for the metrics (pings and the close frame are not
    /// messages).
    messages: u32,
    bytes: u64,
    /// A flush is under way: nothing more is fed until it is done.
    flushing: bool,
}

fn to_frame(event: Outbound) -> Option<WsMessage> {
    match event {
        Outbound::WebsocketSend(Message::Text(text)) => Some(WsMessage::Text(text.into_socket())),
        Outbound::WebsocketSend(Message::Binary(bytes)) => Some(WsMessage::Binary(bytes)),
        Outbound::WebsocketClose(close) => Some(close_frame(close)),
        other => {
            tracing::warn!(event = ?other, "event not valid on an open WebSocket; ignored");
            None
        }
    }
}

fn close_frame(close: Close) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code: close.code.into(), reason: close.reason.into_socket() }))
}

/// Writes to the socket: queued events in batches, keepalive pings, the close handshake. Runs in
/// the connection's task, beside the application.
pub(super) struct Writer {
    events: Events,
    conn: Arc<ConnState>,
    close_sent: bool,
    config: Arc<ServerState>,
}

/// The writer counts its WebSocket in `channels_connections_open` from the accept to the end.
impl Drop for Writer {
    fn drop(&mut self) {
        self.config.metrics.open_websockets.decrement(1.0);
    }
}

/// The writing half of a connection's task: waits for the handshake's writer, opens the
/// socket, writes until the end, closes. Hand-written: the task lives as long as the
/// connection, and an `async` one kept room for its opening and closing steps all along (the
/// connection's task was 1,024 B; each step now lives in a box of its own while it runs).
pub(super) struct WriterTask(Step);

enum Step {
    /// Until the handshake is accepted (the sender is dropped when it is refused).
    Waiting(oneshot::Receiver<(Writer, OnUpgrade, oneshot::Sender<Opened>)>),
    /// Waiting for hyper's upgrade.
    Opening(crate::BoxFuture<'static, Option<(Writer, WsWriter)>>),
    /// The write loop.
    Open {
        writer: Writer,
        sink: WsWriter,
        cancel: CancelWait,
        writing: Writing,
    },
    /// The close handshake, or the last frames and the close frame.
    Closing(crate::BoxFuture<'static, ()>),
    Done,
}

impl WriterTask {
    /// Starts when the handshake is accepted: `handshake` brings the writer.
    pub(super) fn new(handshake: oneshot::Receiver<(Writer, OnUpgrade, oneshot::Sender<Opened>)>) -> Self {
        WriterTask(Step::Waiting(handshake))
    }
}

impl Future for WriterTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut self.get_mut().0;
        loop {
            match this {
                Step::Waiting(handshake) => match std::task::ready!(Pin::new(handshake).poll(cx)) {
                    Ok((writer, on_upgrade, opened)) => {
                        *this = Step::Opening(Box::pin(writer.open(on_upgrade, opened)));
                    }
                    Err(_) => *this = Step::Done,
                },
                Step::Opening(opening) => match std::task::ready!(opening.as_mut().poll(cx)) {
                    Some((writer, sink)) => {
                        writer.conn.keepalive.arm();
                        let (cancel, writing) = (CancelWait::new(), Writing::default());
                        *this = Step::Open { writer, sink, cancel, writing };
                    }
                    None => *this = Step::Done,
                },
                Step::Open { writer, sink, cancel, writing } => {
                    // The sweeper's wake emptied the waker slot: registered again just below.
                    if writer.conn.keepalive.take_ping() {
                        writing.ping = true;
                        cancel.rearm();
                    }
                    let stop = if cancel.poll(&writer.conn, Waiter::Writer, cx).is_ready() {
                        Stop::Finished
                    } else {
                        std::task::ready!(writer.poll_write(sink, writing, cx))
                    };
                    if let Step::Open { writer, sink, .. } = std::mem::replace(this, Step::Done) {
                        *this = Step::Closing(Box::pin(writer.close(stop, sink)));
                    }
                }
                Step::Closing(closing) => {
                    std::task::ready!(closing.as_mut().poll(cx));
                    *this = Step::Done;
                }
                Step::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Writer {
    pub(super) fn new(events: Events, conn: Arc<ConnState>, config: Arc<ServerState>) -> Self {
        config.metrics.open_websockets.increment(1.0);
        Writer { events, conn, close_sent: false, config }
    }

    /// Waits for the upgrade, opens the socket and hands its read half to the reader; gives
    /// itself back with the write half, or nothing when the connection ended first.
    async fn open(self, on_upgrade: OnUpgrade, opened: oneshot::Sender<Opened>) -> Option<(Writer, WsWriter)> {
        let upgraded = tokio::select! {
            upgraded = on_upgrade => upgraded,
            () = self.conn.cancelled() => return None,
        };
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket upgrade failed");
                self.conn.abort(close_code::ABNORMAL, "upgrade failed");
                crate::metrics::websocket_closed("lost");
                return None;
            }
        };
        let config = &self.config.config;
        let (io, read_ahead) = socket::WsIo::new(upgraded);
        let socket = ChunkedRead::new(io, config.read_buffer_size, read_ahead);
        let (read_half, sink) = socket::open(socket, ws_config(config));
        opened.send(Ok(read_half)).ok()?;
        Some((self, sink))
    }

    /// After the write loop: the close handshake, or the last frames and the close frame.
    async fn close(mut self, stop: Stop, mut sink: WsWriter) {
        crate::metrics::websocket_closed(self.close_cause(&stop));
        let conn = self.conn.clone();
        let close_timeout = self.config.config.close_timeout;
        match stop {
            Stop::Broken => self.conn.abort(close_code::ABNORMAL, "connection lost"),
            Stop::CloseSent => {
                // Wait for the client's close frame (the inbox reads it and the application
                // finishes), discarding anything still sent.
                let waited = tokio::time::timeout(close_timeout, async {
                    tokio::select! {
                        () = conn.cancelled() => {}
                        () = async { while self.events.recv().await.is_some() {} } => {}
                    }
                })
                .await;
                if waited.is_err() {
                    self.conn.abort(close_code::ABNORMAL, "close handshake timed out");
                }
                let _ = tokio::time::timeout(close_timeout, sink.flush()).await;
            }
            Stop::Finished => {
                let _ = tokio::time::timeout(close_timeout, self.finish(&mut sink)).await;
            }
        }
    }

    /// Who ended the connection, for `channels_websocket_closes_total`.
    fn close_cause(&self, stop: &Stop) -> &'static str {
        match stop {
            Stop::Broken => return "lost",
            Stop::CloseSent => return "application",
            Stop::Finished => {}
        }
        if self.conn.peer_closed.load(Ordering::Relaxed) {
            return "client";
        }
        let close = self.conn.close_reason();
        match close.code {
            close_code::SERVICE_RESTART => "shutdown",
            close_code::POLICY if close.reason == crate::connection::SLOW_CLIENT => "slow_client",
            close_code::POLICY => "policy",
            close_code::AWAY if close.reason == PING_TIMEOUT => "ping_timeout",
            close_code::ERROR => "error",
            close_code::ABNORMAL => "lost",
            close_code::NORMAL => "application",
            _ => "client",
        }
    }

    /// Writes events until the application closes, the queue ends or writing fails: up to
    /// [`BATCH`] frames fed, then one flush; keepalive pings when the queue is quiet.
    fn poll_write(&mut self, sink: &mut WsWriter, writing: &mut Writing, cx: &mut Context<'_>) -> Poll<Stop> {
        // The queue was found empty in this call, with this task's waker left with it: what is
        // queued now (only from another task: this one is here) wakes it. No need to look again.
        let mut drained = false;
        loop {
            if writing.flushing {
                if std::task::ready!(sink.poll_flush(cx)).is_err() {
                    return Poll::Ready(Stop::Broken);
                }
                writing.flushing = false;
                if self.close_sent {
                    return Poll::Ready(Stop::CloseSent);
                }
                if drained && !writing.ping {
                    return Poll::Pending;
                }
            }
            if std::mem::take(&mut writing.ping)
                && self.start_send(sink, writing, WsMessage::Ping(Bytes::new())).is_err()
            {
                return Poll::Ready(Stop::Broken);
            }
            // Feed what is queued, up to a batch. Feeding only queues (the socket is written by
            // the flush), and nothing is fed while a flush is under way.
            let mut finished = false;
            while !self.close_sent && (writing.fed as usize) < BATCH {
                let event = match self.events.poll_recv(cx) {
                    Poll::Ready(Some(event)) => event,
                    Poll::Ready(None) => {
                        finished = true;
                        break;
                    }
                    Poll::Pending => {
                        drained = true;
                        break;
                    }
                };
                let Some(frame) = to_frame(event) else { continue };
                if self.start_send(sink, writing, frame).is_err() {
                    return Poll::Ready(Stop::Broken);
                }
            }
            if writing.fed > 0 {
                self.count_sent(u64::from(writing.messages), writing.bytes);
                (writing.fed, writing.messages, writing.bytes) = (0, 0, 0);
                writing.flushing = true;
                continue;
            }
            return if finished { Poll::Ready(Stop::Finished) } else { Poll::Pending };
        }
    }

    /// Feeds one frame, counting it.
    fn start_send(
        &mut self,
        sink: &mut WsWriter,
        writing: &mut Writing,
        frame: WsMessage,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let closing = matches!(frame, WsMessage::Close(_));
        if !closing && !matches!(frame, WsMessage::Ping(_)) {
            writing.messages += 1;
            writing.bytes += frame.len() as u64;
        }
        sink.start_send(frame)?;
        writing.fed += 1;
        self.close_sent |= closing;
        Ok(())
    }

    fn count_sent(&self, messages: u64, bytes: u64) {
        let metrics = &self.config.metrics;
        metrics.sent.increment(messages);
        metrics.sent_bytes.increment(bytes);
    }

    /// After cancellation: write what is queued (unless the client is dead or too slow), then
    /// the close frame with the connection's close reason.
    async fn finish(&mut self, sink: &mut WsWriter) {
        if self.conn.peer_closed.load(Ordering::Relaxed) {
            // Writes the close reply queued when the client's close frame was read; nothing may
            // follow it. (It then reports the connection closed: that is the expected end.)
            let _ = sink.flush().await;
            return;
        }
        let close = self.conn.close_reason();
        if close.code == close_code::ABNORMAL {
            return;
        }
        if close.code != close_code::POLICY {
            while let Some(event) = self.events.try_recv() {
                let Some(frame) = to_frame(event) else { continue };
                let closing = matches!(frame, WsMessage::Close(_));
                if sink.start_send(frame).is_err() {
                    return;
                }
                if closing {
                    self.close_sent = true;
                    break;
                }
            }
        }
        if !self.close_sent && sink.start_send(close_frame(close)).is_err() {
            return;
        }
        let _ = sink.flush().await;
    }
}
