//! [`BaseMiddleware`]: a custom middleware in a few lines (Channels' `BaseMiddleware`).

use std::future::Future;

use super::{Prepared, then_inner};
use crate::BoxFuture;
use crate::application::{Application, Inbox, Outbox, Router};
use crate::error::AppError;
use crate::scope::Scope;

/// A middleware that prepares the scope before the inner application runs: implement
/// `populate_scope`, then `.wrap(inner)`.
///
/// ```
/// use channels::middleware::BaseMiddleware;
/// use channels::prelude::*;
///
/// /// INSECURE, for demos only: trusts a user id in the query string.
/// struct QueryAuthMiddleware;
///
/// impl BaseMiddleware for QueryAuthMiddleware {
///     async fn populate_scope(&self, scope: &mut Scope) -> Result<(), AppError> {
///         let id = scope.query_pairs().find(|(key, _)| key == "user_id").map(|(_, id)| id);
///         if let Some(id) = id {
///             scope.user = User::with_id(id.clone(), id);
///         }
///         Ok(())
///     }
/// }
///
/// # let inner = channels::application_fn(|_, _, _| async { Ok(()) });
/// let app = QueryAuthMiddleware.wrap(inner);
/// # let _ = app;
/// ```
///
/// Returning an error refuses the connection with it (e.g. `AppError::Refused`).
pub trait BaseMiddleware: Send + Sync + Sized + 'static {
    /// Fills in the scope (user, extensions...) for the inner application.
    fn populate_scope(&self, scope: &mut Scope) -> impl Future<Output = Result<(), AppError>> + Send;

    /// This middleware around `inner`.
    fn wrap<A: Application>(self, inner: A) -> Wrapped<Self, A> {
        Wrapped { middleware: self, inner }
    }
}

/// A [`BaseMiddleware`] around an application.
#[derive(Debug)]
pub struct Wrapped<M, A> {
    middleware: M,
    inner: A,
}

impl<M: BaseMiddleware, A: Application> Application for Wrapped<M, A> {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let prepare = async move {
            match self.middleware.populate_scope(&mut scope).await {
                Ok(()) => Prepared::Call(scope, inbox, outbox),
                Err(err) => Prepared::Done(Err(err)),
            }
        };
        then_inner(Box::pin(prepare), &self.inner)
    }
}

impl<M: BaseMiddleware, A: Router> Router for Wrapped<M, A> {
    fn routes(&self, path: &str) -> bool {
        self.inner.routes(path)
    }
}
