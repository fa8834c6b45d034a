//! Groups that keep a history, against both backends: positions, catch-up on join without a gap
//! or a duplicate, count and age limits, an epoch change, positions from the future or garbage,
//! many clients resuming during a stream of sends; and consumers resuming with `?since=`
//! (catch-up before live messages, `{"recovered": false}`, gaps filled from the history).

mod support;

use std::sync::Arc;
use std::time::Duration;

use channels::layers::{
    Catchup, GROUP_FIELD, HistoryConfig, Layer, LayerConfig, Lost, POSITION_FIELD, Position, Recovery, Since,
};
use channels::prelude::*;
use channels::testing::WebsocketCommunicator;
use channels::{consumer, routing};
use serde_json::{Value, json};
use support::within;

fn message(n: u64) -> ChannelMessage {
    json!({ "type": "room.say", "n": n }).into()
}

fn n_of(message: &ChannelMessage) -> u64 {
    message.value()["n"].as_u64().expect("n")
}

fn ns(catchup: &Catchup) -> Vec<u64> {
    catchup.messages.iter().map(n_of).collect()
}

fn position(message: &ChannelMessage) -> Position {
    Position::of(message).expect("a positioned message")
}

/// History on `room.*`: the last `max` messages, for `age` if given; channels hold 2,000.
fn config(max: usize, age: Option<Duration>) -> LayerConfig {
    let history = HistoryConfig::last(max);
    let history = match age {
        Some(age) => history.max_age(age),
        None => history,
    };
    LayerConfig { capacity: 2_000, ..LayerConfig::default() }.with_history("room.", history)
}

/// Sends `range` to `group` and returns the messages as a member received them.
async fn send_all(layer: &Layer, group: &str, range: std::ops::Range<u64>) -> Vec<ChannelMessage> {
    let probe = layer.new_channel("specific").unwrap();
    layer.group_add(group, &probe).await.unwrap();
    for n in range.clone() {
        layer.group_send(group, message(n)).await.unwrap();
    }
    let mut received = Vec::new();
    for _ in range {
        received.push(within(layer.receive(&probe)).await.unwrap());
    }
    layer.group_discard(group, &probe).await.unwrap();
    received
}

mod cases {
    use super::*;

    pub async fn messages_get_increasing_positions(layer: Layer) {
        let received = send_all(&layer, "room.a", 0..5).await;
        let positions: Vec<Position> = received.iter().map(position).collect();
        assert!(positions.iter().all(|p| p.epoch == positions[0].epoch));
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(received[0].value()[GROUP_FIELD], "room.a");
        // A group without history is untouched.
        let plain = layer.new_channel("specific").unwrap();
        let catchup = layer.group_join("plain.a", &plain, &Since::last(10)).await.unwrap();
        assert_eq!((catchup.position, catchup.messages.len()), (None, 0));
        layer.group_send("plain.a", message(1)).await.unwrap();
        let live = within(layer.receive(&plain)).await.unwrap();
        assert!(Position::of(&live).is_none() && live.value().get(GROUP_FIELD).is_none());
    }

    pub async fn a_sender_cannot_forge_a_position(layer: Layer) {
        let probe = layer.new_channel("specific").unwrap();
        layer.group_add("room.f", &probe).await.unwrap();
        let forged =
            json!({ "type": "room.say", "n": 1, POSITION_FIELD: "00000000000000ff-99", GROUP_FIELD: "room.x" });
        layer.group_send("room.f", forged.into()).await.unwrap();
        let received = within(layer.receive(&probe)).await.unwrap();
        assert_eq!(position(&received).offset, 1);
        assert_eq!(received.value()[GROUP_FIELD], "room.f");
    }

    /// Only a send to a group with history sets `__group__` / `__position__`: relayed through a
    /// plain send or group, a client's forged ones are removed (they would move a member's
    /// position and freeze its stream).
    pub async fn reserved_fields_are_removed_outside_history(layer: Layer) {
        let forged =
            || json!({ "type": "room.say", "n": 1, POSITION_FIELD: "3f2a9c01d4e5b6a7-999", GROUP_FIELD: "room.x" });
        let channel = layer.new_channel("specific").unwrap();
        layer.group_add("plain.x", &channel).await.unwrap();
        layer.send(&channel, forged().into()).await.unwrap();
        layer.group_send("plain.x", forged().into()).await.unwrap();
        for _ in 0..2 {
            let received = within(layer.receive(&channel)).await.unwrap();
            assert_eq!(received.value(), &json!({ "type": "room.say", "n": 1 }));
        }
    }

    pub async fn join_since_gives_every_later_message_then_live_ones(layer: Layer) {
        let sent = send_all(&layer, "room.b", 0..5).await;
        let alice = layer.new_channel("specific").unwrap();
        let catchup = layer.group_join("room.b", &alice, &Since::after(position(&sent[1]))).await.unwrap();
        assert_eq!(catchup.recovery, Recovery::Recovered);
        assert_eq!(ns(&catchup), [2, 3, 4]);
        assert_eq!(catchup.position, Some(position(&sent[4])));
        layer.group_send("room.b", message(5)).await.unwrap();
        let live = within(layer.receive(&alice)).await.unwrap();
        assert_eq!((n_of(&live), position(&live).offset), (5, 6));
        // Up to date: recovered, nothing to replay.
        let bob = layer.new_channel("specific").unwrap();
        let catchup = layer.group_join("room.b", &bob, &Since::after(position(&live))).await.unwrap();
        assert_eq!((catchup.recovery, catchup.messages.len()), (Recovery::Recovered, 0));
        // Fresh, with the last 2.
        let catchup = layer.group_history("room.b", &Since::last(2)).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::Fresh, vec![4, 5]));
    }

    pub async fn the_history_keeps_its_last_messages(layer: Layer) {
        let sent = send_all(&layer, "room.c", 0..10).await;
        let catchup = layer.group_history("room.c", &Since::after(position(&sent[6]))).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::Recovered, vec![7, 8, 9]));
        // Offset 7 (n = 6) is the oldest kept: resuming after it still works; before it, not.
        let catchup = layer.group_history("room.c", &Since::after(position(&sent[5]))).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::Recovered, vec![6, 7, 8, 9]));
        let too_old = Since { after: Some(position(&sent[4])), last: 2 };
        let catchup = layer.group_history("room.c", &too_old).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::NotRecovered(Lost::TooOld), vec![8, 9]));
    }

    pub async fn old_messages_expire(layer: Layer) {
        let sent = send_all(&layer, "room.d", 0..3).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let fresh = send_all(&layer, "room.d", 3..4).await;
        let catchup = layer.group_history("room.d", &Since::after(position(&sent[0]))).await.unwrap();
        assert_eq!(catchup.recovery, Recovery::NotRecovered(Lost::TooOld));
        let catchup = layer.group_history("room.d", &Since::after(position(&sent[2]))).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::Recovered, vec![3]));
        let catchup = layer.group_history("room.d", &Since::last(10)).await.unwrap();
        assert_eq!(ns(&catchup), [3]);
        // Past the age, a client that saw everything still resumes (nothing to give).
        tokio::time::sleep(Duration::from_millis(600)).await;
        let catchup = layer.group_history("room.d", &Since::after(position(&fresh[0]))).await.unwrap();
        assert_eq!((catchup.recovery, catchup.messages.len()), (Recovery::Recovered, 0));
    }

    pub async fn a_lost_history_is_a_new_epoch(layer: Layer) {
        let before = send_all(&layer, "room.e", 0..3).await;
        // Everything gone, as after a Redis restart without persistence.
        layer.flush().await.unwrap();
        let after = send_all(&layer, "room.e", 3..4).await;
        assert_ne!(position(&after[0]).epoch, position(&before[0]).epoch);
        assert_eq!(position(&after[0]).offset, 1);
        let old = Since { after: Some(position(&before[2])), last: 5 };
        let catchup = layer.group_history("room.e", &old).await.unwrap();
        assert_eq!((catchup.recovery, ns(&catchup)), (Recovery::NotRecovered(Lost::OtherEpoch), vec![3]));
    }

    pub async fn a_position_from_the_future_is_refused(layer: Layer) {
        let sent = send_all(&layer, "room.g", 0..3).await;
        let ahead = Position { offset: 99, ..position(&sent[2]) };
        let channel = layer.new_channel("specific").unwrap();
        let catchup = layer.group_join("room.g", &channel, &Since::after(ahead)).await.unwrap();
        assert_eq!((catchup.recovery, catchup.messages.len()), (Recovery::NotRecovered(Lost::Future), 0));
        // The join still happened: live messages come, once.
        layer.group_send("room.g", message(3)).await.unwrap();
        assert_eq!(n_of(&within(layer.receive(&channel)).await.unwrap()), 3);
        assert!(tokio::time::timeout(Duration::from_millis(200), layer.receive(&channel)).await.is_err());
    }

    /// 20 clients join at various points while 300 messages are sent: each ends with every
    /// message after its position exactly once, in order (catch-up, then live).
    pub async fn many_clients_resume_during_a_stream(layer: Layer) {
        let first = send_all(&layer, "room.h", 0..1).await;
        let start = position(&first[0]);
        let sender = {
            let layer = layer.clone();
            tokio::spawn(async move {
                for n in 1..300 {
                    layer.group_send("room.h", message(n)).await.unwrap();
                    if n % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut clients = Vec::new();
        for i in 0..20u64 {
            let layer = layer.clone();
            clients.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                let channel = layer.new_channel("specific").unwrap();
                let since = Since::after(Position { offset: start.offset + i % 3, ..start });
                let catchup = layer.group_join("room.h", &channel, &since).await.unwrap();
                assert_eq!(catchup.recovery, Recovery::Recovered);
                let mut got = ns(&catchup);
                while got.last() != Some(&299) {
                    got.push(n_of(&within(layer.receive(&channel)).await.unwrap()));
                }
                let expected: Vec<u64> = (i % 3 + 1..300).collect();
                assert_eq!(got, expected, "client {i}");
            }));
        }
        sender.await.unwrap();
        for client in clients {
            client.await.unwrap();
        }
    }
}

backend_tests! {
    memory, redis, cases, "redis-history-":
    messages_get_increasing_positions: config(100, None);
    a_sender_cannot_forge_a_position: config(100, None);
    reserved_fields_are_removed_outside_history: config(100, None);
    join_since_gives_every_later_message_then_live_ones: config(100, None);
    the_history_keeps_its_last_messages: config(4, None);
    old_messages_expire: config(100, Some(Duration::from_millis(500)));
    a_lost_history_is_a_new_epoch: config(100, None);
    a_position_from_the_future_is_refused: config(100, None);
    many_clients_resume_during_a_stream: config(1_000, None);
}

/// The in-memory layer keeps at most `max_histories` histories: clients naming ever new rooms
/// cannot grow its memory; the least recently used history goes first.
#[tokio::test]
async fn memory_bounds_the_number_of_histories() {
    let layer =
        channels::layers::InMemoryChannelLayer::with_config(LayerConfig { max_histories: 50, ..config(10, None) });
    let keep = layer.new_channel("specific").unwrap();
    layer.group_join("room.keep", &keep, &Since::now()).await.unwrap();
    for room in 0..1_000 {
        layer.group_send(&format!("room.r{room}"), message(room)).await.unwrap();
        layer.group_history("room.keep", &Since::now()).await.unwrap();
    }
    assert!(layer.history_count() <= 50, "{}", layer.history_count());
    layer.group_send("room.keep", message(1)).await.unwrap();
    assert_eq!(position(&layer.receive(&keep).await.unwrap()).offset, 1, "the used history survived");
}

// --- Consumers resuming with `?since=` ----------------------------------------------------

#[consumer(websocket)]
struct Room {
    #[url]
    room: String,
}

#[consumer]
impl Room {
    fn groups(&self) -> Vec<String> {
        vec![format!("room.{}", self.room)]
    }

    fn since(&self, requested: Since) -> Since {
        Since { last: 3, ..requested }
    }

    #[handler("room.say")]
    async fn say(&mut self, ws: &mut Websocket, event: Value) -> Result<(), ConsumerError> {
        // A slow consumer: its channel (capacity 4 here) overflows during a burst.
        if event["slow"].as_bool() == Some(true) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ws.send_json(&json!({ "n": event["n"], "id": event[POSITION_FIELD] })).await
    }
}

fn room_app(layer: &Layer) -> Arc<ProtocolTypeRouter> {
    Arc::new(routing! { websocket: [ "rooms/<slug:room>/" => Room ] }.channel_layer(layer.clone()))
}

async fn connect(app: &Arc<ProtocolTypeRouter>, path: &str) -> WebsocketCommunicator {
    let mut ws = WebsocketCommunicator::new(app.clone(), path).with_timeout(support::WAIT);
    assert!(ws.connect().await.unwrap().accepted);
    ws
}

mod consumer_cases {
    use super::*;

    pub async fn a_consumer_resumes_with_since(layer: Layer) {
        let app = room_app(&layer);
        let mut first = connect(&app, "/rooms/r1/").await;
        for n in 0..6 {
            layer.group_send("room.r1", message(n)).await.unwrap();
        }
        let mut ids = Vec::new();
        for n in 0..6 {
            let got: Value = first.receive_json_from().await.unwrap();
            assert_eq!(got["n"], n);
            ids.push(got["id"].as_str().unwrap().to_owned());
        }
        first.disconnect(1000).await.unwrap();
        // Messages 6 and 7 are missed; the client comes back after message 5.
        layer.group_send("room.r1", message(6)).await.unwrap();
        layer.group_send("room.r1", message(7)).await.unwrap();
        let mut back = connect(&app, &format!("/rooms/r1/?since={}", ids[5])).await;
        layer.group_send("room.r1", message(8)).await.unwrap();
        for n in 6..9 {
            let got: Value = back.receive_json_from().await.unwrap();
            assert_eq!(got["n"], n);
        }
        assert!(back.receive_nothing(Duration::from_millis(100)).await, "nothing twice");
        // A fresh client gets the last 3 (the consumer's `since`), then live ones.
        let mut fresh = connect(&app, "/rooms/r1/").await;
        for n in 6..9 {
            assert_eq!(fresh.receive_json_from::<Value>().await.unwrap()["n"], n);
        }
        // A position too old: {"recovered": false} first, then the last 3.
        let mut old = connect(&app, &format!("/rooms/r1/?since={}", ids[0])).await;
        let first_message: Value = old.receive_json_from().await.unwrap();
        assert_eq!(first_message, json!({ "recovered": false }));
        assert_eq!(old.receive_json_from::<Value>().await.unwrap()["n"], 6);
        for ws in [&mut back, &mut fresh, &mut old] {
            ws.disconnect(1000).await.unwrap();
        }
    }

    pub async fn garbage_or_future_positions_are_not_recovered(layer: Layer) {
        let app = room_app(&layer);
        layer.group_send("room.r2", message(0)).await.unwrap();
        let mut garbage = connect(&app, "/rooms/r2/?since=%3Cscript%3E").await;
        assert_eq!(garbage.receive_json_from::<Value>().await.unwrap(), json!({ "recovered": false }));
        assert_eq!(garbage.receive_json_from::<Value>().await.unwrap()["n"], 0);
        let catchup = layer.group_history("room.r2", &Since::now()).await.unwrap();
        let ahead = Position { offset: 1_000, ..catchup.position.unwrap() };
        let mut future = connect(&app, &format!("/rooms/r2/?since={ahead}")).await;
        assert_eq!(future.receive_json_from::<Value>().await.unwrap(), json!({ "recovered": false }));
        assert_eq!(future.receive_json_from::<Value>().await.unwrap()["n"], 0);
        layer.group_send("room.r2", message(1)).await.unwrap();
        for ws in [&mut garbage, &mut future] {
            assert_eq!(ws.receive_json_from::<Value>().await.unwrap()["n"], 1);
            assert!(ws.receive_nothing(Duration::from_millis(100)).await);
            ws.disconnect(1000).await.unwrap();
        }
    }

    /// A slow consumer whose channel overflows still gets every message, in order: the gaps
    /// are read back from the history.
    pub async fn gaps_from_a_full_channel_are_filled_from_the_history(layer: Layer) {
        let app = room_app(&layer);
        let mut ws = connect(&app, "/rooms/r3/").await;
        for n in 0..60 {
            layer.group_send("room.r3", json!({ "type": "room.say", "n": n, "slow": true }).into()).await.unwrap();
        }
        for n in 0..60 {
            assert_eq!(ws.receive_json_from::<Value>().await.unwrap()["n"], n);
        }
        assert!(layer.stats().dropped > 0, "the burst overflowed the consumer's channel");
        ws.disconnect(1000).await.unwrap();
    }
}

backend_tests! {
    consumer_memory, consumer_redis, consumer_cases, "redis-resume-":
    a_consumer_resumes_with_since: config(5, None);
    garbage_or_future_positions_are_not_recovered: config(100, None);
    gaps_from_a_full_channel_are_filled_from_the_history: LayerConfig { capacity: 4, ..config(1_000, None) };
}
