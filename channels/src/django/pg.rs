//! A small pool of PostgreSQL connections, made for one short query at a time.
//!
//! sqlx's pool pings every connection it takes back (and, by default, every one it hands out):
//! with a handshake's two queries that is four round trips where two do the work, and each one
//! wakes PostgreSQL. Here a connection goes back to the pool as it is when its query finished;
//! one whose query was cut short (the handshake went away mid-query) or failed on the wire is
//! closed instead, so a connection in the pool is always between queries.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Connection, Postgres};
use tokio::sync::Semaphore;

/// PostgreSQL connections for the Django backends: at most `max` open, made on first use.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct PgConnections {
    inner: Arc<Inner>,
}

struct Inner {
    options: PgConnectOptions,
    /// Connections between queries, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection that may be open.
    permits: Semaphore,
    acquire_timeout: Duration,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A connection idle longer than this is pinged before it is used.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
/// A connection idle longer than this is closed (PostgreSQL keeps a process per connection).
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(300);

impl std::fmt::Debug for PgConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnections")
            .field("host", &self.inner.options.get_host())
            .field("database", &self.inner.options.get_database())
            .field("idle", &self.inner.idle.lock().map_or(0, |idle| idle.len()))
            .finish_non_exhaustive()
    }
}

impl PgConnections {
    /// A pool for `url` (`postgres://user:password@host:port/name`) of at most `max` connections;
    /// a query waits at most `acquire_timeout` for a connection (to be free, or to be made).
    ///
    /// # Errors
    /// A URL sqlx cannot parse.
    pub fn new(url: &str, max: usize, acquire_timeout: Duration) -> Result<PgConnections, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?;
        Ok(PgConnections {
            inner: Arc::new(Inner {
                options,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(max),
                acquire_timeout,
            }),
        })
    }

    /// Runs the query `build` makes and returns its first row, if any (a statement that changes
    /// rows can say what it changed with `RETURNING`). A query that failed on a broken
    /// connection (the database restarted, a proxy dropped it) is built and run once more on
    /// another, so pass reads and idempotent writes only.
    ///
    /// ```no_run
    /// # use channels::django::sqlx;
    /// # async fn run() -> Result<(), sqlx::Error> {
    /// use channels::django::PgConnections;
    /// use sqlx::Row;
    ///
    /// let db = PgConnections::new("postgres://app@127.0.0.1/site", 4, std::time::Duration::from_secs(3))?;
    /// let row = db.fetch_optional(|| sqlx::query("SELECT count(*) FROM auth_user")).await?;
    /// let users: i64 = row.map_or(Ok(0), |row| row.try_get(0))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The query's error; [`sqlx::Error::PoolTimedOut`] when no connection could be had within
    /// the acquire timeout.
    pub async fn fetch_optional<'q>(
        &self,
        build: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let inner = &*self.inner;
        let deadline = tokio::time::Instant::now() + inner.acquire_timeout;
        let _permit = tokio::time::timeout_at(deadline, inner.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut retried = false;
        loop {
            // A ping of a connection whose host stopped answering waits as long as a connect.
            let idle =
                tokio::time::timeout_at(deadline, self.take_idle()).await.map_err(|_| sqlx::Error::PoolTimedOut)?;
            let (mut conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => {
                    let connect = inner.options.connect();
                    (tokio::time::timeout_at(deadline, connect).await.map_err(|_| sqlx::Error::PoolTimedOut)??, false)
                }
            };
            // Dropped here mid-query, `conn` is closed with the future: it never returns to
            // the pool in the middle of a conversation.
            match build().fetch_optional(&mut conn).await {
                Err(err) if is_broken(&err) => {
                    // `conn` is closed (dropped), and the idle ones are likely as dead (the
                    // database restarted): they go too, so the retry gets a new connection. A
                    // fresh connection that fails says the database is unreachable: no retry.
                    if let Ok(mut idle) = inner.idle.lock() {
                        idle.clear();
                    }
                    if retried || !reused {
                        return Err(err);
                    }
                    retried = true;
                }
                result => {
                    self.put_idle(conn);
                    return result;
                }
            }
        }
    }

    /// The most recently used idle connection, pinged first if it sat idle a while; connections
    /// idle for too long are closed on the way.
    async fn take_idle(&self) -> Option<PgConnection> {
        loop {
            let Idle { mut conn, since } = {
                let mut idle = self.inner.idle.lock().ok()?;
                if idle.first().is_some_and(|oldest| oldest.since.elapsed() > CLOSE_AFTER_IDLE) {
                    idle.remove(0);
                }
                idle.pop()?
            };
            if since.elapsed() <= PING_AFTER_IDLE || conn.ping().await.is_ok() {
                return Some(conn);
            }
        }
    }

    fn put_idle(&self, conn: PgConnection) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.push(Idle { conn, since: Instant::now() });
        }
    }
}

/// The connection itself is gone: lost on the wire, or ended by the server (SQLSTATE class 08,
/// connection exception; 57P01-57P03, the server shutting down or restarting).
fn is_broken(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}
