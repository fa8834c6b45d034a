//! What the macros' expansions name: `::channels::__private::...`. Not a public API; it changes
//! with the macros, which is why `channels` pins `channels-macros` to one exact version.

#[path = "private/checks.rs"]
mod checks;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;

pub use self::checks::{Failure, check_protocol, check_url_params};
pub use crate::consumer::{
    ConsumerApp, ConsumerError, Flow, FromScope, GenericConsumer, HttpConsumer, HttpResponse, JsonDecodeError,
    JsonWebsocketConsumer, Websocket, WebsocketConsumer, WebsocketSender, require_method, unhandled_message,
    unhandled_websocket_message,
};
pub use crate::event::{ChannelMessage, Inbound, Message};
pub use crate::layers::{Since, Track};
pub use crate::middleware::{AuthMiddlewareStack, Middleware, Wrapped};
pub use crate::routing::{ProtocolTypeRouter, URLRouter, nest, path, re_nest, re_path};
pub use crate::scope::{Protocol, Scope};
pub use crate::{Application, Outbox};
pub use bytes::Bytes;

/// What `#[consumer]` on a struct implements, and `routing!` uses: the consumer as an
/// application, plus what the route checks need to know.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[consumer]` struct",
    label = "routing! expects a `#[consumer]` type here",
    note = "put `#[consumer(websocket)]` (or `json`, `http`, `protocol = \"...\"`) on the struct, \
            or route any application as an expression in braces: `{{ MyConsumer::as_app() }}`"
)]
pub trait Consumer: Sized + Send + 'static {
    /// The protocol the struct was declared for: `"websocket"`, `"http"` or the custom name.
    const PROTOCOL: &'static str;
    /// The kwargs the required `#[url]` fields read.
    const URL_PARAMS: &'static [&'static str];
    /// The application `routing!` routes to: the consumer, or the consumer behind
    /// `AuthMiddlewareStack` with `#[auth(stack)]`.
    type App: Application;

    /// The consumer as an application.
    fn app() -> Self::App;
}

/// Fails closed for a `#[auth(stack, required)]` consumer however it was built and routed: its
/// `from_scope` refuses a connection whose user is anonymous, saying whether the auth stack ran.
///
/// # Errors
/// [`LoginRequired`](crate::error::LoginRequired) (the server answers 403 and logs the message).
pub fn require_user(scope: &Scope, consumer: &'static str) -> Result<(), ConsumerError> {
    if scope.user.is_authenticated() {
        return Ok(());
    }
    let message = if !scope.user_resolved() {
        format!(
            "`{consumer}` is `#[auth(stack, required)]` but no AuthMiddleware ran for this connection, so nobody is \
             logged in: route it by its name in routing! (or `{consumer}::app()`, which brings the stack), or wrap \
             the hand-built app in AuthMiddlewareStack; anonymous connections are refused"
        )
    } else {
        format!("`{consumer}` requires a logged-in user; anonymous connection refused")
    };
    Err(ConsumerError::from_box(Box::new(crate::error::LoginRequired(message))))
}

/// The value of a `#[state]` field: a clone of the scope's extension of type `T`.
///
/// # Errors
/// [`MissingState`](crate::error::MissingState), naming the `.extension(..)` to add.
pub fn state<T: Clone + Send + Sync + 'static>(
    scope: &Scope,
    consumer: &'static str,
    field: &'static str,
) -> Result<T, ConsumerError> {
    scope.extensions.get::<T>().cloned().ok_or_else(|| {
        let message = format!(
            "field `{field}` of `{consumer}` is `#[state]`, but the app has no `{ty}`: add \
             `.extension(value)` with a `{ty}` to the ProtocolTypeRouter (or `routing! {{ .. }}`) that serves it",
            ty = std::any::type_name::<T>()
        );
        ConsumerError::from_box(Box::new(crate::error::MissingState(message)))
    })
}

/// Reads the required `#[url]` field `name` from the route's kwargs.
///
/// # Errors
/// A missing kwarg or a value `T::from_str` rejects; the message names both.
pub fn url_param<T>(scope: &Scope, name: &str) -> Result<T, ConsumerError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    scope.url_route.parse(name).map_err(ConsumerError::from)
}

/// Reads the optional `#[url]` field `name`: `None` when the route did not capture it.
///
/// # Errors
/// A value `T::from_str` rejects.
pub fn optional_url_param<T>(scope: &Scope, name: &str) -> Result<Option<T>, ConsumerError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match scope.url_route.kwarg(name) {
        None => Ok(None),
        Some(_) => url_param(scope, name).map(Some),
    }
}

/// Decodes a channel-layer message for the handler of `message_type`. A message that does not
/// decode is logged as an error for this connection and skipped (`None`): it is a bug in the
/// sender, not something to close the client's connection over.
pub fn decode_message<T: DeserializeOwned>(message: &ChannelMessage) -> Option<T> {
    match message.deserialize() {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(
                message_type = message.message_type().unwrap_or("<none>"),
                %error,
                "channel-layer message does not decode into its handler's type; message dropped"
            );
            None
        }
    }
}

/// What a consumer method may return: `()` or `Result<(), E>` with `E` into [`ConsumerError`].
#[diagnostic::on_unimplemented(
    message = "a consumer method returns `()` or `Result<(), E>` (E: Error or ConsumerError), not `{Self}`",
    label = "this method's return type"
)]
pub trait IntoConsumerResult {
    /// The method's outcome as the consumer traits want it.
    ///
    /// # Errors
    /// The method's error.
    fn into_consumer_result(self) -> Result<(), ConsumerError>;
}

impl IntoConsumerResult for () {
    fn into_consumer_result(self) -> Result<(), ConsumerError> {
        Ok(())
    }
}

impl<E: Into<ConsumerError>> IntoConsumerResult for Result<(), E> {
    fn into_consumer_result(self) -> Result<(), ConsumerError> {
        self.map_err(Into::into)
    }
}
