//! Consumers: one instance per connection, with methods the runtime calls as events arrive.
//!
//! | Trait | For | Channels' class |
//! |---|---|---|
//! | [`WebsocketConsumer`] | text and binary WebSocket messages | `AsyncWebsocketConsumer` |
//! | [`JsonWebsocketConsumer`] | serde types over WebSocket text frames | `AsyncJsonWebsocketConsumer` |
//! | [`HttpConsumer`] | HTTP requests, whole or streamed responses | `AsyncHttpConsumer` |
//! | [`GenericConsumer`] | any protocol, custom ones included | `AsyncConsumer` |
//!
//! A consumer becomes an [`Application`] with `as_app()` (it then needs
//! [`FromScope`], which `#[consumer]` generates) or with a [`ConsumerApp`] constructor that takes
//! a closure building the consumer from the scope:
//!
//! ```
//! use channels::consumer::{ConsumerApp, ConsumerError, Websocket, WebsocketConsumer};
//! use channels::event::Message;
//!
//! struct Echo;
//!
//! impl WebsocketConsumer for Echo {
//!     async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
//!         ws.send(message).await?;
//!         Ok(())
//!     }
//! }
//!
//! let app = ConsumerApp::websocket(|_scope| Ok(Echo));
//! # let _: &dyn channels::Application = &app;
//! ```
//!
//! Methods return `Result<(), ConsumerError>`; any `std::error::Error` converts with `?`. An error
//! ends the connection (WebSocket close 1011, HTTP 500 before the response started); a send that
//! fails only because the connection is already gone is not treated as an error.

mod form;
mod generic;
mod http;
mod json;
mod websocket;

use std::fmt;
use std::future::ready;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::Either;

pub use self::form::{Form, FormError, MAX_FIELDS};
pub use self::generic::{Flow, GenericConsumer};
pub use self::http::{HttpConsumer, HttpResponse};
pub use self::json::{JsonDecodeError, JsonWebsocketConsumer};
pub use self::websocket::{HEARTBEAT, Websocket, WebsocketConsumer, WebsocketSender, unhandled_websocket_message};

use crate::BoxFuture;
use crate::application::{Application, Inbox, Outbox};
pub use crate::error::ConsumerError;
use crate::error::{AppError, MethodNotAllowed};
use crate::event::{ChannelMessage, Inbound};
use crate::layers::{Membership, Position, Since, Track};
use crate::scope::Scope;

/// Builds a consumer for one connection from its scope. `#[consumer]` implements it (keeping
/// the scope in the `scope` field and parsing URL parameters); hand-written consumers implement
/// it to use `as_app()`.
///
/// An error refuses the connection: a WebSocket handshake gets 403, an HTTP request 404.
pub trait FromScope: Sized {
    /// Builds the consumer.
    ///
    /// # Errors
    /// Any error refuses the connection; its message is logged.
    fn from_scope(scope: Scope) -> Result<Self, ConsumerError>;
}

type Build<C> = dyn Fn(Scope) -> Result<C, ConsumerError> + Send + Sync;
/// Runs one consumer instance. The instance is boxed: an async fn keeps room for its arguments
/// beside its own locals, so a consumer passed by value (its `Scope` alone is ~600 bytes)
/// would be paid for twice for the whole connection.
type Drive<C> = fn(Box<C>, Inbox, Outbox) -> BoxFuture<'static, Result<(), AppError>>;

/// How a consumer kind uses the channel layer, from its trait.
struct LayerUse<C> {
    /// Give each instance a channel and deliver its messages.
    receives: bool,
    /// The groups an instance joins before `connect`.
    groups: fn(&C) -> Vec<String>,
    /// Where it starts in their histories, from what the client asked.
    since: fn(&C, Since) -> Since,
    /// What it tracks in a group's presence.
    presence: fn(&C) -> Option<Track>,
    /// Hold channel messages until `connect` ran (WebSocket consumers: a catch-up is sent
    /// to an accepted socket).
    hold_until_connect: bool,
}

impl<C> Clone for LayerUse<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for LayerUse<C> {}

/// An [`Application`] that builds a consumer per connection and runs it.
///
/// When the consumer receives channel-layer messages (the traits'
/// `RECEIVES_CHANNEL_MESSAGES`) and the scope has a layer, the instance gets a channel
/// (`scope.channel_name`) whose messages arrive as [`Inbound::Channel`], and joins the groups
/// its `groups()` names before `connect`; it leaves them when it ends, however it ends.
pub struct ConsumerApp<C> {
    build: Arc<Build<C>>,
    drive: Drive<C>,
    layer: LayerUse<C>,
}

impl<C> Clone for ConsumerApp<C> {
    fn clone(&self) -> Self {
        ConsumerApp { build: self.build.clone(), drive: self.drive, layer: self.layer }
    }
}

impl<C> fmt::Debug for ConsumerApp<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerApp").field("consumer", &std::any::type_name::<C>()).finish()
    }
}

impl<C: Send + 'static> ConsumerApp<C> {
    fn new(
        build: impl Fn(Scope) -> Result<C, ConsumerError> + Send + Sync + 'static,
        drive: Drive<C>,
        layer: LayerUse<C>,
    ) -> Self {
        ConsumerApp { build: Arc::new(build), drive, layer }
    }
}

impl<C: WebsocketConsumer> ConsumerApp<C> {
    /// Runs a [`WebsocketConsumer`] built by `build` for each connection.
    pub fn websocket(build: impl Fn(Scope) -> Result<C, ConsumerError> + Send + Sync + 'static) -> Self {
        let layer = LayerUse {
            receives: C::RECEIVES_CHANNEL_MESSAGES,
            groups: C::groups,
            since: C::since,
            presence: C::presence,
            hold_until_connect: true,
        };
        ConsumerApp::new(
            build,
            |consumer, inbox, outbox| Box::pin(websocket::drive(websocket::Text(consumer), inbox, outbox)),
            layer,
        )
    }
}

impl<C: JsonWebsocketConsumer> ConsumerApp<C> {
    /// Runs a [`JsonWebsocketConsumer`] built by `build` for each connection.
    pub fn json(build: impl Fn(Scope) -> Result<C, ConsumerError> + Send + Sync + 'static) -> Self {
        let layer = LayerUse {
            receives: C::RECEIVES_CHANNEL_MESSAGES,
            groups: C::groups,
            since: C::since,
            presence: C::presence,
            hold_until_connect: true,
        };
        ConsumerApp::new(
            build,
            |consumer, inbox, outbox| Box::pin(websocket::drive(json::Json(consumer), inbox, outbox)),
            layer,
        )
    }
}

impl<C: HttpConsumer> ConsumerApp<C> {
    /// Runs an [`HttpConsumer`] built by `build` for each request.
    pub fn http(build: impl Fn(Scope) -> Result<C, ConsumerError> + Send + Sync + 'static) -> Self {
        let layer = LayerUse {
            receives: C::RECEIVES_CHANNEL_MESSAGES,
            groups: C::groups,
            since: C::since,
            presence: C::presence,
            hold_until_connect: false,
        };
        ConsumerApp::new(build, |consumer, inbox, outbox| Box::pin(http::drive(consumer, inbox, outbox)), layer)
    }
}

impl<C: GenericConsumer> ConsumerApp<C> {
    /// Runs a [`GenericConsumer`] built by `build` for each connection.
    pub fn generic(build: impl Fn(Scope) -> Result<C, ConsumerError> + Send + Sync + 'static) -> Self {
        let layer = LayerUse {
            receives: C::RECEIVES_CHANNEL_MESSAGES,
            groups: C::groups,
            since: C::since,
            presence: C::presence,
            hold_until_connect: false,
        };
        ConsumerApp::new(build, |consumer, inbox, outbox| Box::pin(generic::drive(consumer, inbox, outbox)), layer)
    }
}

/// Refuses an HTTP request whose method is not one of `allowed` (Django's
/// `require_http_methods`): call it first in a hand-written [`FromScope`];
/// `#[consumer(http, methods = ["GET", "POST"])]` does. The server answers `405 Method Not
/// Allowed` with an `Allow` header, before the consumer is built or the body read.
///
/// ```
/// use channels::consumer::{ConsumerError, FromScope, require_method};
/// use channels::Scope;
///
/// struct Vote { scope: Scope }
///
/// impl FromScope for Vote {
///     fn from_scope(scope: Scope) -> Result<Self, ConsumerError> {
///         require_method(&scope, &["POST"])?;
///         Ok(Vote { scope })
///     }
/// }
/// ```
///
/// # Errors
/// [`MethodNotAllowed`] when the method is not allowed.
pub fn require_method(scope: &Scope, allowed: &[&str]) -> Result<(), ConsumerError> {
    if allowed.iter().any(|method| scope.method.as_str() == *method) {
        return Ok(());
    }
    Err(ConsumerError::from(MethodNotAllowed {
        method: scope.method.to_string(),
        allowed: allowed.iter().map(|method| (*method).to_owned()).collect(),
    }))
}

/// Why a consumer could not be built for a connection.
fn refusal(err: ConsumerError) -> AppError {
    if let Some(login) = err.downcast_ref::<crate::error::LoginRequired>() {
        return AppError::LoginRequired(login.to_string());
    }
    if let Some(missing) = err.downcast_ref::<crate::error::MissingState>() {
        return AppError::Misconfigured(missing.to_string());
    }
    if let Some(method) = err.downcast_ref::<MethodNotAllowed>() {
        return AppError::MethodNotAllowed(method.clone());
    }
    AppError::Refused(err.to_string())
}

impl<C: Send + 'static> Application for ConsumerApp<C> {
    fn call(&self, mut scope: Scope, mut inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let layer = match &scope.channel_layer {
            // A worker's consumer gets its named channel's messages from the worker, and no
            // channel of its own.
            Some(layer) if self.layer.receives && !scope.protocol.is_channel() => layer.clone(),
            // No layer use: nothing to set up (the common, fast path).
            _ => {
                return match (self.build)(scope) {
                    Ok(consumer) => (self.drive)(Box::new(consumer), inbox, outbox),
                    // The server logs the refusal with the connection's path.
                    Err(err) => Box::pin(ready(Err(refusal(err)))),
                };
            }
        };
        let (channel, subscription) =
            match layer.new_channel("specific").and_then(|name| Ok((name.clone(), layer.subscribe(&name)?))) {
                Ok(subscribed) => subscribed,
                Err(err) => return Box::pin(ready(Err(AppError::Other(Box::new(err))))),
            };
        scope.channel_name = Some(channel.clone());
        let (requested, invalid) = requested_since(&scope);
        let consumer = match (self.build)(scope) {
            Ok(consumer) => Box::new(consumer),
            Err(err) => return Box::pin(ready(Err(refusal(err)))),
        };
        let groups = (self.layer.groups)(&consumer);
        let since = (self.layer.since)(&consumer, requested);
        // A consumer that found a position elsewhere overrides the client's garbage.
        let invalid = invalid && since.after.is_none();
        let track = (self.layer.presence)(&consumer);
        let (drive, hold) = (self.drive, self.layer.hold_until_connect);
        // The joining and the leaving are futures of their own, freed when done, and the steps
        // are chained with combinators: an `async` block keeps what it captured, and room for
        // its largest step, for the connection's whole life (272 B where 120 are needed).
        let join: BoxFuture<'static, _> =
            Box::pin(
                async move { Membership::join(layer, channel, groups, (&since, invalid), track, subscription).await },
            );
        Box::pin(join.then(move |joined| match joined {
            Ok((membership, subscription)) => {
                inbox.attach(subscription.0);
                if subscription.1 && hold {
                    inbox.hold_channel();
                }
                let leave = move |result| Box::pin(membership.leave()).map(move |()| result);
                Either::Left(drive(consumer, inbox, outbox).then(leave))
            }
            Err(err) => Either::Right(ready(Err(AppError::Other(Box::new(err))))),
        }))
    }
}

/// The client's `?since=<position>`, and whether it was given but is not a position.
fn requested_since(scope: &Scope) -> (Since, bool) {
    let Some((_, since)) = scope.query_pairs().find(|(key, _)| key == "since") else {
        return (Since::now(), false);
    };
    match since.parse::<Position>() {
        Ok(position) => (Since::after(position), false),
        Err(err) => {
            tracing::debug!(since = %since.chars().take(64).collect::<String>(), %err, "ignored `since`");
            (Since::now(), true)
        }
    }
}

/// What the default `handle_message` does with a channel-layer message that no handler takes:
/// logs an error for the connection and goes on (no silent drop, no crash).
///
/// # Errors
/// Never; the `Result` lets handlers return it directly.
pub fn unhandled_message(message: &ChannelMessage) -> Result<(), ConsumerError> {
    tracing::error!(
        message_type = message.message_type().unwrap_or("<none>"),
        "no handler for channel-layer message type; message dropped"
    );
    Ok(())
}

/// Turns a method's result into the driver's: a closed connection is not an error.
fn settle(result: Result<(), ConsumerError>) -> Result<(), AppError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.is_closed() => {
            tracing::debug!("send to a closed connection ignored");
            Ok(())
        }
        Err(err) => Err(AppError::Consumer(err)),
    }
}

fn unexpected(event: &Inbound, consumer: &str) -> AppError {
    AppError::Consumer(ConsumerError::msg(format!("{consumer} got an event it cannot handle: {event:?}")))
}
