//! Middleware: prepares each connection's scope before the application runs, and may refuse
//! the connection or see its HTTP response start.
//!
//! Every middleware has one shape, the [`Middleware`] trait (Channels' `BaseMiddleware`):
//! `prepare` fills in the scope and returns a [`Step`] (continue, continue and watch the
//! response, or refuse with a [`Refusal`]); `response_start` sees the response before the
//! client does. [`wrap`](Middleware::wrap) puts one around an application, which gives a
//! [`Wrapped`]: an application, and a [`Router`](crate::application::Router) when the inner
//! application is one (so it nests under a URL prefix).
//!
//! - [`CookieMiddleware`](struct@CookieMiddleware): `scope.cookies` from the `Cookie` headers.
//! - [`SessionMiddleware`](struct@SessionMiddleware): `scope.session`, from a signed session
//!   cookie and a [`SessionStore`] (in memory, in the cookie, or in Redis), saved and its cookie
//!   set as an HTTP response starts.
//! - [`AuthMiddleware`](struct@AuthMiddleware): `scope.user`, loaded through the app's
//!   [`UserBackend`].
//! - [`AuthMiddlewareStack`](struct@AuthMiddlewareStack): Cookie ► Session ► Auth in one step,
//!   configured once by [`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth);
//!   [`SessionMiddlewareStack`](struct@SessionMiddlewareStack): Cookie ► Session.
//! - [`OriginValidator`](struct@OriginValidator) / [`AllowedHostsOriginValidator`](fn@AllowedHostsOriginValidator):
//!   refuse WebSocket handshakes from other sites' pages.
//! - [`CsrfMiddleware`](struct@CsrfMiddleware): refuses cross-site form posts and other unsafe
//!   HTTP requests; [`SecurityHeaders`](struct@SecurityHeaders): Django's security response
//!   headers.
//!
//! Each has one constructor (`X::new(...)`, then `.wrap(inner)`); in `routing!` tables they are
//! written as Channels writes them, `AuthMiddlewareStack([ ... ])`, through a function of the
//! same name.

pub mod auth;
mod base;
pub mod cookie;
pub mod csrf;
pub mod origin;
pub mod session;

pub use self::auth::{
    AuthConfig, AuthError, AuthMiddleware, AuthMiddlewareStack, AuthUser, Authenticated, UserBackend, authenticate,
    get_user, login, logout,
};
pub use self::base::{Middleware, Refusal, Step, Wrapped};
pub use self::cookie::CookieMiddleware;
pub use self::csrf::{CsrfMiddleware, SecurityHeaders};
pub use self::origin::{AllowedHostsOriginValidator, OriginValidator};
pub use self::session::{SessionMiddleware, SessionMiddlewareStack};
// The sessions themselves live in `crate::session`; here too, where Channels users look for them.
#[cfg(feature = "redis")]
pub use crate::session::RedisSessionStore;
pub use crate::session::{
    CookieSessionStore, InMemorySessionStore, SecretKeys, Session, SessionConfig, SessionData, SessionError,
    SessionStore, WeakKeyError,
};
