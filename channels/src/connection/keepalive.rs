//! A connection's keepalive state, driven by the server's sweeper
//! ([`server::keepalive`](crate::server::keepalive) has the why and the timing).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::{ConnState, Waiter};

/// A connection's keepalive state, in its [`ConnState`]. The reader marks it on every frame
/// ([`ConnState::seen`]); the sweeper counts the silence and asks the writer for pings.
#[derive(Debug, Default)]
pub(crate) struct Keepalive {
    /// The writer is open: pings can go out, and silence counts.
    armed: AtomicBool,
    /// A ping is due: the writer sends it and clears this.
    ping_due: AtomicBool,
    /// A ping went out and nothing has come since.
    awaiting: AtomicBool,
    /// Sweeps since the last frame from the client (or since the ping, while `awaiting`).
    silent: AtomicU32,
}

impl Keepalive {
    /// The writer is open: from now on the sweeper watches this connection.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Whether a ping is due (once per ping).
    pub(crate) fn take_ping(&self) -> bool {
        self.ping_due.load(Ordering::Relaxed) && self.ping_due.swap(false, Ordering::Acquire)
    }
}

/// What one sweep decided for one connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    Quiet,
    Ping,
    Dead,
}

/// One sweep of `conn`: a ping after `ping_after` silent sweeps, the end after `close_after`
/// more without an answer.
pub(crate) fn beat(conn: &ConnState, ping_after: u32, close_after: u32) -> Beat {
    let state = &conn.keepalive;
    if !state.armed.load(Ordering::Acquire) {
        return Beat::Quiet;
    }
    if conn.seen.swap(false, Ordering::Relaxed) {
        state.silent.store(0, Ordering::Relaxed);
        state.awaiting.store(false, Ordering::Relaxed);
        return Beat::Quiet;
    }
    let silent = state.silent.load(Ordering::Relaxed).saturating_add(1);
    state.silent.store(silent, Ordering::Relaxed);
    if state.awaiting.load(Ordering::Relaxed) {
        return if silent >= close_after { Beat::Dead } else { Beat::Quiet };
    }
    if silent < ping_after {
        return Beat::Quiet;
    }
    state.awaiting.store(true, Ordering::Relaxed);
    state.silent.store(0, Ordering::Relaxed);
    state.ping_due.store(true, Ordering::Release);
    conn.wake(Waiter::Writer);
    Beat::Ping
}
