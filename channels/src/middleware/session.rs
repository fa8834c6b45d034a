//! [`SessionMiddleware`]: loads the session named by the session cookie into `scope.session`
//! (the sessions themselves are [`crate::session`]).

use std::fmt;
use std::sync::Arc;

use super::cookie::CookiesParsed;
use crate::BoxFuture;
use crate::application::{Application, Inbox, Outbox, Router};
use crate::error::AppError;
use crate::event::Outbound;
use crate::scope::{Protocol, Scope};
use crate::session::{Context, SecretKeys, Session, SessionConfig, SessionError, SessionStore};

/// Loads the session named by the session cookie into `scope.session` (Channels'
/// `SessionMiddleware`); needs [`CookieMiddleware`](super::CookieMiddleware) outside it.
pub struct SessionMiddleware<A> {
    inner: A,
    context: Arc<Context>,
}

impl<A> fmt::Debug for SessionMiddleware<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddleware").field("config", &self.context.config).finish_non_exhaustive()
    }
}

impl<A: Application> SessionMiddleware<A> {
    /// Sessions in `store`, cookies signed with `keys`, default [`SessionConfig`].
    pub fn new(inner: A, store: impl SessionStore, keys: SecretKeys) -> Self {
        SessionMiddleware::with_config(inner, Arc::new(store), keys, SessionConfig::default())
    }

    /// Everything configured.
    pub fn with_config(inner: A, store: Arc<dyn SessionStore>, keys: SecretKeys, config: SessionConfig) -> Self {
        SessionMiddleware { inner, context: Arc::new(Context { store, keys, config }) }
    }
}

impl<A: Application> Application for SessionMiddleware<A> {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        if scope.extensions.get::<CookiesParsed>().is_none() {
            return Box::pin(std::future::ready(Err(AppError::Misconfigured(
                "SessionMiddleware needs CookieMiddleware around it to read the session cookie: use \
                 AuthMiddlewareStack (or CookieMiddleware::new(SessionMiddleware::new(...)))"
                    .to_owned(),
            ))));
        }
        let cookie = scope.cookies.get(&self.context.config.cookie_name).map(String::as_str);
        let session = Session::from_cookie(self.context.clone(), cookie);
        scope.session = Some(session.clone());
        if scope.protocol != Protocol::Http {
            return self.inner.call(scope, inbox, outbox);
        }
        // HTTP: save a modified session and set its cookie as the response starts.
        let (inner_outbox, mut events) = Outbox::channel(16);
        let forward = async move {
            while let Some(mut event) = events.recv().await {
                if let Outbound::HttpResponseStart(start) = &mut event {
                    match session.commit().await {
                        Ok(Some(cookie)) => match http::HeaderValue::from_str(&cookie) {
                            Ok(value) => {
                                start.headers.append(http::header::SET_COOKIE, value);
                            }
                            Err(err) => tracing::error!(%err, "session cookie is not a valid header"),
                        },
                        Ok(None) => {}
                        Err(SessionError::Deleted) => {
                            // Django's SessionInterrupted: the response is replaced by a 400
                            // and sets no cookie (the logout elsewhere stands).
                            tracing::info!("session deleted while the request ran; answering 400");
                            let _ = outbox.send(session_interrupted()).await;
                            let _ = outbox
                                .send(Outbound::HttpResponseBody { body: SESSION_INTERRUPTED.into(), more_body: false })
                                .await;
                            while events.recv().await.is_some() {}
                            return;
                        }
                        Err(err) => tracing::error!(%err, "could not save the session"),
                    }
                }
                if outbox.send(event).await.is_err() {
                    return;
                }
            }
        };
        let app = self.inner.call(scope, inbox, inner_outbox);
        Box::pin(async move {
            let (result, ()) = tokio::join!(app, forward);
            result
        })
    }
}

impl<A: Router> Router for SessionMiddleware<A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}

/// Cookie ► Session around an application (Channels' `SessionMiddlewareStack`): sessions
/// without authentication (a cart, a preference). With a logged-in user, use
/// [`AuthMiddlewareStack`](struct@super::AuthMiddlewareStack), which includes both.
pub type SessionMiddlewareStack<A> = super::CookieMiddleware<SessionMiddleware<A>>;

/// `SessionMiddlewareStack(inner, store, keys)`: [`CookieMiddleware`](super::CookieMiddleware)
/// around [`SessionMiddleware`] with the default [`SessionConfig`].
#[allow(non_snake_case)]
pub fn SessionMiddlewareStack<A: Application>(
    inner: A,
    store: impl SessionStore,
    keys: SecretKeys,
) -> SessionMiddlewareStack<A> {
    super::CookieMiddleware::new(SessionMiddleware::new(inner, store, keys))
}

const SESSION_INTERRUPTED: &str = "The request's session was deleted before the request completed. The user may have logged out in a concurrent request, for example.";

/// The response start for a request whose session was deleted under it.
fn session_interrupted() -> Outbound {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(SESSION_INTERRUPTED.len()));
    Outbound::HttpResponseStart(Box::new(crate::event::ResponseStart {
        status: http::StatusCode::BAD_REQUEST,
        headers,
    }))
}
