//! Background jobs on a worker (Channels' `runworker`). Run with
//! `cargo run --example worker [-- --addr 127.0.0.1:8000] [--redis redis://127.0.0.1:6379] [--web-only | --worker-only]`.
//!
//! Stable interface (other tools drive it):
//! - `POST /jobs/` with a whole number `n` (1 to 1,000,000,000) as the body: `202`, and a
//!   `job.run` message goes to the `jobs` channel; any other body: `400`.
//! - WebSocket `/ws/jobs/`: receives `{"n": n, "sum": 1 + 2 + ... + n}` for every job that any
//!   worker finished.
//! - `--web-only` serves HTTP and WebSockets without a worker; `--worker-only` runs the worker
//!   and no server. With `--redis`, the two can be separate processes (as `runworker` is).

use bytes::Bytes;
use channels::layers::{InMemoryChannelLayer, Layer, RedisChannelLayer};
use channels::prelude::*;
use channels::routing::ChannelNameRouter;
use channels::worker::Worker;
use channels::{consumer, routing};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

const RESULTS: &str = "jobs.results";

/// `POST /jobs/`: queues a job on the `jobs` channel.
#[consumer(http)]
struct Submit;

#[consumer]
impl Submit {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let n = std::str::from_utf8(&body).ok().and_then(|text| text.trim().parse::<u64>().ok());
        let Some(n) = n.filter(|n| (1..=1_000_000_000).contains(n)) else {
            response.text(StatusCode::BAD_REQUEST, "send a whole number from 1 to 1000000000").await?;
            return Ok(());
        };
        self.scope.layer()?.send("jobs", json!({ "type": "job.run", "n": n }).into()).await?;
        response.text(StatusCode::ACCEPTED, "queued").await?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Run {
    n: u64,
}

#[derive(Serialize, Deserialize)]
struct Done {
    n: u64,
    sum: u64,
}

/// The worker's consumer of the `jobs` channel.
#[consumer(protocol = "channel")]
struct Jobs;

#[consumer]
impl Jobs {
    async fn handle(&mut self, _outbox: &Outbox, _event: Inbound) -> Result<Flow, ConsumerError> {
        Ok(Flow::Continue)
    }

    #[handler("job.run")]
    async fn run(&mut self, _outbox: &Outbox, job: Run) -> Result<(), ConsumerError> {
        let sum = (1..=job.n).sum::<u64>();
        let done = json!({ "type": "job.done", "n": job.n, "sum": sum });
        self.scope.layer()?.group_send(RESULTS, done.into()).await?;
        Ok(())
    }
}

/// `/ws/jobs/`: every finished job.
#[consumer(json)]
struct Results;

#[consumer]
impl Results {
    fn groups(&self) -> [&'static str; 1] {
        [RESULTS]
    }

    async fn receive_json(&mut self, _ws: &mut Websocket, _content: serde_json::Value) -> Result<(), ConsumerError> {
        Ok(())
    }

    #[handler("job.done")]
    async fn done(&mut self, ws: &mut Websocket, done: Done) -> Result<(), ConsumerError> {
        ws.send_json(&done).await
    }
}

/// The worker example: a web process and a background worker sharing a channel layer.
#[derive(clap::Parser)]
#[command(name = "worker")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    addr: String,
    /// A Redis channel layer (web and worker in separate processes); in-memory without it.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve the web side only (the worker runs elsewhere).
    #[arg(long, conflicts_with = "worker_only")]
    web_only: bool,
    /// Run the worker only.
    #[arg(long)]
    worker_only: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = <Args as clap::Parser>::parse();
    let layer: Layer = match &args.redis {
        Some(url) => RedisChannelLayer::connect(url).await?.into_layer(),
        None => InMemoryChannelLayer::new().into_layer(),
    };
    let app = routing! {
        http: [ "jobs/" => Submit ],
        websocket: [ "ws/jobs/" => Results ],
    }
    .channel(ChannelNameRouter::new().route("jobs", Jobs::as_app()))
    .channel_layer(layer);
    if args.worker_only {
        println!("worker for the jobs channel");
        let worker = Worker::new(app, ["jobs"]);
        let stop = worker.shutdown_handle();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.shutdown();
        });
        worker.run().await;
        return Ok(());
    }
    let app = std::sync::Arc::new(app);
    let worker = (!args.web_only).then(|| {
        let worker = Worker::with_layer(app.clone(), app.layer().clone(), ["jobs"]);
        let stop = worker.shutdown_handle();
        (tokio::spawn(worker.run()), stop)
    });
    let server = channels::Server::new(app).shutdown_on_signals().bind(&args.addr).await?;
    println!("jobs on http://{}/jobs/, results on ws://{0}/ws/jobs/", server.local_addr());
    server.run().await?;
    if let Some((task, stop)) = worker {
        stop.shutdown();
        let _ = task.await;
    }
    Ok(())
}
