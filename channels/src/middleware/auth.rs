//! [`AuthMiddleware`](struct@AuthMiddleware), [`AuthMiddlewareStack`](struct@AuthMiddlewareStack), [`login`] / [`logout`] / [`get_user`], and the
//! [`UserBackend`] through which the application loads its users.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use http::StatusCode;

use super::{Middleware, Refusal, Step, Wrapped};
use crate::application::Application;
use crate::error::{AppError, BackendError};
use crate::event::ResponseStart;
use crate::scope::{Protocol, Scope, User};
use crate::session::{Context, InMemorySessionStore, SecretKeys, Session, SessionConfig, SessionError, SessionStore};
use crate::{BoxError, BoxFuture};

/// Session keys (Django's names).
const USER_ID_KEY: &str = "_auth_user_id";
const USER_HASH_KEY: &str = "_auth_user_hash";
const USER_BACKEND_KEY: &str = "_auth_user_backend";

/// What the auth middleware needs to know of the application's user type.
pub trait AuthUser: Send + Sync + 'static {
    /// The user's id, as stored in the session.
    fn id(&self) -> String;

    /// A value that changes when the user's credentials change (e.g. derived from the password
    /// hash, as Django's `get_session_auth_hash`): sessions made under another value no longer
    /// authenticate, so a password change logs out every other session.
    fn session_auth_hash(&self) -> String;

    /// The session auth hashes under retired keys (Django's `get_session_auth_fallback_hash`,
    /// one per `SECRET_KEY_FALLBACKS` entry): a session made under one of them still
    /// authenticates, and is moved to the current hash and a new key. None by default.
    fn session_auth_fallback_hashes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The `scope.user` this user becomes on [`login`]: by default one holding `self` (read it
    /// back with `scope.user.downcast::<YourUser>()`). Rarely overridden.
    fn into_user(self) -> User
    where
        Self: Sized,
    {
        User::with_id(self.id(), self)
    }
}

/// Loads users by id, and checks credentials: the application implements it over its database.
///
/// The [login view example](crate::auth#a-login-view) shows both in use.
pub trait UserBackend: Send + Sync + 'static {
    /// The application's user type.
    type User: AuthUser;

    /// The user with `id`, or `None` when there is none (deleted, disabled...).
    fn get_user(&self, id: &str) -> impl Future<Output = Result<Option<Self::User>, BoxError>> + Send;

    /// The user these credentials identify (Django's `authenticate()`), or `None` when they
    /// identify nobody: unknown name, wrong password, inactive user. What a login view calls,
    /// through [`authenticate`]. The default knows no credentials (`None`).
    ///
    /// Password hashes (argon2, PBKDF2) take milliseconds of CPU: verify them off the async
    /// runtime (`tokio::task::spawn_blocking`), and compare in constant time.
    fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> impl Future<Output = Result<Option<Self::User>, BoxError>> + Send {
        let _ = (username, password);
        std::future::ready(Ok(None))
    }

    /// The name a login records in the session as `_auth_user_backend` (Django's dotted path of
    /// the backend that logged the user in). `None` (the default): none is recorded.
    fn session_backend(&self) -> Option<&str> {
        None
    }

    /// Whether a session whose `_auth_user_backend` is `backend` is this backend's to load a
    /// user for (Django: one of `AUTHENTICATION_BACKENDS`). By default, every session is.
    fn accepts_session_backend(&self, backend: Option<&str>) -> bool {
        let _ = backend;
        true
    }
}

/// A user the application's [`UserBackend`] vouched for (found by id, or by credentials with
/// [`authenticate`]), ready for [`login`].
pub struct Authenticated {
    id: String,
    hash: String,
    fallback_hashes: Vec<String>,
    user: User,
}

impl Authenticated {
    fn new<U: AuthUser>(user: U) -> Self {
        Authenticated {
            id: user.id(),
            hash: user.session_auth_hash(),
            fallback_hashes: user.session_auth_fallback_hashes(),
            user: user.into_user(),
        }
    }

    /// The user, as `scope.user` will hold it after [`login`].
    pub fn user(&self) -> &User {
        &self.user
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated").field("id", &self.id).finish_non_exhaustive()
    }
}

impl AuthUser for Authenticated {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn session_auth_hash(&self) -> String {
        self.hash.clone()
    }

    fn session_auth_fallback_hashes(&self) -> Vec<String> {
        self.fallback_hashes.clone()
    }

    fn into_user(self) -> User {
        self.user
    }
}

/// Why [`authenticate`] could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The application has no authentication configured.
    #[error(
        "no user backend: give one where the app is built, with ProtocolTypeRouter::auth(AuthConfig::new(backend))"
    )]
    NotConfigured,
    /// The user backend failed.
    #[error("the user backend failed: {0}")]
    Backend(BackendError),
}

/// The user these credentials identify, through the application's [`UserBackend`] (Django's
/// `authenticate()`); `None` when they identify nobody. Pass the user to [`login`].
///
/// # Errors
/// [`AuthError::NotConfigured`] without [`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth),
/// [`AuthError::Backend`] when the backend failed.
pub async fn authenticate(scope: &Scope, username: &str, password: &str) -> Result<Option<Authenticated>, AuthError> {
    let config = scope.extensions.get::<Arc<AuthConfig>>().ok_or(AuthError::NotConfigured)?;
    config.backend.authenticate(username, password).await.map_err(|err| AuthError::Backend(BackendError::from_box(err)))
}

/// [`UserBackend`] behind a trait object, so the configuration can travel in the scope.
trait ErasedBackend: Send + Sync {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Authenticated>, BoxError>>;

    fn session_backend(&self) -> Option<&str>;

    fn accepts_session_backend(&self, backend: Option<&str>) -> bool;

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, BoxError>>;
}

impl<B: UserBackend> ErasedBackend for B {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Authenticated>, BoxError>> {
        Box::pin(async move { Ok(self.get_user(id).await?.map(Authenticated::new)) })
    }

    fn session_backend(&self) -> Option<&str> {
        UserBackend::session_backend(self)
    }

    fn accepts_session_backend(&self, backend: Option<&str>) -> bool {
        UserBackend::accepts_session_backend(self, backend)
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, BoxError>> {
        Box::pin(async move { Ok(UserBackend::authenticate(self, username, password).await?.map(Authenticated::new)) })
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
    /// The sessions' settings in one piece, made on first use.
    sessions: OnceLock<Arc<Context>>,
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
            sessions: OnceLock::new(),
        }
    }

    /// Sessions in `store` (e.g. `RedisSessionStore` for several processes).
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Arc::new(store);
        self.sessions = OnceLock::new();
        self
    }

    /// Cookies signed with `keys`.
    pub fn keys(mut self, keys: SecretKeys) -> Self {
        self.keys = Some(keys);
        self.sessions = OnceLock::new();
        self
    }

    /// Session cookie settings.
    pub fn session(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self.sessions = OnceLock::new();
        self
    }

    /// Fills in the random development key if none was given (once, at router build time).
    pub(crate) fn finish(mut self) -> Self {
        if self.keys.is_none() {
            self.keys = Some(SecretKeys::random());
        }
        self
    }

    /// The store, keys and cookie settings, as sessions hold them.
    fn sessions(&self) -> &Arc<Context> {
        self.sessions.get_or_init(|| {
            Arc::new(Context {
                store: self.store.clone(),
                // `ProtocolTypeRouter::auth` always fills the keys in (a random one for development).
                keys: self.keys.clone().unwrap_or_else(SecretKeys::random),
                config: self.session.clone(),
            })
        })
    }
}

/// Puts `scope.user` from the session before the inner application runs (Channels'
/// `AuthMiddleware`). Anonymous when there is no session, no user id, no such user, or the
/// session's auth hash no longer matches the user's (compared in constant time; the session is
/// then flushed). Needs `SessionMiddleware` (and `CookieMiddleware`) outside it: use
/// [`AuthMiddlewareStack`](struct@AuthMiddlewareStack), which is the three in one step.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AuthMiddleware {}

impl AuthMiddleware {
    /// The middleware; the user backend comes from the scope's [`AuthConfig`].
    pub fn new() -> Self {
        AuthMiddleware {}
    }
}

/// `AuthMiddleware(inner)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn AuthMiddleware<A: Application>(inner: A) -> Wrapped<AuthMiddleware, A> {
    AuthMiddleware::new().wrap(inner)
}

impl Middleware for AuthMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        let config = auth_config(scope, "AuthMiddleware")?;
        let Some(session) = scope.session.clone() else {
            return Err(AppError::Misconfigured(
                "AuthMiddleware needs SessionMiddleware (and CookieMiddleware) around it: use AuthMiddlewareStack"
                    .to_owned(),
            ));
        };
        resolve_user(scope, &session, &config).await;
        Ok(Step::Continue)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `can_set_cookie`: the connection's response can carry a new session cookie (HTTP), so a
/// session moved to the current key may change its key too.
async fn resolve(session: &Session, backend: &dyn ErasedBackend, can_set_cookie: bool) -> Result<User, BoxError> {
    let Some(id) = session.get::<String>(USER_ID_KEY).await? else {
        tracing::debug!("anonymous: no user in the session (no session, or none logged in)");
        return Ok(User::anonymous());
    };
    let logged_in_by: Option<String> = session.get(USER_BACKEND_KEY).await?;
    if !backend.accepts_session_backend(logged_in_by.as_deref()) {
        tracing::debug!(backend = ?logged_in_by, "anonymous: logged in by a backend this one does not accept");
        return Ok(User::anonymous());
    }
    let Some(loaded) = backend.load(&id).await? else {
        tracing::debug!(user = %id, "anonymous: the session's user is gone or inactive");
        return Ok(User::anonymous());
    };
    let Some(stored) = session.get::<String>(USER_HASH_KEY).await? else {
        tracing::debug!(user = %id, "anonymous: the session has no auth hash; flushed");
        session.flush().await?;
        return Ok(User::anonymous());
    };
    if constant_time_eq(stored.as_bytes(), loaded.hash.as_bytes()) {
        return Ok(loaded.user);
    }
    if loaded.fallback_hashes.iter().any(|hash| constant_time_eq(stored.as_bytes(), hash.as_bytes())) {
        // Made under a retired key: still valid, and moved to the current hash (and, as Django
        // does, to a new session key when a cookie can carry it; a WebSocket keeps its key).
        session.insert(USER_HASH_KEY, &loaded.hash).await?;
        if can_set_cookie {
            session.cycle_key().await?;
        } else {
            session.save().await?;
        }
        return Ok(loaded.user);
    }
    // The credentials changed since this session logged in: it no longer authenticates.
    tracing::debug!(user = %id, "anonymous: the user's credentials changed since this session logged in; flushed");
    session.flush().await?;
    Ok(User::anonymous())
}

/// The scope's [`AuthConfig`], for a protocol whose cookies can be read.
fn auth_config(scope: &Scope, middleware: &str) -> Result<Arc<AuthConfig>, AppError> {
    if let Protocol::Custom(name) = &scope.protocol {
        return Err(AppError::Misconfigured(format!(
            "{middleware} reads the session cookie from HTTP headers, and the custom protocol `{name}` has none: \
             authenticate it with a middleware of your own that reads the protocol's data (see the \
             channels::middleware docs)"
        )));
    }
    scope.extensions.get::<Arc<AuthConfig>>().cloned().ok_or_else(|| {
        AppError::Misconfigured(format!(
            "{middleware} has no user backend: give one where the app is built, with \
             ProtocolTypeRouter::auth(AuthConfig::new(backend))"
        ))
    })
}

/// Sets `scope.user` from `session` (anonymous when the backend fails, logged).
async fn resolve_user(scope: &mut Scope, session: &Session, config: &AuthConfig) {
    scope.user = match resolve(session, config.backend.as_ref(), scope.protocol == Protocol::Http).await {
        Ok(user) => user,
        Err(err) => {
            tracing::error!(%err, "could not load the session's user; treating the connection as anonymous");
            User::anonymous()
        }
    };
    scope.user_resolved = true;
    if let Some(id) = scope.user.id() {
        // The connection's span (see the server's module docs) names its user from now on.
        tracing::Span::current().record("user", tracing::field::display(id));
    }
    if scope.protocol == Protocol::Websocket {
        session.release();
    }
}

/// Cookie ► Session ► Auth (Channels' `AuthMiddlewareStack`) in one step, configured by the
/// scope's [`AuthConfig`]. With [`required`](Self::required), anonymous users are refused
/// before the application runs: a WebSocket handshake with 403 (close reason
/// `login required`), an HTTP request with 401 (or a redirect).
///
/// `AuthMiddlewareStack(inner)` in a `routing!` table is `AuthMiddlewareStack::new().wrap(inner)`.
#[derive(Debug, Clone, Default)]
pub struct AuthMiddlewareStack {
    required: Option<Required>,
}

/// How a stack with `required` refuses anonymous HTTP requests.
#[derive(Debug, Clone)]
enum Required {
    Unauthorized,
    Redirect(String),
}

impl AuthMiddlewareStack {
    /// The stack; anonymous users pass (as anonymous).
    pub fn new() -> Self {
        AuthMiddlewareStack { required: None }
    }

    /// Refuses anonymous users: WebSocket 403, HTTP 401.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = Some(Required::Unauthorized);
        self
    }

    /// Refuses anonymous users; HTTP requests are redirected (302) to `location`
    /// (e.g. `/login/`), with `?next=<path>`.
    #[must_use]
    pub fn required_redirect(mut self, location: impl Into<String>) -> Self {
        self.required = Some(Required::Redirect(location.into()));
        self
    }
}

/// `AuthMiddlewareStack(inner)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn AuthMiddlewareStack<A: Application>(inner: A) -> Wrapped<AuthMiddlewareStack, A> {
    AuthMiddlewareStack::new().wrap(inner)
}

const LOGIN_REQUIRED: &str = "login required";

impl Middleware for AuthMiddlewareStack {
    type State = Session;

    async fn prepare(&self, scope: &mut Scope) -> Result<Step<Session>, AppError> {
        let config = auth_config(scope, "AuthMiddlewareStack")?;
        super::cookie::parse_into(scope);
        let session = super::session::open(config.sessions(), scope);
        resolve_user(scope, &session, &config).await;
        match &self.required {
            Some(required) if scope.user.is_anonymous() => Ok(Step::Refuse(match (&scope.protocol, required) {
                (Protocol::Http, Required::Redirect(location)) => {
                    Refusal::redirect(&format!("{location}?next={}", scope.raw_path), LOGIN_REQUIRED)
                }
                (Protocol::Http, Required::Unauthorized) => Refusal::new(StatusCode::UNAUTHORIZED, LOGIN_REQUIRED),
                _ => Refusal::forbidden(LOGIN_REQUIRED),
            })),
            _ => Ok(Step::Watch(session)),
        }
    }

    async fn response_start(&self, session: &mut Session, start: &mut ResponseStart) -> Result<(), Refusal> {
        super::session::commit(session, start).await
    }
}

/// Logs `user` in on this connection (Django's `login()`): stores its id and auth hash in the
/// session, cycles the session key (against session fixation) and sets `scope.user`. For an
/// HTTP consumer the new cookie goes out with the response. `user` is the application's user
/// type, or what [`authenticate`] returned.
///
/// It needs the session: the consumer must sit behind [`AuthMiddlewareStack`](struct@AuthMiddlewareStack)
/// (or `#[auth(stack)]`, or a session middleware); see the
/// [login view example](crate::auth#a-login-view).
///
/// # Errors
/// No session on the scope (the message names the fix), or the store failed.
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
    let backend = scope
        .extensions
        .get::<Arc<AuthConfig>>()
        .and_then(|config| config.backend.session_backend().map(str::to_owned));
    if let Some(backend) = backend {
        session.insert(USER_BACKEND_KEY, &backend).await?;
    }
    session.cycle_key().await?;
    scope.user = user.into_user();
    Ok(())
}

/// A new session with `user` logged in, saved in the configuration's store: the session
/// cookie's name and value (what `testing::force_login` gives a test).
pub(crate) async fn session_for<U: AuthUser>(config: &AuthConfig, user: U) -> Result<(String, String), SessionError> {
    let session = Session::from_cookie(config.sessions().clone(), None);
    session.insert(USER_ID_KEY, &user.id()).await?;
    session.insert(USER_HASH_KEY, &user.session_auth_hash()).await?;
    if let Some(backend) = config.backend.session_backend() {
        session.insert(USER_BACKEND_KEY, &backend).await?;
    }
    session.save().await?;
    session.cookie().await?.ok_or_else(|| SessionError::Store(BackendError::msg("the saved session has no key")))
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
