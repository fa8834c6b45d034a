//! [`AuthMiddleware`], [`AuthMiddlewareStack`](struct@AuthMiddlewareStack), [`login`] / [`logout`] / [`get_user`], and the
//! [`UserBackend`] through which the application loads its users.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use super::cookie::CookieMiddleware;
use super::session::SessionMiddleware;
use super::{Prepared, then_inner};
use crate::application::{Application, Inbox, Outbox, Router};
use crate::error::AppError;
use crate::scope::{Protocol, Scope, User};
use crate::session::{InMemorySessionStore, SecretKeys, Session, SessionConfig, SessionError, SessionStore};
use crate::{BoxError, BoxFuture};

/// Session keys (Django's names).
const USER_ID_KEY: &str = "_auth_user_id";
const USER_HASH_KEY: &str = "_auth_user_hash";

/// What the auth middleware needs to know of the application's user type.
pub trait AuthUser: Send + Sync + 'static {
    /// The user's id, as stored in the session.
    fn id(&self) -> String;

    /// A value that changes when the user's credentials change (e.g. derived from the password
    /// hash, as Django's `get_session_auth_hash`): sessions made under another value no longer
    /// authenticate, so a password change logs out every other session.
    fn session_auth_hash(&self) -> String;
}

/// Loads users by id: the application implements it over its database.
pub trait UserBackend: Send + Sync + 'static {
    /// The application's user type.
    type User: AuthUser;

    /// The user with `id`, or `None` when there is none (deleted, disabled...).
    fn get_user(&self, id: &str) -> impl Future<Output = Result<Option<Self::User>, BoxError>> + Send;
}

/// A loaded user with what the middleware checks.
struct Loaded {
    user: User,
    hash: String,
}

/// [`UserBackend`] behind a trait object, so the configuration can travel in the scope.
trait ErasedBackend: Send + Sync {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Loaded>, BoxError>>;
}

impl<B: UserBackend> ErasedBackend for B {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Loaded>, BoxError>> {
        Box::pin(async move {
            Ok(self
                .get_user(id)
                .await?
                .map(|user| Loaded { hash: user.session_auth_hash(), user: User::with_id(user.id(), user) }))
        })
    }
}

/// The authentication configuration of an application, given once where the app is built
/// ([`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth)) and read from the scope by
/// every [`AuthMiddlewareStack`](struct@AuthMiddlewareStack): the user backend, the session store, the signing keys and the
/// session cookie's settings.
///
/// Only the backend is required: the store defaults to [`InMemorySessionStore`] and the keys to
/// a random key (with a logged warning) — fine for development, not for several processes or
/// restarts.
#[derive(Clone)]
pub struct AuthConfig {
    backend: Arc<dyn ErasedBackend>,
    store: Arc<dyn SessionStore>,
    keys: Option<SecretKeys>,
    session: SessionConfig,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig").field("session", &self.session).finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// Users from `backend`; everything else by default.
    pub fn new(backend: impl UserBackend) -> Self {
        AuthConfig {
            backend: Arc::new(backend),
            store: Arc::new(InMemorySessionStore::new()),
            keys: None,
            session: SessionConfig::default(),
        }
    }

    /// Sessions in `store` (e.g. `RedisSessionStore` for several processes).
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Cookies signed with `keys`.
    pub fn keys(mut self, keys: SecretKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Session cookie settings.
    pub fn session(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }

    /// Fills in the random development key if none was given (once, at router build time).
    pub(crate) fn finish(mut self) -> Self {
        if self.keys.is_none() {
            self.keys = Some(SecretKeys::random());
        }
        self
    }
}

/// Puts `scope.user` from the session before the inner application runs (Channels'
/// `AuthMiddleware`). Anonymous when there is no session, no user id, no such user, or the
/// session's auth hash no longer matches the user's (compared in constant time; the session is
/// then flushed). Needs `SessionMiddleware` (and `CookieMiddleware`) outside it: use
/// [`AuthMiddlewareStack`](struct@AuthMiddlewareStack).
pub struct AuthMiddleware<A> {
    inner: A,
}

impl<A> fmt::Debug for AuthMiddleware<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthMiddleware").finish_non_exhaustive()
    }
}

impl<A: Application> AuthMiddleware<A> {
    /// Wraps `inner`; the backend comes from the scope's [`AuthConfig`].
    pub fn new(inner: A) -> Self {
        AuthMiddleware { inner }
    }
}

/// Marks a scope whose user an [`AuthMiddleware`] resolved (anonymous or not), so that a
/// `#[auth(stack, required)]` consumer can tell "anonymous" from "no auth stack".
#[derive(Debug, Clone, Copy)]
pub struct UserResolved;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn resolve(session: &Session, backend: &dyn ErasedBackend) -> Result<User, BoxError> {
    let Some(id) = session.get::<String>(USER_ID_KEY).await? else { return Ok(User::anonymous()) };
    let Some(loaded) = backend.load(&id).await? else { return Ok(User::anonymous()) };
    let stored: Option<String> = session.get(USER_HASH_KEY).await?;
    if stored.is_some_and(|stored| constant_time_eq(stored.as_bytes(), loaded.hash.as_bytes())) {
        Ok(loaded.user)
    } else {
        // The credentials changed since this session logged in: it no longer authenticates.
        session.flush().await?;
        Ok(User::anonymous())
    }
}

fn misconfigured(message: String) -> BoxFuture<'static, Result<(), AppError>> {
    Box::pin(std::future::ready(Err(AppError::Misconfigured(message))))
}

impl<A: Application> AuthMiddleware<A> {
    /// Resolves the user, refuses an anonymous one when `required`, runs the inner app.
    fn run(
        &self,
        mut scope: Scope,
        inbox: Inbox,
        outbox: Outbox,
        required: Option<Refusal>,
    ) -> BoxFuture<'_, Result<(), AppError>> {
        if let Protocol::Custom(name) = &scope.protocol {
            return misconfigured(format!(
                "AuthMiddleware reads the session cookie from HTTP headers, and the custom protocol `{name}` has \
                 none: authenticate it with a middleware of your own that reads the protocol's data (see the \
                 channels::middleware docs)"
            ));
        }
        let Some(config) = scope.extensions.get::<Arc<AuthConfig>>().cloned() else {
            return misconfigured(
                "AuthMiddleware has no user backend: give one where the app is built, with \
                 ProtocolTypeRouter::auth(AuthConfig::new(backend))"
                    .to_owned(),
            );
        };
        let Some(session) = scope.session.clone() else {
            return misconfigured(
                "AuthMiddleware needs SessionMiddleware (and CookieMiddleware) around it: use AuthMiddlewareStack"
                    .to_owned(),
            );
        };
        let prepare = async move {
            scope.user = match resolve(&session, config.backend.as_ref()).await {
                Ok(user) => user,
                Err(err) => {
                    tracing::error!(%err, "could not load the session's user; treating the connection as anonymous");
                    User::anonymous()
                }
            };
            scope.extensions.insert(UserResolved);
            if scope.protocol == Protocol::Websocket {
                session.release();
            }
            match required {
                Some(refusal) if scope.user.is_anonymous() => Prepared::Done(refuse(scope, outbox, refusal).await),
                _ => Prepared::Call(scope, inbox, outbox),
            }
        };
        then_inner(Box::pin(prepare), &self.inner)
    }
}

impl<A: Application> Application for AuthMiddleware<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        self.run(scope, inbox, outbox, None)
    }
}

impl<A: Router> Router for AuthMiddleware<A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}

/// Cookie ► Session ► Auth around an application (Channels' `AuthMiddlewareStack`), configured
/// by the scope's [`AuthConfig`]. With `required`, anonymous users are refused before the
/// application runs: a WebSocket handshake with 403, an HTTP request with 401 (or a redirect).
pub struct AuthMiddlewareStack<A> {
    inner: Arc<AuthMiddleware<A>>,
    required: Option<Refusal>,
    /// The cookie ► session ► auth chain, built on the first connection for the configuration
    /// it carried (one `Arc<AuthConfig>` per app, so normally built once).
    chain: OnceLock<(Arc<AuthConfig>, Chain<A>)>,
}

type Chain<A> = CookieMiddleware<SessionMiddleware<Gate<A>>>;

/// How a stack with `required` refuses anonymous HTTP requests.
#[derive(Debug, Clone)]
enum Refusal {
    Unauthorized,
    Redirect(String),
}

impl<A> fmt::Debug for AuthMiddlewareStack<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthMiddlewareStack").field("required", &self.required).finish_non_exhaustive()
    }
}

impl<A: Application> AuthMiddlewareStack<A> {
    /// The stack around `inner`.
    pub fn new(inner: A) -> Self {
        AuthMiddlewareStack { inner: Arc::new(AuthMiddleware::new(inner)), required: None, chain: OnceLock::new() }
    }

    /// Refuses anonymous users: WebSocket 403, HTTP 401.
    pub fn required(mut self) -> Self {
        self.required = Some(Refusal::Unauthorized);
        self
    }

    /// Refuses anonymous users; HTTP requests are redirected (302) to `location`
    /// (e.g. `/login/`), with `?next=<path>`.
    pub fn required_redirect(mut self, location: impl Into<String>) -> Self {
        self.required = Some(Refusal::Redirect(location.into()));
        self
    }
}

impl<A: Application> AuthMiddlewareStack<A> {
    fn chain_for(&self, config: &AuthConfig) -> Chain<A> {
        // `ProtocolTypeRouter::auth` always fills the keys in (a random one for development).
        let keys = config.keys.clone().unwrap_or_else(SecretKeys::random);
        let gate = Gate { inner: self.inner.clone(), required: self.required.clone() };
        CookieMiddleware::new(SessionMiddleware::with_config(gate, config.store.clone(), keys, config.session.clone()))
    }
}

/// `AuthMiddlewareStack(inner)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn AuthMiddlewareStack<A: Application>(inner: A) -> AuthMiddlewareStack<A> {
    AuthMiddlewareStack::new(inner)
}

/// The stack's `AuthMiddleware`, with the stack's `required` setting.
struct Gate<A> {
    inner: Arc<AuthMiddleware<A>>,
    required: Option<Refusal>,
}

impl<A: Application> Application for Gate<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        self.inner.run(scope, inbox, outbox, self.required.clone())
    }
}

async fn refuse(scope: Scope, outbox: Outbox, refusal: Refusal) -> Result<(), AppError> {
    use crate::event::{Close, Outbound, ResponseStart};
    use http::{HeaderMap, HeaderValue, StatusCode, header};
    let event = match (&scope.protocol, refusal) {
        (Protocol::Http, Refusal::Redirect(location)) => {
            let mut headers = HeaderMap::new();
            let target = format!("{location}?next={}", scope.raw_path);
            if let Ok(value) = HeaderValue::from_str(&target) {
                headers.insert(header::LOCATION, value);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            Outbound::HttpResponseStart(Box::new(ResponseStart { status: StatusCode::FOUND, headers }))
        }
        (Protocol::Http, Refusal::Unauthorized) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            Outbound::HttpResponseStart(Box::new(ResponseStart { status: StatusCode::UNAUTHORIZED, headers }))
        }
        // Before accept, a close refuses the handshake with HTTP 403.
        _ => Outbound::WebsocketClose(Close::with_reason(crate::event::close_code::POLICY, "login required")),
    };
    let is_http = matches!(event, Outbound::HttpResponseStart(_));
    let _ = outbox.send(event).await;
    if is_http {
        let _ = outbox.send(Outbound::HttpResponseBody { body: bytes::Bytes::new(), more_body: false }).await;
    }
    Ok(())
}

impl<A: Application> Application for AuthMiddlewareStack<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let Some(config) = scope.extensions.get::<Arc<AuthConfig>>().cloned() else {
            return misconfigured(
                "AuthMiddlewareStack has no configuration: give it where the app is built, with \
                 ProtocolTypeRouter::auth(AuthConfig::new(backend))"
                    .to_owned(),
            );
        };
        let (built_for, chain) = self.chain.get_or_init(|| (config.clone(), self.chain_for(&config)));
        if Arc::ptr_eq(built_for, &config) {
            return chain.call(scope, inbox, outbox);
        }
        // One stack served under a second configuration (shared by two apps): a chain for
        // this connection.
        let chain = self.chain_for(&config);
        Box::pin(async move { chain.call(scope, inbox, outbox).await })
    }
}

impl<A: Router> Router for AuthMiddlewareStack<A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}

/// Logs `user` in on this connection: stores its id and auth hash in the session, cycles the
/// session key (against session fixation) and sets `scope.user`. For an HTTP consumer the new
/// cookie goes out with the response.
///
/// # Errors
/// No session on the scope, or the store failed.
pub async fn login<U: AuthUser>(scope: &mut Scope, user: U) -> Result<(), SessionError> {
    let session =
        scope.session.clone().ok_or_else(|| SessionError::Store(crate::error::BackendError::msg(NO_SESSION)))?;
    // As Django: over another user's session (or one whose auth hash no longer matches), start
    // from an empty session so nothing of the previous user's carries over; over the same
    // user's or an anonymous one, keep the data and only change the key (session fixation).
    let previous: Option<serde_json::Value> = session.get(USER_ID_KEY).await?;
    let previous_hash: Option<String> = session.get(USER_HASH_KEY).await?;
    let same_user = previous.as_ref() == Some(&serde_json::to_value(user.id())?)
        && previous_hash.is_some_and(|hash| constant_time_eq(hash.as_bytes(), user.session_auth_hash().as_bytes()));
    if previous.is_some() && !same_user {
        session.flush().await?;
    }
    session.insert(USER_ID_KEY, &user.id()).await?;
    session.insert(USER_HASH_KEY, &user.session_auth_hash()).await?;
    session.cycle_key().await?;
    scope.user = User::with_id(user.id(), user);
    Ok(())
}

/// Logs out: flushes the session (its data and key) and makes `scope.user` anonymous.
///
/// # Errors
/// The store failed.
pub async fn logout(scope: &mut Scope) -> Result<(), SessionError> {
    if let Some(session) = &scope.session {
        session.flush().await?;
    }
    scope.user = User::anonymous();
    Ok(())
}

/// The connection's user (Channels' `get_user`): `scope.user`.
pub fn get_user(scope: &Scope) -> &User {
    &scope.user
}

const NO_SESSION: &str = "login needs a session: serve the consumer behind AuthMiddlewareStack";
