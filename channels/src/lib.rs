//! # channels
//!
//! Django Channels, done the Rust way: consumers that handle WebSocket and HTTP connections,
//! routers that pick them by protocol and URL, and a fast server underneath.
//!
//! ## Example: an echo server
//!
//! ```no_run
//! use channels::prelude::*;
//! use channels::{consumer, routing};
//!
//! #[consumer(websocket)]
//! struct Echo;
//!
//! #[consumer]
//! impl Echo {
//!     async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
//!         ws.send(message).await?;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // Every diagnostic (a refused connection, a consumer's error, the cause of a 500) goes
//!     // through `tracing`: without a subscriber nothing is printed (the server says so once).
//!     tracing_subscriber::fmt::init();
//!     let app = routing! { websocket: [ "ws/echo/" => Echo ] };
//!     channels::serve(app, "127.0.0.1:8000").await
//! }
//! ```
//!
//! [`#[consumer]`](macro@consumer) turns a struct and its `impl` block into a consumer;
//! [`routing!`] builds the router and checks the route table at compile time. Logs: every
//! diagnostic goes through [`tracing`](https://docs.rs/tracing); install a subscriber (as above)
//! to see them. In tests, a communicator's timeout also carries the last error the
//! application logged ([`TestError::Timeout`](testing::TestError::Timeout)).
//!
//! ## A tour
//! - [`Scope`]: what is known about a connection when it opens (path, headers, client,
//!   `url_route`, `user`...).
//! - [`event`]: the typed events an application receives ([`event::Inbound`]) and sends
//!   ([`event::Outbound`]).
//! - [`Application`]: anything that serves a connection — routers, middleware and consumers are
//!   all applications.
//! - [`routing`](mod@routing): [`ProtocolTypeRouter`] (with app-wide state:
//!   [`extension`](ProtocolTypeRouter::extension)), [`URLRouter`], [`path`](routing::path),
//!   [`re_path`](routing::re_path) and [`nest`](routing::nest).
//! - [`consumer`](mod@consumer): [`WebsocketConsumer`](consumer::WebsocketConsumer),
//!   [`JsonWebsocketConsumer`](consumer::JsonWebsocketConsumer),
//!   [`HttpConsumer`](consumer::HttpConsumer) and
//!   [`GenericConsumer`](consumer::GenericConsumer) for custom protocols.
//! - [`middleware`]: cookies, sessions and authentication
//!   ([`AuthMiddlewareStack`](struct@middleware::AuthMiddlewareStack), `login`, `logout`), origin checks,
//!   CSRF, security headers, and the [`Middleware`](middleware::Middleware) trait for your own.
//! - [`session`]: [`Session`](session::Session) (`scope.session`), the session stores, the
//!   signing keys.
//! - [`layers`]: channel layers and groups ([`InMemoryChannelLayer`](layers::InMemoryChannelLayer),
//!   `RedisChannelLayer` with the `redis` feature): how consumers talk to each other.
//! - [`server`]: [`serve`] and the [`Server`] builder (limits, timeouts, graceful shutdown).
//! - [`testing`]: in-process communicators for tests, and [`LiveServer`](testing::LiveServer).
//! - [`worker`]: background workers for named channels (Channels' `runworker`).
//! - [`security`]: Django's host and redirect checks.
//! - [`connection`] and [`error`]: an application's two ends ([`Inbox`], [`Outbox`]) and the
//!   errors; [`internals`]: how it all fits together (module order, a connection's life, a
//!   group message's path).
//!
//! ## The same server, written by hand
//!
//! This is what the macros expand to, give or take the absolute paths; hand-written consumers
//! and routers mix freely with macro-made ones.
//!
//! ```no_run
//! use channels::consumer::{ConsumerApp, ConsumerError, Websocket, WebsocketConsumer};
//! use channels::event::Message;
//! use channels::routing::{ProtocolTypeRouter, URLRouter, path};
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
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let app = ProtocolTypeRouter::new()
//!         .websocket(URLRouter::new(vec![path("ws/echo/", ConsumerApp::websocket(|_scope| Ok(Echo)))]));
//!     channels::serve(app, "127.0.0.1:8000").await
//! }
//! ```
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

pub mod application;
#[cfg(feature = "axum")]
pub mod axum;
pub mod client;
pub mod connection;
pub mod consumer;
mod deque;
#[cfg(feature = "django")]
pub mod django;
pub mod error;
pub mod event;
pub mod layers;
pub mod metrics;
pub mod middleware;
mod path_grammar;
mod ratelog;
#[cfg(feature = "redis")]
mod redis_retry;
pub mod routing;
pub mod scope;
pub mod security;
pub mod server;
pub mod session;
#[cfg(test)]
mod test_support;
pub mod testing;
pub mod worker;

/// A boxed, `Send` future: what [`Application::call`] returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A boxed error: [`AppError::Other`], a backend's failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[doc = include_str!("docs/internals.md")]
pub mod internals {}

/// Guides that are not about one item.
pub mod docs {
    #[doc = include_str!("docs/protocol.md")]
    pub mod protocol {}
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

#[doc = include_str!("docs/auth.md")]
pub use channels_macros::auth;
#[doc = include_str!("docs/consumer.md")]
pub use channels_macros::consumer;
#[doc = include_str!("docs/routing.md")]
pub use channels_macros::routing;

pub use application::{Application, ApplicationFn, Inbox, Outbox, application_fn};
/// The `bytes` crate this one uses (bodies are [`Bytes`](bytes::Bytes)), so an app needs no
/// dependency of its own at a matching version.
pub use bytes;
pub use error::{AppError, SendError};
/// The `http` crate this one uses ([`StatusCode`](http::StatusCode), [`Method`](http::Method),
/// [`HeaderMap`](http::HeaderMap)...), so an app needs no dependency of its own at a matching
/// version.
pub use http;
pub use routing::{ProtocolTypeRouter, URLRouter};
pub use scope::{Protocol, Scope, UrlRoute, User};
pub use server::{Listening, RateLimit, Server, ServerConfig, ShutdownHandle, serve};

/// The names most applications need, in one import.
pub mod prelude {
    pub use bytes::Bytes;
    pub use http::{Method, StatusCode};

    pub use crate::application::{AppError, Application, Inbox, Outbox, SendError};
    pub use crate::consumer::{
        ConsumerApp, ConsumerError, Flow, FromScope, GenericConsumer, HttpConsumer, HttpResponse,
        JsonWebsocketConsumer, Websocket, WebsocketConsumer,
    };
    pub use crate::event::{ChannelMessage, Inbound, Message, Outbound, close_code};
    pub use crate::layers::{ChannelLayer, Layer, LayerError};
    pub use crate::routing::{ProtocolTypeRouter, Router, URLRouter, nest, path, re_nest, re_path};
    pub use crate::scope::{Protocol, Scope, User};
}

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
