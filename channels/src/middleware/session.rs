//! [`SessionMiddleware`](struct@SessionMiddleware): loads the session named by the session cookie into `scope.session`
//! (the sessions themselves are [`crate::session`]).

use std::fmt;
use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderValue, StatusCode};

use super::{Middleware, Refusal, Step, Wrapped};
use crate::application::Application;
use crate::error::AppError;
use crate::event::ResponseStart;
use crate::scope::Scope;
use crate::session::{Context, SecretKeys, Session, SessionConfig, SessionError, SessionStore};

/// Loads the session named by the session cookie into `scope.session` (Channels'
/// `SessionMiddleware`) and, on an HTTP response, saves a modified session and sets its cookie.
/// Needs [`CookieMiddleware`](struct@super::CookieMiddleware) outside it; or use
/// [`SessionMiddlewareStack`](struct@SessionMiddlewareStack), which is both.
#[derive(Clone)]
pub struct SessionMiddleware {
    context: Arc<Context>,
}

impl fmt::Debug for SessionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddleware").field("config", &self.context.config).finish_non_exhaustive()
    }
}

impl SessionMiddleware {
    /// Sessions in `store`, cookies signed with `keys`, the default [`SessionConfig`] (change it
    /// with [`config`](Self::config)).
    pub fn new(store: impl SessionStore, keys: SecretKeys) -> Self {
        SessionMiddleware::from_context(Arc::new(Context {
            store: Arc::new(store),
            keys,
            config: SessionConfig::default(),
        }))
    }

    /// The session cookie's settings.
    #[must_use]
    pub fn config(self, config: SessionConfig) -> Self {
        let Context { store, keys, .. } = &*self.context;
        SessionMiddleware::from_context(Arc::new(Context { store: store.clone(), keys: keys.clone(), config }))
    }

    fn from_context(context: Arc<Context>) -> Self {
        SessionMiddleware { context }
    }
}

/// Opens the session named by the scope's (parsed) cookies into `scope.session`.
pub(crate) fn open(context: &Arc<Context>, scope: &mut Scope) -> Session {
    let cookie = scope.cookies.get(&context.config.cookie_name).map(String::as_str);
    let session = Session::from_cookie(context.clone(), cookie);
    scope.session = Some(session.clone());
    session
}

/// `SessionMiddleware(inner, store, keys)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn SessionMiddleware<A: Application>(
    inner: A,
    store: impl SessionStore,
    keys: SecretKeys,
) -> Wrapped<SessionMiddleware, A> {
    SessionMiddleware::new(store, keys).wrap(inner)
}

impl Middleware for SessionMiddleware {
    type State = Session;

    async fn prepare(&self, scope: &mut Scope) -> Result<Step<Session>, AppError> {
        if !scope.cookies_parsed {
            return Err(AppError::Misconfigured(
                "SessionMiddleware needs CookieMiddleware around it to read the session cookie: use \
                 SessionMiddlewareStack or AuthMiddlewareStack"
                    .to_owned(),
            ));
        }
        Ok(Step::Watch(open(&self.context, scope)))
    }

    async fn response_start(&self, session: &mut Session, start: &mut ResponseStart) -> Result<(), Refusal> {
        commit(session, start).await
    }
}

/// Cookie ► Session (Channels' `SessionMiddlewareStack`): sessions without authentication (a
/// cart, a preference). With a logged-in user, use
/// [`AuthMiddlewareStack`](struct@super::AuthMiddlewareStack), which includes both.
#[derive(Debug, Clone)]
pub struct SessionMiddlewareStack {
    sessions: SessionMiddleware,
}

impl SessionMiddlewareStack {
    /// Sessions in `store`, cookies signed with `keys`, the default [`SessionConfig`] (change it
    /// with [`config`](Self::config)).
    pub fn new(store: impl SessionStore, keys: SecretKeys) -> Self {
        SessionMiddlewareStack { sessions: SessionMiddleware::new(store, keys) }
    }

    /// The session cookie's settings.
    #[must_use]
    pub fn config(self, config: SessionConfig) -> Self {
        SessionMiddlewareStack { sessions: self.sessions.config(config) }
    }
}

/// `SessionMiddlewareStack(inner, store, keys)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn SessionMiddlewareStack<A: Application>(
    inner: A,
    store: impl SessionStore,
    keys: SecretKeys,
) -> Wrapped<SessionMiddlewareStack, A> {
    SessionMiddlewareStack::new(store, keys).wrap(inner)
}

impl Middleware for SessionMiddlewareStack {
    type State = Session;

    async fn prepare(&self, scope: &mut Scope) -> Result<Step<Session>, AppError> {
        super::cookie::parse_into(scope);
        Ok(Step::Watch(open(&self.sessions.context, scope)))
    }

    async fn response_start(&self, session: &mut Session, start: &mut ResponseStart) -> Result<(), Refusal> {
        commit(session, start).await
    }
}

/// Before an HTTP response starts: saves a modified session and sets its cookie. A session
/// deleted while the request ran (Django's `SessionInterrupted`) replaces the response with a
/// 400 that sets no cookie (the logout elsewhere stands).
pub(crate) async fn commit(session: &Session, start: &mut ResponseStart) -> Result<(), Refusal> {
    match session.commit().await {
        Ok(Some(cookie)) => match HeaderValue::from_str(&cookie) {
            Ok(value) => {
                start.headers.append(SET_COOKIE, value);
            }
            Err(err) => tracing::error!(%err, "session cookie is not a valid header"),
        },
        Ok(None) => {}
        Err(SessionError::Deleted) => {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, SESSION_INTERRUPTED));
        }
        Err(err) => tracing::error!(%err, "could not save the session"),
    }
    Ok(())
}

const SESSION_INTERRUPTED: &str = "The request's session was deleted before the request completed. The user may have logged out in a concurrent request, for example.";
