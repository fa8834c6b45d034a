//! Plain HTTP requests: the scope, the request-body inbox and the streamed response.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use tokio::sync::oneshot;
use tokio::task::JoinError;
use tokio::time::Sleep;

use super::body::{Body, RequestBody, StreamBody, status_page};
use super::{Opening, ServerState, error_status, run_app};
use crate::connection::{ConnState, EventSource, Inbox};
use crate::error::AppError;
use crate::event::{Inbound, Outbound, RequestChunk, close_code};
use crate::scope::Protocol;

/// Outgoing body chunks queued per request.
const BODY_QUEUE: usize = 16;

/// Why reading a request body stopped early, recorded as the connection's close code (an HTTP
/// connection has no close frame: the code only picks the status of the server's answer).
mod body_error {
    use crate::event::close_code;
    /// Larger than `max_request_body`: 413.
    pub(super) const TOO_LARGE: u16 = close_code::SIZE;
    /// Malformed (bad chunked encoding) or cut short (the client left mid-body): 400.
    pub(super) const MALFORMED: u16 = close_code::PROTOCOL;
    /// Not complete within `body_timeout`: 408.
    pub(super) const TIMED_OUT: u16 = 4408;
}

/// The inbox of an HTTP application: request body chunks, then `HttpDisconnect` once the
/// response is done or the client left.
pub(crate) struct HttpSource {
    body: Option<RequestBody>,
    received: usize,
    limit: usize,
    /// When the whole body must have arrived; made when the first body read waits.
    deadline: Option<Pin<Box<Sleep>>>,
    body_timeout: Option<std::time::Duration>,
    done: oneshot::Receiver<()>,
    cancelled: crate::BoxFuture<'static, ()>,
    conn: Arc<ConnState>,
    disconnected: bool,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource").field("received", &self.received).finish_non_exhaustive()
    }
}

impl EventSource for HttpSource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.body.is_some() {
            match self.poll_body(cx) {
                Poll::Ready(Ok(chunk)) => return Poll::Ready(Some(Inbound::HttpRequest(chunk))),
                Poll::Ready(Err((code, reason))) => {
                    // The application hears `HttpDisconnect`; the server answers with the status
                    // for `code` and closes the connection.
                    self.body = None;
                    self.conn.abort(code, reason);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.disconnected {
            return Poll::Ready(None);
        }
        let done = Pin::new(&mut self.done).poll(cx).is_ready();
        if done || self.cancelled.as_mut().poll(cx).is_ready() || self.conn.is_cancelled() {
            self.disconnected = true;
            return Poll::Ready(Some(Inbound::HttpDisconnect));
        }
        Poll::Pending
    }
}

impl HttpSource {
    /// The next body chunk (`more_body: false` for the last), or why the body failed.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<RequestChunk, (u16, &'static str)>> {
        let last = || RequestChunk { body: Bytes::new(), more_body: false };
        let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(last())) };
        loop {
            if body.is_end_stream() {
                self.body = None;
                return Poll::Ready(Ok(last()));
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.received += data.len();
                    if self.received > self.limit {
                        return Poll::Ready(Err((body_error::TOO_LARGE, "request body too large")));
                    }
                    return Poll::Ready(Ok(RequestChunk { body: data, more_body: true }));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    return Poll::Ready(Ok(last()));
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::debug!(error = %err, "reading the request body failed");
                    return Poll::Ready(Err((body_error::MALFORMED, "malformed or incomplete request body")));
                }
                Poll::Pending => {
                    let Some(timeout) = self.body_timeout else { return Poll::Pending };
                    let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        tracing::debug!(?timeout, received = self.received, "request body not complete in time");
                        return Poll::Ready(Err((body_error::TIMED_OUT, "request body timed out")));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Serves one plain HTTP request.
pub(super) async fn handle(
    state: Arc<ServerState>,
    request: Request<RequestBody>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
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
    let Opening { scope, span, conn, outbox, mut events } =
        Opening::new(&state, Protocol::Http, parts, (remote, local), BODY_QUEUE);
    let (done_tx, done_rx) = oneshot::channel();
    let source = HttpSource {
        body: Some(body),
        received: 0,
        limit: config.max_request_body,
        deadline: None,
        body_timeout: config.body_timeout,
        done: done_rx,
        cancelled: {
            let conn = conn.clone();
            Box::pin(async move { conn.cancelled().await })
        },
        conn: conn.clone(),
        disconnected: false,
    };
    let inbox = Inbox::from_source(source);
    let mut task = state.tracker.spawn(crate::ratelog::in_span(run_app(state.app.clone(), scope, inbox, outbox), span));

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
    let status = match &finished {
        Ok(Ok(())) => match conn.close_reason().code {
            body_error::TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            body_error::MALFORMED => StatusCode::BAD_REQUEST,
            body_error::TIMED_OUT => StatusCode::REQUEST_TIMEOUT,
            _ => {
                tracing::error!("HTTP application finished without sending a response");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        },
        Ok(Err(err)) => error_status(err, &Protocol::Http),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = status_page(status);
    if let Ok(Err(AppError::MethodNotAllowed(refused))) = &finished
        && let Ok(allow) = http::HeaderValue::from_str(&refused.allowed.join(", "))
    {
        response.headers_mut().insert(http::header::ALLOW, allow);
    }
    if matches!(status, StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) {
        // The rest of the request is unread or unreadable: the connection cannot be reused.
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}
