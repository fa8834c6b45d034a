//! The channel-layer contract, through the `ChannelLayer` trait, against both backends: the
//! behaviours Django Channels' own layer tests check (send/receive, capacity, expiry, groups,
//! flush, names, process-local channels, several receivers) plus what this crate promises
//! (dropped-member counting, 1 MiB messages).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use channels::event::ChannelMessage;
use channels::layers::{Layer, LayerConfig, LayerError};
use serde_json::json;
use support::{Backend, make_layer, within};

fn message(n: u64) -> ChannelMessage {
    json!({ "type": "test.message", "n": n }).into()
}

fn n_of(message: &ChannelMessage) -> u64 {
    message.value()["n"].as_u64().expect("n")
}

/// Receives with a short bound; `None` when nothing comes (used to show absence).
async fn try_receive(layer: &Layer, channel: &str) -> Option<ChannelMessage> {
    tokio::time::timeout(Duration::from_millis(300), layer.receive(channel)).await.ok().map(|r| r.unwrap())
}

fn small(capacity: usize, expiry_ms: u64, group_expiry_ms: u64) -> LayerConfig {
    LayerConfig {
        capacity,
        expiry: Duration::from_millis(expiry_ms),
        group_expiry: Duration::from_millis(group_expiry_ms),
        ..LayerConfig::default()
    }
}

/// The log lines written while `f` runs on this thread.
async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
    let lines = support::LogLines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let output = f.await;
    drop(guard);
    (output, lines.text())
}

mod cases {
    use super::*;

    pub async fn a_dropped_receive_loses_nothing(layer: Layer) {
        // Receives given up on (timeouts, a `select!`), with a pop still in flight on Redis.
        for _ in 0..5 {
            assert!(tokio::time::timeout(Duration::from_millis(20), layer.receive("test.cancel")).await.is_err());
        }
        for n in 0..3 {
            layer.send("test.cancel", message(n)).await.unwrap();
        }
        for n in 0..3 {
            assert_eq!(n_of(&within(layer.receive("test.cancel")).await.unwrap()), n, "in order, none lost");
        }
    }

    pub async fn a_flood_of_drops_logs_a_few_summary_lines(layer: Layer) {
        layer.group_add("test.flooded", "test.full").await.unwrap();
        let ((), log) = logged(async {
            for n in 0..2_000 {
                layer.group_send("test.flooded", message(n)).await.unwrap();
            }
        })
        .await;
        assert_eq!(layer.stats().dropped, 2_000 - 3, "all but the capacity are dropped, and counted");
        let lines = log.lines().filter(|line| line.contains("dropped")).count();
        assert!((1..=2).contains(&lines), "{lines} lines for 1,997 drops:\n{log}");
        assert!(log.contains("test.flooded"), "the summary names the group: {log}");
    }

    pub async fn send_then_receive(layer: Layer) {
        layer.send("test.channel", message(1)).await.unwrap();
        let got = within(layer.receive("test.channel")).await.unwrap();
        assert_eq!(got.message_type(), Some("test.message"));
        assert_eq!(n_of(&got), 1);
    }

    pub async fn receive_waits_for_a_later_send(layer: Layer) {
        let receiver = {
            let layer = layer.clone();
            tokio::spawn(async move { layer.receive("test.later").await })
        };
        tokio::task::yield_now().await;
        layer.send("test.later", message(7)).await.unwrap();
        assert_eq!(n_of(&within(receiver).await.unwrap().unwrap()), 7);
    }

    pub async fn messages_arrive_in_send_order(layer: Layer) {
        for n in 0..20 {
            layer.send("test.fifo", message(n)).await.unwrap();
        }
        for n in 0..20 {
            assert_eq!(n_of(&within(layer.receive("test.fifo")).await.unwrap()), n);
        }
    }

    pub async fn full_channel_refuses_send(layer: Layer) {
        for n in 0..3 {
            layer.send("test.full", message(n)).await.unwrap();
        }
        let err = layer.send("test.full", message(3)).await.unwrap_err();
        assert!(matches!(err, LayerError::ChannelFull { capacity: 3, .. }), "{err:?}");
        within(layer.receive("test.full")).await.unwrap();
        layer.send("test.full", message(4)).await.expect("room again after a receive");
    }

    pub async fn group_send_skips_full_members_and_counts_them(layer: Layer) {
        layer.group_add("test.group", "test.a").await.unwrap();
        layer.group_add("test.group", "test.b").await.unwrap();
        for n in 0..3 {
            layer.send("test.a", message(n)).await.unwrap();
        }
        let before = layer.stats();
        layer.group_send("test.group", message(100)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive("test.b")).await.unwrap()), 100);
        for n in 0..3 {
            assert_eq!(n_of(&within(layer.receive("test.a")).await.unwrap()), n, "a keeps its own messages");
        }
        assert!(try_receive(&layer, "test.a").await.is_none(), "the full member did not get the group message");
        assert_eq!(layer.stats().dropped - before.dropped, 1);
    }

    pub async fn messages_expire(layer: Layer) {
        layer.send("test.expiry", message(1)).await.unwrap();
        // The behaviour under test is time passing: wait past the 200 ms expiry.
        tokio::time::sleep(Duration::from_millis(400)).await;
        layer.send("test.expiry", message(2)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive("test.expiry")).await.unwrap()), 2, "the expired message is gone");
    }

    pub async fn group_memberships_expire(layer: Layer) {
        layer.group_add("test.lapsing", "test.member").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        layer.group_send("test.lapsing", message(1)).await.unwrap();
        assert!(try_receive(&layer, "test.member").await.is_none());
        // Re-adding renews the membership.
        layer.group_add("test.lapsing", "test.member").await.unwrap();
        layer.group_send("test.lapsing", message(2)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive("test.member")).await.unwrap()), 2);
    }

    pub async fn group_add_discard_and_send(layer: Layer) {
        for channel in ["test.one", "test.two"] {
            layer.group_add("test.room", channel).await.unwrap();
        }
        layer.group_send("test.room", message(1)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive("test.one")).await.unwrap()), 1);
        assert_eq!(n_of(&within(layer.receive("test.two")).await.unwrap()), 1);
        layer.group_discard("test.room", "test.one").await.unwrap();
        layer.group_discard("test.room", "test.never-joined").await.expect("discarding a non-member is fine");
        layer.group_send("test.room", message(2)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive("test.two")).await.unwrap()), 2);
        assert!(try_receive(&layer, "test.one").await.is_none());
        layer.group_send("test.nobody", message(3)).await.expect("an empty group is fine");
    }

    pub async fn flush_drops_messages_and_groups(layer: Layer) {
        layer.send("test.flushed", message(1)).await.unwrap();
        layer.group_add("test.flushed-group", "test.flushed").await.unwrap();
        layer.flush().await.unwrap();
        assert!(try_receive(&layer, "test.flushed").await.is_none());
        layer.group_send("test.flushed-group", message(2)).await.unwrap();
        assert!(try_receive(&layer, "test.flushed").await.is_none());
    }

    pub async fn bad_names_and_messages_are_typed_errors(layer: Layer) {
        let invalid = |result: Result<(), LayerError>| matches!(result, Err(LayerError::InvalidName { .. }));
        assert!(invalid(layer.send("bad name", message(1)).await));
        assert!(invalid(layer.send(&"x".repeat(100), message(1)).await));
        assert!(invalid(layer.send("a!b!c", message(1)).await));
        assert!(invalid(layer.group_add("bad/group", "test.ok").await));
        assert!(invalid(layer.group_add("test.ok", "bad channel").await));
        assert!(invalid(layer.group_send("bad group", message(1)).await));
        assert!(matches!(layer.receive("bad name").await, Err(LayerError::InvalidName { .. })));
        let untyped: ChannelMessage = json!({ "text": "no type" }).into();
        assert_eq!(layer.send("test.ok", untyped.clone()).await, Err(LayerError::InvalidMessage));
        assert_eq!(layer.group_send("test.ok", untyped).await, Err(LayerError::InvalidMessage));
        let err = layer.send("bad name", message(1)).await.unwrap_err().to_string();
        assert!(err.contains("ASCII letters"), "the error names the rule: {err}");
    }

    pub async fn process_local_channels(layer: Layer) {
        let a = layer.new_channel("specific").unwrap();
        let b = layer.new_channel("specific").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("specific.") && a.matches('!').count() == 1, "{a}");
        layer.send(&a, message(1)).await.unwrap();
        layer.send(&b, message(2)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive(&b)).await.unwrap()), 2);
        assert_eq!(n_of(&within(layer.receive(&a)).await.unwrap()), 1);
        assert!(matches!(layer.new_channel("bad prefix"), Err(LayerError::InvalidName { .. })));
    }

    pub async fn several_receivers_share_one_channel(layer: Layer) {
        // Both wait (or will: a message sent before a receiver waits is kept for it).
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let layer = layer.clone();
                tokio::spawn(async move { layer.receive("test.shared").await })
            })
            .collect();
        layer.send("test.shared", message(1)).await.unwrap();
        layer.send("test.shared", message(2)).await.unwrap();
        let mut got = HashSet::new();
        for receiver in receivers {
            got.insert(n_of(&within(receiver).await.unwrap().unwrap()));
        }
        assert_eq!(got, HashSet::from([1, 2]), "each message to exactly one receiver");
    }

    pub async fn large_messages_pass(layer: Layer) {
        let big = "x".repeat(1536 * 1024);
        layer.send("test.big", json!({ "type": "test.big", "data": big }).into()).await.unwrap();
        let got = within(layer.receive("test.big")).await.unwrap();
        assert_eq!(got.value()["data"].as_str().map(str::len), Some(1536 * 1024));
        layer.group_add("test.big-group", "test.big").await.unwrap();
        layer.group_send("test.big-group", json!({ "type": "test.big", "data": big }).into()).await.unwrap();
        assert_eq!(
            within(layer.receive("test.big")).await.unwrap().value()["data"].as_str().map(str::len),
            Some(big.len())
        );
    }
}

backend_tests! {
    memory, redis, cases, "redis-":
    send_then_receive: LayerConfig::default();
    receive_waits_for_a_later_send: LayerConfig::default();
    messages_arrive_in_send_order: LayerConfig::default();
    full_channel_refuses_send: small(3, 60_000, 60_000);
    group_send_skips_full_members_and_counts_them: small(3, 60_000, 60_000);
    messages_expire: small(100, 200, 60_000);
    group_memberships_expire: small(100, 60_000, 200);
    group_add_discard_and_send: LayerConfig::default();
    flush_drops_messages_and_groups: LayerConfig::default();
    bad_names_and_messages_are_typed_errors: LayerConfig::default();
    process_local_channels: LayerConfig::default();
    several_receivers_share_one_channel: LayerConfig::default();
    large_messages_pass: LayerConfig::default();
    a_flood_of_drops_logs_a_few_summary_lines: small(3, 60_000, 60_000);
    a_dropped_receive_loses_nothing: LayerConfig::default();
}

/// Receiving on another instance's process-specific channel fails at once, on both backends.
async fn another_instances_process_channel_is_refused(first: Layer, second: Layer, shared: bool) {
    let mine = first.new_channel("specific").unwrap();
    let err = within(second.receive(&mine)).await.unwrap_err();
    assert!(matches!(&err, LayerError::NotLocal { channel } if *channel == mine), "{err:?}");
    // Sending to it from another process sharing the layer (Redis) still works; its owner
    // receives.
    let sender = if shared { &second } else { &first };
    sender.send(&mine, message(5)).await.unwrap();
    assert_eq!(n_of(&within(first.receive(&mine)).await.unwrap()), 5);
}

#[tokio::test]
async fn memory_refuses_receive_on_another_instances_process_channel() {
    let first = make_layer(Backend::Memory, LayerConfig::default(), "memory-not-local").await.unwrap();
    let second = make_layer(Backend::Memory, LayerConfig::default(), "memory-not-local").await.unwrap();
    another_instances_process_channel_is_refused(first, second, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_receive_on_another_processs_channel() {
    let Some(first) = make_layer(Backend::Redis, LayerConfig::default(), "redis-not-local").await else { return };
    let Some(second) = make_layer(Backend::Redis, LayerConfig::default(), "redis-not-local").await else { return };
    another_instances_process_channel_is_refused(first, second, true).await;
}

/// A cluster URL is the only host, is not for channels_redis's wire, takes no braces in the
/// key prefix (they would replace the groups' hash tags), and a configuration's
/// `Debug` (in logs, panics) never shows a password.
#[tokio::test]
async fn redis_cluster_misconfigurations_are_refused_and_passwords_stay_out_of_debug() {
    use channels::layers::{RedisChannelLayer, RedisLayerConfig};
    let mut two = RedisLayerConfig::new("redis+cluster://127.0.0.1:1");
    two.hosts.push("redis://127.0.0.1:2".to_owned());
    let err = RedisChannelLayer::connect_with(two).await.unwrap_err();
    assert!(err.to_string().contains("must be the only host"), "{err}");
    let python = RedisLayerConfig::new("redis+cluster://127.0.0.1:1").channels_redis();
    let err = RedisChannelLayer::connect_with(python).await.unwrap_err();
    assert!(err.to_string().contains("does not speak to a Redis Cluster"), "{err}");
    let braces =
        RedisLayerConfig { prefix: "app{1}".to_owned(), ..RedisLayerConfig::new("redis+cluster://127.0.0.1:1") };
    let err = RedisChannelLayer::connect_with(braces).await.unwrap_err();
    assert!(err.to_string().contains("may not contain '{'"), "{err}");
    let err = RedisChannelLayer::connect("redis+cluster://127.0.0.1:1/3").await.unwrap_err();
    assert!(err.to_string().contains("one database"), "{err}");
    let config = RedisLayerConfig::new("redis+cluster://user:hunter2@127.0.0.1:7000,127.0.0.1:7001");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2") && shown.contains("user:***@127.0.0.1:7000"), "{shown}");
}
