//! Consumers on a channel layer, against both backends: declared groups joined before
//! `connect` and left on every exit path, `group_send` from outside dispatched by type, the
//! per-user close, and churn (1,000 connections joining and leaving during a broadcast).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use channels::layers::{Layer, LayerConfig, close_message, user_group};
use channels::prelude::*;
use channels::routing;
use channels::testing::{TestError, WebsocketCommunicator};
use serde_json::json;
use support::{Backend, Member, make_layer, within};

fn app(layer: &Layer) -> Arc<ProtocolTypeRouter> {
    Arc::new(routing! { websocket: [ "rooms/<slug:room>/<slug:user>/" => Member ] }.channel_layer(layer.clone()))
}

async fn join(app: &Arc<ProtocolTypeRouter>, room: &str, user: &str) -> WebsocketCommunicator {
    let mut ws = WebsocketCommunicator::new(app.clone(), &format!("/rooms/{room}/{user}/")).with_timeout(support::WAIT);
    assert!(ws.connect().await.unwrap().accepted);
    ws
}

fn say(text: &str) -> ChannelMessage {
    json!({ "type": "room.say", "text": text }).into()
}

/// Sends to `group` until a send reaches nobody: the members have left (cleanup after an abort
/// or a panic runs in a spawned task, so it may take a moment).
async fn wait_until_empty(layer: &Layer, group: &str) {
    within(async {
        loop {
            let before = layer.stats().sent;
            layer.group_send(group, json!({ "type": "probe" }).into()).await.unwrap();
            if layer.stats().sent == before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

mod cases {
    use super::*;

    pub async fn group_send_from_outside_reaches_every_member(layer: Layer) {
        let app = app(&layer);
        let mut members = Vec::new();
        for user in ["ann", "bob", "cy"] {
            members.push(join(&app, "lobby", user).await);
        }
        let mut elsewhere = join(&app, "kitchen", "dee").await;
        layer.group_send("room.lobby", say("hello lobby")).await.unwrap();
        for member in &mut members {
            assert_eq!(member.receive_text().await.unwrap(), "hello lobby");
        }
        assert!(elsewhere.receive_nothing(Duration::from_millis(100)).await);
        // An unknown type is logged, not fatal: the members still get the next message.
        layer.group_send("room.lobby", json!({ "type": "room.unknown" }).into()).await.unwrap();
        layer.group_send("room.lobby", say("still here")).await.unwrap();
        for member in &mut members {
            assert_eq!(member.receive_text().await.unwrap(), "still here");
            member.disconnect(1000).await.unwrap();
        }
        elsewhere.disconnect(1000).await.unwrap();
        wait_until_empty(&layer, "room.lobby").await;
    }

    pub async fn groups_are_joined_before_connect_returns(layer: Layer) {
        let app = app(&layer);
        let mut ws = join(&app, "echo", "eve").await;
        assert_eq!(ws.receive_text().await.unwrap(), "eve joined");
        ws.disconnect(1000).await.unwrap();
    }

    pub async fn groups_are_left_on_disconnect_abort_and_panic(layer: Layer) {
        let app = app(&layer);
        let mut polite = join(&app, "exits", "polite").await;
        polite.disconnect(1000).await.unwrap();
        let aborted = join(&app, "exits", "aborted").await;
        drop(aborted); // the connection's task is cancelled mid-flight
        let mut panicking = join(&app, "exits", "panicking").await;
        panicking.send_text("panic").await.unwrap();
        assert!(matches!(panicking.receive_from().await, Err(TestError::App(AppError::Panicked(_)))));
        wait_until_empty(&layer, "room.exits").await;
        for user in ["polite", "aborted", "panicking"] {
            wait_until_empty(&layer, &user_group(user).unwrap()).await;
        }
    }

    pub async fn per_user_group_closes_every_socket_of_that_user(layer: Layer) {
        let app = app(&layer);
        let mut tabs = vec![join(&app, "lobby", "mallory").await, join(&app, "kitchen", "mallory").await];
        let mut other = join(&app, "lobby", "trent").await;
        // Logout or a password change: close all of the user's sockets.
        layer.group_send(&user_group("mallory").unwrap(), close_message(4001)).await.unwrap();
        for tab in &mut tabs {
            assert_eq!(tab.receive_close().await.unwrap().code, 4001);
        }
        assert!(other.receive_nothing(Duration::from_millis(100)).await);
        other.disconnect(1000).await.unwrap();
    }

    /// 1,000 connections join and leave a group while ticks are broadcast to it: every member
    /// gets every tick sent wholly during its membership exactly once, none twice, and
    /// nothing is left behind.
    pub async fn churn_delivers_exactly_once_and_leaks_nothing(layer: Layer) {
        let app = app(&layer);
        let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let started = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let sender = {
            let (layer, started, finished) = (layer.clone(), started.clone(), finished.clone());
            tokio::spawn(async move {
                for n in 0..300u64 {
                    started.store(n + 1, Ordering::SeqCst);
                    layer.group_send("room.churn", say(&n.to_string())).await.unwrap();
                    finished.store(n + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let members = (0..1000u64).map(|i| {
            let (app, started, finished) = (app.clone(), started.clone(), finished.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 500)).await;
                let mut ws = join(&app, "churn", &format!("u{i}")).await;
                // Ticks numbered `first..` start after the join completed.
                let first = started.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20 + (i * 7) % 200)).await;
                // Ticks numbered `..last` finished before leaving starts.
                let last = finished.load(Ordering::SeqCst);
                let mut seen = HashSet::new();
                while (first..last).any(|n| !seen.contains(&n)) {
                    let tick: u64 = ws.receive_text().await.unwrap().parse().unwrap();
                    assert!(seen.insert(tick), "member {i} got tick {tick} twice");
                }
                ws.disconnect(1000).await.unwrap();
            })
        });
        let members: Vec<_> = members.collect();
        for member in members {
            tokio::time::timeout(Duration::from_secs(30), member).await.expect("member finished").unwrap();
        }
        sender.await.unwrap();
        wait_until_empty(&layer, "room.churn").await;
        drop(app);
        let alive = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let settled = tokio::time::timeout(support::WAIT, async {
            while alive() > tasks_before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(settled.is_ok(), "tasks leaked: {} alive, {tasks_before} before", alive());
    }
}

macro_rules! group_tests {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let layer = make_layer(Backend::Memory, LayerConfig::default(), stringify!($case)).await.unwrap();
                    cases::$case(layer).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test = concat!("groups-", stringify!($case));
                    let Some(layer) = make_layer(Backend::Redis, LayerConfig::default(), test).await else { return };
                    cases::$case(layer).await;
                }
            )*
        }
    };
}

group_tests! {
    group_send_from_outside_reaches_every_member,
    groups_are_joined_before_connect_returns,
    groups_are_left_on_disconnect_abort_and_panic,
    per_user_group_closes_every_socket_of_that_user,
    churn_delivers_exactly_once_and_leaks_nothing,
}
