//! [`JsonWebsocketConsumer`]: serde types in, serde types out.

use std::future::{Future, ready};

use serde::de::DeserializeOwned;

use super::websocket::SocketConsumer;
use super::websocket::unhandled_websocket_message;
use super::{ConsumerApp, ConsumerError, FromScope, Websocket};
use crate::event::{ChannelMessage, Message, close_code};
use crate::layers::{Since, Track};

/// A client frame that a JSON consumer could not decode.
#[derive(Debug, thiserror::Error)]
pub enum JsonDecodeError {
    /// A binary frame; JSON consumers take text frames only.
    #[error("expected a JSON text frame, got a binary frame")]
    Binary,
    /// Text that is not valid JSON for the consumer's `Incoming` type.
    #[error("invalid JSON message: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl JsonDecodeError {
    /// The close code the default [`JsonWebsocketConsumer::decode_error`] closes with:
    /// 1003 (unsupported data) for a binary frame, 1007 (invalid payload) for bad JSON.
    pub fn close_code(&self) -> u16 {
        match self {
            JsonDecodeError::Binary => close_code::UNSUPPORTED,
            JsonDecodeError::Invalid(_) => close_code::INVALID,
        }
    }
}

/// A WebSocket consumer that speaks JSON (Channels' `AsyncJsonWebsocketConsumer`): each text
/// frame is decoded into [`Incoming`](Self::Incoming) and handed to `receive_json`; send with
/// [`Websocket::send_json`].
///
/// A frame that does not decode goes to [`decode_error`](Self::decode_error), which by default
/// closes the connection with [`JsonDecodeError::close_code`] and the error as the reason.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `JsonWebsocketConsumer`",
    note = "with the macros, a `#[consumer(json)]` struct needs a `#[consumer]` impl block with \
            `async fn receive_json(&mut self, ws: &mut Websocket, content: T)` (T: Deserialize)"
)]
pub trait JsonWebsocketConsumer: Send + 'static {
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

    /// The type client messages decode into (often an enum tagged by a field).
    type Incoming: DeserializeOwned + Send;

    /// The client asks to connect; the default accepts.
    fn connect(&mut self, ws: &mut Websocket) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        async move {
            ws.accept().await?;
            Ok(())
        }
    }

    /// A decoded client message.
    fn receive_json(
        &mut self,
        ws: &mut Websocket,
        content: Self::Incoming,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    /// A frame that did not decode; the default closes with 1003 (binary) or 1007 (bad JSON).
    fn decode_error(
        &mut self,
        ws: &mut Websocket,
        error: JsonDecodeError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        async move {
            tracing::debug!(%error, "closing JSON consumer on undecodable frame");
            ws.close_with_reason(error.close_code(), &error.to_string()).await?;
            Ok(())
        }
    }

    /// A channel-layer message (dispatched by its `type`; `#[consumer]` generates this).
    fn handle_message(
        &mut self,
        ws: &mut Websocket,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        unhandled_websocket_message(ws, message)
    }

    /// The connection is gone, with its close code.
    fn disconnect(&mut self, code: u16) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = code;
        ready(Ok(()))
    }

    /// This consumer as an application, built per connection with [`FromScope`].
    fn as_app() -> ConsumerApp<Self>
    where
        Self: FromScope,
    {
        ConsumerApp::json(Self::from_scope)
    }
}

/// A [`JsonWebsocketConsumer`] as the WebSocket driver sees it: text decoded into its
/// `Incoming` type, anything else to `decode_error`.
pub(super) struct Json<C>(pub(super) Box<C>);

impl<C: JsonWebsocketConsumer> SocketConsumer for Json<C> {
    const KIND: &'static str = "a JsonWebsocketConsumer";

    fn connect(&mut self, ws: &mut Websocket) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        self.0.connect(ws)
    }

    /// Decodes before the handler's future is made, so that the future keeps neither the
    /// message nor its text (an `async fn` kept both beside the handler's own state).
    fn message(
        &mut self,
        ws: &mut Websocket,
        message: Message,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let decoded = match message {
            Message::Text(text) => serde_json::from_str(text.as_str()).map_err(JsonDecodeError::Invalid),
            Message::Binary(_) => Err(JsonDecodeError::Binary),
        };
        match decoded {
            Ok(content) => futures_util::future::Either::Left(self.0.receive_json(ws, content)),
            Err(err) => futures_util::future::Either::Right(self.0.decode_error(ws, err)),
        }
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
