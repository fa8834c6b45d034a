//! Middleware: applications that wrap an application and add to the scope on the way in.
//!
//! - [`CookieMiddleware`]: `scope.cookies` from the `Cookie` headers.
//! - [`SessionMiddleware`]: `scope.session`, from a signed session cookie and a
//!   [`SessionStore`] (in memory, in the cookie, or in Redis).
//! - [`AuthMiddleware`]: `scope.user`, loaded through the app's [`UserBackend`].
//! - [`BaseMiddleware`]: write your own (token auth, auth for a custom protocol...).
//! - [`OriginValidator`](struct@OriginValidator) / [`AllowedHostsOriginValidator`](fn@AllowedHostsOriginValidator):
//!   refuse WebSocket handshakes from other sites' pages.
//! - [`AuthMiddlewareStack`](struct@AuthMiddlewareStack): the three, configured once by
//!   [`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth).

pub mod auth;
mod base;
pub mod cookie;
pub mod origin;
#[cfg(feature = "redis")]
mod redis_store;
pub mod session;
mod signing;

pub use self::auth::{AuthConfig, AuthMiddleware, AuthMiddlewareStack, AuthUser, UserBackend, get_user, login, logout};
pub use self::base::{BaseMiddleware, Wrapped};
pub use self::cookie::CookieMiddleware;
pub use self::origin::{AllowedHostsOriginValidator, OriginValidator};
#[cfg(feature = "redis")]
pub use self::redis_store::RedisSessionStore;
pub use self::session::{
    CookieSessionStore, InMemorySessionStore, Session, SessionConfig, SessionData, SessionError, SessionMiddleware,
    SessionStore,
};
pub use self::signing::{SecretKeys, WeakKeyError};
