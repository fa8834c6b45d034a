//! The errors every layer of the system shares: [`AppError`] (why an application ended),
//! [`ConsumerError`] (what a consumer method returns) and [`SendError`] (sending to a client
//! failed). They depend on nothing else in the crate; backends keep their own error types
//! (`LayerError`, `SessionError`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;

/// Why an application ended with an error. The server maps each to an HTTP status or a
/// WebSocket close code; the test communicators return it to the test.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No URL route matched the path (HTTP 404; a WebSocket handshake is refused with 404).
    #[error("no route found for path {path:?}")]
    NoRoute {
        /// The path that was matched (after `root_path` and leading slashes were stripped).
        path: String,
    },
    /// The `ProtocolTypeRouter` has no application for this protocol (HTTP 404).
    #[error("no application configured for protocol {protocol:?}")]
    NoProtocol {
        /// The protocol name.
        protocol: String,
    },
    /// The consumer could not be built for this connection, e.g. a URL parameter did not
    /// parse (WebSocket: handshake refused with 403; HTTP: 404).
    #[error("connection refused: {0}")]
    Refused(String),
    /// The consumer needs a logged-in user and the connection has none: a
    /// `#[auth(stack, required)]` consumer reached without the auth stack, or by an anonymous
    /// user (WebSocket: handshake refused with 403; HTTP: 403). The message says which.
    #[error("login required: {0}")]
    LoginRequired(String),
    /// The consumer does not answer this HTTP method (HTTP 405, with an `Allow` header naming
    /// the methods it does answer); see [`MethodNotAllowed`].
    #[error("{0}")]
    MethodNotAllowed(MethodNotAllowed),
    /// A consumer method returned an error (HTTP 500 / close 1011).
    #[error("consumer failed: {0}")]
    Consumer(ConsumerError),
    /// The application panicked (HTTP 500 / close 1011); the server and other connections go on.
    #[error("application panicked: {0}")]
    Panicked(String),
    /// The application was wired wrongly, e.g. middleware in the wrong order. The message names
    /// the fix.
    #[error("application misconfigured: {0}")]
    Misconfigured(String),
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

/// Sending to the client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed (the client left, or the connection was closed before).
    #[error("the connection is closed")]
    Closed,
    /// The client read nothing for the write timeout while the outgoing queue was full, so the
    /// connection was closed (see the slow-client policy in [`ServerConfig`](crate::ServerConfig)).
    #[error("the client did not read for {0:?} with a full send queue; the connection was closed")]
    SlowClient(Duration),
    /// The message is not valid in the connection's current state (e.g. a WebSocket send before
    /// accept, or a second HTTP response start).
    #[error("{0}")]
    InvalidState(&'static str),
}

/// An error from a consumer method. Any `std::error::Error + Send + Sync` converts into it with
/// `?`; [`ConsumerError::msg`] makes one from text.
pub struct ConsumerError(BoxError);

#[derive(Debug)]
struct MessageError(String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MessageError {}

impl ConsumerError {
    /// An error with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        ConsumerError(Box::new(MessageError(message.to_string())))
    }

    /// True when the error only says that the connection is already closed.
    pub fn is_closed(&self) -> bool {
        self.0.downcast_ref::<SendError>() == Some(&SendError::Closed)
    }

    /// An error from a boxed one (what `?` cannot convert by itself).
    pub fn from_box(error: BoxError) -> Self {
        ConsumerError(error)
    }

    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }

    /// The underlying error, if it is of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ConsumerError {
    fn from(err: E) -> Self {
        ConsumerError(Box::new(err))
    }
}

impl fmt::Display for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a `#[auth(stack, required)]` consumer's `from_scope` fails with for a connection without
/// a logged-in user; the consumer app turns it into [`AppError::LoginRequired`] (403).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoginRequired(pub String);

/// An HTTP request whose method the consumer does not answer: what
/// [`require_method`](crate::consumer::require_method) (and `#[consumer(http, methods = [...])]`)
/// fails with in `from_scope`; the consumer app turns it into [`AppError::MethodNotAllowed`]
/// (HTTP 405 with `Allow`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("method {method} not allowed here (allowed: {})", allowed.join(", "))]
pub struct MethodNotAllowed {
    /// The request's method.
    pub method: String,
    /// The methods the consumer answers, for the `Allow` header.
    pub allowed: Vec<String>,
}

/// What a `#[state]` field's `from_scope` fails with when no value of its type was given to
/// the router; the consumer app turns it into [`AppError::Misconfigured`] (500).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MissingState(pub String);

/// A backend's failure (Redis, a database), kept whole so that `Error::source` reaches the
/// driver's own error. Cheap to clone; two compare equal when their messages do.
#[derive(Clone)]
pub struct BackendError(Arc<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wraps a backend's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError(Arc::new(error))
    }

    /// Wraps a boxed error (what `?` on a [`BoxError`] gives).
    pub fn from_box(error: BoxError) -> Self {
        BackendError(Arc::from(error))
    }

    /// An error with only a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        #[derive(Debug)]
        struct Message(String);
        impl fmt::Display for Message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Message {}
        BackendError(Arc::new(Message(message.to_string())))
    }

    /// The backend's error, to downcast (`error.get().downcast_ref::<redis::RedisError>()`).
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// True when the backend could not be reached (a dropped, refused or timed-out
    /// connection): the failure is the backend's availability, not the request's (HTTP 503).
    pub fn is_unreachable(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(err) = self.0.downcast_ref::<redis::RedisError>() {
            return err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout();
        }
        self.0.downcast_ref::<std::io::Error>().is_some()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for BackendError {}
