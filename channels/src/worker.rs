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

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::application::{Application, Inbox, Outbox};
use crate::event::Inbound;
use crate::layers::Layer;
use crate::routing::ProtocolTypeRouter;
use crate::scope::{Protocol, Scope};
use crate::server::{ShutdownHandle, run_app};

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
    let mut instance: Option<Instance> = None;
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = layer.receive(&channel) => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(err) => {
                // A layer outage: wait a little instead of spinning on the error.
                tracing::warn!(channel, %err, "worker could not receive; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut event = Inbound::Channel(message);
        // Delivered to the running instance, or to a new one if it has ended.
        for _ in 0..3 {
            let current = match &mut instance {
                Some(current) if !current.task.is_finished() => current,
                _ => instance.insert(Instance::start(&app, &layer, &channel)),
            };
            match current.events.send(event).await {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::SendError(returned)) => {
                    event = returned;
                    if let Some(ended) = instance.take() {
                        ended.finish(&channel).await;
                    }
                }
            }
        }
    }
    if let Some(current) = instance {
        // No more events: the instance ends when it has handled what it has.
        drop(current.events);
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, current.task).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(channel, "worker instance did not finish in time; dropped"),
        }
    }
}

/// One application instance serving a channel.
struct Instance {
    events: tokio::sync::mpsc::Sender<Inbound>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    fn start(app: &Arc<dyn Application>, layer: &Layer, channel: &str) -> Instance {
        let mut scope = Scope::new(Protocol::channel(), "");
        scope.channel_name = Some(channel.to_owned());
        scope.channel_layer = Some(layer.clone());
        // One message at a time: the next one waits in the layer.
        let (events, inbox): (_, Inbox) = Inbox::channel(1);
        let (outbox, mut sent) = Outbox::channel(16);
        let run = run_app(app.clone(), scope, inbox, outbox);
        let channel = channel.to_owned();
        let task = tokio::spawn(async move {
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
        });
        Instance { events, task }
    }

    async fn finish(self, channel: &str) {
        if let Err(err) = self.task.await {
            tracing::error!(channel, %err, "worker instance task failed");
        }
    }
}
