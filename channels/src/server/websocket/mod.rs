//! WebSocket connections: the handshake that waits for the application, then one task per
//! connection running the application (whose inbox reads the frames) and the writer that drains
//! the outgoing queue.

mod reader;
mod socket;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::reader::WsSource;
use self::writer::{Writer, WriterTask};
use super::body::{Body, RequestBody, status_page};
use super::chunked::CODEC_BUFFER;
use super::{Opening, ServerConfig, ServerState, error_status, run_app};
use crate::connection::Inbox;
use crate::error::AppError;
use crate::event::{Outbound, close_code};
use crate::scope::Protocol;

/// What the writer hands the inbox: the read half, or the close code the handshake ended with.
type Opened = Result<socket::WsReader, u16>;

/// Most frames written before a flush.
const BATCH: usize = 64;

/// True for a request that asks for a WebSocket (`Upgrade: websocket`).
pub(super) fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
}

/// Checks the handshake headers (RFC 6455 section 4.2.1); returns the key, or the answer.
fn validate(request: &Request<RequestBody>) -> Result<HeaderValue, Box<Response<Body>>> {
    if request.method() != Method::GET {
        return Err(Box::new(bad_request("a WebSocket handshake must be a GET request")));
    }
    if request.version() < Version::HTTP_11 {
        return Err(Box::new(bad_request("a WebSocket handshake needs HTTP/1.1")));
    }
    let has_upgrade_token = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade_token {
        return Err(Box::new(bad_request("missing `Connection: upgrade`")));
    }
    if request.headers().get(SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        // RFC 6455 section 4.4: say which version this server speaks.
        let mut response = super::refuse(StatusCode::UPGRADE_REQUIRED, "unsupported or missing Sec-WebSocket-Version");
        response.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(Box::new(response));
    }
    let mut keys = request.headers().get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key,
        (None, _) => return Err(Box::new(bad_request("missing Sec-WebSocket-Key"))),
        (Some(_), Some(_)) => return Err(Box::new(bad_request("more than one Sec-WebSocket-Key"))),
    };
    if !is_valid_key(key.as_bytes()) {
        return Err(Box::new(bad_request("Sec-WebSocket-Key must be 16 bytes in base64")));
    }
    Ok(key.clone())
}

/// A base64 encoding of 16 bytes: 22 base64 characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn bad_request(reason: &'static str) -> Response<Body> {
    super::refuse(StatusCode::BAD_REQUEST, reason)
}

fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        // The socket is read in chunks of `config.read_buffer_size` by `ChunkedRead`.
        .read_buffer_size(CODEC_BUFFER)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// Runs the handshake: starts the application, waits for its accept or refusal, answers.
pub(super) async fn handshake(
    state: Arc<ServerState>,
    mut request: Request<RequestBody>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Response<Body> {
    let key = match validate(&request) {
        Ok(key) => key,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let config = &state.config;
    let (parts, _body) = request.into_parts();
    let Opening { scope, span, conn, outbox, mut events } =
        Opening::new(&state, Protocol::Websocket, parts, (remote, local), config.write_queue);
    // Listed until the connection's task ends, so that a shutdown can drain it.
    let registered = state.connections.register(conn.clone());
    let (opened_tx, opened_rx) = oneshot::channel();
    let source = WsSource::new(opened_rx, conn.clone(), state.clone());
    let inbox = Inbox::from_source(source);
    let run = run_app(state.app.clone(), scope, inbox, outbox);
    // Combinators, not async blocks: a block keeps what it captured beside what it awaits, for
    // the connection's whole life. The guard ends the connection even if the task is dropped
    // unfinished (the runtime shutting down), so that a waiting handshake hears of it.
    let done = AppDone(conn.clone());
    let app = futures_util::FutureExt::map(run, move |result| done.finish(&result));
    // The writer arrives when the handshake is accepted (dropped unsent when it is refused).
    let (writer_tx, writer_rx) = oneshot::channel::<(Writer, OnUpgrade, oneshot::Sender<Opened>)>();
    let writer = WriterTask::new(writer_rx);
    // One task per connection, polling the application, then the writer: what the application
    // queues while handling a frame is written in the same poll, with no second task to wake.
    let task = futures_util::FutureExt::map(futures_util::future::join(app, writer), move |_| drop(registered));
    state.tracker.spawn(crate::ratelog::in_span(task, span));

    let decision = tokio::select! {
        biased;
        event = events.recv() => event,
        () = tokio::time::sleep(config.connect_timeout) => {
            tracing::warn!(timeout = ?config.connect_timeout, "consumer neither accepted nor refused the WebSocket in time; refused");
            conn.abort(close_code::ABNORMAL, "handshake timed out");
            crate::metrics::handshake("timed_out");
            return status_page(StatusCode::FORBIDDEN);
        }
        // The application ended first, or the server is draining.
        () = conn.cancelled() => return status_page(unserved(&conn)),
    };
    match decision {
        Some(Outbound::WebsocketAccept(accept)) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.extend(accept.headers);
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            let accept_key = derive_accept_key(key.as_bytes());
            if let Ok(value) = HeaderValue::from_str(&accept_key) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, value);
            }
            if let Some(subprotocol) = accept.subprotocol {
                match HeaderValue::from_str(&subprotocol) {
                    Ok(value) => {
                        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
                    }
                    Err(_) => tracing::warn!(%subprotocol, "subprotocol is not a valid header value; not sent"),
                }
            }
            crate::metrics::handshake("accepted");
            let writer = Writer::new(events, conn, state.clone());
            // Fails only when the connection's task is gone, and then there is nothing to write.
            let _ = writer_tx.send((writer, on_upgrade, opened_tx));
            response
        }
        Some(Outbound::WebsocketClose(close)) => {
            let by_origin =
                close.code == close_code::POLICY && close.reason == crate::middleware::origin::ORIGIN_REFUSED;
            crate::metrics::handshake(if by_origin { "origin" } else { "refused" });
            let _ = opened_tx.send(Err(close.code));
            status_page(StatusCode::FORBIDDEN)
        }
        Some(other) => {
            tracing::error!(event = ?other, "WebSocket application sent an event before accepting; refused");
            crate::metrics::handshake("error");
            conn.abort(close_code::ERROR, "sent before accept");
            status_page(StatusCode::INTERNAL_SERVER_ERROR)
        }
        // Every outbox is gone: the application ended (or is ending) without deciding.
        None => {
            conn.cancelled().await;
            status_page(unserved(&conn))
        }
    }
}

/// The application's end, seen by the connection: its outcome for a handshake still waiting,
/// then the connection's end; the end alone if the task is dropped unfinished.
struct AppDone(Arc<crate::connection::ConnState>);

impl AppDone {
    fn finish(self, result: &Result<(), AppError>) {
        if result.is_err() {
            self.0.abort(close_code::ERROR, "internal error");
        }
        let status = match result {
            Ok(()) => StatusCode::FORBIDDEN,
            Err(err) => error_status(err, &Protocol::Websocket),
        };
        self.0.finish_app(status.as_u16());
    }
}

impl Drop for AppDone {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The status for a handshake that ended before an accept (counted): the application's, or 503
/// when the server ended it (a drain, the runtime shutting down).
fn unserved(conn: &crate::connection::ConnState) -> StatusCode {
    let status = conn
        .app_status()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    crate::metrics::handshake(match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::FORBIDDEN => "refused",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "error",
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<crate::connection::ConnState> {
        Arc::new(crate::connection::ConnState::for_tests())
    }

    #[test]
    fn a_handshake_answers_with_how_the_application_ended() {
        let refused = conn();
        AppDone(refused.clone()).finish(&Ok(()));
        assert!(refused.is_cancelled());
        assert_eq!(unserved(&refused), StatusCode::FORBIDDEN);

        let panicked = conn();
        AppDone(panicked.clone()).finish(&Err(AppError::Panicked("boom".into())));
        assert_eq!(unserved(&panicked), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panicked.close_reason().code, close_code::ERROR);

        // The task dropped unfinished (the runtime shutting down): the handshake is not left
        // waiting, and answers 503.
        let dropped = conn();
        drop(AppDone(dropped.clone()));
        assert!(dropped.is_cancelled());
        assert_eq!(unserved(&dropped), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn websocket_keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"short"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
    }
}
