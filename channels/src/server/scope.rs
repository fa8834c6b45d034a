//! The scope of a request: from hyper's request head, with the client and server addresses
//! and, when trusted, the proxy's headers.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use super::ServerConfig;
use crate::scope::{Protocol, Scope};

/// Builds the scope of a request. Takes the headers out of `request`: an HTTP request's move
/// into the scope, a WebSocket's are copied less the handshake's own (see [`websocket_headers`]).
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
    if scope.protocol == Protocol::Websocket {
        scope.subprotocols = parts
            .headers
            .get_all(::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|item| crate::scope::percent_decode(item.trim()))
            .filter(|item| !item.is_empty())
            .collect();
        scope.headers = websocket_headers(&parts.headers);
    } else {
        scope.headers = parts.headers;
    }
    if parts.extensions.get::<super::OverTls>().is_some() {
        scope.scheme = std::borrow::Cow::Borrowed(if scope.protocol == Protocol::Websocket { "wss" } else { "https" });
    }
    if config.proxy_headers {
        apply_proxy_headers(&mut scope);
    }
    scope
}

/// The handshake's own headers: the server answered them, and they mean nothing to the
/// application once the socket is open.
const HANDSHAKE_ONLY: [::http::HeaderName; 5] = [
    ::http::header::CONNECTION,
    ::http::header::UPGRADE,
    ::http::header::SEC_WEBSOCKET_KEY,
    ::http::header::SEC_WEBSOCKET_VERSION,
    ::http::header::SEC_WEBSOCKET_EXTENSIONS,
];

/// A WebSocket scope's headers: the request's, less the handshake's own, in a map of the size
/// they need, with every value in one allocation of its own.
///
/// A WebSocket scope lives as long as its connection. hyper's map is sized for all the
/// request's headers (a `HeaderMap` entry is ~100 bytes, and a browser's handshake has a
/// dozen), and its values are slices of the connection's read buffer (8 KiB or more), which
/// they would keep alive. Copying what is kept (a few hundred bytes, once per handshake) frees
/// both when the handshake is done: ~1 KB less per open socket.
fn websocket_headers(headers: &::http::HeaderMap) -> ::http::HeaderMap {
    let kept = || headers.iter().filter(|(name, _)| !HANDSHAKE_ONLY.contains(name));
    let (count, total) = kept().fold((0, 0), |(count, total), (_, value)| (count + 1, total + value.len()));
    let mut values = bytes::BytesMut::with_capacity(total);
    let mut map = ::http::HeaderMap::with_capacity(count);
    for (name, value) in kept() {
        values.extend_from_slice(value.as_bytes());
        // The bytes were a valid header value a moment ago, so this cannot fail; if it did,
        // keeping the original value is still correct.
        let mut copied =
            ::http::HeaderValue::from_maybe_shared(values.split().freeze()).unwrap_or_else(|_| value.clone());
        copied.set_sensitive(value.is_sensitive());
        map.append(name.clone(), copied);
    }
    map
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
