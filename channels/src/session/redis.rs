//! [`RedisSessionStore`]: sessions shared by every process connected to one Redis.

use std::sync::Arc;
use std::time::Duration;

use super::{SessionData, SessionError, SessionStore, new_key};
use crate::BoxFuture;
use crate::redis_retry::{Node, Timeouts};

/// Sessions in Redis (`<prefix>:session:<key>`, JSON, TTL = session age): any number of server
/// processes share them. A new key is created with `SET NX`, so ids never collide.
///
/// The URL names one server (`redis://host:6379/0`), a master behind Redis Sentinel
/// (`redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0`), which the store follows
/// across failovers, or a Redis Cluster (`redis+cluster://node1:7000,node2:7001`).
#[derive(Clone)]
pub struct RedisSessionStore {
    node: Arc<Node>,
    prefix: String,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn store_error(err: redis::RedisError) -> SessionError {
    SessionError::Store(crate::error::BackendError::new(err))
}

/// Runs `command` (once more on a broken connection: see [`crate::redis_retry`]).
async fn query<T: redis::FromRedisValue>(node: &Node, command: &redis::Cmd) -> Result<T, SessionError> {
    node.retry(|mut commands| async move { command.query_async(&mut commands).await }).await.map_err(store_error)
}

impl RedisSessionStore {
    /// Connects to `url` (`redis://…`, `redis+sentinel://…` or `redis+cluster://…`, see the type's docs); keys start
    /// with `prefix` (e.g. `"asgi"`).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the URL is invalid or Redis (or every sentinel) does not
    /// answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SessionError> {
        let timeouts = Timeouts { connection: Duration::from_secs(2), response: Duration::from_secs(2) };
        let node = Node::connect(url, timeouts).await.map_err(store_error)?;
        Ok(RedisSessionStore { node: Arc::new(node), prefix: prefix.to_owned() })
    }

    fn key(&self, value: &str) -> String {
        format!("{}:session:{value}", self.prefix)
    }
}

impl SessionStore for RedisSessionStore {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        Box::pin(async move {
            let node = &*self.node;
            let json: Option<String> = query(node, redis::cmd("GET").arg(self.key(value))).await?;
            // Data that does not decode is no session, not an error page.
            Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
        })
    }

    fn save<'a>(
        &'a self,
        current: Option<&'a str>,
        data: &'a SessionData,
        age: Duration,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(async move {
            let json = serde_json::to_string(data)?;
            let ttl = u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1);
            let node = &*self.node;
            if let Some(value) = current {
                // `XX`: a session deleted meanwhile (a logout elsewhere) is not brought back.
                let set = redis::cmd("SET").arg(self.key(value)).arg(&json).arg("XX").arg("PX").arg(ttl).clone();
                let updated: Option<String> = query(node, &set).await?;
                return updated.map(|_| value.to_owned()).ok_or(SessionError::Deleted);
            }
            loop {
                let value = new_key();
                let set = redis::cmd("SET").arg(self.key(&value)).arg(&json).arg("NX").arg("PX").arg(ttl).clone();
                let created: Option<String> = query(node, &set).await?;
                if created.is_some() {
                    return Ok(value);
                }
            }
        })
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let node = &*self.node;
            query::<()>(node, redis::cmd("DEL").arg(self.key(value))).await
        })
    }
}
