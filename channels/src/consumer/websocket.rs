//! [`WebsocketConsumer`] and the [`Websocket`] handle its methods send through.

use std::future::{Future, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use super::{ConsumerApp, ConsumerError, FromScope, settle, unexpected, unhandled_message};
use crate::application::{Inbox, Outbox};
use crate::connection::Sending;
use crate::error::{AppError, SendError};
use crate::event::{Accept, ChannelMessage, Close, Inbound, Message, Outbound, Utf8Bytes, close_code};
use crate::layers::{CLOSE_TYPE, NOT_RECOVERED_TYPE, PRESENCE_DIFF_TYPE, PRESENCE_STATE_TYPE, Since, Track};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    Closed,
}

/// The connection handle a WebSocket consumer's methods get: accept, send, close.
///
/// Its methods fail with a [`ConsumerError`], as consumer methods do, so a method can end with
/// a send (`ws.send_text(..).await`); the cause is a [`SendError`]
/// (`err.downcast_ref::<SendError>()`, or [`ConsumerError::is_closed`]).
#[derive(Debug)]
pub struct Websocket {
    outbox: Outbox,
    state: State,
    /// Handlers running concurrently ([`spawn`](Self::spawn)); aborted when the connection ends.
    tasks: Option<JoinSet<()>>,
}

impl Websocket {
    /// A handle over `outbox`, for a connection that is not accepted yet.
    pub fn new(outbox: Outbox) -> Self {
        Websocket { outbox, state: State::Connecting, tasks: None }
    }

    /// Accepts the connection (HTTP 101) with no subprotocol.
    ///
    /// # Errors
    /// [`SendError::InvalidState`] if already accepted or closed; [`SendError::Closed`] if the
    /// client left.
    pub fn accept(&mut self) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.accept_with(Accept::default())
    }

    /// Accepts the connection choosing `subprotocol` (one of `scope.subprotocols`).
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_subprotocol(
        &mut self,
        subprotocol: impl Into<String>,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.accept_with(Accept { subprotocol: Some(subprotocol.into()), ..Accept::default() })
    }

    /// Accepts with a subprotocol and extra response headers.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_with(&mut self, accept: Accept) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        // Boxed before the future is made: the future keeps a pointer, not the response headers.
        let event = Outbound::WebsocketAccept(Box::new(accept));
        async move {
            if self.state != State::Connecting {
                return Err(SendError::InvalidState("the WebSocket was already accepted or closed").into());
            }
            Sending::new(&self.outbox, event).await?;
            self.state = State::Open;
            Ok(())
        }
    }

    /// Sends a text or binary message.
    ///
    /// # Errors
    /// [`SendError::InvalidState`] before accept; [`SendError::Closed`] after close;
    /// [`SendError::SlowClient`] when the client stopped reading.
    pub fn send(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.send_message(message.into())
    }

    fn send_message(&mut self, message: Message) -> WsSend<'_> {
        match self.state {
            State::Connecting => WsSend::failed(SendError::InvalidState(
                "the WebSocket has not been accepted, so nothing can be sent over it: accept in connect() first",
            )),
            State::Closed => WsSend::failed(SendError::Closed),
            State::Open => WsSend::Sending(Sending::new(&self.outbox, Outbound::WebsocketSend(message))),
        }
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_text(
        &mut self,
        text: impl Into<Utf8Bytes>,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.send(Message::Text(text.into()))
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_bytes(
        &mut self,
        bytes: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.send(Message::Binary(bytes.into()))
    }

    /// Sends `value` as a JSON text message.
    ///
    /// # Errors
    /// A serialization error, or any [`send`](Self::send) error.
    pub fn send_json<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        match serde_json::to_string(value) {
            Ok(text) => self.send_message(Message::Text(text.into())),
            Err(err) => WsSend::Ready(Some(Err(err.into()))),
        }
    }

    /// Closes with `code` (before accept: refuses the handshake with HTTP 403).
    ///
    /// # Errors
    /// [`SendError::Closed`] if the client already left.
    pub fn close(&mut self, code: u16) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.close_frame(Close::new(code))
    }

    /// Closes with `code` and a reason (cut to 123 bytes).
    ///
    /// # Errors
    /// [`SendError::Closed`] if the client already left.
    pub fn close_with_reason(
        &mut self,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.close_frame(Close::with_reason(code, reason))
    }

    fn close_frame(&mut self, close: Close) -> WsSend<'_> {
        if self.state == State::Closed {
            return WsSend::Ready(Some(Ok(())));
        }
        self.state = State::Closed;
        WsSend::Sending(Sending::new(&self.outbox, Outbound::WebsocketClose(close)))
    }

    /// True once accepted and until closed.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The outbox, to clone into a background task that sends to this connection.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A sender for this connection that a spawned task can own.
    pub fn sender(&self) -> WebsocketSender {
        WebsocketSender { outbox: self.outbox.clone() }
    }

    /// Runs `task` next to the consumer, so a slow job does not hold up the connection's other
    /// events (`#[handler("type", spawn)]` uses this). Its error is logged; it is aborted when
    /// the connection ends.
    pub fn spawn(&mut self, task: impl Future<Output = Result<(), ConsumerError>> + Send + 'static) {
        let tasks = self.tasks.get_or_insert_with(JoinSet::new);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            if let Err(err) = task.await
                && !err.is_closed()
            {
                tracing::error!(%err, "spawned handler failed");
            }
        });
    }

    pub(crate) fn mark_closed(&mut self) {
        self.state = State::Closed;
    }
}

/// Sends to an accepted WebSocket from a spawned task ([`Websocket::sender`]).
#[derive(Debug, Clone)]
pub struct WebsocketSender {
    outbox: Outbox,
}

impl WebsocketSender {
    /// Sends a text or binary message.
    ///
    /// # Errors
    /// [`SendError::Closed`] after the connection closed; [`SendError::SlowClient`].
    pub fn send(&self, message: impl Into<Message>) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        WsSend::Sending(Sending::new(&self.outbox, Outbound::WebsocketSend(message.into())))
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        self.send(Message::Text(text.into()))
    }

    /// Sends `value` as a JSON text message.
    ///
    /// # Errors
    /// A serialization error, or as [`send`](Self::send).
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
        match serde_json::to_string(value) {
            Ok(text) => {
                WsSend::Sending(Sending::new(&self.outbox, Outbound::WebsocketSend(Message::Text(text.into()))))
            }
            Err(err) => WsSend::Ready(Some(Err(err.into()))),
        }
    }
}

/// The future of a [`Websocket`] or [`WebsocketSender`] send: decided at once (not accepted,
/// closed, not serializable), or the outbox's send. Not an `async fn`: each level of those
/// would keep its own copy of the message, and a consumer's future (which lives as long as its
/// connection) is as large as the largest of its methods' futures, most of which send.
enum WsSend<'a> {
    Ready(Option<Result<(), ConsumerError>>),
    Sending(Sending<'a>),
}

impl WsSend<'_> {
    fn failed(err: SendError) -> Self {
        WsSend::Ready(Some(Err(err.into())))
    }
}

impl Future for WsSend<'_> {
    type Output = Result<(), ConsumerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            WsSend::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(SendError::Closed.into()))),
            WsSend::Sending(sending) => Pin::new(sending).poll(cx).map_err(ConsumerError::from),
        }
    }
}

/// A WebSocket consumer (Channels' `AsyncWebsocketConsumer`).
///
/// Every method has a default: `connect` accepts, `receive` ignores the message, `disconnect`
/// does nothing, `handle_message` logs an unhandled channel-layer message. Implement the
/// methods with `async fn`.
///
/// The runtime calls the methods one at a time, in event order: `connect` once, then `receive`
/// for each client message and `handle_message` for each channel-layer message, and
/// `disconnect` once at the end, whatever ended the connection (client close, dropped TCP
/// connection, timeouts, server shutdown, or the consumer's own close).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `WebsocketConsumer`",
    note = "with the macros, a `#[consumer(websocket)]` struct needs a `#[consumer]` impl block \
            (`connect`, `receive`, `disconnect`, handlers; every method is optional)"
)]
pub trait WebsocketConsumer: Send + 'static {
    /// Whether each instance gets a channel on the layer and receives its messages through
    /// `handle_message`. `#[consumer]` sets it to whether the impl block has handlers or groups.
    const RECEIVES_CHANNEL_MESSAGES: bool = true;

    /// The groups to join before `connect` (and leave at the end), e.g. a room from the URL.
    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where this connection starts in the history of the groups it joins that keep one
    /// ([`HistoryConfig`](crate::layers::HistoryConfig)). `requested` is what the client asked
    /// for with the `since` query-string parameter (`?since=<position>`: every message after
    /// it); the default takes it as is. Return e.g. `Since { last: 50, ..requested }` to also
    /// replay a room's last 50 messages on a fresh join or when resuming fails, or a position
    /// the client sent another way.
    fn since(&self, requested: Since) -> Since {
        requested
    }

    /// What to track in a group's presence while this connection lives (e.g. the user, in the
    /// room's group): tracked after the groups are joined, untracked when the consumer ends.
    /// The consumer then gets the group's state first (`"presence.state"`) and its changes
    /// (`"presence.diff"`). `None` (the default): nothing.
    fn presence(&self) -> Option<Track> {
        None
    }

    /// The client asks to connect: call `ws.accept()` (the default) or `ws.close(code)` to refuse.
    fn connect(&mut self, ws: &mut Websocket) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        async move {
            ws.accept().await?;
            Ok(())
        }
    }

    /// A text or binary message from the client.
    fn receive(
        &mut self,
        ws: &mut Websocket,
        message: Message,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ws, message);
        ready(Ok(()))
    }

    /// A channel-layer message (dispatched by its `type`; `#[consumer]` generates this).
    fn handle_message(
        &mut self,
        ws: &mut Websocket,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        unhandled_websocket_message(ws, message)
    }

    /// The connection is gone, with its close code (1006 when it dropped without a close frame).
    fn disconnect(&mut self, code: u16) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = code;
        ready(Ok(()))
    }

    /// This consumer as an application, built per connection with [`FromScope`].
    fn as_app() -> ConsumerApp<Self>
    where
        Self: FromScope,
    {
        ConsumerApp::websocket(Self::from_scope)
    }
}

/// What the one WebSocket driver loop needs of a consumer: text and JSON consumers differ only
/// in how a client's message reaches them ([`Text`], [`super::json::Json`]).
pub(super) trait SocketConsumer: Send + 'static {
    /// For error messages: "a WebsocketConsumer".
    const KIND: &'static str;

    fn connect(&mut self, ws: &mut Websocket) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    fn message(
        &mut self,
        ws: &mut Websocket,
        message: Message,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    fn channel(
        &mut self,
        ws: &mut Websocket,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    fn disconnect(&mut self, code: u16) -> impl Future<Output = Result<(), ConsumerError>> + Send;
}

/// A [`WebsocketConsumer`] as the driver sees it: messages as they come.
pub(super) struct Text<C>(pub(super) Box<C>);

impl<C: WebsocketConsumer> SocketConsumer for Text<C> {
    const KIND: &'static str = "a WebsocketConsumer";

    fn connect(&mut self, ws: &mut Websocket) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        self.0.connect(ws)
    }

    fn message(
        &mut self,
        ws: &mut Websocket,
        message: Message,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        self.0.receive(ws, message)
    }

    fn channel(
        &mut self,
        ws: &mut Websocket,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        self.0.handle_message(ws, message)
    }

    fn disconnect(&mut self, code: u16) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        self.0.disconnect(code)
    }
}

/// The one WebSocket driver loop: connect, messages, layer messages, disconnect (which always
/// runs, however the connection ends).
///
/// An `async` block, not an `async fn`: the function would keep its arguments twice, as
/// captured and as moved into its body (64 B more for every connection's life).
pub(super) fn drive<S: SocketConsumer>(
    consumer: S,
    inbox: Inbox,
    outbox: Outbox,
) -> impl Future<Output = Result<(), AppError>> + Send {
    use crate::ratelog::in_span_boxed as in_span;
    let (mut consumer, mut inbox, mut ws) = (consumer, inbox, Websocket::new(outbox));
    async move {
        loop {
            // The event becomes the step's future in a block of its own (and `let else`, not
            // `while let`), before anything is awaited: otherwise the event keeps its room (and
            // its drop flags) beside every handler's future for the connection's life.
            let (connect, step) = {
                let Some(event) = inbox.recv().await else { break };
                let connect = matches!(event, Inbound::WebsocketConnect);
                let step = match event {
                    Inbound::WebsocketConnect => {
                        Step::Connect { future: in_span(consumer.connect(&mut ws), event_span("connect", None)) }
                    }
                    // The JavaScript client's heartbeat: answered here, never seen by the consumer.
                    Inbound::WebsocketReceive(Message::Text(text)) if text.as_str() == HEARTBEAT => {
                        Step::Reply { future: ws.send_text(HEARTBEAT) }
                    }
                    Inbound::WebsocketReceive(message) => Step::Receive {
                        future: in_span(consumer.message(&mut ws, message), event_span("receive", None)),
                    },
                    Inbound::Channel(message) if message.message_type() == Some(CLOSE_TYPE) => {
                        Step::Close { future: ws.close(layer_close_code(&message)) }
                    }
                    Inbound::Channel(message) => {
                        let span = event_span("channel", Some(&message));
                        Step::Channel { future: in_span(consumer.channel(&mut ws, message), span) }
                    }
                    Inbound::WebsocketDisconnect { code } => {
                        ws.mark_closed();
                        return settle(in_span(consumer.disconnect(code), event_span("disconnect", None)).await);
                    }
                    other => return Err(unexpected(&other, S::KIND)),
                };
                (connect, step)
            };
            let result = step.await;
            if connect {
                // Catch-up of groups with history waits for the accept.
                inbox.release_channel();
            }
            settle(result)?;
        }
        // The inbox ended without a disconnect event (a test dropped its sender).
        settle(consumer.disconnect(close_code::ABNORMAL).await)
    }
}

/// The span of one consumer event (DEBUG: not even made unless asked for), inside the
/// connection's.
fn event_span(kind: &'static str, message: Option<&ChannelMessage>) -> tracing::Span {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::debug_span!("event", kind, r#type = message.and_then(ChannelMessage::message_type))
    } else {
        tracing::Span::none()
    }
}

/// The heartbeat text message of the JavaScript client's protocol: a WebSocket consumer's
/// runtime answers it with the same text, without calling the consumer.
pub const HEARTBEAT: &str = r#"{"heartbeat":true}"#;

/// What a WebSocket consumer does with a channel-layer message that no handler takes (the
/// default `handle_message`, and `#[consumer]`'s fallback), in the protocol the JavaScript
/// client speaks (a `#[handler("...")]` for the type replaces it):
///
/// | Message type | Sent to the client |
/// |---|---|
/// | `"group.not_recovered"` ([`NOT_RECOVERED_TYPE`]) | `{"recovered": false}` |
/// | `"presence.state"` | `{"presence_state": {key: [{"id", "meta"}]}}` |
/// | `"presence.diff"` | `{"presence_diff": {"joins": {...}, "leaves": {...}}}` |
///
/// Anything else is logged as [`unhandled_message`] does.
///
/// Not an `async fn`: the reply is made before anything is awaited, so the future holds only
/// the send (a consumer's loop keeps room for its largest handler's future all along).
///
/// # Errors
/// Sending to the client failed.
pub fn unhandled_websocket_message(
    ws: &mut Websocket,
    message: ChannelMessage,
) -> impl Future<Output = Result<(), ConsumerError>> + Send + '_ {
    let value = message.value();
    let reply = match message.message_type() {
        Some(NOT_RECOVERED_TYPE) => Ok(r#"{"recovered":false}"#.to_owned()),
        Some(PRESENCE_STATE_TYPE) => serde_json::to_string(&serde_json::json!({ "presence_state": value["state"] })),
        Some(PRESENCE_DIFF_TYPE) => {
            let diff = serde_json::json!({ "joins": value["joins"], "leaves": value["leaves"] });
            serde_json::to_string(&serde_json::json!({ "presence_diff": diff }))
        }
        _ => return WsSend::Ready(Some(unhandled_message(&message))),
    };
    match reply {
        Ok(text) => ws.send_message(Message::Text(text.into())),
        Err(err) => WsSend::Ready(Some(Err(err.into()))),
    }
}

/// The code a `"websocket.close"` layer message ([`close_message`](crate::layers::close_message))
/// closes the socket with, whatever the consumer's handlers (default 1000).
fn layer_close_code(message: &ChannelMessage) -> u16 {
    let code = message.value().get("code").and_then(serde_json::Value::as_u64);
    code.and_then(|code| u16::try_from(code).ok()).unwrap_or(close_code::NORMAL)
}

pin_project_lite::pin_project! {
    /// The future of one event in a consumer's loop: one of these at a time, so the loop keeps
    /// room for the largest alone.
    #[project = StepProj]
    enum Step<C, R, X, M, W> {
        Connect { #[pin] future: C },
        Reply { #[pin] future: R },
        Close { #[pin] future: X },
        Receive { #[pin] future: M },
        Channel { #[pin] future: W },
    }
}

impl<C, R, X, M, W> Future for Step<C, R, X, M, W>
where
    C: Future<Output = Result<(), ConsumerError>>,
    R: Future<Output = Result<(), ConsumerError>>,
    X: Future<Output = Result<(), ConsumerError>>,
    M: Future<Output = Result<(), ConsumerError>>,
    W: Future<Output = Result<(), ConsumerError>>,
{
    type Output = Result<(), ConsumerError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.project() {
            StepProj::Connect { future } => future.poll(cx),
            StepProj::Reply { future } => future.poll(cx),
            StepProj::Close { future } => future.poll(cx),
            StepProj::Receive { future } => future.poll(cx),
            StepProj::Channel { future } => future.poll(cx),
        }
    }
}
