//! Group fan-out: one `group_send` to 1,000 (and 10) members, until every member has received
//! it, to a plain group and to one that keeps a history (`*_history`: positions stamped, the
//! message appended to the history). Throughput is in deliveries per second. The Redis
//! variants (members spread over two layers, as over two server processes) run when
//! `REDIS_URL` is set.
//!
//! `cargo bench -p channels-bench --bench fanout` (add `REDIS_URL=redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use channels::layers::{HistoryConfig, InMemoryChannelLayer, Layer, LayerConfig, RedisChannelLayer, RedisLayerConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// `members` members of `group`, each received by a task that counts deliveries.
struct Fanout {
    layer: Layer,
    group: &'static str,
    members: u64,
    received: Arc<AtomicU64>,
    progress: Arc<Notify>,
}

impl Fanout {
    /// Members spread round-robin over `layers` (several Redis layers stand for several
    /// server processes); the first one sends.
    async fn new(layers: &[Layer], group: &'static str, members: u64) -> Fanout {
        let received = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        for (layer, _) in layers.iter().cycle().zip(0..members) {
            let channel = layer.new_channel("specific").expect("channel");
            layer.group_add(group, &channel).await.expect("group_add");
            let mut subscription = layer.subscribe(&channel).expect("subscribe");
            let (received, progress) = (received.clone(), progress.clone());
            tokio::spawn(async move {
                while subscription.recv().await.message_type().is_some() {
                    if received.fetch_add(1, Ordering::Relaxed) % members == members - 1 {
                        progress.notify_one();
                    }
                }
            });
        }
        Fanout { layer: layers[0].clone(), group, members, received, progress }
    }

    /// `iters` group sends, each awaited until all members have it.
    async fn run(&self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let target = self.received.load(Ordering::Relaxed) + self.members;
            let message = serde_json::json!({ "type": "bench.tick", "text": "hello" }).into();
            self.layer.group_send(self.group, message).await.expect("group_send");
            while self.received.load(Ordering::Relaxed) < target {
                self.progress.notified().await;
            }
        }
        start.elapsed()
    }
}

/// Plain and history groups of 1,000 and 10 members on `layers`, named
/// `<backend>_<n>_members[_history]`.
fn bench(c: &mut Criterion, backend: &str, runtime: &Runtime, layers: &[Layer]) {
    for (members, plain, kept) in [(1000, "bench.fanout", "history.fanout"), (10, "bench.small", "history.small")] {
        for (group, suffix) in [(plain, ""), (kept, "_history")] {
            let fanout = runtime.block_on(Fanout::new(layers, group, members));
            let mut benchmarks = c.benchmark_group("group_send");
            benchmarks.throughput(Throughput::Elements(members));
            let name = format!("{backend}_{members}_members{suffix}");
            benchmarks.bench_function(name, |b| b.iter_custom(|iters| runtime.block_on(fanout.run(iters))));
            benchmarks.finish();
        }
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // `history.*` groups keep their last 1,000 messages.
    let config = LayerConfig::default().with_history("history.", HistoryConfig::last(1_000));
    bench(c, "in_memory", &runtime, &[InMemoryChannelLayer::with_config(config.clone()).into_layer()]);
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let config = RedisLayerConfig { prefix: "bench".to_owned(), layer: config, ..RedisLayerConfig::new(url) };
            // Two layers: two server processes' worth of members (each has its own key and
            // receive loop), half of the members on each.
            let connect = || runtime.block_on(RedisChannelLayer::connect_with(config.clone())).expect("REDIS_URL");
            let layers = [connect().into_layer(), connect().into_layer()];
            runtime.block_on(layers[0].flush()).expect("flush");
            bench(c, "redis_2_processes", &runtime, &layers);
        }
        Err(_) => eprintln!("SKIPPED redis_*: REDIS_URL is not set"),
    }
}

/// The send path alone, without cross-thread wake-ups: one `group_send` to 10 members on one
/// thread, each member's message then taken with a no-op waker. Plain group vs one with history.
fn send_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let config = LayerConfig::default().with_history("history.", HistoryConfig::last(1_000));
    let layer = InMemoryChannelLayer::with_config(config).into_layer();
    let mut benchmarks = c.benchmark_group("group_send_path");
    benchmarks.throughput(Throughput::Elements(10));
    for (group, name) in [("bench.path", "in_memory_10_members"), ("history.path", "in_memory_10_members_history")] {
        let mut members: Vec<_> = (0..10)
            .map(|_| {
                let channel = layer.new_channel("specific").expect("channel");
                runtime.block_on(layer.group_add(group, &channel)).expect("group_add");
                layer.subscribe(&channel).expect("subscribe")
            })
            .collect();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        benchmarks.bench_function(name, |b| {
            b.iter(|| {
                let message = serde_json::json!({ "type": "bench.tick", "text": "hello" }).into();
                runtime.block_on(layer.group_send(group, message)).expect("group_send");
                for member in &mut members {
                    assert!(member.poll_recv(&mut cx).is_ready());
                }
            });
        });
    }
    benchmarks.finish();
}

criterion_group!(benches, fanout, send_path);
criterion_main!(benches);
