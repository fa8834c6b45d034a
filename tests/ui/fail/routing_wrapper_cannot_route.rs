use channels::prelude::*;
use channels::{BoxFuture, consumer, routing};

#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {}

/// A hand-written wrapper (not a `Middleware`) that does not forward `Router::routes`: it
/// cannot sit above nested routes.
struct LoggedApp<A>(A);

impl<A: Application> Application for LoggedApp<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        self.0.call(scope, inbox, outbox)
    }
}

#[allow(non_snake_case)]
fn Logged<A: Application>(inner: A) -> LoggedApp<A> {
    LoggedApp(inner)
}

fn main() {
    let _app = routing! {
        websocket: [
            "api/" => Logged([ "echo/" => Echo ]),
        ],
    };
}
