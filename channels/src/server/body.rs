//! The response body type of the server: a fixed body, or chunks streamed from the outbox.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use crate::BoxError;
use crate::event::Outbound;

/// A request body: hyper's, from this crate's server, or any other (a service mounted in an
/// axum router gets axum's).
pub(crate) enum RequestBody {
    Hyper(hyper::body::Incoming),
    #[cfg_attr(not(feature = "axum"), expect(dead_code, reason = "made by the axum service only"))]
    Boxed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Boxed(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Boxed(body) => body.size_hint(),
        }
    }
}

/// A response body: fixed bytes, or streamed from an HTTP application's outbox.
#[derive(Debug)]
pub(crate) enum Body {
    Full(Option<Bytes>),
    Stream(Box<StreamBody>),
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body::Full(None)
    }
}

/// Streams `HttpResponseBody` events. Dropping it (response done, or client gone) signals the
/// application's inbox through `_done`, which then yields `HttpDisconnect`.
#[derive(Debug)]
pub(crate) struct StreamBody {
    pub(crate) events: crate::connection::Events,
    pub(crate) _done: oneshot::Sender<()>,
    pub(crate) finished: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the application ended before finishing the response body")]
struct Truncated;

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Body::Stream(stream) => loop {
                if stream.finished {
                    return Poll::Ready(None);
                }
                match stream.events.poll_recv(cx) {
                    Poll::Ready(Some(Outbound::HttpResponseBody { body, more_body })) => {
                        stream.finished = !more_body;
                        if !body.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(body))));
                        }
                    }
                    Poll::Ready(Some(other)) => {
                        tracing::error!(event = ?other, "unexpected event in an HTTP response body; ignored");
                    }
                    Poll::Ready(None) => {
                        stream.finished = true;
                        return Poll::Ready(Some(Err(Box::new(Truncated))));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(stream) => stream.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A small plain-text response, for errors the server answers itself.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The plain-text response for a status, with its reason phrase as the body.
pub(crate) fn status_page(status: StatusCode) -> Response<Body> {
    plain(status, status.canonical_reason().unwrap_or("Error"))
}
