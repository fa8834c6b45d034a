//! The metrics a Prometheus scrape sees, with the exporter installed the way an application
//! installs it (globally, before serving): a server with real clients, the in-memory and Redis
//! layers. One test, so that no other test of this binary moves the counters meanwhile.

mod support;

use std::time::Duration;

use channels::event::ChannelMessage;
use channels::layers::{ChannelLayer, InMemoryChannelLayer, LayerConfig, RedisChannelLayer};
use channels::middleware::OriginValidator;
use channels::prelude::*;
use channels::{consumer, routing};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use support::*;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Echoes; panics on "panic".
#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        if message.as_text() == Some("panic") {
            panic!("asked to");
        }
        ws.send(message).await?;
        Ok(())
    }
}

/// The value of `series` (name and labels as rendered); 0 when absent.
fn value(prometheus: &PrometheusHandle, series: &str) -> f64 {
    prometheus
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `series` reads `expected` (what a connection's end counts happens just after
/// its client saw the close).
async fn becomes(prometheus: &PrometheusHandle, series: &str, expected: f64) {
    for _ in 0..200 {
        if value(prometheus, series) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(value(prometheus, series), expected, "{series}\n{}", prometheus.render());
}

fn message(n: u64) -> ChannelMessage {
    serde_json::json!({ "type": "test.message", "n": n }).into()
}

#[tokio::test]
async fn a_scrape_sees_connections_messages_failures_refusals_and_layers() {
    let prometheus = PrometheusBuilder::new().install_recorder().expect("the only recorder of this binary");
    let app = routing! {
        websocket: [
            "open/" => OriginValidator([ "echo/" => Echo ], ["*"]),
            "strict/" => OriginValidator([ "echo/" => Echo ], ["https://chat.example.com"]),
        ],
    };
    // After the recorder: the server looks its per-message counters up when it starts.
    let server = TestServer::start(app).await;

    let mut first = server.connect("/open/echo/").await;
    let mut second = server.connect("/open/echo/").await;
    send_text(&mut first, "hello").await;
    next_message(&mut first).await;
    send_text(&mut first, "again").await;
    next_message(&mut first).await;
    assert_eq!(value(&prometheus, r#"channels_connections_open{protocol="websocket"}"#), 2.0);
    assert_eq!(value(&prometheus, r#"channels_handshakes_total{outcome="accepted"}"#), 2.0);
    assert_eq!(value(&prometheus, "channels_websocket_messages_received_total"), 2.0);
    assert_eq!(value(&prometheus, "channels_websocket_received_bytes_total"), 10.0);
    assert_eq!(value(&prometheus, "channels_websocket_messages_sent_total"), 2.0);
    assert_eq!(value(&prometheus, "channels_websocket_sent_bytes_total"), 10.0);

    // Refusals: by the origin check, and no route.
    let mut request = server.request("/strict/echo/");
    request.headers_mut().insert("origin", HeaderValue::from_static("https://evil.example"));
    assert!(server.try_connect(request).await.is_err());
    assert_eq!(server.handshake_status("/nowhere/").await, 404);
    assert_eq!(value(&prometheus, r#"channels_handshakes_total{outcome="origin"}"#), 1.0);
    assert_eq!(value(&prometheus, r#"channels_handshakes_total{outcome="not_found"}"#), 1.0);
    assert_eq!(value(&prometheus, r#"channels_middleware_refusals_total{middleware="OriginValidator"}"#), 1.0);
    // The server's own HTTP answers count too: no route (404), a bad Host (400).
    let addr = server.addr;
    raw_http(addr, format!("GET /nothing/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    raw_http(addr, b"GET /nothing/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(value(&prometheus, r#"channels_http_requests_total{status="4xx"}"#), 2.0);

    // A panicking consumer: counted, its socket closed with 1011; a client that leaves.
    send_text(&mut second, "panic").await;
    assert_eq!(close_code(&mut second).await, 1011);
    drop(first);
    becomes(&prometheus, r#"channels_connections_open{protocol="websocket"}"#, 0.0).await;
    assert_eq!(value(&prometheus, r#"channels_consumer_failures_total{kind="panic"}"#), 1.0);
    assert_eq!(value(&prometheus, r#"channels_websocket_closes_total{reason="error"}"#), 1.0);
    assert_eq!(value(&prometheus, r#"channels_websocket_closes_total{reason="lost"}"#), 1.0);

    // The in-memory layer: a group of three, one of them full.
    let layer = InMemoryChannelLayer::with_config(LayerConfig { capacity: 1, ..LayerConfig::default() });
    for member in ["test.a", "test.b", "test.full"] {
        layer.group_add("test.group", member).await.unwrap();
    }
    layer.send("test.full", message(0)).await.unwrap();
    layer.group_send("test.group", message(1)).await.unwrap();
    assert_eq!(value(&prometheus, r#"channels_layer_sends_total{kind="send"}"#), 1.0);
    assert_eq!(value(&prometheus, r#"channels_layer_sends_total{kind="group_send"}"#), 1.0);
    assert_eq!(value(&prometheus, "channels_layer_delivered_total"), 3.0);
    assert_eq!(value(&prometheus, "channels_layer_dropped_total"), 1.0);
    assert_eq!(value(&prometheus, "channels_layer_group_send_members_sum"), 3.0);
    // Queue depth, sampled as the layer sweeps its channels (every 4,096 operations).
    let deep = InMemoryChannelLayer::with_config(LayerConfig { capacity: 10_000, ..LayerConfig::default() });
    for n in 0..4_200 {
        deep.send("test.deep", message(n)).await.unwrap();
    }
    let queued = value(&prometheus, "channels_layer_queued_messages");
    assert!((4_000.0..=4_200.0).contains(&queued), "{queued}");

    // The Redis layer: its connection and its round trips.
    if let Some(url) = redis_url("metrics") {
        let prefix = format!("test-metrics-{}", std::process::id());
        let config = channels::layers::RedisLayerConfig { prefix, ..channels::layers::RedisLayerConfig::new(url) };
        let redis = RedisChannelLayer::connect_with(config).await.unwrap();
        let channel = redis.new_channel("test").unwrap();
        redis.send(&channel, message(2)).await.unwrap();
        assert_eq!(value(&prometheus, r#"channels_redis_up{shard="0"}"#), 1.0);
        assert!(value(&prometheus, "channels_redis_command_duration_seconds_count") >= 1.0);
        redis.flush().await.unwrap();
    }
    server.shutdown().await;
}
