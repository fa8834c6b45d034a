//! Presence on both layers: track / untrack / list with several tabs per key, diffs to the
//! group's members in order, consumers tracked while connected (however they end), and with
//! Redis, a dead process's entries lapsing from another process's list.

mod support;

use std::sync::Arc;
use std::time::Duration;

use channels::layers::{Layer, LayerConfig, PresenceDiff, PresenceState, Track};
use channels::prelude::*;
use channels::testing::WebsocketCommunicator;
use channels::{consumer, routing};
use serde_json::{Value, json};
use support::{Backend, make_layer, within};

async fn diff(layer: &Layer, channel: &str) -> PresenceDiff {
    let message = within(layer.receive(channel)).await.unwrap();
    assert_eq!(message.message_type(), Some("presence.diff"));
    message.deserialize().unwrap()
}

fn keys(state: &PresenceState) -> Vec<(&str, usize)> {
    state.iter().map(|(key, metas)| (key.as_str(), metas.len())).collect()
}

mod cases {
    use super::*;

    pub async fn track_list_untrack_with_several_tabs(layer: Layer) {
        let watcher = layer.new_channel("specific").unwrap();
        layer.group_add("room.p", &watcher).await.unwrap();
        let tabs: Vec<String> = (0..3).map(|_| layer.new_channel("specific").unwrap()).collect();
        layer.presence_track("room.p", &tabs[0], "alice", json!({ "device": "laptop" })).await.unwrap();
        layer.presence_track("room.p", &tabs[1], "alice", json!({ "device": "phone" })).await.unwrap();
        layer.presence_track("room.p", &tabs[2], "bob", json!({})).await.unwrap();
        let state = layer.presence_list("room.p").await.unwrap();
        assert_eq!(keys(&state), [("alice", 2), ("bob", 1)]);
        let mut devices: Vec<&Value> = state["alice"].iter().map(|meta| &meta.meta["device"]).collect();
        devices.sort_by_key(|device| device.to_string());
        assert_eq!(devices, [&json!("laptop"), &json!("phone")]);
        // The diffs came in order, one per change, with the entry's id.
        let first = diff(&layer, &watcher).await;
        assert_eq!((first.group.as_str(), first.joins["alice"][0].meta["device"].as_str()), ("room.p", Some("laptop")));
        assert!(first.leaves.is_empty());
        assert_eq!(diff(&layer, &watcher).await.joins["alice"][0].meta["device"], "phone");
        assert!(diff(&layer, &watcher).await.joins.contains_key("bob"));
        // Tracking again with the same meta changes nothing.
        layer.presence_track("room.p", &tabs[2], "bob", json!({})).await.unwrap();
        // One of alice's tabs leaves: alice is still there.
        layer.presence_untrack("room.p", &tabs[0]).await.unwrap();
        let left = diff(&layer, &watcher).await;
        assert_eq!(left.leaves["alice"][0].id, first.joins["alice"][0].id);
        assert!(left.joins.is_empty());
        assert_eq!(keys(&layer.presence_list("room.p").await.unwrap()), [("alice", 1), ("bob", 1)]);
        layer.presence_untrack("room.p", &tabs[1]).await.unwrap();
        layer.presence_untrack("room.p", &tabs[1]).await.unwrap(); // not tracked: no diff
        layer.presence_untrack("room.p", &tabs[2]).await.unwrap();
        assert!(diff(&layer, &watcher).await.leaves.contains_key("alice"));
        assert!(diff(&layer, &watcher).await.leaves.contains_key("bob"));
        assert!(layer.presence_list("room.p").await.unwrap().is_empty());
        assert!(tokio::time::timeout(Duration::from_millis(200), layer.receive(&watcher)).await.is_err());
    }

    pub async fn consumers_are_tracked_while_connected(layer: Layer) {
        let app = app(&layer);
        let mut alice = connect(&app, "/rooms/q/alice/").await;
        let state: Value = alice.receive_json_from().await.unwrap();
        assert_eq!(state["presence_state"]["alice"][0]["meta"], json!({ "name": "alice" }));
        // Its own join diff follows (a client merges by id: no change).
        let own: Value = alice.receive_json_from().await.unwrap();
        assert!(own["presence_diff"]["joins"]["alice"].is_array());
        let mut bob = connect(&app, "/rooms/q/bob/").await;
        let state: Value = bob.receive_json_from().await.unwrap();
        assert_eq!(keys_of(&state["presence_state"]), ["alice", "bob"]);
        let joined: Value = alice.receive_json_from().await.unwrap();
        assert!(joined["presence_diff"]["joins"]["bob"].is_array());
        // bob's connection drops without a close frame: alice hears that he left.
        bob.disconnect(1006).await.unwrap();
        let left: Value = alice.receive_json_from().await.unwrap();
        assert!(left["presence_diff"]["leaves"]["bob"].is_array(), "{left}");
        assert_eq!(keys(&layer.presence_list("room.q").await.unwrap()), [("alice", 1)]);
        // A consumer that panics is untracked too.
        let mut carol = connect(&app, "/rooms/q/carol/").await;
        let _ = alice.receive_json_from::<Value>().await.unwrap();
        carol.send_text("panic").await.unwrap();
        let left: Value = alice.receive_json_from().await.unwrap();
        assert!(left["presence_diff"]["leaves"]["carol"].is_array(), "{left}");
        alice.disconnect(1000).await.unwrap();
        within(async {
            while !layer.presence_list("room.q").await.unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

fn keys_of(state: &Value) -> Vec<&str> {
    state.as_object().unwrap().keys().map(String::as_str).collect()
}

#[consumer(websocket)]
struct Member {
    #[url]
    room: String,
    #[url]
    user: String,
}

#[consumer]
impl Member {
    fn groups(&self) -> Vec<String> {
        vec![format!("room.{}", self.room)]
    }

    fn presence(&self) -> Option<Track> {
        Some(Track::new(format!("room.{}", self.room), &self.user, json!({ "name": self.user })))
    }

    async fn receive(&mut self, _ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        assert_ne!(message.as_text(), Some("panic"), "asked to panic");
        Ok(())
    }
}

fn app(layer: &Layer) -> Arc<ProtocolTypeRouter> {
    Arc::new(routing! { websocket: [ "rooms/<slug:room>/<slug:user>/" => Member ] }.channel_layer(layer.clone()))
}

async fn connect(app: &Arc<ProtocolTypeRouter>, path: &str) -> WebsocketCommunicator {
    let mut ws = WebsocketCommunicator::new(app.clone(), path).with_timeout(support::WAIT);
    assert!(ws.connect().await.unwrap().accepted);
    ws
}

backend_tests! {
    memory, redis, cases, "redis-presence-":
    track_list_untrack_with_several_tabs: LayerConfig::default();
    consumers_are_tracked_while_connected: LayerConfig::default();
}

/// Two layer instances stand for two processes on one Redis; the first one dies (its heartbeat
/// stops with it): within the presence TTL its entries leave the second one's list, and the
/// second process's members get the leave diff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_processs_entries_lapse_on_the_others() {
    use channels::layers::{RedisChannelLayer, RedisLayerConfig};
    let Some(url) = support::redis_url("presence-dead-process") else { return };
    let config = RedisLayerConfig {
        prefix: format!("test-presence-dead-{}", std::process::id()),
        presence_ttl: Duration::from_millis(900),
        ..RedisLayerConfig::new(url)
    };
    let survivor = RedisChannelLayer::connect_with(config.clone()).await.unwrap().into_layer();
    survivor.flush().await.unwrap();
    let doomed = RedisChannelLayer::connect_with(config).await.unwrap().into_layer();
    let (mine, theirs) = (survivor.new_channel("specific").unwrap(), doomed.new_channel("specific").unwrap());
    survivor.group_add("room.z", &mine).await.unwrap();
    survivor.presence_track("room.z", &mine, "sam", json!({})).await.unwrap();
    doomed.presence_track("room.z", &theirs, "dora", json!({})).await.unwrap();
    assert!(diff(&survivor, &mine).await.joins.contains_key("sam"));
    assert!(diff(&survivor, &mine).await.joins.contains_key("dora"));
    // Heartbeats keep both alive past the TTL.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(keys(&survivor.presence_list("room.z").await.unwrap()), [("dora", 1), ("sam", 1)]);
    drop(doomed);
    let started = std::time::Instant::now();
    let left = diff(&survivor, &mine).await;
    assert!(left.leaves.contains_key("dora") && left.joins.is_empty(), "{left:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "lapsed within TTL + one renewal: {:?}", started.elapsed());
    assert_eq!(keys(&survivor.presence_list("room.z").await.unwrap()), [("sam", 1)]);
}

/// Tracking a connection again with another meta is a leave of the old entry and a join of the
/// new one, in one diff, on both layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_meta_is_one_diff_on_both_layers() {
    for backend in [Backend::Memory, Backend::Redis] {
        let Some(layer) = make_layer(backend, LayerConfig::default(), "presence-meta-change").await else { return };
        let me = layer.new_channel("specific").unwrap();
        layer.group_add("room.m", &me).await.unwrap();
        layer.presence_track("room.m", &me, "ann", json!({ "status": "here" })).await.unwrap();
        assert!(diff(&layer, &me).await.joins.contains_key("ann"));
        layer.presence_track("room.m", &me, "ann", json!({ "status": "away" })).await.unwrap();
        let changed = diff(&layer, &me).await;
        assert_eq!(changed.leaves["ann"][0].meta["status"], "here");
        assert_eq!(changed.joins["ann"][0].meta["status"], "away");
        assert_eq!(changed.leaves["ann"][0].id, changed.joins["ann"][0].id);
        assert_eq!(layer.presence_list("room.m").await.unwrap()["ann"][0].meta["status"], "away");
    }
}
