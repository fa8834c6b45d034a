//! Logging that costs little on the hot path: bounded logging for what clients can trigger at
//! will (a few lines a minute per kind of event, then one line saying how many were
//! suppressed), and spans entered only when a subscriber wants them.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines let through per window.
const LINES: u32 = 5;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);

/// A limit on one kind of log line (a `static` next to the line it guards).
#[derive(Debug)]
pub(crate) struct LogLimit {
    what: &'static str,
    window: Mutex<Option<Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit for lines about `what` (named in the "suppressed" summary).
    pub(crate) const fn new(what: &'static str) -> Self {
        LogLimit { what, window: Mutex::new(None) }
    }

    /// True when the caller may log its line now.
    pub(crate) fn allow(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let window = match &mut *window {
            Some(window) if now.duration_since(window.start) < WINDOW => window,
            slot => {
                if let Some(old) = slot.as_ref().filter(|old| old.suppressed > 0) {
                    tracing::warn!(
                        suppressed = old.suppressed,
                        "{} (more lines suppressed in the last minute)",
                        self.what
                    );
                }
                slot.insert(Window { start: now, lines: 0, suppressed: 0 })
            }
        };
        if window.lines < LINES {
            window.lines += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }
}

/// `future` run inside `span` when a subscriber wants the span, and bare otherwise.
///
/// `tracing::Instrument` enters and leaves a span on every poll even when no subscriber wants
/// it, and with `tracing`'s `log` feature on (sqlx turns it on) each of those is a call into
/// `log` as well: a dozen calls per WebSocket message, ~6 % of the server's own work per echo
/// (callgrind).
pub(crate) fn in_span<F: std::future::Future>(
    future: F,
    span: tracing::Span,
) -> futures_util::future::Either<tracing::instrument::Instrumented<F>, F> {
    use futures_util::future::Either;
    if span.is_disabled() { Either::Right(future) } else { Either::Left(tracing::Instrument::instrument(future, span)) }
}

/// As [`in_span`], with the instrumented future boxed: for a step of a future that lives as
/// long as its connection (a consumer's loop), which would otherwise keep room for the span
/// (40 B) all along. The box is made only when a subscriber wants the span.
pub(crate) fn in_span_boxed<F: std::future::Future>(
    future: F,
    span: tracing::Span,
) -> futures_util::future::Either<std::pin::Pin<Box<tracing::instrument::Instrumented<F>>>, F> {
    use futures_util::future::Either;
    if span.is_disabled() {
        Either::Right(future)
    } else {
        Either::Left(Box::pin(tracing::Instrument::instrument(future, span)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_pass() {
        let limit = LogLimit::new("test");
        let passed = (0..100).filter(|_| limit.allow()).count();
        assert_eq!(passed, LINES as usize);
    }
}
