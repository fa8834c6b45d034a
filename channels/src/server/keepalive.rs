//! Keepalive: a ping to a WebSocket client that has been silent for
//! [`ping_interval`](super::ServerConfig::ping_interval), and a close (1001) when nothing, not
//! even the pong, arrives within [`ping_timeout`](super::ServerConfig::ping_timeout) after it.
//!
//! One sweeper per server walks its open WebSockets a few times per interval (as daphne's
//! timeout checker walks its protocols), instead of a timer per connection: an idle socket
//! then holds a few atomics, not a boxed timer and its place in the connection's future
//! (~180 B each, `bench/chat-idle.sh`), and a message costs no timer check. The price is
//! precision: a ping goes out between `ping_interval` and a quarter of it more after the
//! client's last frame (at most 1 s more), and a close as late.
//!
//! The sweeper runs while the server holds a WebSocket: the first registration starts it on
//! the registering task's runtime, and it ends when it finds none left.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::connection::ConnState;
pub(crate) use crate::connection::keepalive::Beat;
use crate::event::close_code;

use super::drain::Connections;

/// The close reason of a client that did not answer a ping in time.
pub(crate) const PING_TIMEOUT: &str = "ping timeout";

/// How often the sweeper runs, and after how many silent sweeps it pings or closes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sweep {
    tick: Duration,
    ping_after: u32,
    close_after: u32,
}

impl Sweep {
    /// Four sweeps per interval or timeout (the shorter), at most one a second, at least one a
    /// millisecond apart; `None` when pings are off.
    pub(crate) fn new(interval: Option<Duration>, timeout: Duration) -> Option<Self> {
        let interval = interval?;
        let tick = (interval.min(timeout) / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let sweeps =
            |span: Duration| u32::try_from(span.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u32::MAX).max(1);
        Some(Sweep { tick, ping_after: sweeps(interval), close_after: sweeps(timeout) })
    }
}

/// One sweep of one connection.
pub(crate) fn beat(conn: &ConnState, sweep: &Sweep) -> Beat {
    crate::connection::keepalive::beat(conn, sweep.ping_after, sweep.close_after)
}

/// Sweeps `connections` every tick until none is left (or the server is gone).
pub(crate) async fn run(connections: Weak<Connections>, sweep: Sweep) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + sweep.tick, sweep.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(connections) = connections.upgrade() else { return };
        let Some(dead) = connections.sweep(&sweep) else { return };
        for conn in dead {
            tracing::debug!("client did not answer a ping in time; closing");
            conn.abort(close_code::AWAY, PING_TIMEOUT);
        }
    }
}

/// The sweeper's task, started by the registration that finds it stopped.
pub(crate) fn start(connections: &Arc<Connections>, sweep: Sweep) {
    tokio::spawn(run(Arc::downgrade(connections), sweep));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn conn() -> ConnState {
        ConnState::for_tests()
    }

    #[test]
    fn four_sweeps_per_interval_at_most_a_second_apart() {
        let sweep = Sweep::new(Some(Duration::from_millis(100)), Duration::from_millis(200)).unwrap();
        assert_eq!((sweep.tick, sweep.ping_after, sweep.close_after), (Duration::from_millis(25), 4, 8));
        let sweep = Sweep::new(Some(Duration::from_secs(20)), Duration::from_secs(30)).unwrap();
        assert_eq!((sweep.tick, sweep.ping_after, sweep.close_after), (Duration::from_secs(1), 20, 30));
        assert!(Sweep::new(None, Duration::from_secs(30)).is_none());
    }

    #[test]
    fn a_silent_client_is_pinged_then_closed_and_a_frame_resets_the_count() {
        let sweep = Sweep::new(Some(Duration::from_millis(40)), Duration::from_millis(20)).unwrap();
        assert_eq!((sweep.ping_after, sweep.close_after), (8, 4));
        let conn = conn();
        // Not open yet: never pinged.
        assert!((0..20).all(|_| beat(&conn, &sweep) == Beat::Quiet));
        conn.keepalive.arm();
        let beats: Vec<Beat> = (0..8).map(|_| beat(&conn, &sweep)).collect();
        assert_eq!(beats.last(), Some(&Beat::Ping));
        assert!(beats[..7].iter().all(|beat| *beat == Beat::Quiet));
        assert!(conn.keepalive.take_ping());
        assert!(!conn.keepalive.take_ping(), "one ping per ping");
        // The pong (any frame) arrives: quiet again, and the count starts over after the sweep
        // that saw it.
        conn.seen.store(true, Ordering::Relaxed);
        assert!((0..8).all(|_| beat(&conn, &sweep) == Beat::Quiet));
        assert_eq!(beat(&conn, &sweep), Beat::Ping);
        // No answer: closed after the timeout's sweeps.
        assert!((0..3).all(|_| beat(&conn, &sweep) == Beat::Quiet));
        assert_eq!(beat(&conn, &sweep), Beat::Dead);
    }
}
