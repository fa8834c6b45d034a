//! Typed events between the server and an application (the ASGI messages, as Rust values).
//!
//! An application reads [`Inbound`] events from its [`Inbox`](crate::Inbox) and writes
//! [`Outbound`] events to its [`Outbox`](crate::Outbox). Channels' dict messages map one to one:
//!
//! | Channels message | Rust value |
//! |---|---|
//! | `websocket.connect` | [`Inbound::WebsocketConnect`] |
//! | `websocket.receive` (`text` / `bytes`) | [`Inbound::WebsocketReceive`] with a [`Message`] |
//! | `websocket.disconnect` (`code`) | [`Inbound::WebsocketDisconnect`] |
//! | `websocket.accept` (`subprotocol`, `headers`) | [`Outbound::WebsocketAccept`] |
//! | `websocket.send` | [`Outbound::WebsocketSend`] |
//! | `websocket.close` (`code`, `reason`) | [`Outbound::WebsocketClose`] |
//! | `http.request` (`body`, `more_body`) | [`Inbound::HttpRequest`] |
//! | `http.disconnect` | [`Inbound::HttpDisconnect`] |
//! | `http.response.start` | [`Outbound::HttpResponseStart`] |
//! | `http.response.body` | [`Outbound::HttpResponseBody`] |
//! | a channel-layer message (`{"type": "chat.message", ...}`) | [`Inbound::Channel`] |
//! | anything of a custom protocol | [`Inbound::Custom`] / [`Outbound::Custom`] |

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// UTF-8 text that is cheap to clone (a reference-counted byte buffer): text read from a socket
/// is sent on without being copied.
///
/// The crate's own type around the WebSocket library's (as axum wraps it), so that a new major
/// version of that library is not a breaking change here. Reads as a `&str` (`Deref`,
/// [`as_str`](Self::as_str)); made from `String`, `&str` and (checked) bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(tokio_tungstenite::tungstenite::Utf8Bytes);

impl Utf8Bytes {
    /// Text from a `'static` string, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(tokio_tungstenite::tungstenite::Utf8Bytes::from_static(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub(crate) fn from_socket(text: tokio_tungstenite::tungstenite::Utf8Bytes) -> Self {
        Utf8Bytes(text)
    }

    pub(crate) fn into_socket(self) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        self.0
    }
}

impl std::ops::Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl std::borrow::Borrow<str> for Utf8Bytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Utf8Bytes {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(text.into())
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(text.into())
    }
}

impl From<&String> for Utf8Bytes {
    fn from(text: &String) -> Self {
        Utf8Bytes(text.into())
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    /// Checks that the bytes are UTF-8, without copying them.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes).map(Utf8Bytes)
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0.into()
    }
}

/// WebSocket close codes used by the runtime (RFC 6455, section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away: server shutdown, or a peer that stopped answering pings.
    pub const AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// The endpoint received a kind of data it cannot accept (a binary frame for a JSON consumer).
    pub const UNSUPPORTED: u16 = 1003;
    /// No status code was present in the peer's close frame.
    pub const STATUS: u16 = 1005;
    /// The connection was closed without a close frame (dropped TCP connection, timeouts).
    pub const ABNORMAL: u16 = 1006;
    /// The payload was not consistent with the message type: invalid UTF-8 in a text frame, or
    /// text that is not valid JSON for a JSON consumer's message type.
    pub const INVALID: u16 = 1007;
    /// Policy violation; the runtime uses it for a client too slow to read what it is sent.
    pub const POLICY: u16 = 1008;
    /// The message was bigger than the configured maximum.
    pub const SIZE: u16 = 1009;
    /// The server hit an unexpected condition: the consumer returned an error or panicked.
    pub const ERROR: u16 = 1011;
    /// The server is restarting: reconnect (sent to each WebSocket when a server drains).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later.
    pub const AGAIN: u16 = 1013;
}

/// A WebSocket data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame (always valid UTF-8).
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The bytes of the payload, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_str().as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty text or binary message (empty frames are delivered, not dropped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Message::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Message::Binary(bytes)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Message::Binary(bytes.into())
    }
}

/// A message from a channel layer (or sent by a test): a JSON object with a `type` field,
/// such as `{"type": "chat.message", "text": "hi"}`.
///
/// The value is shared, so a group send to many consumers does not copy it per member.
#[derive(Clone, PartialEq)]
pub struct ChannelMessage {
    shared: Arc<Shared>,
}

#[derive(PartialEq)]
struct Shared {
    value: serde_json::Value,
    /// The `type` field, copied out once: every consumer a message reaches reads it (to
    /// dispatch, to see a close), and a lookup in the map each time costs more than the copy.
    message_type: Option<Box<str>>,
}

impl std::fmt::Debug for ChannelMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelMessage").field("value", &self.shared.value).finish()
    }
}

impl ChannelMessage {
    /// Wraps a JSON value. It should be an object with a string `type` field; see
    /// [`message_type`](Self::message_type).
    pub fn new(value: serde_json::Value) -> Self {
        let message_type = value.get("type").and_then(serde_json::Value::as_str).map(Box::from);
        ChannelMessage { shared: Arc::new(Shared { value, message_type }) }
    }

    /// Serializes any value (usually a struct with a `type` field) into a message.
    ///
    /// # Errors
    /// Fails when the value cannot be represented as JSON.
    pub fn from_serialize<T: serde::Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(ChannelMessage::new(serde_json::to_value(value)?))
    }

    /// The message's `type` field (`"chat.message"`), or `None` when it has none.
    pub fn message_type(&self) -> Option<&str> {
        self.shared.message_type.as_deref()
    }

    /// The whole message.
    pub fn value(&self) -> &serde_json::Value {
        &self.shared.value
    }

    /// Deserializes the message into the handler's own type.
    ///
    /// # Errors
    /// Fails when the message does not have the shape of `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.shared.value)
    }
}

impl From<serde_json::Value> for ChannelMessage {
    fn from(value: serde_json::Value) -> Self {
        ChannelMessage::new(value)
    }
}

/// An event of a custom (non-HTTP, non-WebSocket) protocol: a kind and a JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEvent {
    /// What the event is (`"chat.join"`, `"line"`, ...); the protocol defines the kinds.
    pub kind: String,
    /// Its data.
    pub payload: serde_json::Value,
}

impl CustomEvent {
    /// A custom event.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        CustomEvent { kind: kind.into(), payload }
    }
}

/// One chunk of an HTTP request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestChunk {
    /// The bytes of this chunk (may be empty).
    pub body: Bytes,
    /// True while more chunks follow.
    pub more_body: bool,
}

/// What a WebSocket consumer answers to the handshake.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    /// The chosen subprotocol; should be one of `scope.subprotocols`.
    pub subprotocol: Option<String>,
    /// Extra headers for the `101 Switching Protocols` response.
    pub headers: HeaderMap,
}

/// A close frame: code and reason (the reason is cut to 123 bytes, the protocol's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code; see [`close_code`].
    pub code: u16,
    /// A short human-readable reason.
    pub reason: Utf8Bytes,
}

impl Close {
    /// A close frame with an empty reason.
    pub fn new(code: u16) -> Self {
        Close { code, reason: Utf8Bytes::from_static("") }
    }

    /// A close frame with a reason, cut at a character boundary to fit in 123 bytes.
    pub fn with_reason(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Close { code, reason: Utf8Bytes::from(&reason[..end]) }
    }
}

/// The start of an HTTP response.
#[derive(Debug, Clone)]
pub struct ResponseStart {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
}

/// An event the server (or a test communicator, or a channel layer) gives to an application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Inbound {
    /// A client asks to open a WebSocket; answer with accept or close.
    WebsocketConnect,
    /// A data message from the client.
    WebsocketReceive(Message),
    /// The WebSocket is gone, with the close code (1006 when the connection dropped).
    WebsocketDisconnect {
        /// Close code.
        code: u16,
    },
    /// A chunk of the HTTP request body.
    HttpRequest(RequestChunk),
    /// The HTTP client went away, or the response has been sent completely.
    HttpDisconnect,
    /// A message from a channel layer, dispatched by its `type`.
    Channel(ChannelMessage),
    /// An event of a custom protocol.
    Custom(CustomEvent),
}

/// An event an application sends to the server (or a test communicator).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outbound {
    /// Accept the WebSocket handshake (answered with `101 Switching Protocols`).
    WebsocketAccept(Box<Accept>),
    /// Send a data message.
    WebsocketSend(Message),
    /// Close the WebSocket; before accept, this refuses the handshake with HTTP 403.
    WebsocketClose(Close),
    /// Start the HTTP response.
    HttpResponseStart(Box<ResponseStart>),
    /// A chunk of the HTTP response body; the last one has `more_body == false`.
    HttpResponseBody {
        /// The bytes.
        body: Bytes,
        /// True while more chunks follow.
        more_body: bool,
    },
    /// An event of a custom protocol.
    Custom(CustomEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let close = Close::with_reason(1000, &long);
        assert!(close.reason.len() <= 123);
        assert_eq!(close.reason.len(), 122);
    }

    #[test]
    fn channel_message_type_and_deserialize() {
        #[derive(serde::Deserialize)]
        struct Chat {
            text: String,
        }
        let msg = ChannelMessage::new(serde_json::json!({"type": "chat.message", "text": "hi"}));
        assert_eq!(msg.message_type(), Some("chat.message"));
        assert_eq!(msg.deserialize::<Chat>().unwrap().text, "hi");
        assert_eq!(ChannelMessage::new(serde_json::json!({"x": 1})).message_type(), None);
    }

    #[test]
    fn outbound_stays_small() {
        // The per-connection queue stores these by value; keep the hot variants small.
        assert!(std::mem::size_of::<Outbound>() <= 56, "{}", std::mem::size_of::<Outbound>());
    }
}
