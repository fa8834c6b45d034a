//! Next to a Django site (feature `django`): its own logins, sessions and users.
//!
//! Django keeps serving HTTP (its login pages, its admin); this server takes the WebSockets, and
//! both share the database, the session cookie and the secret keys. A user logged in through
//! Django's login view is `self.scope.user` (a [`DjangoUser`]) in a `#[auth(stack)]` consumer
//! here; a login or logout here is one for Django too; a password changed in Django ends the
//! sessions here (the session auth hash is computed as Django computes it).
//!
//! ```no_run
//! use channels::django::{DjangoConfig, DjangoUser};
//! use channels::prelude::*;
//! use channels::{auth, consumer, routing};
//!
//! #[auth(stack, required)]
//! #[consumer(websocket)]
//! struct Whoami;
//!
//! #[consumer]
//! impl Whoami {
//!     async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
//!         let name = self.scope.user.downcast_ref::<DjangoUser>().map_or("", |user| &user.username);
//!         ws.accept().await?;
//!         ws.send_text(format!("hello {name}")).await
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // DJANGO_SECRET_KEY, DJANGO_DATABASE_URL, DJANGO_SESSION_ENGINE...: Django's settings.
//! let django = DjangoConfig::from_env()?;
//! let app = routing! { websocket: [ "ws/whoami/" => Whoami ] }.auth(django.auth_config()?);
//! channels::serve(app, "127.0.0.1:8001").await?;
//! # Ok(()) }
//! ```
//!
//! Supported: the `db`, `signed_cookies`, `cache` and `cached_db` session engines (Django's JSON
//! serializer; the cache ones with Django's `RedisCache`, whose values are pickles of plain data);
//! PostgreSQL and SQLite; `auth_user` or a custom user model with `AbstractUser`'s columns;
//! the PBKDF2 (SHA-256 and SHA-1), Argon2, bcrypt-SHA256 and scrypt password hashers;
//! `SECRET_KEY_FALLBACKS`. The `django` feature needs Rust 1.94 (sqlx's minimum).

mod db;
mod hashers;
mod pg;
mod pickle;
mod sessions;
mod signing;
mod users;

use std::time::Duration;

use sha2::{Digest, Sha256};

pub use self::db::{Database, UserTable};
pub use self::hashers::{HashError, check_password};
pub use self::pg::PgConnections;
pub use self::sessions::{DjangoCache, DjangoSessionStore, SessionEngine};
pub use self::signing::{BadSignature, DjangoKeys};
pub use self::users::{DjangoUser, DjangoUserBackend};
use crate::error::BackendError;
use crate::middleware::AuthConfig;
use crate::session::{SecretKeys, SessionConfig};
/// The sqlx this module is built on (its pools and queries appear in [`Database`] and
/// [`PgConnections`]), re-exported so its version always matches.
pub use sqlx;

/// The session engines this crate speaks, by Django's names.
pub const SUPPORTED_ENGINES: &[&str] = &[
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.signed_cookies",
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
];

/// A Django setting that is missing or wrong, found when the app is built: the server does not
/// start half-configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DjangoError {
    /// A required setting is not set.
    #[error("{0} is not set (Django's {1})")]
    Missing(&'static str, &'static str),
    /// `SESSION_ENGINE` names an engine this crate does not speak.
    #[error("unsupported SESSION_ENGINE {engine:?}; supported: {supported}", engine = .0, supported = SUPPORTED_ENGINES.join(", "))]
    UnsupportedEngine(String),
    /// A setting has a value that cannot be used.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database URL cannot be used.
    #[error("DATABASE_URL: {0}")]
    Database(BackendError),
}

/// A Django site's settings, as this server needs them: built in code, or from environment
/// variables named after Django's settings ([`from_env`](Self::from_env)).
#[derive(Clone)]
pub struct DjangoConfig {
    secret_key: String,
    fallbacks: Vec<String>,
    database_url: Option<String>,
    cache_url: Option<String>,
    cache_key_prefix: String,
    session_engine: String,
    session: SessionConfig,
    user_table: UserTable,
    backends: Vec<String>,
}

impl std::fmt::Debug for DjangoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoConfig")
            .field("session_engine", &self.session_engine)
            .field("session", &self.session)
            .field("user_table", &self.user_table)
            .finish_non_exhaustive()
    }
}

impl DjangoConfig {
    /// Django's `SECRET_KEY`; everything else as Django's defaults (`db` sessions, cookie
    /// `sessionid` for two weeks, `auth_user`), except the database, which has no default.
    pub fn new(secret_key: impl Into<String>) -> Self {
        DjangoConfig {
            secret_key: secret_key.into(),
            fallbacks: Vec::new(),
            database_url: None,
            cache_url: None,
            cache_key_prefix: String::new(),
            session_engine: SUPPORTED_ENGINES[0].to_owned(),
            session: SessionConfig::default(),
            user_table: UserTable::default(),
            backends: Vec::new(),
        }
    }

    /// From the environment: `DJANGO_SECRET_KEY` (required), `DJANGO_SECRET_KEY_FALLBACKS`
    /// (comma-separated), `DJANGO_DATABASE_URL` (`postgres://...` or `sqlite:////abs/path`),
    /// `DJANGO_SESSION_ENGINE`, `DJANGO_SESSION_COOKIE_NAME`, `DJANGO_SESSION_COOKIE_AGE`
    /// (seconds), `DJANGO_SESSION_COOKIE_SECURE` (`true`/`false`), `DJANGO_CACHE_URL` and
    /// `DJANGO_CACHE_KEY_PREFIX` (the cache session engines' Redis),
    /// `DJANGO_AUTHENTICATION_BACKENDS` (comma-separated).
    ///
    /// # Errors
    /// A missing `DJANGO_SECRET_KEY`, or a value that does not parse.
    pub fn from_env() -> Result<Self, DjangoError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        let list = |value: String| {
            value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        };
        let secret = var("DJANGO_SECRET_KEY").ok_or(DjangoError::Missing("DJANGO_SECRET_KEY", "SECRET_KEY"))?;
        let mut config = DjangoConfig::new(secret);
        config.fallbacks = var("DJANGO_SECRET_KEY_FALLBACKS").map(list).unwrap_or_default();
        config.database_url = var("DJANGO_DATABASE_URL");
        config.cache_url = var("DJANGO_CACHE_URL");
        config.cache_key_prefix = var("DJANGO_CACHE_KEY_PREFIX").unwrap_or_default();
        if let Some(engine) = var("DJANGO_SESSION_ENGINE") {
            config.session_engine = engine;
        }
        if let Some(name) = var("DJANGO_SESSION_COOKIE_NAME") {
            config.session.cookie_name = name;
        }
        if let Some(age) = var("DJANGO_SESSION_COOKIE_AGE") {
            let seconds = age.parse::<u64>().map_err(|err| DjangoError::Invalid {
                name: "DJANGO_SESSION_COOKIE_AGE",
                reason: format!("{age:?} is not a number of seconds ({err})"),
            })?;
            config.session.age = Duration::from_secs(seconds);
        }
        if let Some(secure) = var("DJANGO_SESSION_COOKIE_SECURE") {
            config.session.secure = match secure.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(DjangoError::Invalid {
                        name: "DJANGO_SESSION_COOKIE_SECURE",
                        reason: format!("{secure:?} is not true or false"),
                    });
                }
            };
        }
        config.backends = var("DJANGO_AUTHENTICATION_BACKENDS").map(list).unwrap_or_default();
        Ok(config)
    }

    /// `SECRET_KEY_FALLBACKS`: retired keys that still verify.
    #[must_use]
    pub fn secret_key_fallbacks<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.fallbacks = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The database, as a `DATABASE_URL` (`postgres://user:password@host/name`,
    /// `sqlite:////absolute/path.sqlite3`).
    #[must_use]
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// The cache the `cache` and `cached_db` session engines use: `CACHES["default"]`'s
    /// `LOCATION` (a Redis URL) and `KEY_PREFIX` (Django's default is empty).
    #[must_use]
    pub fn cache(mut self, url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        self.cache_url = Some(url.into());
        self.cache_key_prefix = key_prefix.into();
        self
    }

    fn django_cache(&self) -> Result<DjangoCache, DjangoError> {
        let url = self.cache_url.as_deref().ok_or(DjangoError::Missing("DJANGO_CACHE_URL", "CACHES"))?;
        DjangoCache::new(url, &self.cache_key_prefix)
            .map_err(|err| DjangoError::Invalid { name: "DJANGO_CACHE_URL", reason: err.to_string() })
    }

    /// `SESSION_ENGINE`, by Django's dotted name (see [`SUPPORTED_ENGINES`]).
    #[must_use]
    pub fn session_engine(mut self, engine: impl Into<String>) -> Self {
        self.session_engine = engine.into();
        self
    }

    /// `SESSION_COOKIE_NAME`, `SESSION_COOKIE_AGE`, `SESSION_COOKIE_SECURE`... as one
    /// [`SessionConfig`] (Django's defaults are this crate's).
    #[must_use]
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// A custom user model's table (`AUTH_USER_MODEL`).
    #[must_use]
    pub fn user_table(mut self, table: UserTable) -> Self {
        self.user_table = table;
        self
    }

    /// `AUTHENTICATION_BACKENDS` whose sessions are trusted (default: Django's `ModelBackend`).
    #[must_use]
    pub fn authentication_backends<S: Into<String>>(mut self, backends: impl IntoIterator<Item = S>) -> Self {
        self.backends = backends.into_iter().map(Into::into).collect();
        self
    }

    /// `SECRET_KEY` and its fallbacks.
    pub fn keys(&self) -> DjangoKeys {
        DjangoKeys::new(&self.secret_key, &self.fallbacks)
    }

    /// The site's database (connections are made on first use).
    ///
    /// # Errors
    /// No or an unusable `DATABASE_URL`.
    pub fn database(&self) -> Result<Database, DjangoError> {
        let url = self.database_url.as_deref().ok_or(DjangoError::Missing("DJANGO_DATABASE_URL", "DATABASES"))?;
        Database::connect_lazy(url).map_err(DjangoError::Database)
    }

    /// The site's sessions.
    ///
    /// # Errors
    /// An unsupported engine, or as [`database`](Self::database).
    pub fn session_store(&self) -> Result<DjangoSessionStore, DjangoError> {
        let engine = match self.session_engine.as_str() {
            "django.contrib.sessions.backends.db" => SessionEngine::Db(self.database()?),
            "django.contrib.sessions.backends.signed_cookies" => SessionEngine::SignedCookies,
            "django.contrib.sessions.backends.cache" => SessionEngine::Cache(self.django_cache()?),
            "django.contrib.sessions.backends.cached_db" => {
                SessionEngine::CachedDb(self.database()?, self.django_cache()?)
            }
            other => return Err(DjangoError::UnsupportedEngine(other.to_owned())),
        };
        Ok(DjangoSessionStore::new(engine, self.keys(), self.session.age))
    }

    /// The authentication of an app next to this Django site, for
    /// [`ProtocolTypeRouter::auth`](crate::ProtocolTypeRouter::auth): Django's users, sessions
    /// and session cookie.
    ///
    /// # Errors
    /// As [`session_store`](Self::session_store) and [`database`](Self::database).
    pub fn auth_config(&self) -> Result<AuthConfig, DjangoError> {
        let store = self.session_store()?;
        let users =
            DjangoUserBackend::new(self.database()?, self.user_table.clone(), self.keys(), self.backends.clone());
        // Django's cookies are its own (a session key, or data it signs): this crate's cookie
        // keys are never used for them; one is set so that none is made up with a warning.
        let derived =
            Sha256::new().chain_update(b"channels.django.unused-cookie-key").chain_update(&self.secret_key).finalize();
        let keys = SecretKeys::new([derived.as_slice()])
            .map_err(|err| DjangoError::Invalid { name: "DJANGO_SECRET_KEY", reason: err.to_string() })?;
        Ok(AuthConfig::new(users).store(store).keys(keys).session(self.session.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_engine_names_the_supported_ones() {
        let config = DjangoConfig::new("k").session_engine("django.contrib.sessions.backends.file");
        let err = config.session_store().unwrap_err().to_string();
        assert!(
            err.contains("backends.file") && err.contains("backends.db") && err.contains("signed_cookies"),
            "{err}"
        );
        let err = DjangoConfig::new("k").database().unwrap_err().to_string();
        assert!(err.contains("DJANGO_DATABASE_URL"), "{err}");
    }
}
