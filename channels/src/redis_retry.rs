//! One retry for a Redis command whose connection turned out to be broken, shared by the Redis
//! channel layer and session store.
//!
//! After a Redis restart the connection manager still holds the dead connection: the first
//! command fails on it, and the manager reconnects. Without a retry, that first command is a
//! user's failed login or refused handshake. The retry happens only for errors of a connection
//! that was dropped or refused, where the command almost surely never ran; if Redis died while
//! running it, a retried send may be delivered twice (at-most-once turns into at-least-once for
//! that one message).

use std::future::Future;

/// True for errors of a dropped or refused connection, where a retry may succeed.
pub(crate) fn is_broken_connection(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal()
}

/// Runs `command`, and once more when it failed on a broken connection.
pub(crate) async fn retry_once<T, F, Fut>(mut command: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match command().await {
        Err(err) if is_broken_connection(&err) => {
            tracing::debug!(%err, "Redis connection broken; retrying once on a new one");
            command().await
        }
        result => result,
    }
}
