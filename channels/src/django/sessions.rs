//! [`DjangoSessionStore`]: a Django site's own sessions, read and written in its formats.

use std::time::Duration;

use super::db::Database;
use super::signing::{self, BadSignature, DjangoKeys};
use crate::BoxFuture;
use crate::error::BackendError;
use crate::session::{CookieFormat, SessionData, SessionError, SessionStore};

/// The salt Django's session backends sign session data with (`SessionBase.key_salt`).
const DATA_SALT: &str = "django.contrib.sessions.SessionStore";
/// The salt of `signed_cookies` sessions.
const COOKIE_SALT: &str = "django.contrib.sessions.backends.signed_cookies";
/// Django's `VALID_KEY_CHARS`.
const KEY_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Where a Django site keeps its sessions (`SESSION_ENGINE`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionEngine {
    /// `django.contrib.sessions.backends.db`: the `django_session` table.
    Db(Database),
    /// `django.contrib.sessions.backends.signed_cookies`: the data itself, signed, in the cookie.
    SignedCookies,
    /// `django.contrib.sessions.backends.cache`: Django's cache (`RedisCache`, or django-redis
    /// with its default serializer), the session dictionary pickled.
    Cache(DjangoCache),
    /// `django.contrib.sessions.backends.cached_db`: the table, read through the cache.
    CachedDb(Database, DjangoCache),
}

impl SessionEngine {
    /// Django's dotted name for it.
    pub fn name(&self) -> &'static str {
        match self {
            SessionEngine::Db(_) => "django.contrib.sessions.backends.db",
            SessionEngine::SignedCookies => "django.contrib.sessions.backends.signed_cookies",
            SessionEngine::Cache(_) => "django.contrib.sessions.backends.cache",
            SessionEngine::CachedDb(..) => "django.contrib.sessions.backends.cached_db",
        }
    }

    /// The cache's key prefix for sessions (Django's `KEY_PREFIX` of the session backend).
    fn cache_prefix(&self) -> &'static str {
        match self {
            SessionEngine::CachedDb(..) => "django.contrib.sessions.cached_db",
            _ => "django.contrib.sessions.cache",
        }
    }
}

/// A Django cache in Redis (`CACHES["default"]`): its `LOCATION` and `KEY_PREFIX`, with
/// Django's key layout (`<KEY_PREFIX>:1:<key>`) and `RedisSerializer` (pickle).
#[derive(Clone)]
pub struct DjangoCache {
    client: redis::Client,
    key_prefix: String,
    connection: std::sync::Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
}

impl std::fmt::Debug for DjangoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoCache").field("key_prefix", &self.key_prefix).finish_non_exhaustive()
    }
}

impl DjangoCache {
    /// The cache at `url` (`redis://host:port/db`), `KEY_PREFIX` = `key_prefix`. Connects on
    /// first use.
    ///
    /// # Errors
    /// A URL the Redis client cannot use.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(BackendError::new)?;
        Ok(DjangoCache { client, key_prefix: key_prefix.to_owned(), connection: Default::default() })
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, BackendError> {
        // Fail fast: a cache that is down must not hold handshakes (cached_db reads the table).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        self.connection
            .get_or_try_init(|| redis::aio::ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(BackendError::new)
    }

    /// Django's `make_key`: `<KEY_PREFIX>:<VERSION>:<key>`.
    fn key(&self, prefix: &str, session_key: &str) -> String {
        format!("{}:1:{prefix}{session_key}", self.key_prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<SessionData>, BackendError> {
        let mut connection = self.connection().await?;
        let value: Option<Vec<u8>> =
            redis::cmd("GET").arg(key).query_async(&mut connection).await.map_err(BackendError::new)?;
        let Some(value) = value else { return Ok(None) };
        match super::pickle::loads(&value) {
            Ok(serde_json::Value::Object(data)) => Ok(Some(data)),
            Ok(_) => {
                tracing::warn!("Django cache session is not a dictionary; treated as no session");
                Ok(None)
            }
            Err(err) => {
                tracing::warn!(%err, "Django cache session unreadable here; treated as no session");
                Ok(None)
            }
        }
    }

    /// `SET` with Django's timeout; `condition` `NX` (new) or `XX` (still there). False when
    /// the condition did not hold.
    async fn set(
        &self,
        key: &str,
        data: &SessionData,
        age: Duration,
        condition: Option<&str>,
    ) -> Result<bool, BackendError> {
        let mut connection = self.connection().await?;
        let value = super::pickle::dumps(&serde_json::Value::Object(data.clone()));
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("EX").arg(age.as_secs().max(1));
        if let Some(condition) = condition {
            command.arg(condition);
        }
        let done: Option<String> = command.query_async(&mut connection).await.map_err(BackendError::new)?;
        Ok(done.is_some())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let mut connection = self.connection().await?;
        redis::cmd("DEL").arg(key).query_async::<()>(&mut connection).await.map_err(BackendError::new)
    }
}

/// A Django site's sessions as a [`SessionStore`]: the cookie is Django's own (the session key,
/// or the signed data), the data is encoded as Django encodes it (`signing.dumps` with its salt,
/// zlib when it helps, `JSONSerializer`) and signed with `SECRET_KEY` (verified with it and
/// `SECRET_KEY_FALLBACKS`). A session written here is read by Django and the other way round.
///
/// Session data Django cannot have written with the JSON serializer (a pickled session, a
/// garbage row, a bad signature) reads as no session, with a warning: as in Django, never an
/// error page.
#[derive(Debug, Clone)]
pub struct DjangoSessionStore {
    engine: SessionEngine,
    keys: DjangoKeys,
    /// `SESSION_COOKIE_AGE`, the signed-cookie sessions' maximum age.
    age: Duration,
}

impl DjangoSessionStore {
    /// Sessions in `engine`, signed with `keys`, `SESSION_COOKIE_AGE` = `age`.
    pub fn new(engine: SessionEngine, keys: DjangoKeys, age: Duration) -> Self {
        DjangoSessionStore { engine, keys, age }
    }

    fn decode(&self, data: &str) -> Option<SessionData> {
        match signing::loads::<SessionData>(&self.keys, DATA_SALT, data, None) {
            Ok(data) => Some(data),
            Err(BadSignature::Invalid) => {
                tracing::warn!("Django session data corrupted (bad signature); treated as no session");
                None
            }
            Err(err) => {
                tracing::warn!(%err, "Django session data unreadable; treated as no session");
                None
            }
        }
    }
}

/// A value Django could have made with `get_random_string(32, VALID_KEY_CHARS)` (it accepts
/// any key of 8 characters or more; a key of other characters cannot be one of its rows).
fn plausible_key(key: &str) -> bool {
    (8..=40).contains(&key.len()) && key.bytes().all(|byte| KEY_CHARS.contains(&byte))
}

/// 32 characters of `VALID_KEY_CHARS` (Django's `get_random_string(32, ...)`), unbiased.
fn new_key() -> String {
    let mut key = String::with_capacity(32);
    while key.len() < 32 {
        for byte in crate::session::random_bytes::<64>() {
            // 252 = 7 × 36: bytes above it would favour the first characters.
            if byte < 252 && key.len() < 32 {
                key.push(char::from(KEY_CHARS[usize::from(byte) % KEY_CHARS.len()]));
            }
        }
    }
    key
}

fn store_error(err: BackendError) -> SessionError {
    SessionError::Store(err)
}

impl SessionStore for DjangoSessionStore {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        Box::pin(async move {
            match &self.engine {
                SessionEngine::Db(db) => {
                    if !plausible_key(value) {
                        return Ok(None);
                    }
                    let row = db.load_session(value).await.map_err(store_error)?;
                    if row.is_none() {
                        tracing::debug!("no Django session row for this key (none, or expired)");
                    }
                    Ok(row.and_then(|data| self.decode(&data)))
                }
                SessionEngine::Cache(cache) => {
                    if !plausible_key(value) {
                        return Ok(None);
                    }
                    cache.get(&cache.key(self.engine.cache_prefix(), value)).await.map_err(store_error)
                }
                SessionEngine::CachedDb(db, cache) => {
                    if !plausible_key(value) {
                        return Ok(None);
                    }
                    let key = cache.key(self.engine.cache_prefix(), value);
                    // The cache first; a cache that is down is not an outage of the sessions.
                    match cache.get(&key).await {
                        Ok(Some(data)) => return Ok(Some(data)),
                        Ok(None) => {}
                        Err(err) => tracing::warn!(%err, "Django session cache unreachable; reading the database"),
                    }
                    let row = db.load_session(value).await.map_err(store_error)?;
                    let data = row.and_then(|data| self.decode(&data));
                    if let Some(data) = &data
                        && let Err(err) = cache.set(&key, data, self.age, None).await
                    {
                        tracing::warn!(%err, "could not fill the Django session cache");
                    }
                    Ok(data)
                }
                SessionEngine::SignedCookies => {
                    match signing::loads::<SessionData>(&self.keys, COOKIE_SALT, value, Some(self.age.as_secs())) {
                        Ok(data) => Ok(Some(data)),
                        Err(err) => {
                            tracing::debug!(%err, "signed-cookie session refused");
                            Ok(None)
                        }
                    }
                }
            }
        })
    }

    fn save<'a>(
        &'a self,
        current: Option<&'a str>,
        data: &'a SessionData,
        age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(async move {
            match &self.engine {
                SessionEngine::Db(db) => {
                    let encoded = signing::dumps(&self.keys, DATA_SALT, data)?;
                    if let Some(key) = current {
                        return if db.update_session(key, &encoded, age).await.map_err(store_error)? {
                            Ok(key.to_owned())
                        } else {
                            Err(SessionError::Deleted)
                        };
                    }
                    loop {
                        let key = new_key();
                        if db.insert_session(&key, &encoded, age).await.map_err(store_error)? {
                            return Ok(key);
                        }
                    }
                }
                SessionEngine::Cache(cache) => {
                    let prefix = self.engine.cache_prefix();
                    if let Some(key) = current {
                        return if cache
                            .set(&cache.key(prefix, key), data, age, Some("XX"))
                            .await
                            .map_err(store_error)?
                        {
                            Ok(key.to_owned())
                        } else {
                            Err(SessionError::Deleted)
                        };
                    }
                    loop {
                        let key = new_key();
                        if cache.set(&cache.key(prefix, &key), data, age, Some("NX")).await.map_err(store_error)? {
                            return Ok(key);
                        }
                    }
                }
                SessionEngine::CachedDb(db, cache) => {
                    // The table is the truth (as Django's cached_db); the cache follows it.
                    let database = DjangoSessionStore { engine: SessionEngine::Db(db.clone()), ..self.clone() };
                    let key = database.save(current, data, age).await?;
                    if let Err(err) = cache.set(&cache.key(self.engine.cache_prefix(), &key), data, age, None).await {
                        tracing::warn!(%err, "could not update the Django session cache");
                    }
                    Ok(key)
                }
                SessionEngine::SignedCookies => Ok(signing::dumps(&self.keys, COOKIE_SALT, data)?),
            }
        })
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            match &self.engine {
                _ if !plausible_key(value) => Ok(()),
                SessionEngine::Db(db) => db.delete_session(value).await.map_err(store_error),
                SessionEngine::Cache(cache) => {
                    cache.delete(&cache.key(self.engine.cache_prefix(), value)).await.map_err(store_error)
                }
                SessionEngine::CachedDb(db, cache) => {
                    cache.delete(&cache.key(self.engine.cache_prefix(), value)).await.map_err(store_error)?;
                    db.delete_session(value).await.map_err(store_error)
                }
                SessionEngine::SignedCookies => Ok(()),
            }
        })
    }

    fn cookie_format(&self) -> CookieFormat {
        CookieFormat::AsIs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_djangos() {
        let key = new_key();
        assert_eq!(key.len(), 32);
        assert!(plausible_key(&key), "{key}");
        assert!(!plausible_key("short") && !plausible_key("UPPERCASEKEY123") && !plausible_key("abc'; --xx"));
    }

    #[tokio::test]
    async fn signed_cookie_sessions_round_trip_and_refuse_tampering() {
        let store = DjangoSessionStore::new(
            SessionEngine::SignedCookies,
            DjangoKeys::new("a secret", [] as [&str; 0]),
            Duration::from_secs(60),
        );
        let mut data = SessionData::new();
        data.insert("_auth_user_id".into(), "7".into());
        let cookie = store.save(None, &data, Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.load(&cookie).await.unwrap(), Some(data));
        assert_eq!(store.load(&format!("x{cookie}")).await.unwrap(), None);
        let other = DjangoSessionStore::new(
            SessionEngine::SignedCookies,
            DjangoKeys::new("another secret", [] as [&str; 0]),
            Duration::from_secs(60),
        );
        assert_eq!(other.load(&cookie).await.unwrap(), None);
    }
}
