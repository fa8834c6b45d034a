//! Connection workers: on tokio's multi-thread runtime (`#[tokio::main]`), the server serves
//! its connections on threads of its own, each running a one-thread tokio runtime, as many as
//! the application's runtime has worker threads (at most one per core the process may use).
//! Connections are handed to them in turn, passing over a worker that has not yet started
//! the ones it was given (its thread is blocked).
//!
//! Why: under load, tokio's multi-thread scheduler is unfair to connection tasks. Each worker
//! keeps woken tasks in a local queue of 256 and puts the newest wake in a LIFO slot; when more
//! tasks wake than fit (1,000 busy WebSockets do), half of the local queue moves to the global
//! queue, which a busy worker looks at once every few dozen polls. The tasks in the local queue
//! are served, reply, get their next message and wake into the local queue again, while those
//! in the global queue wait: with 1,000 connections echoing as fast as they can on one core,
//! ~200 were served every ~1.3 ms and the rest waited up to ~150 ms (p50 1.3 ms, p99 150 ms,
//! the same throughput). Once the server has any idle time the local queue runs dry and the
//! global one drains, so it shows when the server is the bottleneck, which is when it matters.
//! A one-thread runtime keeps one unbounded FIFO queue: every woken connection is served in
//! turn (p99 ~10 ms there). Users should not have to pick or tune a runtime for this, so the
//! server brings its own.
//!
//! What it means for applications: consumers (and what they `tokio::spawn`) run on these
//! threads. Everything `channels` hands them (channel layers, session stores, the outgoing
//! queue) works across runtimes; `tokio::task::block_in_place` does not (it needs the
//! multi-thread runtime: use `spawn_blocking`). On a one-thread runtime (tests, a server
//! pinned to one core) connections stay on the application's runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// Work handed to a worker: runs on its thread, inside its runtime (so that what it registers
/// with the reactor and spawns lives there).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The worker threads; they end when this is dropped (after the server's shutdown).
pub(crate) struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Jobs handed to it that it has not started yet: a worker whose thread a consumer blocks
    /// piles them up, and is then passed over.
    queued: Arc<AtomicUsize>,
}

impl Workers {
    /// Workers for a server running on the current runtime: `None` on a one-thread runtime
    /// (connections stay on it), or when the threads cannot be started (logged; the same).
    pub(crate) fn for_current_runtime() -> Option<Workers> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        // No more than the cores this process may run on: more event loops than cores only
        // take turns on them.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let count = handle.metrics().num_workers().min(cores).max(1);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let (sender, receiver) = mpsc::unbounded_channel::<Job>();
            let started =
                std::thread::Builder::new().name(format!("channels-io-{index}")).spawn(move || run_worker(receiver));
            if let Err(err) = started {
                tracing::warn!(%err, "could not start the connection workers; connections stay on the application's runtime");
                return None;
            }
            workers.push(Worker { jobs: sender, queued: Arc::default() });
        }
        Some(Workers { workers, next: AtomicUsize::new(0) })
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `job` on the next worker in turn, passing over workers with jobs still queued when
    /// another has none (a worker whose thread a consumer blocks gets no more connections).
    /// Gives the job back when that worker is gone (its runtime could not be built), for the
    /// caller to run in place.
    pub(crate) fn run(&self, job: Job) -> Result<(), Job> {
        let count = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(worker) = (0..count)
            .map(|offset| &self.workers[(start + offset) % count])
            .min_by_key(|worker| worker.queued.load(Ordering::Relaxed))
        else {
            return Err(job);
        };
        worker.queued.fetch_add(1, Ordering::Relaxed);
        let queued = worker.queued.clone();
        let job: Job = Box::new(move || {
            queued.fetch_sub(1, Ordering::Relaxed);
            job();
        });
        worker.jobs.send(job).map_err(|mpsc::error::SendError(job)| job)
    }
}

/// A worker thread: a one-thread runtime running jobs until the server drops its sender. What
/// is still running then (connections the shutdown timed out on, tasks consumers spawned) is
/// dropped with the runtime.
fn run_worker(mut jobs: mpsc::UnboundedReceiver<Job>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "could not build a connection worker's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some(job) = jobs.recv().await {
            job();
        }
    });
}
