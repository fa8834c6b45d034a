//! WebSocket connections: the handshake that waits for the application, then one task per
//! connection running the application (whose inbox reads the frames) and the writer that drains
//! the outgoing queue.

use std::future::{Future, pending};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::body::{Body, status_page};
use super::chunked::{CODEC_BUFFER, ChunkedRead};
use super::{ServerConfig, ServerState, build_scope, error_status, run_app};
use crate::connection::{ConnState, EventSource, Events, Inbox, Outbox};
use crate::error::AppError;
use crate::event::{Close, Inbound, Message, Outbound, close_code};
use crate::scope::Protocol;

type Stream = WebSocketStream<ChunkedRead<TokioIo<Upgraded>>>;
/// What the writer hands the inbox: the read half, or the close code the handshake ended with.
type Opened = Result<SplitStream<Stream>, u16>;

/// Most frames written before a flush.
const BATCH: usize = 64;

/// True for a request that asks for a WebSocket (`Upgrade: websocket`).
pub(super) fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
}

/// Checks the handshake headers (RFC 6455 section 4.2.1); returns the key, or the answer.
fn validate(request: &Request<Incoming>) -> Result<HeaderValue, Box<Response<Body>>> {
    if request.method() != Method::GET {
        return Err(Box::new(bad_request("a WebSocket handshake must be a GET request")));
    }
    if request.version() < Version::HTTP_11 {
        return Err(Box::new(bad_request("a WebSocket handshake needs HTTP/1.1")));
    }
    let has_upgrade_token = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade_token {
        return Err(Box::new(bad_request("missing `Connection: upgrade`")));
    }
    if request.headers().get(SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        // RFC 6455 section 4.4: say which version this server speaks.
        let mut response = super::refuse(StatusCode::UPGRADE_REQUIRED, "unsupported or missing Sec-WebSocket-Version");
        response.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(Box::new(response));
    }
    let mut keys = request.headers().get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key,
        (None, _) => return Err(Box::new(bad_request("missing Sec-WebSocket-Key"))),
        (Some(_), Some(_)) => return Err(Box::new(bad_request("more than one Sec-WebSocket-Key"))),
    };
    if !is_valid_key(key.as_bytes()) {
        return Err(Box::new(bad_request("Sec-WebSocket-Key must be 16 bytes in base64")));
    }
    Ok(key.clone())
}

/// A base64 encoding of 16 bytes: 22 base64 characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn bad_request(reason: &'static str) -> Response<Body> {
    super::refuse(StatusCode::BAD_REQUEST, reason)
}

fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        // The socket is read in chunks of `config.read_buffer_size` by `ChunkedRead`.
        .read_buffer_size(CODEC_BUFFER)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// Runs the handshake: starts the application, waits for its accept or refusal, answers.
pub(super) async fn handshake(
    state: Arc<ServerState>,
    mut request: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Body> {
    let key = match validate(&request) {
        Ok(key) => key,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let config = &state.config;
    let (parts, _body) = request.into_parts();
    let scope = build_scope(Protocol::Websocket, parts, remote, local, config);
    let conn =
        Arc::new(ConnState::new(&state.shutdown, config.write_timeout, config.write_queue, config.write_queue_bytes));
    let (outbox, mut events) = Outbox::for_connection(conn.clone());
    let (opened_tx, opened_rx) = oneshot::channel();
    let source = WsSource {
        throttle: config.inbound_rate.map(|rate| Box::new(Throttle::new(rate))),
        state: ReadState::Connecting(opened_rx),
        cancelled: Box::pin(conn.token.clone().cancelled_owned()),
        conn: conn.clone(),
    };
    let inbox = Inbox::from_source(source);
    let app_conn = conn.clone();
    let run = run_app(state.app.clone(), scope, inbox, outbox);
    let (finished_tx, mut finished) = oneshot::channel();
    let app = async move {
        let result = run.await;
        if result.is_err() {
            app_conn.abort(close_code::ERROR, "internal error");
        }
        // The application is done: the writer sends what is queued, then the close frame.
        app_conn.token.cancel();
        let _ = finished_tx.send(result);
    };
    // The writer arrives when the handshake is accepted (dropped unsent when it is refused).
    let (writer_tx, writer_rx) = oneshot::channel::<(Writer, OnUpgrade, oneshot::Sender<Opened>)>();
    let writer = async move {
        if let Ok((writer, on_upgrade, opened)) = writer_rx.await {
            writer.run(on_upgrade, opened).await;
        }
    };
    // One task per connection, polling the application, then the writer: what the application
    // queues while handling a frame is written in the same poll, with no second task to wake.
    state.tracker.spawn(futures_util::future::join(app, writer));

    let decision = tokio::select! {
        biased;
        event = events.recv() => event,
        result = &mut finished => return status_page(unserved(result)),
        () = tokio::time::sleep(config.connect_timeout) => {
            tracing::warn!(timeout = ?config.connect_timeout, "consumer neither accepted nor refused the WebSocket in time; refused");
            conn.abort(close_code::ABNORMAL, "handshake timed out");
            return status_page(StatusCode::FORBIDDEN);
        }
        () = conn.token.cancelled() => return status_page(StatusCode::SERVICE_UNAVAILABLE),
    };
    match decision {
        Some(Outbound::WebsocketAccept(accept)) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.extend(accept.headers);
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            let accept_key = derive_accept_key(key.as_bytes());
            if let Ok(value) = HeaderValue::from_str(&accept_key) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, value);
            }
            if let Some(subprotocol) = accept.subprotocol {
                match HeaderValue::from_str(&subprotocol) {
                    Ok(value) => {
                        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
                    }
                    Err(_) => tracing::warn!(%subprotocol, "subprotocol is not a valid header value; not sent"),
                }
            }
            let writer = Writer { events, conn, close_sent: false, config: state.clone() };
            // Fails only when the connection's task is gone, and then there is nothing to write.
            let _ = writer_tx.send((writer, on_upgrade, opened_tx));
            response
        }
        Some(Outbound::WebsocketClose(close)) => {
            let _ = opened_tx.send(Err(close.code));
            status_page(StatusCode::FORBIDDEN)
        }
        Some(other) => {
            tracing::error!(event = ?other, "WebSocket application sent an event before accepting; refused");
            conn.abort(close_code::ERROR, "sent before accept");
            status_page(StatusCode::INTERNAL_SERVER_ERROR)
        }
        // Every outbox is gone: the application ended without deciding.
        None => status_page(unserved(finished.await)),
    }
}

/// The status for a handshake whose application ended without accepting.
fn unserved(finished: Result<Result<(), AppError>, oneshot::error::RecvError>) -> StatusCode {
    match finished {
        Ok(Ok(())) => StatusCode::FORBIDDEN,
        Ok(Err(err)) => error_status(&err, &Protocol::Websocket),
        // The task ended without a result: the runtime is shutting down.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

enum ReadState {
    /// Before the connect event was delivered.
    Connecting(oneshot::Receiver<Opened>),
    /// Connect delivered; waiting for the handshake to finish (or be refused).
    Upgrading(oneshot::Receiver<Opened>),
    Open(SplitStream<Stream>),
    /// Disconnect delivered.
    Done,
}

/// The inbox of a WebSocket application. It reads frames in the application's own task, so a
/// message from the client reaches the consumer without a hop through another task.
pub(crate) struct WsSource {
    state: ReadState,
    /// [`ServerConfig::inbound_rate`](super::ServerConfig::inbound_rate), when set.
    throttle: Option<Box<Throttle>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    conn: Arc<ConnState>,
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
    fn disconnect(&mut self, code: u16) -> Poll<Option<Inbound>> {
        self.state = ReadState::Done;
        Poll::Ready(Some(Inbound::WebsocketDisconnect { code }))
    }

    fn poll_recv_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        loop {
            if !matches!(self.state, ReadState::Connecting(_) | ReadState::Done)
                && self.cancelled.as_mut().poll(cx).is_ready()
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
                    Poll::Ready(()) => match stream.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            self.conn.seen.store(true, Ordering::Relaxed);
                            match frame {
                                WsMessage::Text(text) => {
                                    if let Some(throttle) = &mut self.throttle {
                                        throttle.consume();
                                    }
                                    return Poll::Ready(Some(Inbound::WebsocketReceive(Message::Text(text))));
                                }
                                WsMessage::Binary(bytes) => {
                                    if let Some(throttle) = &mut self.throttle {
                                        throttle.consume();
                                    }
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
    fn new(rate: super::RateLimit) -> Self {
        let interval = std::time::Duration::from_secs(1) / rate.per_second.max(1);
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

/// Why the write loop stopped.
enum Stop {
    /// The application closed the connection.
    CloseSent,
    /// The connection was cancelled, or every outbox is gone.
    Finished,
    /// Writing failed: the client is gone.
    Broken,
}

/// Keepalive: ping a client that has been silent for the interval, close it if it stays silent.
struct Keepalive {
    interval: std::time::Duration,
    timeout: std::time::Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

enum Beat {
    Quiet,
    Ping,
    Dead,
}

impl Keepalive {
    fn new(config: &ServerConfig) -> Option<Self> {
        let interval = config.ping_interval?;
        Some(Keepalive {
            interval,
            timeout: config.ping_timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
        })
    }

    fn on_timer(&mut self, conn: &ConnState) -> Beat {
        if conn.seen.swap(false, Ordering::Relaxed) {
            self.awaiting_pong = false;
            self.timer.as_mut().reset(Instant::now() + self.interval);
            Beat::Quiet
        } else if !self.awaiting_pong {
            self.awaiting_pong = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
            Beat::Ping
        } else {
            Beat::Dead
        }
    }
}

async fn timer(keepalive: &mut Option<Keepalive>) {
    match keepalive {
        Some(keepalive) => keepalive.timer.as_mut().await,
        None => pending().await,
    }
}

fn to_frame(event: Outbound) -> Option<WsMessage> {
    match event {
        Outbound::WebsocketSend(Message::Text(text)) => Some(WsMessage::Text(text)),
        Outbound::WebsocketSend(Message::Binary(bytes)) => Some(WsMessage::Binary(bytes)),
        Outbound::WebsocketClose(close) => Some(close_frame(close)),
        other => {
            tracing::warn!(event = ?other, "event not valid on an open WebSocket; ignored");
            None
        }
    }
}

fn close_frame(close: Close) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code: close.code.into(), reason: close.reason }))
}

/// Writes to the socket: queued events in batches, keepalive pings, the close handshake. Runs in
/// the connection's task, beside the application.
struct Writer {
    events: Events,
    conn: Arc<ConnState>,
    close_sent: bool,
    config: Arc<ServerState>,
}

impl Writer {
    async fn run(mut self, on_upgrade: OnUpgrade, opened: oneshot::Sender<Opened>) {
        let upgraded = tokio::select! {
            upgraded = on_upgrade => upgraded,
            () = self.conn.token.cancelled() => return,
        };
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket upgrade failed");
                self.conn.abort(close_code::ABNORMAL, "upgrade failed");
                return;
            }
        };
        // This task lives as long as the connection, and its future is as large as its largest
        // step: the one-off steps (setting the stream up, closing) are boxed so that only the
        // write loop's state is kept while the connection is open.
        let config = &self.config.config;
        let socket = ChunkedRead::new(TokioIo::new(upgraded), config.read_buffer_size);
        let stream = Box::pin(WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config(config)))).await;
        let (mut sink, read_half) = stream.split();
        if opened.send(Ok(read_half)).is_err() {
            return;
        }
        let conn = self.conn.clone();
        let stop = tokio::select! {
            biased;
            () = conn.token.cancelled() => Stop::Finished,
            stop = self.write_loop(&mut sink) => stop,
        };
        Box::pin(self.close(stop, sink)).await;
    }

    /// After the write loop: the close handshake, or the last frames and the close frame.
    async fn close(mut self, stop: Stop, mut sink: SplitSink<Stream, WsMessage>) {
        let conn = self.conn.clone();
        let close_timeout = self.config.config.close_timeout;
        match stop {
            Stop::Broken => self.conn.abort(close_code::ABNORMAL, "connection lost"),
            Stop::CloseSent => {
                // Wait for the client's close frame (the inbox reads it and the application
                // finishes), discarding anything still sent.
                let waited = tokio::time::timeout(close_timeout, async {
                    tokio::select! {
                        () = conn.token.cancelled() => {}
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

    /// Sends events until the application closes, the queue ends or writing fails.
    async fn write_loop(&mut self, sink: &mut SplitSink<Stream, WsMessage>) -> Stop {
        let mut keepalive = Keepalive::new(&self.config.config);
        loop {
            let event = tokio::select! {
                biased;
                event = self.events.recv() => event,
                () = timer(&mut keepalive) => {
                    let Some(beat) = keepalive.as_mut().map(|k| k.on_timer(&self.conn)) else { continue };
                    match beat {
                        Beat::Quiet => continue,
                        Beat::Ping => {
                            if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                                return Stop::Broken;
                            }
                            continue;
                        }
                        Beat::Dead => {
                            tracing::debug!("client did not answer a ping in time; closing");
                            self.conn.abort(close_code::AWAY, "ping timeout");
                            return Stop::Finished;
                        }
                    }
                }
            };
            let Some(mut event) = event else { return Stop::Finished };
            for _ in 0..BATCH {
                if let Some(frame) = to_frame(event) {
                    let closing = matches!(frame, WsMessage::Close(_));
                    if sink.feed(frame).await.is_err() {
                        return Stop::Broken;
                    }
                    if closing {
                        self.close_sent = true;
                        return if sink.flush().await.is_ok() { Stop::CloseSent } else { Stop::Broken };
                    }
                }
                match self.events.try_recv() {
                    Some(next) => event = next,
                    None => break,
                }
            }
            if sink.flush().await.is_err() {
                return Stop::Broken;
            }
        }
    }

    /// After cancellation: write what is queued (unless the client is dead or too slow), then
    /// the close frame with the connection's close reason.
    async fn finish(&mut self, sink: &mut SplitSink<Stream, WsMessage>) {
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
                if sink.feed(frame).await.is_err() {
                    return;
                }
                if closing {
                    self.close_sent = true;
                    break;
                }
            }
        }
        if !self.close_sent && sink.feed(close_frame(close)).await.is_err() {
            return;
        }
        let _ = sink.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"short"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
    }
}
