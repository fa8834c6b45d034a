//! [`RedisSessionStore`]: sessions shared by every process connected to one Redis.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{SessionData, SessionError, SessionStore, new_key};
use crate::BoxFuture;
use crate::redis_retry::retry_once;

/// Sessions in Redis (`<prefix>:session:<key>`, JSON, TTL = session age): any number of server
/// processes share them. A new key is created with `SET NX`, so ids never collide.
#[derive(Clone)]
pub struct RedisSessionStore {
    commands: ConnectionManager,
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
async fn query<T: redis::FromRedisValue>(
    commands: &ConnectionManager,
    command: &redis::Cmd,
) -> Result<T, SessionError> {
    retry_once(|| {
        let mut commands = commands.clone();
        async move { command.query_async(&mut commands).await }
    })
    .await
    .map_err(store_error)
}

impl RedisSessionStore {
    /// Connects to `url`; keys start with `prefix` (e.g. `"asgi"`).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SessionError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let commands = ConnectionManager::new_with_config(client, config).await.map_err(store_error)?;
        Ok(RedisSessionStore { commands, prefix: prefix.to_owned() })
    }

    fn key(&self, value: &str) -> String {
        format!("{}:session:{value}", self.prefix)
    }
}

impl SessionStore for RedisSessionStore {
    fn load<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        Box::pin(async move {
            let commands = &self.commands;
            let json: Option<String> = query(commands, redis::cmd("GET").arg(self.key(value))).await?;
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
            let commands = &self.commands;
            if let Some(value) = current {
                // `XX`: a session deleted meanwhile (a logout elsewhere) is not brought back.
                let set = redis::cmd("SET").arg(self.key(value)).arg(&json).arg("XX").arg("PX").arg(ttl).clone();
                let updated: Option<String> = query(commands, &set).await?;
                return updated.map(|_| value.to_owned()).ok_or(SessionError::Deleted);
            }
            loop {
                let value = new_key();
                let set = redis::cmd("SET").arg(self.key(&value)).arg(&json).arg("NX").arg("PX").arg(ttl).clone();
                let created: Option<String> = query(commands, &set).await?;
                if created.is_some() {
                    return Ok(value);
                }
            }
        })
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let commands = &self.commands;
            query::<()>(commands, redis::cmd("DEL").arg(self.key(value))).await
        })
    }
}
