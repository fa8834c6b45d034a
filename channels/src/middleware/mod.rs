//! Middleware: applications that wrap an application and add to the scope on the way in.
//!
//! - [`CookieMiddleware`]: `scope.cookies` from the `Cookie` headers.
//! - [`SessionMiddleware`]: `scope.session`, from a signed session cookie and a
//!   [`SessionStore`] (in memory, in the cookie, or in Redis).

pub mod cookie;
pub mod session;
mod signing;

pub use self::cookie::CookieMiddleware;
pub use self::session::{
    CookieSessionStore, InMemorySessionStore, Session, SessionConfig, SessionData, SessionError, SessionMiddleware,
    SessionStore,
};
pub use self::signing::{SecretKeys, WeakKeyError};
