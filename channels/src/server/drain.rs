//! The open WebSockets, so that a shutdown can close them a batch at a time (close code 1012,
//! "service restart") instead of all at once: their clients then reconnect spread over time,
//! not in one storm against the next process. The keepalive sweeper walks them too
//! ([`keepalive`](super::keepalive)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::keepalive::{self, Beat, Sweep};
use crate::connection::ConnState;
use crate::event::close_code;

/// The WebSockets a server holds open (and those still in their handshake).
#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<Open>,
    /// Keepalive pings, unless they are off.
    sweep: Option<Sweep>,
    next: AtomicU64,
    /// Set when the drain starts: a handshake that still gets through (hyper finishes a request
    /// it had begun reading) is closed as soon as it registers.
    draining: AtomicBool,
}

#[derive(Default)]
struct Open {
    conns: HashMap<u64, Arc<ConnState>>,
    /// The keepalive sweeper runs (it stops when it finds no connection).
    sweeping: bool,
}

/// A connection's place in [`Connections`], given up when it is dropped (the connection's task
/// ended).
pub(crate) struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().conns.remove(&self.id);
    }
}

impl Connections {
    /// The connections of a server whose keepalive is `sweep` (`None`: no pings).
    pub(crate) fn new(sweep: Option<Sweep>) -> Self {
        Connections { sweep, ..Connections::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Nothing is left half-done under this lock: a panic elsewhere cannot spoil the map.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register(self: &Arc<Self>, conn: Arc<ConnState>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.lock();
        if self.draining.load(Ordering::Relaxed) {
            conn.abort(close_code::SERVICE_RESTART, "server restarting");
        } else {
            open.conns.insert(id, conn);
            if let Some(sweep) = self.sweep
                && !std::mem::replace(&mut open.sweeping, true)
            {
                keepalive::start(self, sweep);
            }
        }
        Registered { connections: self.clone(), id }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// One keepalive sweep: pings asked for, and the connections that did not answer theirs;
    /// `None` (and the sweeper stops) when there are no connections left.
    pub(crate) fn sweep(&self, sweep: &Sweep) -> Option<Vec<Arc<ConnState>>> {
        let mut open = self.lock();
        if open.conns.is_empty() {
            open.sweeping = false;
            return None;
        }
        let dead = open.conns.values().filter(|conn| keepalive::beat(conn, sweep) == Beat::Dead).cloned().collect();
        Some(dead)
    }

    /// Closes up to `count` connections with 1012; how many it closed.
    fn close_some(&self, count: usize) -> usize {
        let batch: Vec<Arc<ConnState>> = {
            let mut open = self.lock();
            let ids: Vec<u64> = open.conns.keys().copied().take(count).collect();
            ids.iter().filter_map(|id| open.conns.remove(id)).collect()
        };
        for conn in &batch {
            conn.abort(close_code::SERVICE_RESTART, "server restarting");
        }
        batch.len()
    }

    /// Closes every connection, `batch` at a time every `interval`; those still open when the
    /// next batch would come at or after `last_batch_at` are closed together.
    pub(crate) async fn drain(&self, batch: usize, interval: Duration, last_batch_at: Instant) {
        // Under the lock: a registration is either in the map (and drained) or sees the flag.
        {
            let _open = self.lock();
            self.draining.store(true, Ordering::Relaxed);
        }
        let batch = batch.max(1);
        let mut batches = 0usize;
        loop {
            let remaining = self.len();
            if remaining == 0 {
                break;
            }
            let next = Instant::now() + interval;
            if next >= last_batch_at {
                let closed = self.close_some(usize::MAX);
                tracing::info!(closed, "shutdown: closing the remaining WebSockets at once (drain time is up)");
                break;
            }
            let closed = self.close_some(batch);
            batches += 1;
            tracing::debug!(
                batch = batches,
                closed,
                remaining = remaining.saturating_sub(closed),
                "shutdown: closed a batch of WebSockets"
            );
            if closed >= remaining {
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        if batches > 1 {
            tracing::info!(batches, "shutdown: WebSockets closed in batches");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<ConnState> {
        Arc::new(ConnState::for_tests())
    }

    #[tokio::test]
    async fn a_handshake_that_registers_after_the_drain_started_is_closed_at_once() {
        let connections = Arc::new(Connections::default());
        let early = conn();
        let _early = connections.register(early.clone());
        connections.drain(10, Duration::from_millis(1), Instant::now() + Duration::from_secs(1)).await;
        assert!(early.is_cancelled());
        assert_eq!(early.close_reason().code, close_code::SERVICE_RESTART);
        let late = conn();
        let _late = connections.register(late.clone());
        assert!(late.is_cancelled(), "nothing would ever close it otherwise");
        assert_eq!(late.close_reason().code, close_code::SERVICE_RESTART);
        assert_eq!(connections.len(), 0);
    }

    /// Waits (a second at most) for `done`.
    async fn eventually(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    /// A new connection registered in `connections`, its writer open.
    fn open(connections: &Arc<Connections>) -> (Arc<ConnState>, Registered) {
        let conn = conn();
        let registered = connections.register(conn.clone());
        conn.keepalive.arm();
        (conn, registered)
    }

    /// Connections pinged after 4 ms of silence, closed `timeout` after the ping.
    fn swept(timeout: Duration) -> Arc<Connections> {
        Arc::new(Connections::new(Sweep::new(Some(Duration::from_millis(4)), timeout)))
    }

    #[tokio::test]
    async fn the_keepalive_sweeper_runs_while_there_are_connections() {
        let connections = swept(Duration::from_millis(400));
        let (first, registered) = open(&connections);
        assert!(eventually(|| first.keepalive.take_ping()).await, "a silent connection is pinged");
        drop(registered);
        assert!(eventually(|| !connections.lock().sweeping).await, "no connection left: the sweeper stops");
        // The next connection starts it again.
        let (again, _registered) = open(&connections);
        assert!(connections.lock().sweeping);
        assert!(eventually(|| again.keepalive.take_ping()).await);
    }

    #[tokio::test]
    async fn a_client_silent_after_its_ping_is_closed_with_1001() {
        let connections = swept(Duration::from_millis(4));
        let (silent, _registered) = open(&connections);
        assert!(eventually(|| silent.is_cancelled()).await);
        let close = silent.close_reason();
        assert_eq!((close.code, close.reason.as_str()), (close_code::AWAY, keepalive::PING_TIMEOUT));
    }
}
