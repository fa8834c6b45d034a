//! Middleware: applications that wrap an application and add to the scope on the way in.
//!
//! - [`CookieMiddleware`]: `scope.cookies` from the `Cookie` headers.
//! - [`SessionMiddleware`]: `scope.session`, from a signed session cookie and a
//!   [`SessionStore`] (in memory, in the cookie, or in Redis);
//!   [`SessionMiddlewareStack`](fn@SessionMiddlewareStack) is Cookie ► Session.
//! - [`AuthMiddleware`]: `scope.user`, loaded through the app's [`UserBackend`].
//! - [`BaseMiddleware`]: write your own (token auth, auth for a custom protocol...).
//! - [`OriginValidator`](struct@OriginValidator) / [`AllowedHostsOriginValidator`](fn@AllowedHostsOriginValidator):
//!   refuse WebSocket handshakes from other sites' pages.
//! - [`AuthMiddlewareStack`](struct@AuthMiddlewareStack): the three, configured once by
//!   [`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth).
//! - [`CsrfMiddleware`](struct@CsrfMiddleware): refuses cross-site form posts and other unsafe
//!   HTTP requests; [`SecurityHeaders`](struct@SecurityHeaders): Django's security response
//!   headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::BoxFuture;
use crate::application::{Application, Inbox, Outbox};
use crate::error::AppError;
use crate::scope::Scope;

pub mod auth;
mod base;
pub mod cookie;
pub mod csrf;
pub mod origin;
pub mod session;

pub use self::auth::{
    AuthConfig, AuthMiddleware, AuthMiddlewareStack, AuthUser, UserBackend, UserResolved, get_user, login, logout,
};
pub use self::base::{BaseMiddleware, Wrapped};
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

/// How a middleware's own async work ([`then_inner`]) ends.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per connection and moved straight on; boxing would only add an allocation"
)]
pub(crate) enum Prepared {
    /// Call the inner application with these.
    Call(Scope, Inbox, Outbox),
    /// The middleware answered the connection itself (refused it, or failed).
    Done(Result<(), AppError>),
}

/// A middleware's future: its own async work (`prepare`: load a session, a user...), then the
/// inner application.
///
/// An `async` block doing both would stay as large as its largest step (the scope it captured,
/// the loading futures) for the whole connection; here `prepare` is freed when it is done and
/// only a pointer to the inner application's future stays, so a middleware costs a few words
/// per open connection.
pub(crate) fn then_inner<'a>(
    prepare: BoxFuture<'a, Prepared>,
    inner: &'a dyn Application,
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(ThenInner { state: Stage::Preparing(prepare), inner })
}

struct ThenInner<'a> {
    state: Stage<'a>,
    inner: &'a dyn Application,
}

enum Stage<'a> {
    Preparing(BoxFuture<'a, Prepared>),
    Running(BoxFuture<'a, Result<(), AppError>>),
}

impl Future for ThenInner<'_> {
    type Output = Result<(), AppError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                Stage::Preparing(prepare) => match ready!(prepare.as_mut().poll(cx)) {
                    Prepared::Call(scope, inbox, outbox) => {
                        this.state = Stage::Running(this.inner.call(scope, inbox, outbox));
                    }
                    Prepared::Done(result) => return Poll::Ready(result),
                },
                Stage::Running(running) => return running.as_mut().poll(cx),
            }
        }
    }
}
