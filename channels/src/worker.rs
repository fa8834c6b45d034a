//! Background workers (Channels' `runworker`): consumers bound to channel names, fed by
//! `layer.send("thumbnails", message)` from anywhere (an HTTP consumer, a task, another process
//! over Redis).
//!
//! A [`Worker`] receives from each of its channels on the channel layer and hands every message
//! to the application as [`Inbound::Channel`], in a scope of protocol `"channel"` whose
//! `channel_name` is the channel. Route those scopes with
//! [`ChannelNameRouter`](crate::routing::ChannelNameRouter) under
//! [`ProtocolTypeRouter::channel`](crate::ProtocolTypeRouter::channel), to consumers of
//! protocol `"channel"` whose handlers are picked by the message's `type`, like any consumer's.
//!
//! ```no_run
//! use channels::prelude::*;
//! use channels::routing::ChannelNameRouter;
//! use channels::worker::Worker;
//! use channels::consumer;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Generate {
//!     image: String,
//! }
//!
//! #[consumer(protocol = "channel")]
//! struct Thumbnails;
//!
//! #[consumer]
//! impl Thumbnails {
//!     async fn handle(&mut self, _outbox: &Outbox, _event: Inbound) -> Result<Flow, ConsumerError> {
//!         Ok(Flow::Continue)
//!     }
//!
//!     #[handler("thumbnails.generate")]
//!     async fn generate(&mut self, _outbox: &Outbox, job: Generate) -> Result<(), ConsumerError> {
//!         println!("thumbnail for {}", job.image);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() {
//! let app = ProtocolTypeRouter::new()
//!     .channel(ChannelNameRouter::new().route("thumbnails", Thumbnails::as_app()));
//! let layer = app.layer().clone();
//! let worker = Worker::new(app, ["thumbnails"]);
//! tokio::spawn(worker.run());
//! // Anywhere else, e.g. in an HTTP consumer:
//! let job = serde_json::json!({ "type": "thumbnails.generate", "image": "cat.png" });
//! layer.send("thumbnails", job.into()).await.unwrap();
//! # }
//! ```
//!
//! Each channel has one application instance at a time, and it gets the channel's messages one
//! by one, in order: the next message waits in the layer (within its capacity and expiry) until
//! the instance has taken the previous one. An instance that ends (an error, a panic,
//! [`Flow::Stop`](crate::consumer::Flow::Stop)) is logged and replaced by a new one for the next
//! message. Several workers (processes) on one Redis layer share a channel's messages: each
//! message goes to one of them.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::application::Application;
use crate::application::run_app;
use crate::connection::{EventSource, Inbox, Outbox};
use crate::event::{ChannelMessage, Inbound};
use crate::layers::Layer;
use crate::routing::ProtocolTypeRouter;
use crate::scope::{Protocol, Scope};
use crate::server::ShutdownHandle;

/// How long a shutdown waits for the instances to finish the message they have.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the consumers of named channels (Channels' `runworker`); see the [module docs](self).
pub struct Worker {
    app: Arc<dyn Application>,
    layer: Layer,
    channels: Vec<String>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("channels", &self.channels).finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `channels`, running `app` (its scopes get the router's channel layer).
    pub fn new<S: Into<String>>(app: ProtocolTypeRouter, channels: impl IntoIterator<Item = S>) -> Self {
        let layer = app.layer().clone();
        Worker::with_layer(app, layer, channels)
    }

    /// A worker for `channels` on `layer`, running any application.
    pub fn with_layer<S: Into<String>>(
        app: impl Application,
        layer: Layer,
        channels: impl IntoIterator<Item = S>,
    ) -> Self {
        Worker {
            app: Arc::new(app),
            layer,
            channels: channels.into_iter().map(Into::into).collect(),
            shutdown: CancellationToken::new(),
        }
    }

    /// A handle that stops this worker: it stops receiving, lets each instance finish its
    /// message (up to 10 s), and [`run`](Self::run) returns.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::from_token(self.shutdown.clone())
    }

    /// Serves the channels until shut down.
    pub async fn run(self) {
        let mut tasks = JoinSet::new();
        for channel in self.channels {
            let (app, layer, shutdown) = (self.app.clone(), self.layer.clone(), self.shutdown.clone());
            tasks.spawn(serve_channel(app, layer, channel, shutdown));
        }
        tracing::info!(channels = tasks.len(), "worker running");
        while tasks.join_next().await.is_some() {}
    }
}

/// One channel: receive, hand to the instance, replace the instance when it ends.
async fn serve_channel(app: Arc<dyn Application>, layer: Layer, channel: String, shutdown: CancellationToken) {
    let slot = Arc::new(Slot::default());
    let mut instance: Option<JoinHandle<()>> = None;
    loop {
        // The previous message must have been taken before the next is received: a message the
        // instance never took (it ended first) is still in the slot, for the next instance.
        if slot.is_full() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = slot.taken() => {}
                () = ended(&mut instance) => {}
            }
        } else {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = layer.receive(&channel) => received,
            };
            match received {
                Ok(message) => slot.put(message),
                Err(err) => {
                    // A layer outage: wait a little instead of spinning on the error.
                    tracing::warn!(channel, %err, "worker could not receive; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        if slot.is_full() && instance.as_ref().is_none_or(JoinHandle::is_finished) {
            instance = Some(start_instance(&app, &layer, &channel, &slot));
        }
    }
    slot.close();
    if let Some(task) = instance {
        // No more messages: the instance ends once it has handled the one it has.
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await.is_err() {
            tracing::warn!(channel, "worker instance did not finish in time; dropped");
        }
    }
}

/// Waits until the instance's task ends (forever when there is none).
async fn ended(instance: &mut Option<JoinHandle<()>>) {
    match instance {
        Some(task) if !task.is_finished() => {
            let _ = task.await;
        }
        _ => std::future::pending().await,
    }
}

/// Starts an application instance serving `channel` from `slot`.
fn start_instance(app: &Arc<dyn Application>, layer: &Layer, channel: &str, slot: &Arc<Slot>) -> JoinHandle<()> {
    let mut scope = Scope::new(Protocol::channel(), "");
    scope.channel_name = Some(channel.to_owned());
    scope.channel_layer = Some(layer.clone());
    let inbox = Inbox::from_source(SlotSource(slot.clone()));
    let (outbox, mut sent) = Outbox::channel(16);
    let run = run_app(app.clone(), scope, inbox, outbox);
    let channel = channel.to_owned();
    tokio::spawn(async move {
        // A worker has no client: what its consumer sends is dropped (and said once).
        let drain = async move {
            let mut said = false;
            while let Some(event) = sent.recv().await {
                if !said {
                    tracing::debug!(?event, "a worker consumer sent an event; workers have no client to send to");
                    said = true;
                }
            }
        };
        let (result, ()) = tokio::join!(run, drain);
        // `run_app` has logged the error; the next message starts a new instance.
        if result.is_err() {
            tracing::debug!(channel, "worker instance ended with an error; a new one takes the next message");
        }
    })
}

/// Where a worker hands its channel's messages to the instance, one at a time: the message
/// stays here until the instance takes it, so an instance that ends loses only the message it
/// was handling, never the next one.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    taken: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    message: Option<ChannelMessage>,
    waker: Option<Waker>,
    closed: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_full(&self) -> bool {
        self.lock().message.is_some()
    }

    fn put(&self, message: ChannelMessage) {
        let waker = {
            let mut state = self.lock();
            state.message = Some(message);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// No more messages: the instance's inbox ends once the slot is empty.
    fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves once the instance took the message (or right away when the slot is empty).
    async fn taken(&self) {
        loop {
            let notified = self.taken.notified();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// The instance's side (its [`Inbox`]).
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let mut state = self.lock();
        if let Some(message) = state.message.take() {
            drop(state);
            self.taken.notify_waiters();
            return Poll::Ready(Some(Inbound::Channel(message)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The instance's inbox source: its worker's slot.
struct SlotSource(Arc<Slot>);

impl EventSource for SlotSource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.0.poll_take(cx)
    }
}
