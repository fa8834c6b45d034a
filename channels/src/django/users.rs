//! [`DjangoUser`] and [`DjangoUserBackend`]: a Django site's users (`auth_user`, or a custom
//! user model's table), loaded and checked as Django's `ModelBackend` does.

use super::db::{Database, UserBy, UserRow, UserTable};
use super::hashers::check_password;
use super::signing::{DjangoKeys, salted_hmac};
use crate::BoxError;
use crate::error::BackendError;
use crate::middleware::{AuthUser, UserBackend};

/// Django's `AbstractBaseUser.get_session_auth_hash` salt.
const AUTH_HASH_SALT: &str = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash";

/// A hash of Django's default hasher (PBKDF2-SHA256, 1,000,000 iterations), checked when no
/// user has the name, so that an unknown name takes as long as a wrong password (Django's
/// `ModelBackend` does the same).
const DUMMY_HASH: &str = "pbkdf2_sha256$1000000$channelsdummysalt$4x6MnNqEOq1o7EnD7Dpq9V0mBBq4XjrHBV5c1xG8nQ0=";

/// A user of the Django site, as `scope.user` holds it (`scope.user.downcast_ref::<DjangoUser>()`).
#[derive(Clone)]
pub struct DjangoUser {
    /// The primary key.
    pub id: i64,
    /// The `USERNAME_FIELD`'s value.
    pub username: String,
    /// `is_active`.
    pub is_active: bool,
    /// `is_staff`.
    pub is_staff: bool,
    /// `is_superuser`.
    pub is_superuser: bool,
    /// The session auth hash under `SECRET_KEY`, then under each fallback key.
    auth_hashes: Vec<String>,
    db: Database,
}

impl std::fmt::Debug for DjangoUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .field("is_staff", &self.is_staff)
            .field("is_superuser", &self.is_superuser)
            .finish_non_exhaustive()
    }
}

impl DjangoUser {
    fn new(row: UserRow, keys: &DjangoKeys, db: &Database) -> Self {
        let hash = |secret: &[u8]| {
            salted_hmac(AUTH_HASH_SALT, row.password.as_bytes(), secret)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        };
        let auth_hashes =
            std::iter::once(keys.current()).chain(keys.fallbacks().iter().map(Vec::as_slice)).map(hash).collect();
        DjangoUser {
            id: row.id,
            username: row.username,
            is_active: row.is_active,
            is_staff: row.is_staff,
            is_superuser: row.is_superuser,
            auth_hashes,
            db: db.clone(),
        }
    }

    /// Django's `user.has_perm("app_label.codename")`: an active superuser has every
    /// permission; others have those given to them or to one of their groups. (Object
    /// permissions and custom backends' permissions are not consulted.)
    ///
    /// # Errors
    /// The database failed.
    pub async fn has_perm(&self, perm: &str) -> Result<bool, BackendError> {
        if !self.is_active {
            return Ok(false);
        }
        if self.is_superuser {
            return Ok(true);
        }
        let Some((app_label, codename)) = perm.split_once('.') else { return Ok(false) };
        self.db.has_perm(self.id, app_label, codename).await
    }
}

impl AuthUser for DjangoUser {
    fn id(&self) -> String {
        self.id.to_string()
    }

    fn session_auth_hash(&self) -> String {
        self.auth_hashes.first().cloned().unwrap_or_default()
    }

    fn session_auth_fallback_hashes(&self) -> Vec<String> {
        self.auth_hashes.iter().skip(1).cloned().collect()
    }
}

/// A Django site's users, as its `ModelBackend`: by primary key for sessions, by username and
/// password for a login view ([`authenticate`](crate::middleware::authenticate)); inactive users
/// are nobody. Sessions are only trusted when Django's `_auth_user_backend` in them is one of
/// `AUTHENTICATION_BACKENDS` (by default Django's `ModelBackend`), and a login here records the
/// first of them, so Django accepts it.
#[derive(Debug, Clone)]
pub struct DjangoUserBackend {
    db: Database,
    table: UserTable,
    keys: DjangoKeys,
    backends: Vec<String>,
}

impl DjangoUserBackend {
    /// Users in `db`'s `table`, session auth hashes under `keys`, sessions of `backends`
    /// (Django's `AUTHENTICATION_BACKENDS`; empty means Django's default `ModelBackend`).
    pub fn new(db: Database, table: UserTable, keys: DjangoKeys, backends: Vec<String>) -> Self {
        let backends =
            if backends.is_empty() { vec!["django.contrib.auth.backends.ModelBackend".to_owned()] } else { backends };
        DjangoUserBackend { db, table, keys, backends }
    }

    async fn load(&self, by: UserBy<'_>) -> Result<Option<UserRow>, BoxError> {
        Ok(self.db.user(&self.table, by).await?)
    }
}

impl UserBackend for DjangoUserBackend {
    type User = DjangoUser;

    async fn get_user(&self, id: &str) -> Result<Option<DjangoUser>, BoxError> {
        let Ok(id) = id.parse::<i64>() else { return Ok(None) };
        let row = self.load(UserBy::Id(id)).await?;
        Ok(row.filter(|row| row.is_active).map(|row| DjangoUser::new(row, &self.keys, &self.db)))
    }

    async fn authenticate(&self, username: &str, password: &str) -> Result<Option<DjangoUser>, BoxError> {
        let row = self.load(UserBy::Username(username)).await?;
        let encoded = row.as_ref().map_or_else(|| DUMMY_HASH.to_owned(), |row| row.password.clone());
        let password = password.to_owned();
        // Hashing takes tens of milliseconds or more: off the runtime's threads.
        let matches = tokio::task::spawn_blocking(move || check_password(&password, &encoded)).await?;
        let matches = match matches {
            Ok(matches) => matches,
            Err(err) => {
                tracing::warn!(%err, "a Django user's password hash cannot be checked here");
                false
            }
        };
        Ok(row.filter(|row| matches && row.is_active).map(|row| DjangoUser::new(row, &self.keys, &self.db)))
    }

    fn session_backend(&self) -> Option<&str> {
        self.backends.first().map(String::as_str)
    }

    fn accepts_session_backend(&self, backend: Option<&str>) -> bool {
        backend.is_some_and(|backend| self.backends.iter().any(|known| known == backend))
    }
}
