//! The chat's users, in SQLite, with argon2 password hashes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use channels::application::BoxError;
use channels::middleware::{AuthUser, SecretKeys, UserBackend};
use rusqlite::{Connection, OptionalExtension, params};

/// The database file.
pub struct Db {
    conn: Mutex<Connection>,
}

/// A user as the chat knows it.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    /// Changes with the password (a keyed digest of its hash), so a password change ends every
    /// other session.
    auth_hash: String,
}

impl AuthUser for User {
    fn id(&self) -> String {
        self.id.to_string()
    }

    fn session_auth_hash(&self) -> String {
        self.auth_hash.clone()
    }
}

fn hash_password(password: &str) -> Result<String, BoxError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|err| err.to_string())?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|err| err.to_string())?.to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

impl Db {
    /// Opens (creating on first run) the database; a new one gets the demo users `alice` and
    /// `bob` with `demo_password`, and a random secret key for the session cookies.
    pub fn open(path: &str, demo_password: &str) -> Result<Db, BoxError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS users (
                 id INTEGER PRIMARY KEY,
                 username TEXT NOT NULL UNIQUE,
                 password_hash TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        let db = Db { conn: Mutex::new(conn) };
        let users: i64 = db.conn().query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
        if users == 0 {
            for name in ["alice", "bob"] {
                db.create_user(name, demo_password)?;
            }
            println!("created demo users alice and bob (password: {demo_password})");
        }
        Ok(db)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a user (or sets the password of an existing one).
    pub fn create_user(&self, username: &str, password: &str) -> Result<(), BoxError> {
        let hash = hash_password(password)?;
        self.conn().execute(
            "INSERT INTO users (username, password_hash) VALUES (?1, ?2)
             ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash",
            params![username, hash],
        )?;
        Ok(())
    }

    /// The key that signs session cookies, kept in the database so sessions survive restarts.
    pub fn secret_keys(&self) -> Result<SecretKeys, BoxError> {
        let conn = self.conn();
        let stored: Option<Vec<u8>> =
            conn.query_row("SELECT value FROM settings WHERE name = 'secret_key'", [], |row| row.get(0)).optional()?;
        let key = match stored {
            Some(key) => key,
            None => {
                let mut key = vec![0u8; 48];
                getrandom::fill(&mut key)?;
                conn.execute("INSERT INTO settings (name, value) VALUES ('secret_key', ?1)", params![key])?;
                key
            }
        };
        Ok(SecretKeys::new([key])?)
    }

    fn user_where(&self, column: &str, value: &dyn rusqlite::ToSql) -> Result<Option<(User, String)>, BoxError> {
        let sql = format!("SELECT id, username, password_hash FROM users WHERE {column} = ?1");
        let row = self
            .conn()
            .query_row(&sql, [value], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
            })
            .optional()?;
        Ok(row.map(|(id, username, hash)| (User { id, username, auth_hash: String::new() }, hash)))
    }
}

/// The chat's [`UserBackend`]: users from the database, shared by every connection.
#[derive(Clone)]
pub struct Users {
    db: Arc<Db>,
    keys: SecretKeys,
    /// Verified against for unknown usernames, so timing does not reveal which names exist.
    dummy_hash: Arc<str>,
}

impl Users {
    pub fn new(db: Db, keys: SecretKeys) -> Result<Self, BoxError> {
        let mut password = [0u8; 16];
        getrandom::fill(&mut password)?;
        let dummy_hash = hash_password(&format!("{password:?}"))?.into();
        Ok(Users { db: Arc::new(db), keys, dummy_hash })
    }

    fn finish(&self, (mut user, password_hash): (User, String)) -> User {
        user.auth_hash = self.keys.sign(&password_hash);
        user
    }

    /// The user with these credentials (argon2 runs off the async threads).
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Option<User>, BoxError> {
        let (this, username, password) = (self.clone(), username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || {
            let found = this.db.user_where("username", &username)?;
            let hash = found.as_ref().map_or(&*this.dummy_hash, |(_, hash)| hash.as_str());
            let valid = verify_password(&password, hash);
            Ok(found.filter(|_| valid).map(|found| this.finish(found)))
        })
        .await?
    }
}

impl UserBackend for Users {
    type User = User;

    async fn get_user(&self, id: &str) -> Result<Option<User>, BoxError> {
        let Ok(id) = id.parse::<i64>() else { return Ok(None) };
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || this.db.user_where("id", &id)).await??;
        Ok(found.map(|found| self.finish(found)))
    }
}
