//! Plain HTTP requests: the scope, the request-body inbox and the streamed response.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::task::JoinError;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::body::{Body, StreamBody, status_page};
use super::{ServerState, build_scope, error_status, run_app};
use crate::application::{AppError, ConnState, Inbox, Outbox, Source};
use crate::event::{Inbound, Outbound, RequestChunk, close_code};
use crate::scope::Protocol;

/// Outgoing body chunks queued per request.
const BODY_QUEUE: usize = 16;

/// The inbox of an HTTP application: request body chunks, then `HttpDisconnect` once the
/// response is done or the client left.
pub(crate) struct HttpSource {
    body: Option<Incoming>,
    received: usize,
    limit: usize,
    done: oneshot::Receiver<()>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    conn: Arc<ConnState>,
    disconnected: bool,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource").field("received", &self.received).finish_non_exhaustive()
    }
}

impl HttpSource {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        while let Some(body) = self.body.as_mut() {
            if body.is_end_stream() {
                self.body = None;
                return Poll::Ready(Some(Inbound::HttpRequest(RequestChunk { body: Bytes::new(), more_body: false })));
            }
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.received += data.len();
                    if self.received > self.limit {
                        self.body = None;
                        self.conn.abort(close_code::SIZE, "request body too large");
                        break;
                    }
                    return Poll::Ready(Some(Inbound::HttpRequest(RequestChunk { body: data, more_body: true })));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    return Poll::Ready(Some(Inbound::HttpRequest(RequestChunk {
                        body: Bytes::new(),
                        more_body: false,
                    })));
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::debug!(error = %err, "reading the request body failed");
                    self.body = None;
                    break;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.disconnected {
            return Poll::Ready(None);
        }
        let done = Pin::new(&mut self.done).poll(cx).is_ready();
        if done || self.cancelled.as_mut().poll(cx).is_ready() || self.conn.token.is_cancelled() {
            self.disconnected = true;
            return Poll::Ready(Some(Inbound::HttpDisconnect));
        }
        Poll::Pending
    }
}

/// Serves one plain HTTP request.
pub(super) async fn handle(
    state: Arc<ServerState>,
    request: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Body> {
    let config = &state.config;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > config.max_request_body) {
        return status_page(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let (parts, body) = request.into_parts();
    let scope = build_scope(Protocol::Http, parts, remote, local, config);
    let conn = Arc::new(ConnState::new(&state.shutdown, config.write_timeout, BODY_QUEUE));
    let (outbox, mut events) = Outbox::for_connection(conn.clone());
    let (done_tx, done_rx) = oneshot::channel();
    let source = HttpSource {
        body: Some(body),
        received: 0,
        limit: config.max_request_body,
        done: done_rx,
        cancelled: Box::pin(conn.token.clone().cancelled_owned()),
        conn: conn.clone(),
        disconnected: false,
    };
    let inbox = Inbox::from_source(Source::Http(Box::new(source)));
    let mut task = state.tracker.spawn(run_app(state.app.clone(), scope, inbox, outbox));

    let first = tokio::select! {
        biased;
        event = events.recv() => event,
        finished = &mut task => return unanswered(finished, &conn),
    };
    match first {
        Some(Outbound::HttpResponseStart(start)) => {
            let stream = StreamBody { events, _done: done_tx, finished: false };
            let mut response = Response::new(Body::Stream(Box::new(stream)));
            *response.status_mut() = start.status;
            *response.headers_mut() = start.headers;
            response
        }
        Some(other) => {
            tracing::error!(event = ?other, "HTTP application sent something other than a response start first");
            conn.abort(close_code::ERROR, "invalid response");
            status_page(StatusCode::INTERNAL_SERVER_ERROR)
        }
        // Every outbox is gone: the application ended without answering.
        None => unanswered(task.await, &conn),
    }
}

/// The response for an application that ended without starting one.
fn unanswered(finished: Result<Result<(), AppError>, JoinError>, conn: &ConnState) -> Response<Body> {
    let status = match finished {
        Ok(Ok(())) if conn.close_reason().code == close_code::SIZE => StatusCode::PAYLOAD_TOO_LARGE,
        Ok(Ok(())) => {
            tracing::error!("HTTP application finished without sending a response");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Ok(Err(err)) => error_status(&err, &Protocol::Http),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    status_page(status)
}
