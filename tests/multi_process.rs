//! Several server processes on one channel layer: the broadcast example over two real
//! processes sharing Redis, a per-user close reaching sockets on two servers, and a Redis
//! restart in the middle of a run. The Redis tests need `REDIS_URL` (and `redis-server` on
//! the PATH for the restart); without them they print that they skipped.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use channels::layers::{Layer, RedisChannelLayer, RedisLayerConfig, close_message, user_group};
use channels::prelude::*;
use channels::routing;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn text(message: WsMessage) -> String {
    message.into_text().expect("a text message").as_str().to_owned()
}

async fn nothing_arrives(client: &mut Client) -> bool {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_millis(200), client.next()).await.is_err()
}

#[tokio::test]
async fn broadcast_example_relays_within_a_group_in_memory() {
    let addr = free_addr().await;
    let _example = Example::start("broadcast", &["--addr", &addr.to_string()]).await;
    wait_until_listening(addr).await;
    let mut ann = connect(addr, "/ws/broadcast/lobby/").await;
    let mut bob = connect(addr, "/ws/broadcast/lobby/").await;
    let mut other = connect(addr, "/ws/broadcast/kitchen/").await;
    send_text(&mut ann, "hello, lobby").await;
    assert_eq!(text(next_message(&mut ann).await), "hello, lobby", "the sender gets it too");
    assert_eq!(text(next_message(&mut bob).await), "hello, lobby");
    assert!(nothing_arrives(&mut other).await);
}

#[tokio::test]
async fn broadcast_example_relays_across_two_processes_sharing_redis() {
    let Some(url) = redis_url("broadcast_example_relays_across_two_processes_sharing_redis") else { return };
    let (a, b) = (free_addr().await, free_addr().await);
    let _first = Example::start("broadcast", &["--addr", &a.to_string(), "--redis", &url]).await;
    let _second = Example::start("broadcast", &["--addr", &b.to_string(), "--redis", &url]).await;
    wait_until_listening(a).await;
    wait_until_listening(b).await;
    let group = format!("/ws/broadcast/two-{}/", std::process::id());
    let mut on_a = connect(a, &group).await;
    let mut on_b = connect(b, &group).await;
    send_text(&mut on_a, "from a").await;
    assert_eq!(text(next_message(&mut on_a).await), "from a");
    assert_eq!(text(next_message(&mut on_b).await), "from a", "delivered across processes");
    send_text(&mut on_b, "from b").await;
    assert_eq!(text(next_message(&mut on_a).await), "from b");
    assert_eq!(text(next_message(&mut on_b).await), "from b");
}

async fn server_on(layer: Layer) -> TestServer {
    TestServer::start(routing! { websocket: [ "rooms/<slug:room>/<slug:user>/" => Member ] }.channel_layer(layer)).await
}

async fn redis_layer(url: &str, prefix: &str) -> RedisChannelLayer {
    let config = RedisLayerConfig { prefix: prefix.to_owned(), ..RedisLayerConfig::new(url) };
    RedisChannelLayer::connect_with(config).await.expect("connect to Redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_close_reaches_sockets_on_two_servers() {
    let Some(url) = redis_url("per_user_close_reaches_sockets_on_two_servers") else { return };
    let prefix = format!("test-user-close-{}", std::process::id());
    // Two servers, each with its own layer (as two processes would have), and a third
    // layer for the code that logs the user out.
    let first = server_on(redis_layer(&url, &prefix).await.into_layer()).await;
    let second = server_on(redis_layer(&url, &prefix).await.into_layer()).await;
    let admin = redis_layer(&url, &prefix).await;
    let mut tab_one = first.connect("/rooms/lobby/mallory/").await;
    let mut tab_two = second.connect("/rooms/kitchen/mallory/").await;
    let mut bystander = second.connect("/rooms/lobby/trent/").await;
    // The handshake completes after connect returns, so the groups are joined by now.
    admin.group_send(&user_group("mallory").unwrap(), close_message(4001)).await.unwrap();
    assert_eq!(close_code(&mut tab_one).await, 4001);
    assert_eq!(close_code(&mut tab_two).await, 4001);
    admin.group_send("room.lobby", json!({ "type": "room.say", "text": "still open" }).into()).await.unwrap();
    assert_eq!(text(next_message(&mut bystander).await), "still open");
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_survives_a_redis_restart() {
    if redis_url("layer_survives_a_redis_restart").is_none() {
        return;
    }
    if !redis_server_available("layer_survives_a_redis_restart") {
        return;
    }
    let addr: SocketAddr = free_addr().await;
    let mut redis = OwnRedis::start(addr.port());
    wait_until_listening(addr).await;
    let url = format!("redis://{addr}");
    let layer = redis_layer(&url, "restart").await;
    let server = server_on(layer.clone().into_layer()).await;
    let mut client = server.connect("/rooms/phoenix/ann/").await;
    let say = |text: &str| json!({ "type": "room.say", "text": text });
    layer.group_send("room.phoenix", say("before").into()).await.unwrap();
    assert_eq!(text(next_message(&mut client).await), "before");

    // Redis goes away: sends fail with an error (no panic), the socket stays open.
    drop(redis);
    let failed = within(async {
        loop {
            if layer.group_send("room.phoenix", say("during").into()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    failed.await;
    within(async {
        while layer.is_connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Redis comes back empty (no persistence): the layer reconnects by itself and restores
    // this process's memberships, so the consumer hears the group again.
    redis = OwnRedis::start(addr.port());
    wait_until_listening(addr).await;
    within(async {
        while !layer.is_connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    layer.group_send("room.phoenix", say("after").into()).await.unwrap();
    assert_eq!(text(next_message(&mut client).await), "after");
    server.shutdown().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_answers_the_first_call_after_a_quick_redis_restart() {
    if redis_url("layer_answers_the_first_call_after_a_quick_redis_restart").is_none() {
        return;
    }
    let addr: SocketAddr = free_addr().await;
    let redis = OwnRedis::start(addr.port());
    wait_until_listening(addr).await;
    let layer = redis_layer(&format!("redis://{addr}"), "quick-restart").await;
    let message = |n: u64| json!({ "type": "test.message", "n": n });
    layer.send("plain.before", message(1).into()).await.unwrap();
    drop(redis);
    let _redis = OwnRedis::start(addr.port());
    wait_until_listening(addr).await;
    // The layer's connection is the dead one from before the restart: the first call finds it
    // broken and is retried once on a new one, instead of failing a user's request.
    layer.send("plain.after", message(2).into()).await.expect("the first send after the restart");
    let got = within(layer.receive("plain.after")).await.unwrap();
    assert_eq!(got.value()["n"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_layer_spreads_keys_over_two_hosts_and_still_delivers() {
    if redis_url("sharded_layer_spreads_keys_over_two_hosts_and_still_delivers").is_none() {
        return;
    }
    let (a, b) = (free_addr().await, free_addr().await);
    let _hosts = (OwnRedis::start(a.port()), OwnRedis::start(b.port()));
    wait_until_listening(a).await;
    wait_until_listening(b).await;
    let config = || RedisLayerConfig {
        hosts: vec![format!("redis://{a}"), format!("redis://{b}")],
        prefix: "sharded".to_owned(),
        ..RedisLayerConfig::new("")
    };
    // Two "processes" sharing the two hosts.
    let first = RedisChannelLayer::connect_with(config()).await.unwrap().into_layer();
    let second = RedisChannelLayer::connect_with(config()).await.unwrap().into_layer();
    let mut channels = Vec::new();
    for layer in [&first, &second] {
        for _ in 0..4 {
            let channel = layer.new_channel("specific").unwrap();
            let subscription = layer.subscribe(&channel).unwrap();
            layer.group_add("sharded.room", &channel).await.unwrap();
            channels.push(subscription);
        }
    }
    // Plain channels land on both hosts.
    for n in 0..8 {
        first.send(&format!("plain.{n}"), json!({ "type": "plain", "n": n }).into()).await.unwrap();
    }
    let keys = |addr: SocketAddr| {
        let out = Command::new("redis-cli").args(["-p", &addr.port().to_string(), "dbsize"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0)
    };
    assert!(keys(a) > 0 && keys(b) > 0, "keys on both hosts: {} and {}", keys(a), keys(b));
    for n in 0..8 {
        let got = within(second.receive(&format!("plain.{n}"))).await.unwrap();
        assert_eq!(got.value()["n"], n);
    }
    second.group_send("sharded.room", json!({ "type": "room.say", "text": "everyone" }).into()).await.unwrap();
    for subscription in &mut channels {
        assert_eq!(within(subscription.recv()).await.value()["text"], "everyone");
    }
}

/// A Redis in a network namespace of the test's own, reached over a veth pair: its link can be
/// cut (a network fault: packets vanish, nothing is refused) and mended. Removed when dropped.
struct NetnsRedis {
    namespace: String,
    inner_link: String,
    redis: std::process::Child,
    url: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|status| status.success())
}

impl NetnsRedis {
    /// None (with the reason printed) where namespaces cannot be made: not root, no `ip`.
    fn start(test: &str) -> Option<NetnsRedis> {
        let id = std::process::id();
        let namespace = format!("chtest{id}");
        let (outer_link, inner_link) = (format!("cho{}", id % 1_000_000), format!("chi{}", id % 1_000_000));
        NetnsRedis::remove_leftovers();
        // A /30 no interface of this machine uses (a leftover's would shadow ours).
        let used = Command::new("ip").args(["-o", "addr"]).output().map(|out| out.stdout).unwrap_or_default();
        let used = String::from_utf8_lossy(&used);
        let Some(subnet) = (0..250)
            .map(|n| format!("10.213.{}", (id as usize + n) % 250))
            .find(|net| !used.contains(&format!("{net}.")))
        else {
            panic!("no free 10.213.x.0/30 for the test's link");
        };
        if !ip(&["netns", "add", &namespace]) {
            assert!(std::env::var_os("CI").is_none(), "CI=true but `ip netns add` failed (needs root and iproute2)");
            eprintln!("SKIPPED {test}: cannot make a network namespace (needs root and iproute2)");
            return None;
        }
        let (outer, inner) = (format!("{subnet}.1/30"), format!("{subnet}.2/30"));
        let made = ip(&["link", "add", &outer_link, "type", "veth", "peer", "name", &inner_link])
            && ip(&["link", "set", &inner_link, "netns", &namespace])
            && ip(&["addr", "add", &outer, "dev", &outer_link])
            && ip(&["link", "set", &outer_link, "up"])
            && ip(&["-n", &namespace, "addr", "add", &inner, "dev", &inner_link])
            && ip(&["-n", &namespace, "link", "set", &inner_link, "up"])
            && ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        let address = format!("{subnet}.2");
        let redis = Command::new("ip")
            .args(["netns", "exec", &namespace, "redis-server", "--port", "6379", "--bind", &address])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let redis = match (made, redis) {
            (true, Ok(redis)) => redis,
            (_, redis) => {
                if let Ok(mut redis) = redis {
                    let _ = redis.kill();
                    let _ = redis.wait();
                }
                ip(&["link", "del", &outer_link]);
                ip(&["netns", "del", &namespace]);
                panic!("could not set up the namespace's link and Redis");
            }
        };
        Some(NetnsRedis { namespace, inner_link, redis, url: format!("redis://{address}:6379") })
    }

    /// Namespaces (and their Redis) left by runs of this test that were killed.
    fn remove_leftovers() {
        let list = Command::new("ip").args(["netns", "list"]).output().map(|out| out.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&list).lines() {
            let Some(name) = line.split_whitespace().next() else { continue };
            let Some(pid) = name.strip_prefix("chtest") else { continue };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let pids =
                Command::new("ip").args(["netns", "pids", name]).output().map(|out| out.stdout).unwrap_or_default();
            for pid in String::from_utf8_lossy(&pids).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            ip(&["netns", "del", name]);
        }
    }

    /// Cuts (`down`) or mends (`up`) the link from inside the namespace: the outer end keeps
    /// its address and route, so packets sent meanwhile are lost, not refused.
    fn link(&self, state: &str) {
        assert!(ip(&["-n", &self.namespace, "link", "set", &self.inner_link, state]), "ip link set {state}");
    }
}

impl Drop for NetnsRedis {
    fn drop(&mut self) {
        let _ = self.redis.kill();
        let _ = self.redis.wait();
        // Deleting the namespace deletes the veth pair with it.
        ip(&["netns", "del", &self.namespace]);
    }
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(limit, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_rides_out_a_network_cut() {
    let test = "layer_rides_out_a_network_cut";
    if redis_url(test).is_none() || !redis_server_available(test) {
        return;
    }
    let Some(redis) = NetnsRedis::start(test) else { return };
    let redis_addr: SocketAddr = redis.url.trim_start_matches("redis://").parse().unwrap();
    wait_until_listening(redis_addr).await;
    // This server's layer, and another process's that sends to the group.
    let layer = redis_layer(&redis.url, "netcut").await;
    let other = redis_layer(&redis.url, "netcut").await;
    let server = server_on(layer.clone().into_layer()).await;
    let mut client = server.connect("/rooms/phoenix/ann/").await;
    let say = |text: &str| json!({ "type": "room.say", "text": text });
    other.group_send("room.phoenix", say("before").into()).await.unwrap();
    assert_eq!(text(next_message(&mut client).await), "before");

    redis.link("down");
    // A layer call fails with an error (after the response timeout), it does not hang or panic.
    let during =
        tokio::time::timeout(Duration::from_secs(30), other.group_send("room.phoenix", say("during-1").into()))
            .await
            .expect("a layer call during the cut ends");
    assert!(during.is_err(), "a send while Redis is unreachable fails: {during:?}");
    // The server notices the outage and reports it...
    until("the outage noticed", Duration::from_secs(30), || !layer.is_connected()).await;
    // ...and keeps its sockets: the client is not closed.
    send_text(&mut client, "still here?").await;
    assert!(nothing_arrives(&mut client).await, "the socket stays open and quiet");
    // A new consumer needs its groups joined: refused cleanly (503) while Redis is out of reach.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let during = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(server.request("/rooms/phoenix/carol/"), tcp),
    )
    .await
    .expect("the handshake ends");
    match during {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => {
            panic!("a handshake during the cut should get 503: {:?}", other.map(|(_, response)| response.status()))
        }
    }
    // Once the other process knows of the outage too, its calls fail after the 1 s probe, not
    // the 5 s response timeout.
    until("the other process noticing", Duration::from_secs(30), || !other.is_connected()).await;
    let started = std::time::Instant::now();
    assert!(other.group_send("room.phoenix", say("during-2").into()).await.is_err(), "a send during the cut fails");
    assert!(started.elapsed() < Duration::from_secs(4), "failed after {:?}", started.elapsed());

    redis.link("up");
    until("the recovery", Duration::from_secs(30), || layer.is_connected()).await;
    // Memberships are back (both sockets hear the group) and calls succeed again.
    until("the other process's reconnection", Duration::from_secs(30), || other.is_connected()).await;
    let mut second = server.connect("/rooms/phoenix/bob/").await;
    other.group_send("room.phoenix", say("after").into()).await.expect("a send after the cut");
    // A send that failed may still have run (given up on, not cancelled), never twice.
    for client in [&mut client, &mut second] {
        let mut seen = Vec::new();
        loop {
            match text(next_message(client).await) {
                after if after == "after" => break,
                during if during.starts_with("during-") => {
                    assert!(!seen.contains(&during), "{during} delivered twice");
                    seen.push(during);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    server.shutdown().await;
}
