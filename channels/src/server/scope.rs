//! The scope of a request: from hyper's request head, with the client and server addresses
//! and, when trusted, the proxy's headers.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use super::ServerConfig;
use crate::scope::{Protocol, Scope};

/// Builds the scope of a request. Takes the headers out of `request` (they move into the scope).
pub(crate) fn build_scope(
    protocol: Protocol,
    parts: ::http::request::Parts,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
    config: &ServerConfig,
) -> Scope {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut scope = Scope::new(protocol, path_and_query);
    scope.method = parts.method;
    scope.http_version = parts.version;
    scope.client = remote;
    scope.server = local;
    scope.root_path.clone_from(&config.root_path);
    scope.headers = parts.headers;
    if scope.protocol == Protocol::Websocket {
        detach_header_values(&mut scope.headers);
        scope.subprotocols = scope
            .headers
            .get_all(::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|item| crate::scope::percent_decode(item.trim()))
            .filter(|item| !item.is_empty())
            .collect();
    }
    if parts.extensions.get::<super::OverTls>().is_some() {
        scope.scheme = std::borrow::Cow::Borrowed(if scope.protocol == Protocol::Websocket { "wss" } else { "https" });
    }
    if config.proxy_headers {
        apply_proxy_headers(&mut scope);
    }
    scope
}

/// Moves every header value into one allocation of its own.
///
/// hyper's header values are slices of its connection read buffer (8 KiB or more), so a
/// WebSocket scope, which lives as long as the connection, would keep that whole buffer alive
/// through `scope.headers`. Copying the values (a few hundred bytes, once per handshake) frees
/// it when the handshake is done.
fn detach_header_values(headers: &mut ::http::HeaderMap) {
    let total = headers.values().map(::http::HeaderValue::len).sum();
    let mut copy = bytes::BytesMut::with_capacity(total);
    for value in headers.values() {
        copy.extend_from_slice(value.as_bytes());
    }
    let mut copy = copy.freeze();
    for value in headers.values_mut() {
        let bytes = copy.split_to(value.len());
        // The bytes were a valid header value a moment ago, so this cannot fail; if it did,
        // keeping the original value is still correct.
        if let Ok(mut detached) = ::http::HeaderValue::from_maybe_shared(bytes) {
            detached.set_sensitive(value.is_sensitive());
            *value = detached;
        }
    }
}

fn apply_proxy_headers(scope: &mut Scope) {
    if let Some(ip) = scope
        .header("x-forwarded-for")
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse::<IpAddr>().ok())
    {
        let port = scope.header("x-forwarded-port").and_then(|port| port.trim().parse().ok()).unwrap_or(0);
        scope.client = Some(SocketAddr::new(ip, port));
    }
    let proto = scope.header("x-forwarded-proto").map(|value| value.trim().to_ascii_lowercase());
    let secure = match proto.as_deref() {
        Some("https" | "wss") => true,
        Some("http" | "ws") => false,
        _ => return,
    };
    scope.scheme = Cow::Borrowed(match (&scope.protocol, secure) {
        (Protocol::Websocket, true) => "wss",
        (Protocol::Websocket, false) => "ws",
        (_, true) => "https",
        (_, false) => "http",
    });
}
