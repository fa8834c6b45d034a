//! A Django site's database, PostgreSQL or SQLite, through sqlx (a pool of this crate's for
//! PostgreSQL, sqlx's for SQLite): what the session
//! store and the user backend query.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::pg::PgConnections;
use crate::error::BackendError;

/// A Django site's database. Cheap to clone (a pool).
#[derive(Clone, Debug)]
pub enum Database {
    /// PostgreSQL (Django's `django.db.backends.postgresql`).
    Postgres(PgConnections),
    /// SQLite (Django's default, `django.db.backends.sqlite3`).
    Sqlite(SqlitePool),
}

/// How long a query may wait for a pooled connection before it fails (a database that is down
/// refuses handshakes quickly instead of holding them).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Database {
    /// Opens a pool from a `DATABASE_URL` as dj-database-url writes them:
    /// `postgres://user:password@host:5432/name` (or `postgresql://`), `sqlite:////absolute/path.sqlite3`
    /// or `sqlite:///relative/path.sqlite3`. Connections are made lazily, so a database that is
    /// down at startup is not an error here; queries fail until it is back.
    ///
    /// # Errors
    /// A URL of another scheme, or one sqlx cannot parse.
    pub fn connect_lazy(url: &str) -> Result<Database, BackendError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgConnections::new(url, 16, ACQUIRE_TIMEOUT).map_err(BackendError::new)?;
            return Ok(Database::Postgres(pool));
        }
        if let Some(path) = url.strip_prefix("sqlite:///") {
            // dj-database-url: `sqlite:////abs` is `/abs`, `sqlite:///rel` is `rel`.
            let options = SqliteConnectOptions::new()
                .filename(path)
                // Django owns the file: it is never created here, and its journal mode is kept.
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(5));
            let pool =
                SqlitePoolOptions::new().max_connections(4).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
            return Ok(Database::Sqlite(pool));
        }
        Err(BackendError::msg(format!(
            "unsupported database URL {:?}: use postgres://user:password@host:port/name or sqlite:////absolute/path",
            redact(url)
        )))
    }

    /// The session row's data, if the session exists and has not expired.
    pub(crate) async fn load_session(&self, key: &str) -> Result<Option<String>, BackendError> {
        let row = match self {
            Database::Postgres(pool) => pool
                .fetch_optional(|| {
                    sqlx::query(
                        "SELECT session_data FROM django_session WHERE session_key = $1 AND expire_date > now()",
                    )
                    .bind(key)
                })
                .await
                .map_err(BackendError::new)?
                .map(|row| row.try_get::<String, _>(0)),
            Database::Sqlite(pool) => {
                sqlx::query("SELECT session_data FROM django_session WHERE session_key = ?1 AND expire_date > ?2")
                    .bind(key)
                    .bind(sqlite_datetime(SystemTime::now()))
                    .fetch_optional(pool)
                    .await
                    .map_err(BackendError::new)?
                    .map(|row| row.try_get::<String, _>(0))
            }
        };
        row.transpose().map_err(BackendError::new)
    }

    /// Inserts a new session row; `false` when the key is taken.
    pub(crate) async fn insert_session(&self, key: &str, data: &str, age: Duration) -> Result<bool, BackendError> {
        let inserted = match self {
            Database::Postgres(pool) => pool
                .fetch_optional(|| {
                    sqlx::query(
                        "INSERT INTO django_session (session_key, session_data, expire_date) \
                         VALUES ($1, $2, now() + make_interval(secs => $3)) \
                         ON CONFLICT (session_key) DO NOTHING RETURNING 1",
                    )
                    .bind(key)
                    .bind(data)
                    .bind(age.as_secs_f64())
                })
                .await
                .map(|row| u64::from(row.is_some())),
            Database::Sqlite(pool) => sqlx::query(
                "INSERT OR IGNORE INTO django_session (session_key, session_data, expire_date) VALUES (?1, ?2, ?3)",
            )
            .bind(key)
            .bind(data)
            .bind(sqlite_datetime(SystemTime::now() + age))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()),
        };
        Ok(inserted.map_err(BackendError::new)? == 1)
    }

    /// Updates an existing session row; `false` when it no longer exists.
    pub(crate) async fn update_session(&self, key: &str, data: &str, age: Duration) -> Result<bool, BackendError> {
        let updated = match self {
            Database::Postgres(pool) => pool
                .fetch_optional(|| {
                    sqlx::query(
                        "UPDATE django_session SET session_data = $2, expire_date = now() + make_interval(secs => $3) \
                         WHERE session_key = $1 RETURNING 1",
                    )
                    .bind(key)
                    .bind(data)
                    .bind(age.as_secs_f64())
                })
                .await
                .map(|row| u64::from(row.is_some())),
            Database::Sqlite(pool) => {
                sqlx::query("UPDATE django_session SET session_data = ?2, expire_date = ?3 WHERE session_key = ?1")
                    .bind(key)
                    .bind(data)
                    .bind(sqlite_datetime(SystemTime::now() + age))
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            }
        };
        Ok(updated.map_err(BackendError::new)? == 1)
    }

    /// Deletes a session row.
    pub(crate) async fn delete_session(&self, key: &str) -> Result<(), BackendError> {
        let deleted = match self {
            Database::Postgres(pool) => pool
                .fetch_optional(|| sqlx::query("DELETE FROM django_session WHERE session_key = $1").bind(key))
                .await
                .map(drop),
            Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM django_session WHERE session_key = ?1").bind(key).execute(pool).await.map(drop)
            }
        };
        deleted.map_err(BackendError::new)
    }

    /// One user row, by primary key or by username.
    pub(crate) async fn user(&self, table: &UserTable, by: UserBy<'_>) -> Result<Option<UserRow>, BackendError> {
        let sql = |postgres: &Arc<str>| AssertSqlSafe(postgres.clone());
        let row = match (self, by) {
            (Database::Postgres(pool), UserBy::Id(id)) => pool
                .fetch_optional(|| sqlx::query(sql(&table.by_id[0])).bind(id))
                .await
                .map(|row| row.map(UserRow::from_pg)),
            (Database::Postgres(pool), UserBy::Username(name)) => pool
                .fetch_optional(|| sqlx::query(sql(&table.by_name[0])).bind(name))
                .await
                .map(|row| row.map(UserRow::from_pg)),
            (Database::Sqlite(pool), UserBy::Id(id)) => sqlx::query(sql(&table.by_id[1]))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(UserRow::from_sqlite)),
            (Database::Sqlite(pool), UserBy::Username(name)) => sqlx::query(sql(&table.by_name[1]))
                .bind(name)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(UserRow::from_sqlite)),
        };
        row.map_err(BackendError::new)?.transpose().map_err(BackendError::new)
    }

    /// True when user `id` has permission `codename` of app `app_label`, directly or through one
    /// of its groups.
    pub(crate) async fn has_perm(&self, id: i64, app_label: &str, codename: &str) -> Result<bool, BackendError> {
        let found = match self {
            Database::Postgres(pool) => pool
                .fetch_optional(|| sqlx::query(PERMISSION_QUERY[0]).bind(id).bind(app_label).bind(codename))
                .await
                .map(|row| row.is_some()),
            Database::Sqlite(pool) => sqlx::query(PERMISSION_QUERY[1])
                .bind(id)
                .bind(app_label)
                .bind(codename)
                .fetch_optional(pool)
                .await
                .map(|row| row.is_some()),
        };
        found.map_err(BackendError::new)
    }
}

/// Whether user `$1` has permission `$3` of app `$2`, directly or through a group (PostgreSQL,
/// then SQLite placeholders).
const PERMISSION_QUERY: [&str; 2] = [
    "SELECT 1 FROM auth_permission p JOIN django_content_type ct ON ct.id = p.content_type_id \
     WHERE ct.app_label = $2 AND p.codename = $3 AND ( \
       EXISTS (SELECT 1 FROM auth_user_user_permissions up WHERE up.user_id = $1 AND up.permission_id = p.id) \
       OR EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group_permissions gp ON gp.group_id = ug.group_id \
                  WHERE ug.user_id = $1 AND gp.permission_id = p.id)) LIMIT 1",
    "SELECT 1 FROM auth_permission p JOIN django_content_type ct ON ct.id = p.content_type_id \
     WHERE ct.app_label = ?2 AND p.codename = ?3 AND ( \
       EXISTS (SELECT 1 FROM auth_user_user_permissions up WHERE up.user_id = ?1 AND up.permission_id = p.id) \
       OR EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group_permissions gp ON gp.group_id = ug.group_id \
                  WHERE ug.user_id = ?1 AND gp.permission_id = p.id)) LIMIT 1",
];

/// The table a user model lives in (Django's `auth_user`, or a custom user model's), with its
/// queries (PostgreSQL, SQLite), made once from checked identifiers.
#[derive(Debug, Clone)]
pub struct UserTable {
    by_id: [Arc<str>; 2],
    by_name: [Arc<str>; 2],
}

impl Default for UserTable {
    fn default() -> Self {
        UserTable::new("auth_user", "username").unwrap_or_else(|_| unreachable!("plain identifiers"))
    }
}

impl UserTable {
    /// A custom user model's table (e.g. `accounts_user`) and its `USERNAME_FIELD` column (e.g.
    /// `email`). The table needs Django's `AbstractUser` columns: `id`, `password`, `is_active`,
    /// `is_staff`, `is_superuser`.
    ///
    /// # Errors
    /// A name that is not a plain SQL identifier (letters, digits, `_`).
    pub fn new(table: &str, username_column: &str) -> Result<UserTable, BackendError> {
        for name in [table, username_column] {
            let plain = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(BackendError::msg(format!("{name:?} is not a plain SQL identifier")));
            }
        }
        // Identifiers from the configuration, checked above; values are always bound.
        let select = format!(
            "SELECT CAST(id AS BIGINT), {username_column}, password, CASE WHEN is_active THEN 1 ELSE 0 END, \
             CASE WHEN is_staff THEN 1 ELSE 0 END, CASE WHEN is_superuser THEN 1 ELSE 0 END FROM {table} WHERE "
        );
        let query = |condition: &str| Arc::<str>::from(format!("{select}{condition}"));
        Ok(UserTable {
            by_id: [query("id = $1"), query("id = ?1")],
            by_name: [query(&format!("{username_column} = $1")), query(&format!("{username_column} = ?1"))],
        })
    }
}

/// Which user to load.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserBy<'a> {
    Id(i64),
    Username(&'a str),
}

/// The columns of a user row this crate reads.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) is_active: bool,
    pub(crate) is_staff: bool,
    pub(crate) is_superuser: bool,
}

impl UserRow {
    fn from_pg(row: sqlx::postgres::PgRow) -> Result<UserRow, sqlx::Error> {
        Ok(UserRow {
            id: row.try_get(0)?,
            username: row.try_get(1)?,
            password: row.try_get(2)?,
            is_active: row.try_get::<i32, _>(3)? == 1,
            is_staff: row.try_get::<i32, _>(4)? == 1,
            is_superuser: row.try_get::<i32, _>(5)? == 1,
        })
    }

    fn from_sqlite(row: sqlx::sqlite::SqliteRow) -> Result<UserRow, sqlx::Error> {
        Ok(UserRow {
            id: row.try_get(0)?,
            username: row.try_get(1)?,
            password: row.try_get(2)?,
            is_active: row.try_get::<i64, _>(3)? == 1,
            is_staff: row.try_get::<i64, _>(4)? == 1,
            is_superuser: row.try_get::<i64, _>(5)? == 1,
        })
    }
}

/// A time as Django stores `DateTimeField`s in SQLite with `USE_TZ = True`: naive UTC text,
/// `2026-11-30 09:30:00.123456`.
fn sqlite_datetime(time: SystemTime) -> String {
    let utc = cookie::time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    )
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
            let credentials = &rest[..at - scheme.len() - 3];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_datetimes_sort_as_django_writes_them() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_495_000_123_456);
        assert_eq!(sqlite_datetime(epoch), "2025-11-30 09:30:00.123456");
    }

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        let err = Database::connect_lazy("mysql://root:hunter2@db/site").unwrap_err().to_string();
        assert!(err.contains("mysql://root:***@db/site") && !err.contains("hunter2"), "{err}");
        assert!(UserTable::new("auth_user; DROP TABLE x", "username").is_err());
        assert!(UserTable::new("accounts_user", "email").is_ok());
    }
}
