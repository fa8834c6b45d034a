//! The [`Application`] trait: anything that serves a connection, given its [`Scope`], the
//! [`Inbox`] it receives events from and the [`Outbox`] it sends events to (those two are
//! [`crate::connection`]'s, re-exported here).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

pub use crate::connection::{EventSource, Inbox, Outbox};
pub use crate::error::{AppError, SendError};
use crate::scope::Scope;
pub use crate::{BoxError, BoxFuture};

/// Anything that can serve a connection: a router, a middleware, a consumer.
///
/// This is the ASGI idea in Rust: the application gets the connection's [`Scope`], an [`Inbox`]
/// of [`Inbound`](crate::event::Inbound) events and an [`Outbox`] for
/// [`Outbound`](crate::event::Outbound) events, and runs until the
/// connection is done. Routers and middleware are applications that own an inner application.
///
/// The trait is object safe; routers store `Arc<dyn Application>`.
pub trait Application: Send + Sync + 'static {
    /// Serves one connection.
    ///
    /// # Errors
    /// [`AppError::NoRoute`] when no route matched (the server answers 404); other variants
    /// when the connection failed (the server answers 500 or closes the WebSocket with 1011).
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>>;
}

impl<A: Application + ?Sized> Application for Arc<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        (**self).call(scope, inbox, outbox)
    }
}

impl<A: Application + ?Sized> Application for Box<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        (**self).call(scope, inbox, outbox)
    }
}

/// An application that routes by URL: it knows which paths it has a route for, so that an
/// outer router can nest it under a prefix ([`nest`](crate::routing::nest)) and fall through to its next route when
/// the nested one has no match. [`URLRouter`](crate::URLRouter) is one, and so is every
/// [`Middleware`](crate::middleware::Middleware) around one. See [`nest`](crate::routing::nest).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be nested under a URL prefix: it is not a `Router`",
    note = "nest a `URLRouter`, or a middleware around one: write your middleware as a \
            `channels::middleware::Middleware` (its `wrap` routes what the inner router routes), or \
            forward `Router::routes` to the inner router (`impl<A: Router> Router for MyWrapper<A>`)"
)]
pub trait Router: Application {
    /// Whether `path` (what is left of the URL path after the prefix, leading `/` stripped)
    /// reaches an application.
    fn routes(&self, path: &str) -> bool;
}

impl<R: Router + ?Sized> Router for Arc<R> {
    fn routes(&self, path: &str) -> bool {
        (**self).routes(path)
    }
}

impl<R: Router + ?Sized> Router for Box<R> {
    fn routes(&self, path: &str) -> bool {
        (**self).routes(path)
    }
}

/// An application made from an async function; see [`application_fn`].
pub struct ApplicationFn<F> {
    f: F,
}

/// Makes an application from an async function of `(scope, inbox, outbox)`.
///
/// ```
/// use channels::{application_fn, event::{Inbound, Outbound, Close}};
///
/// // Refuses every WebSocket.
/// let deny = application_fn(|_scope, mut inbox, outbox| async move {
///     if let Some(Inbound::WebsocketConnect) = inbox.recv().await {
///         let _ = outbox.send(Outbound::WebsocketClose(Close::new(1000))).await;
///     }
///     Ok(())
/// });
/// # let _: &dyn channels::Application = &deny;
/// ```
pub fn application_fn<F, Fut>(f: F) -> ApplicationFn<F>
where
    F: Fn(Scope, Inbox, Outbox) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), AppError>> + Send + 'static,
{
    ApplicationFn { f }
}

impl<F, Fut> Application for ApplicationFn<F>
where
    F: Fn(Scope, Inbox, Outbox) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), AppError>> + Send + 'static,
{
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        Box::pin((self.f)(scope, inbox, outbox))
    }
}

impl<F> fmt::Debug for ApplicationFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApplicationFn")
    }
}

/// Runs an application, turning a panic into [`AppError::Panicked`].
///
/// The scope, inbox and outbox wait in one box until the call: an async block keeps room for
/// what it captured for as long as it lives, and this future lives as long as the connection.
pub(crate) fn run_app(
    app: Arc<dyn Application>,
    scope: Scope,
    inbox: Inbox,
    outbox: Outbox,
) -> impl Future<Output = Result<(), AppError>> + Send + 'static {
    run_boxed(app, Box::new((scope, inbox, outbox)))
}

async fn run_boxed(app: Arc<dyn Application>, call: Box<(Scope, Inbox, Outbox)>) -> Result<(), AppError> {
    let path = call.0.path.clone();
    let result = match AssertUnwindSafe(async move {
        // Unboxed in a block of its own, so the box is freed before the call, not after it.
        let (scope, inbox, outbox) = {
            let call = call;
            *call
        };
        app.call(scope, inbox, outbox).await
    })
    .catch_unwind()
    .await
    {
        Ok(result) => result,
        Err(panic) => Err(AppError::Panicked(panic_message(&*panic))),
    };
    match &result {
        Ok(()) => {}
        Err(
            err @ (AppError::NoRoute { .. }
            | AppError::NoProtocol { .. }
            | AppError::Refused(_)
            | AppError::MethodNotAllowed(_)
            | AppError::LoginRequired(_)),
        ) => {
            tracing::info!(%path, error = %err, "connection not served");
        }
        Err(err) => {
            crate::metrics::consumer_failed(matches!(err, AppError::Panicked(_)));
            tracing::error!(%path, error = %err, "application failed");
        }
    }
    result
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
