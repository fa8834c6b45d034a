//! The chat's users, in SQLite, with argon2 password hashes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
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

thread_local! {
    /// argon2's working memory (19 MiB with the default parameters), kept by each hashing
    /// thread for the next check. Allocating it per check lets the allocator keep a fresh
    /// 19 MiB for nearly every check (RSS grew by that much per login); reused, the chat holds
    /// one per hashing thread, whatever the load.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else { return false };
    let (Ok(algorithm), Ok(params)) =
        (argon2::Algorithm::try_from(parsed.algorithm), argon2::Params::try_from(&parsed))
    else {
        return false;
    };
    let version = parsed.version.and_then(|version| argon2::Version::try_from(version).ok()).unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    let hashed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        blocks.resize(params.block_count(), argon2::Block::default());
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut blocks[..],
        )
    });
    // Constant time: the comparison must not tell how much of a guess was right.
    hashed.is_ok() && out.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
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

/// Password checks are expensive on purpose (argon2: 19 MiB and tens of milliseconds each), so
/// a flood of logins must not run them all at once: they run on a fixed set of threads, one per
/// core, fed by a short queue. At most that many hashes are in memory at a time; an attempt
/// that finds the queue full is turned away at once as [`Busy`].
#[derive(Clone)]
struct Hashers {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

/// Attempts waiting for a hashing thread, beyond those running.
const HASH_QUEUE: usize = 16;

impl Hashers {
    fn start() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(HASH_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{n}")).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!(%err, "could not start a password hashing thread");
            }
        }
        Hashers { jobs }
    }

    /// Runs `check` on a hashing thread; [`Busy`] when too many wait already.
    async fn run<T: Send + 'static>(&self, check: impl FnOnce() -> T + Send + 'static) -> Result<T, BoxError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(check());
        });
        self.jobs.try_send(job).map_err(|_| Box::new(Busy) as BoxError)?;
        Ok(result.await?)
    }
}

/// Too many password checks are waiting: try again in a moment.
#[derive(Debug)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many login attempts are being checked; try again in a moment")
    }
}

impl std::error::Error for Busy {}

/// The chat's [`UserBackend`]: users from the database, shared by every connection.
#[derive(Clone)]
pub struct Users {
    db: Arc<Db>,
    keys: SecretKeys,
    /// Verified against for unknown usernames, so timing does not reveal which names exist.
    dummy_hash: Arc<str>,
    hashers: Hashers,
}

impl Users {
    pub fn new(db: Db, keys: SecretKeys) -> Result<Self, BoxError> {
        let mut password = [0u8; 16];
        getrandom::fill(&mut password)?;
        let dummy_hash = hash_password(&format!("{password:?}"))?.into();
        Ok(Users { db: Arc::new(db), keys, dummy_hash, hashers: Hashers::start() })
    }

    fn finish(&self, (mut user, password_hash): (User, String)) -> User {
        user.auth_hash = self.keys.sign(&password_hash);
        user
    }

    /// The user with these credentials (argon2 runs on the hashing threads; [`Busy`] when too
    /// many attempts wait for them).
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Option<User>, BoxError> {
        let (this, username, password) = (self.clone(), username.to_owned(), password.to_owned());
        self.hashers
            .run(move || {
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

/// Login attempts per client address: at most `per_minute` in any minute, so that nobody can
/// try passwords (or keep the hashing threads busy) faster than that. Remembers at most
/// [`LIMITER_ADDRESSES`] addresses (the oldest are forgotten first).
pub struct LoginLimiter {
    per_minute: u32,
    attempts: Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

/// Client addresses the limiter remembers.
const LIMITER_ADDRESSES: usize = 10_000;

impl LoginLimiter {
    pub fn new(per_minute: u32) -> Self {
        LoginLimiter { per_minute, attempts: Mutex::new(std::collections::HashMap::new()) }
    }

    /// Counts an attempt from `client`; false when it is one too many.
    pub fn allow(&self, client: Option<std::net::IpAddr>) -> bool {
        let Some(client) = client else { return true };
        let now = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if attempts.len() >= LIMITER_ADDRESSES && !attempts.contains_key(&client) {
            attempts.retain(|_, (since, _)| now.duration_since(*since) < minute);
            if attempts.len() >= LIMITER_ADDRESSES
                && let Some(oldest) = attempts.iter().min_by_key(|(_, (since, _))| *since).map(|(ip, _)| *ip)
            {
                attempts.remove(&oldest);
            }
        }
        let (since, count) = attempts.entry(client).or_insert((now, 0));
        if now.duration_since(*since) >= minute {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        *count <= self.per_minute
    }
}
