//! Sessions (Django's `request.session`): [`Session`] (`scope.session`), the
//! [`SessionStore`]s and the [`SecretKeys`] that sign session cookies. The middleware that puts a
//! session into each scope is [`SessionMiddleware`](struct@crate::middleware::SessionMiddleware).
//!
//! The session cookie is always signed ([`SecretKeys`]) and carries its expiry inside the
//! signature: `value.expires.signature`. A cookie that does not verify, has expired, or names a
//! session the store does not have gives a fresh, empty session — never an error page, never
//! another user's data. With a server-side store the value is a random 256-bit key; with
//! [`CookieSessionStore`] it is the session data itself.
//!
//! **HTTP**: a session modified by an HTTP consumer is saved, and its cookie set, when the
//! response starts. **WebSocket**: there is no response to carry a cookie, so changes are saved
//! by an explicit [`Session::save`]; the key stays the same, so the browser's next HTTP request
//! sees them (not possible with `CookieSessionStore`, whose data lives in the browser's cookie).

#[cfg(feature = "redis")]
mod redis;
mod signing;

#[cfg(feature = "redis")]
pub use self::redis::RedisSessionStore;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use cookie::Cookie;
pub use cookie::SameSite;

pub(crate) use self::signing::random_bytes;
pub use self::signing::{SecretKeys, WeakKeyError};
use crate::BoxFuture;

/// What a session holds: JSON values by key.
pub type SessionData = serde_json::Map<String, serde_json::Value>;

/// A session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed (e.g. Redis is unreachable).
    #[error("session store error: {0}")]
    Store(#[source] crate::error::BackendError),
    /// A value could not be converted to or from JSON.
    #[error("session value error: {0}")]
    Value(#[from] serde_json::Error),
    /// The session is too big for a cookie (`CookieSessionStore` keeps it under 4000 bytes).
    #[error("session data of {0} bytes is too big for a cookie; use a server-side store")]
    TooLarge(usize),
    /// The session was deleted (a logout in another tab, an expiry) while this connection used
    /// it, so it was not written back. An HTTP request then gets 400 and no cookie, as Django's
    /// `SessionInterrupted`.
    #[error("the session was deleted before the request completed")]
    Deleted,
}

/// Where sessions live. Values are what the session cookie carries (signed by the middleware).
pub trait SessionStore: Send + Sync + 'static {
    /// The data stored under `value`, or `None` when there is none (unknown or expired).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails.
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>>;

    /// Stores `data` for `age` under `current`, or under a new value when `current` is `None`
    /// (a new key never overwrites an existing session). Returns the cookie's value.
    ///
    /// With `current`, only a session that still exists is updated: one deleted meanwhile (a
    /// logout elsewhere) stays deleted, and the call fails with [`SessionError::Deleted`].
    ///
    /// # Errors
    /// [`SessionError::Store`], [`SessionError::TooLarge`], [`SessionError::Deleted`].
    fn save<'a>(
        &'a self,
        current: Option<&'a str>,
        data: &'a SessionData,
        age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>>;

    /// Deletes the session stored under `value`.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>>;

    /// How this store's values travel in the session cookie; by default inside this crate's
    /// signed, expiring cookie.
    fn cookie_format(&self) -> CookieFormat {
        CookieFormat::Signed
    }
}

/// How a [`SessionStore`]'s values travel in the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieFormat {
    /// Signed with the app's [`SecretKeys`], with the expiry inside the signature: a cookie is
    /// only looked up in the store when this server signed it.
    Signed,
    /// The value itself, for stores whose values are already safe to hand out: unguessable
    /// random keys or data the store signs (Django's session cookies, which Django reads too).
    AsIs,
}

/// A shared store is a store (e.g. one `Arc<dyn SessionStore>` chosen at startup).
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        (**self).load(value)
    }

    fn save<'a>(
        &'a self,
        current: Option<&'a str>,
        data: &'a SessionData,
        age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        (**self).save(current, data, age)
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        (**self).delete(value)
    }

    fn cookie_format(&self) -> CookieFormat {
        (**self).cookie_format()
    }
}

/// A new random session key: 256 bits, URL-safe base64.
pub(crate) fn new_key() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Sessions in this process's memory (the default): lost on restart, not shared between
/// processes. Expired sessions are swept as new ones are created.
#[derive(Debug, Clone, Default)]
pub struct InMemorySessionStore {
    sessions: Arc<StdMutex<HashMap<String, (u64, SessionData)>>>,
}

impl InMemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemorySessionStore::default()
    }

    /// How many sessions are stored (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True when no session is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for InMemorySessionStore {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let found = sessions.get(value).filter(|(expires, _)| *expires > unix_now()).map(|(_, data)| data.clone());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(
        &'a self,
        current: Option<&'a str>,
        data: &'a SessionData,
        age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        let now = unix_now();
        let expires = now + age.as_secs();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let key = match current {
            Some(key) if sessions.get(key).is_some_and(|(expires, _)| *expires > now) => key.to_owned(),
            Some(_) => return Box::pin(std::future::ready(Err(SessionError::Deleted))),
            None => {
                sessions.retain(|_, (expires, _)| *expires > now);
                loop {
                    let key = new_key();
                    if !sessions.contains_key(&key) {
                        break key;
                    }
                }
            }
        };
        sessions.insert(key.clone(), (expires, data.clone()));
        Box::pin(std::future::ready(Ok(key)))
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(value);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Stateless sessions: the data travels in the cookie (base64 JSON), signed with the
/// middleware's [`SecretKeys`] (so it cannot be forged or altered, but it can be read by the
/// client: keep secrets out). Limited to about 4 KB; `delete` cannot revoke a copy the client
/// kept, so `logout` relies on the cookie's removal.
#[derive(Debug, Clone, Copy, Default)]
pub struct CookieSessionStore;

/// Browsers keep cookies up to about 4096 bytes, name and attributes included.
const MAX_COOKIE_DATA: usize = 3800;

impl SessionStore for CookieSessionStore {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        // The signature was verified before; a value that does not decode is just no session.
        let data = URL_SAFE_NO_PAD.decode(value).ok().and_then(|json| serde_json::from_slice(&json).ok());
        Box::pin(std::future::ready(Ok(data)))
    }

    fn save<'a>(
        &'a self,
        _current: Option<&'a str>,
        data: &'a SessionData,
        _age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        let result = serde_json::to_vec(data).map_err(SessionError::from).and_then(|json| {
            let value = URL_SAFE_NO_PAD.encode(json);
            if value.len() > MAX_COOKIE_DATA { Err(SessionError::TooLarge(value.len())) } else { Ok(value) }
        });
        Box::pin(std::future::ready(result))
    }

    fn delete<'a>(&'a self, _value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The session cookie's settings. Defaults: `sessionid`, two weeks, HttpOnly, SameSite=Lax,
/// path `/`, not Secure (set `secure` behind HTTPS).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Cookie name (default `sessionid`).
    pub cookie_name: String,
    /// Session age: cookie lifetime and store TTL (default 1,209,600 s = two weeks).
    pub age: Duration,
    /// `Secure` attribute (default off, so development over plain HTTP works).
    pub secure: bool,
    /// `HttpOnly` attribute (default on: scripts cannot read the session cookie).
    pub http_only: bool,
    /// `SameSite` attribute (default `Lax`).
    pub same_site: SameSite,
    /// `Path` attribute (default `/`).
    pub path: String,
    /// `Domain` attribute (default none: the serving host only).
    pub domain: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "sessionid".to_owned(),
            age: Duration::from_secs(1_209_600),
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
        }
    }
}

/// What the middleware shares with every session it creates.
pub(crate) struct Context {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) keys: SecretKeys,
    pub(crate) config: SessionConfig,
}

impl Context {
    /// The store value in a signed, unexpired cookie, else `None`.
    pub(crate) fn verify(&self, cookie: &str) -> Option<String> {
        if self.store.cookie_format() == CookieFormat::AsIs {
            return (!cookie.is_empty()).then(|| cookie.to_owned());
        }
        let (signed, signature) = cookie.rsplit_once('.')?;
        if !self.keys.verify(signed, signature) {
            tracing::debug!("session cookie with a bad signature ignored");
            return None;
        }
        let (value, expires) = signed.rsplit_once('.')?;
        let fresh = expires.parse::<u64>().is_ok_and(|expires| expires > unix_now());
        fresh.then(|| value.to_owned())
    }

    /// The cookie value for store value `value`: with its expiry, signed (or as it is, for a
    /// store whose values travel as they are).
    fn signed(&self, value: &str) -> String {
        if self.store.cookie_format() == CookieFormat::AsIs {
            return value.to_owned();
        }
        let signed = format!("{value}.{}", unix_now() + self.config.age.as_secs());
        let signature = self.keys.sign(&signed);
        format!("{signed}.{signature}")
    }

    fn cookie(&self, value: Option<&str>) -> String {
        let mut cookie = match value {
            Some(value) => {
                let mut cookie = Cookie::new(self.config.cookie_name.clone(), self.signed(value));
                let age = cookie::time::Duration::seconds(i64::try_from(self.config.age.as_secs()).unwrap_or(i64::MAX));
                cookie.set_max_age(age);
                // Django sends both; `Expires` for clients that ignore `Max-Age`.
                if let Some(expires) = cookie::time::OffsetDateTime::now_utc().checked_add(age) {
                    cookie.set_expires(expires);
                }
                cookie
            }
            None => {
                let mut cookie = Cookie::new(self.config.cookie_name.clone(), "");
                cookie.make_removal();
                cookie
            }
        };
        cookie.set_path(self.config.path.clone());
        if let Some(domain) = &self.config.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_secure(self.config.secure);
        cookie.set_http_only(self.config.http_only);
        cookie.set_same_site(self.config.same_site);
        cookie.encoded().to_string()
    }
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// The store value: the request cookie's (verified) until loaded, then the one the data
    /// belongs to (`None` when the store had nothing under it).
    current: Option<String>,
    data: SessionData,
    modified: bool,
    /// A `Set-Cookie` to send with the HTTP response.
    set_cookie: Option<String>,
}

/// The connection's session (`scope.session`, Django's `request.session`): loaded from the
/// store on first use, typed values in and out. Clones share one session.
#[derive(Clone)]
pub struct Session {
    state: Arc<Mutex<State>>,
    context: Arc<Context>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// The session a [`SessionMiddleware`](struct@crate::middleware::SessionMiddleware) with this
    /// store, keys and configuration gives a request whose session cookie is `cookie` (`None`:
    /// no cookie). For tests, and for servers of custom protocols that carry the cookie
    /// themselves: a cookie that does not verify gives a fresh, empty session, as in the middleware.
    pub fn new(store: Arc<dyn SessionStore>, keys: SecretKeys, config: SessionConfig, cookie: Option<&str>) -> Session {
        Session::from_cookie(Arc::new(Context { store, keys, config }), cookie)
    }

    /// The session for a request carrying `cookie` (the session cookie's value).
    pub(crate) fn from_cookie(context: Arc<Context>, cookie: Option<&str>) -> Session {
        let current = cookie.and_then(|cookie| context.verify(cookie));
        Session { state: Arc::new(Mutex::new(State { current, ..State::default() })), context }
    }

    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SessionError> {
        let mut state = self.state.lock().await;
        if !state.loaded {
            if let Some(value) = &state.current {
                let loaded = self.context.store.load(value).await;
                crate::metrics::session_load(match &loaded {
                    Ok(Some(_)) => "found",
                    Ok(None) => "missing",
                    Err(_) => "error",
                });
                // A failed load leaves the value for the next try.
                match loaded? {
                    Some(data) => state.data = data,
                    None => state.current = None,
                }
            }
            state.loaded = true;
        }
        Ok(state)
    }

    /// The value under `key`, if there is one.
    ///
    /// # Errors
    /// The store failed, or the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        match state.data.get(key) {
            Some(value) => Ok(Some(T::deserialize(value)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// The store failed, or the value cannot be JSON.
    pub async fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value)?;
        let mut state = self.loaded().await?;
        state.data.insert(key.to_owned(), value);
        state.modified = true;
        Ok(())
    }

    /// Removes `key`, returning whether it was there.
    ///
    /// # Errors
    /// The store failed.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        let mut state = self.loaded().await?;
        let removed = state.data.remove(key).is_some();
        state.modified |= removed;
        Ok(removed)
    }

    /// True when the session holds nothing (a new or an empty session).
    ///
    /// # Errors
    /// The store failed.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.loaded().await?.data.is_empty())
    }

    /// The store value of the saved session (its key with a server-side store), if saved.
    ///
    /// # Errors
    /// The store failed.
    pub async fn session_key(&self) -> Result<Option<String>, SessionError> {
        Ok(self.loaded().await?.current.clone())
    }

    /// Saves the session now (inside a WebSocket, the only way; HTTP responses save a modified
    /// session by themselves).
    ///
    /// # Errors
    /// The store failed.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        self.save_locked(&mut state).await
    }

    async fn save_locked(&self, state: &mut State) -> Result<(), SessionError> {
        let context = &self.context;
        let value = context.store.save(state.current.as_deref(), &state.data, context.config.age).await?;
        state.set_cookie = Some(context.cookie(Some(&value)));
        state.current = Some(value);
        state.modified = false;
        Ok(())
    }

    /// Deletes the session and starts an empty one (Django's `flush`, what logout does).
    ///
    /// # Errors
    /// The store failed.
    pub async fn flush(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if let Some(value) = state.current.take() {
            self.context.store.delete(&value).await?;
        }
        state.data.clear();
        state.modified = false;
        state.set_cookie = Some(self.context.cookie(None));
        Ok(())
    }

    /// Moves the data to a new key and deletes the old one (what login does, against session
    /// fixation); the session is saved.
    ///
    /// # Errors
    /// The store failed.
    pub async fn cycle_key(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if let Some(old) = state.current.take() {
            self.context.store.delete(&old).await?;
        }
        self.save_locked(&mut state).await
    }

    /// The session cookie's name and the value naming this session as saved (`None` before it
    /// is saved).
    pub(crate) async fn cookie(&self) -> Result<Option<(String, String)>, SessionError> {
        let key = self.session_key().await?;
        Ok(key.map(|key| (self.context.config.cookie_name.clone(), self.context.signed(&key))))
    }

    /// Lets go of the loaded data of an unchanged session; the next read loads it again from
    /// the store. For WebSockets after the auth middleware has read the user: the data would
    /// otherwise stay in memory for as long as the connection is open, read or not.
    pub(crate) fn release(&self) {
        let Ok(mut state) = self.state.try_lock() else { return };
        if state.loaded && !state.modified && state.set_cookie.is_none() {
            state.data = SessionData::new();
            state.loaded = false;
        }
    }

    /// Before an HTTP response starts: saves a modified session and returns the `Set-Cookie`
    /// header to send, if any.
    pub(crate) async fn commit(&self) -> Result<Option<String>, SessionError> {
        let mut state = self.state.lock().await;
        if state.modified {
            if state.data.is_empty() {
                if let Some(value) = state.current.take() {
                    self.context.store.delete(&value).await?;
                }
                state.set_cookie = Some(self.context.cookie(None));
                state.modified = false;
            } else {
                self.save_locked(&mut state).await?;
            }
        }
        Ok(state.set_cookie.take())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn context() -> Context {
        Context {
            store: Arc::new(CookieSessionStore),
            keys: SecretKeys::new([[7u8; 32]]).unwrap(),
            config: SessionConfig::default(),
        }
    }

    /// Fails its first load, then holds one session under `"key"`.
    struct Flaky(std::sync::atomic::AtomicBool);

    impl SessionStore for Flaky {
        fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
            let failed_before = self.0.swap(true, std::sync::atomic::Ordering::Relaxed);
            let data = (value == "key").then(|| SessionData::from_iter([("user".to_owned(), 7.into())]));
            Box::pin(async move {
                if failed_before {
                    Ok(data)
                } else {
                    Err(SessionError::Store(crate::error::BackendError::new(std::io::Error::other("unreachable"))))
                }
            })
        }
        fn save<'a>(
            &'a self,
            _: Option<&'a str>,
            _: &'a SessionData,
            _: Duration,
        ) -> BoxFuture<'a, Result<String, SessionError>> {
            Box::pin(async { Ok("key".to_owned()) })
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
            Box::pin(async { Ok(()) })
        }
        fn cookie_format(&self) -> CookieFormat {
            CookieFormat::AsIs
        }
    }

    #[tokio::test]
    async fn a_failed_load_is_tried_again_and_does_not_forget_the_cookie() {
        let store = Arc::new(Flaky(Default::default()));
        let session = Session::new(store, SecretKeys::new([[7u8; 32]]).unwrap(), SessionConfig::default(), Some("key"));
        assert!(matches!(session.get::<u32>("user").await, Err(SessionError::Store(_))));
        assert_eq!(session.get::<u32>("user").await.unwrap(), Some(7));
        assert_eq!(session.session_key().await.unwrap().as_deref(), Some("key"));
        // Let go of (as for a WebSocket) and read again: loaded anew under the same value.
        session.release();
        assert_eq!(session.get::<u32>("user").await.unwrap(), Some(7));
    }

    proptest! {
        #[test]
        fn arbitrary_cookie_values_never_authenticate(value in any::<String>()) {
            prop_assert_eq!(context().verify(&value), None);
        }

        #[test]
        fn well_shaped_forgeries_never_authenticate(
            data in "[A-Za-z0-9_-]{0,64}",
            expires in any::<u64>(),
            signature in "[A-Za-z0-9_-]{0,64}",
        ) {
            prop_assert_eq!(context().verify(&format!("{data}.{expires}.{signature}")), None);
        }

        #[test]
        fn signed_values_round_trip_and_any_change_breaks_them(data in "[A-Za-z0-9_-]{1,64}", flip in any::<prop::sample::Index>()) {
            let context = context();
            let cookie = context.cookie(Some(&data));
            let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
            prop_assert_eq!(context.verify(&value), Some(data.clone()));
            let mut bytes = value.into_bytes();
            let i = flip.index(bytes.len());
            bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(context.verify(&tampered), None);
        }

        #[test]
        fn cookie_store_decodes_arbitrary_values_without_panicking(value in any::<String>()) {
            let loaded = futures_util::FutureExt::now_or_never(CookieSessionStore.load(&value));
            prop_assert!(loaded.is_some());
        }
    }
}
