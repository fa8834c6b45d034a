//! Group fan-out: one `group_send` to 1,000 members, until every member has received it.
//! Throughput is in deliveries per second. The Redis variant runs when `REDIS_URL` is set.
//!
//! `cargo bench -p channels-bench --bench fanout` (add `REDIS_URL=redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use channels::layers::{InMemoryChannelLayer, Layer, RedisChannelLayer, RedisLayerConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const MEMBERS: u64 = 1000;

/// 1,000 members of `bench.fanout`, each received by a task that counts deliveries.
struct Fanout {
    layer: Layer,
    received: Arc<AtomicU64>,
    progress: Arc<Notify>,
}

impl Fanout {
    async fn new(layer: Layer) -> Fanout {
        let received = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        for _ in 0..MEMBERS {
            let channel = layer.new_channel("specific").expect("channel");
            layer.group_add("bench.fanout", &channel).await.expect("group_add");
            let mut subscription = layer.subscribe(&channel).expect("subscribe");
            let (received, progress) = (received.clone(), progress.clone());
            tokio::spawn(async move {
                while subscription.recv().await.message_type().is_some() {
                    if received.fetch_add(1, Ordering::Relaxed) % MEMBERS == MEMBERS - 1 {
                        progress.notify_one();
                    }
                }
            });
        }
        Fanout { layer, received, progress }
    }

    /// `iters` group sends, each awaited until all members have it.
    async fn run(&self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let target = self.received.load(Ordering::Relaxed) + MEMBERS;
            let message = serde_json::json!({ "type": "bench.tick", "text": "hello" }).into();
            self.layer.group_send("bench.fanout", message).await.expect("group_send");
            while self.received.load(Ordering::Relaxed) < target {
                self.progress.notified().await;
            }
        }
        start.elapsed()
    }
}

fn bench(c: &mut Criterion, name: &str, runtime: &Runtime, layer: Layer) {
    let fanout = runtime.block_on(Fanout::new(layer));
    let mut group = c.benchmark_group("group_send");
    group.throughput(Throughput::Elements(MEMBERS));
    group.bench_function(name, |b| b.iter_custom(|iters| runtime.block_on(fanout.run(iters))));
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    bench(c, "in_memory_1000_members", &runtime, InMemoryChannelLayer::new().into_layer());
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let config = RedisLayerConfig { prefix: "bench".to_owned(), ..RedisLayerConfig::new(url) };
            let layer = runtime.block_on(RedisChannelLayer::connect_with(config)).expect("connect to REDIS_URL");
            let layer = layer.into_layer();
            runtime.block_on(layer.flush()).expect("flush");
            bench(c, "redis_1000_members", &runtime, layer);
        }
        Err(_) => eprintln!("SKIPPED redis_1000_members: REDIS_URL is not set"),
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
