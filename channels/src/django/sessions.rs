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
}

impl SessionEngine {
    /// Django's dotted name for it.
    pub fn name(&self) -> &'static str {
        match self {
            SessionEngine::Db(_) => "django.contrib.sessions.backends.db",
            SessionEngine::SignedCookies => "django.contrib.sessions.backends.signed_cookies",
        }
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
                    Ok(row.and_then(|data| self.decode(&data)))
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
                SessionEngine::SignedCookies => Ok(signing::dumps(&self.keys, COOKIE_SALT, data)?),
            }
        })
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            match &self.engine {
                SessionEngine::Db(db) if plausible_key(value) => db.delete_session(value).await.map_err(store_error),
                SessionEngine::Db(_) | SessionEngine::SignedCookies => Ok(()),
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
