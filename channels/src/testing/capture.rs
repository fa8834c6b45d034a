//! Remembers the last warning or error an application logged while a communicator ran it, so
//! that a timeout can say what went wrong even when the test installed no log subscriber.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// The last warning or error logged inside one communicator's application.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A subscriber that records warnings and errors into a [`LastError`] and passes everything on,
/// unchanged, to the subscriber that was in effect (the test's own, or none).
pub(crate) struct Capture {
    inner: Dispatch,
    /// The most verbose level in effect when the capture began (a `Dispatch` keeps its
    /// subscriber's hint to itself).
    inner_max: LevelFilter,
    last: LastError,
}

impl Capture {
    /// A dispatcher over the current default one, and where it records.
    pub(crate) fn around_current() -> (Dispatch, LastError) {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        let last = LastError::default();
        let inner_max = LevelFilter::current();
        (Dispatch::new(Capture { inner, inner_max, last: last.clone() }), last)
    }
}

fn captured(metadata: &Metadata<'_>) -> bool {
    metadata.is_event() && *metadata.level() <= Level::WARN
}

impl Subscriber for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        let inner = self.inner.register_callsite(metadata);
        if captured(metadata) && !inner.is_always() { Interest::sometimes() } else { inner }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        captured(metadata) || self.inner.enabled(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.inner_max.max(LevelFilter::WARN))
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values);
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        if captured(event.metadata()) {
            let mut line = Line(format!("{}: ", event.metadata().level()));
            event.record(&mut line);
            *self.last.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(line.0);
        }
        if self.inner.enabled(event.metadata()) {
            self.inner.event(event);
        }
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span);
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span);
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }
}

/// An event as one line: its message, then `field=value` for the others.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
