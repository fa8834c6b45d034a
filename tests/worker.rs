//! Workers (Channels' `runworker`): consumers bound to channel names, fed through the layer from
//! anywhere, on both layers; and the worker example as processes.

mod support;

use std::time::Duration;

use channels::consumer;
use channels::layers::{Layer, LayerConfig};
use channels::prelude::*;
use channels::routing::ChannelNameRouter;
use channels::worker::Worker;
use serde::Deserialize;
use serde_json::json;
use support::*;

#[derive(Deserialize)]
struct Job {
    n: u64,
}

/// Records what it handles in the `done` group; `n == 13` panics, `n == 7` fails.
#[consumer(protocol = "channel")]
struct Recorder {
    #[init(0)]
    handled_by_this_instance: u64,
}

#[consumer]
impl Recorder {
    async fn handle(&mut self, _outbox: &Outbox, _event: Inbound) -> Result<Flow, ConsumerError> {
        Ok(Flow::Continue)
    }

    #[handler("job.run")]
    async fn run(&mut self, _outbox: &Outbox, job: Job) -> Result<(), ConsumerError> {
        match job.n {
            13 => panic!("job 13 panics on purpose"),
            7 => return Err(ConsumerError::msg("job 7 fails on purpose")),
            _ => {}
        }
        self.handled_by_this_instance += 1;
        let channel = self.scope.channel_name.clone().unwrap_or_default();
        let done = json!({ "type": "job.done", "n": job.n, "channel": channel, "instance_count": self.handled_by_this_instance });
        self.scope.layer()?.send("test.results", done.into()).await?;
        Ok(())
    }
}

fn worker_app(layer: Layer) -> ProtocolTypeRouter {
    ProtocolTypeRouter::new()
        .channel(ChannelNameRouter::new().route("jobs", Recorder::as_app()).route("other-jobs", Recorder::as_app()))
        .channel_layer(layer)
}

fn job(n: u64) -> channels::event::ChannelMessage {
    json!({ "type": "job.run", "n": n }).into()
}

async fn result(layer: &Layer) -> serde_json::Value {
    within(layer.receive("test.results")).await.expect("a result").value().clone()
}

/// `sender` and `worker_layer` are one layer (in memory) or two processes' layers on one Redis.
async fn worker_runs_named_channels(sender: Layer, worker_layer: Layer) {
    let worker = Worker::new(worker_app(worker_layer), ["jobs", "other-jobs"]);
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    // In order, one instance per channel, dispatched by type.
    for n in 1..=5 {
        sender.send("jobs", job(n)).await.unwrap();
    }
    for n in 1..=5 {
        let done = result(&sender).await;
        assert_eq!((done["n"].as_u64(), done["channel"].as_str()), (Some(n), Some("jobs")));
        assert_eq!(done["instance_count"], n, "one long-lived instance serves the channel");
    }
    sender.send("other-jobs", job(100)).await.unwrap();
    assert_eq!(result(&sender).await["channel"], "other-jobs");

    // A failing or panicking instance is replaced; the next message is served.
    sender.send("jobs", job(7)).await.unwrap();
    sender.send("jobs", job(13)).await.unwrap();
    sender.send("jobs", job(8)).await.unwrap();
    let done = result(&sender).await;
    assert_eq!(done["n"], 8);
    assert_eq!(done["instance_count"], 1, "a new instance");
    // A message of a type no handler takes is logged; the instance goes on.
    sender.send("jobs", json!({ "type": "job.unknown" }).into()).await.unwrap();
    sender.send("jobs", job(9)).await.unwrap();
    assert_eq!(result(&sender).await["instance_count"], 2);

    stop.shutdown();
    within(running).await.unwrap();
    // Stopped: nothing receives any more.
    sender.send("jobs", job(10)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sender.receive("test.results")).await.is_err());
}

#[tokio::test]
async fn worker_runs_named_channels_in_memory() {
    let layer = make_layer(Backend::Memory, LayerConfig::default(), "worker-memory").await.unwrap();
    worker_runs_named_channels(layer.clone(), layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_named_channels_over_redis_from_another_process() {
    let Some(sender) = make_layer(Backend::Redis, LayerConfig::default(), "worker-redis").await else { return };
    let Some(worker) = make_layer(Backend::Redis, LayerConfig::default(), "worker-redis").await else { return };
    worker_runs_named_channels(sender, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_redis_share_a_channel() {
    let Some(sender) = make_layer(Backend::Redis, LayerConfig::default(), "worker-share").await else { return };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let layer = make_layer(Backend::Redis, LayerConfig::default(), "worker-share").await.unwrap();
        let worker = Worker::new(worker_app(layer), ["jobs"]);
        handles.push((worker.shutdown_handle(), tokio::spawn(worker.run())));
    }
    // (Jobs 7 and 13 fail on purpose: stay above them.)
    for n in 100..140 {
        sender.send("jobs", job(n)).await.unwrap();
    }
    let mut seen: Vec<u64> = Vec::new();
    for _ in 100..140 {
        seen.push(result(&sender).await["n"].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (100..140).collect::<Vec<_>>(), "each job exactly once");
    for (stop, task) in handles {
        stop.shutdown();
        within(task).await.unwrap();
    }
}

/// The worker example: HTTP queues a job, the worker runs it, a WebSocket hears the result.
async fn example_round_trip(web: std::net::SocketAddr) {
    let mut results = connect(web, "/ws/jobs/").await;
    // The socket has joined its group once it is accepted; give the worker a job.
    let response = raw_http(web, b"POST /jobs/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n10").await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let message = next_message(&mut results).await;
    let value: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(value, json!({ "n": 10, "sum": 55 }));
    let bad = raw_http(web, b"POST /jobs/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nten").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

#[tokio::test]
async fn worker_example_runs_jobs_in_one_process() {
    let addr = free_addr().await;
    let _example = Example::start("worker", &["--addr", &addr.to_string()]).await;
    wait_until_listening(addr).await;
    example_round_trip(addr).await;
}

#[tokio::test]
async fn worker_example_runs_jobs_in_a_separate_worker_process_over_redis() {
    let Some(url) = redis_url("worker_example_runs_jobs_in_a_separate_worker_process_over_redis") else { return };
    let addr = free_addr().await;
    let _web = Example::start("worker", &["--addr", &addr.to_string(), "--redis", &url, "--web-only"]).await;
    let _worker = Example::start("worker", &["--redis", &url, "--worker-only"]).await;
    wait_until_listening(addr).await;
    example_round_trip(addr).await;
}
