//! [`RedisSessionStore`]: sessions shared by every process connected to one Redis.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::session::{SessionData, SessionError, SessionStore, new_key};
use crate::application::BoxFuture;

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
    SessionError::Store(err.to_string())
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
            let mut commands = self.commands.clone();
            let json: Option<String> =
                redis::cmd("GET").arg(self.key(value)).query_async(&mut commands).await.map_err(store_error)?;
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
            let mut commands = self.commands.clone();
            if let Some(value) = current {
                redis::cmd("SET")
                    .arg(self.key(value))
                    .arg(&json)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut commands)
                    .await
                    .map_err(store_error)?;
                return Ok(value.to_owned());
            }
            loop {
                let value = new_key();
                let created: Option<String> = redis::cmd("SET")
                    .arg(self.key(&value))
                    .arg(&json)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut commands)
                    .await
                    .map_err(store_error)?;
                if created.is_some() {
                    return Ok(value);
                }
            }
        })
    }

    fn delete<'a>(&'a self, value: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let mut commands = self.commands.clone();
            redis::cmd("DEL").arg(self.key(value)).query_async::<()>(&mut commands).await.map_err(store_error)
        })
    }
}
