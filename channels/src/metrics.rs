//! What the server, the layers and the session stores report, through the
//! [`metrics`](https://docs.rs/metrics) facade: the application installs the exporter it wants
//! (Prometheus, StatsD, ...) before serving, and without one every report costs a branch.
//!
//! ```ignore
//! // e.g. with metrics-exporter-prometheus (no HTTP listener of its own):
//! let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! // ... serve `prometheus.render()` at GET /metrics/ (the chat example does).
//! ```
//!
//! Names and labels follow Prometheus' conventions (base units, `_total` counters):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `channels_connections_open` | gauge | `protocol`: `http`, `websocket` | TCP connections served as HTTP; open WebSockets (accepted, not yet ended) |
//! | `channels_handshakes_total` | counter | `outcome`: `accepted`, `refused`, `origin`, `not_found`, `timed_out`, `error`, `unavailable` | WebSocket handshakes by how they ended (`origin`: refused by the origin check; `unavailable`: the server was shutting down) |
//! | `channels_websocket_messages_received_total` | counter | | WebSocket messages from clients |
//! | `channels_websocket_received_bytes_total` | counter | | their payload bytes |
//! | `channels_websocket_messages_sent_total` | counter | | WebSocket messages written to clients (close frames and pings not counted) |
//! | `channels_websocket_sent_bytes_total` | counter | | their payload bytes |
//! | `channels_websocket_closes_total` | counter | `reason`: `client`, `application`, `slow_client`, `policy`, `ping_timeout`, `error`, `shutdown`, `lost` | WebSockets ended, by who ended them (`policy`: closed with 1008 for another cause than a slow client, e.g. a protocol attack) |
//! | `channels_http_requests_total` | counter | `status`: `1xx` ... `5xx` | HTTP responses (the applications' and the server's own: 404, 413, 500, refusals, readiness), by status class |
//! | `channels_consumer_failures_total` | counter | `kind`: `error`, `panic` | applications that ended with an error or a panic |
//! | `channels_middleware_refusals_total` | counter | `middleware` | connections a middleware refused, by its type name |
//! | `channels_layer_sends_total` | counter | `kind`: `send`, `group_send` | channel layer calls |
//! | `channels_layer_group_send_members` | histogram | | members a `group_send` addressed (fan-out size) |
//! | `channels_layer_delivered_total` | counter | | messages a layer put in a receiver's queue |
//! | `channels_layer_dropped_total` | counter | | messages dropped because the receiver's queue was full (or, on the channels_redis wire, undecodable) |
//! | `channels_layer_expired_total` | counter | | messages that expired before they were received |
//! | `channels_layer_queued_messages` | gauge | | messages waiting in this process's channels (the queue depth), sampled every 4,096 layer operations |
//! | `channels_redis_command_duration_seconds` | histogram | | round trip of the layer's Redis commands and scripts |
//! | `channels_redis_up` | gauge | `shard` | 1 while the layer's connection to that Redis host (by index in `hosts`) is up, 0 during an outage |
//! | `channels_redis_outages_total` | counter | `shard` | times that connection was lost |
//! | `channels_session_loads_total` | counter | `outcome`: `found`, `missing`, `error` | session loads by the session middleware |
//!
//! Per-message counters are updated through handles made when the server starts (a few atomic
//! additions per message with an exporter installed), so install the exporter before
//! [`Server::listen`](crate::Server::listen).

use metrics::{Counter, Gauge, counter, gauge, histogram};

/// The per-message counters, looked up once per server.
pub(crate) struct ServerMetrics {
    pub(crate) received: Counter,
    pub(crate) received_bytes: Counter,
    pub(crate) sent: Counter,
    pub(crate) sent_bytes: Counter,
    /// `channels_connections_open{protocol="websocket"}`.
    pub(crate) open_websockets: Gauge,
}

impl ServerMetrics {
    pub(crate) fn new() -> Self {
        ServerMetrics {
            received: counter!("channels_websocket_messages_received_total"),
            received_bytes: counter!("channels_websocket_received_bytes_total"),
            sent: counter!("channels_websocket_messages_sent_total"),
            sent_bytes: counter!("channels_websocket_sent_bytes_total"),
            open_websockets: gauge!("channels_connections_open", "protocol" => "websocket"),
        }
    }
}

/// One open connection of `protocol` in `channels_connections_open`, for as long as it lives.
pub(crate) struct Open(Gauge);

impl Open {
    pub(crate) fn new(protocol: &'static str) -> Open {
        let open = gauge!("channels_connections_open", "protocol" => protocol);
        open.increment(1.0);
        Open(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pub(crate) fn handshake(outcome: &'static str) {
    counter!("channels_handshakes_total", "outcome" => outcome).increment(1);
}

pub(crate) fn websocket_closed(reason: &'static str) {
    counter!("channels_websocket_closes_total", "reason" => reason).increment(1);
}

pub(crate) fn http_response(status: http::StatusCode) {
    const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
    let class = CLASSES.get(usize::from(status.as_u16() / 100)).copied().unwrap_or("other");
    counter!("channels_http_requests_total", "status" => class).increment(1);
}

pub(crate) fn consumer_failed(panicked: bool) {
    counter!("channels_consumer_failures_total", "kind" => if panicked { "panic" } else { "error" }).increment(1);
}

/// `middleware` is a type name; its last path segment (without generics) is the label.
pub(crate) fn middleware_refused(middleware: &'static str) {
    let base = middleware.split('<').next().unwrap_or(middleware);
    let name = base.rsplit("::").next().unwrap_or(base);
    counter!("channels_middleware_refusals_total", "middleware" => name).increment(1);
}

pub(crate) fn layer_send() {
    counter!("channels_layer_sends_total", "kind" => "send").increment(1);
}

pub(crate) fn layer_group_send(members: usize) {
    counter!("channels_layer_sends_total", "kind" => "group_send").increment(1);
    #[allow(clippy::cast_precision_loss)] // fan-out sizes are far below 2^52
    histogram!("channels_layer_group_send_members").record(members as f64);
}

pub(crate) fn layer_delivered(n: u64) {
    counter!("channels_layer_delivered_total").increment(n);
}

pub(crate) fn layer_dropped(n: u64) {
    counter!("channels_layer_dropped_total").increment(n);
}

#[allow(clippy::cast_precision_loss)] // queue depths are far below 2^52
pub(crate) fn layer_queued(messages: usize) {
    gauge!("channels_layer_queued_messages").set(messages as f64);
}

pub(crate) fn layer_expired(n: u64) {
    counter!("channels_layer_expired_total").increment(n);
}

#[cfg(feature = "redis")]
pub(crate) fn redis_round_trip(elapsed: std::time::Duration) {
    histogram!("channels_redis_command_duration_seconds").record(elapsed.as_secs_f64());
}

/// The layer's connection to shard `shard` went up or down.
#[cfg(feature = "redis")]
pub(crate) fn redis_connection(shard: usize, up: bool) {
    let shard = shard.to_string();
    gauge!("channels_redis_up", "shard" => shard.clone()).set(if up { 1.0 } else { 0.0 });
    if !up {
        counter!("channels_redis_outages_total", "shard" => shard).increment(1);
    }
}

pub(crate) fn session_load(outcome: &'static str) {
    counter!("channels_session_loads_total", "outcome" => outcome).increment(1);
}
