//! [`HttpConsumer`] and the [`HttpResponse`] handle it answers through.

use std::future::{Future, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;

use super::{ConsumerApp, ConsumerError, FromScope, settle, unhandled_message};
use crate::application::{Inbox, Outbox};
use crate::error::{AppError, SendError};
use crate::event::{ChannelMessage, Inbound, Outbound, ResponseStart};
use crate::layers::{Since, Track};

/// What Django's `iri_to_uri` encodes: everything but letters, digits and
/// `/#%[]=:;$&()+,!?*@'~-._`.
const IRI_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'#')
    .remove(b'%')
    .remove(b'[')
    .remove(b']')
    .remove(b'=')
    .remove(b':')
    .remove(b';')
    .remove(b'$')
    .remove(b'&')
    .remove(b'(')
    .remove(b')')
    .remove(b'+')
    .remove(b',')
    .remove(b'!')
    .remove(b'?')
    .remove(b'*')
    .remove(b'@')
    .remove(b'\'')
    .remove(b'~')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Streaming,
    Finished,
}

/// The response handle an HTTP consumer answers through: a whole response, or headers then a
/// streamed body.
///
/// Its methods fail with a [`ConsumerError`], as consumer methods do, so a method can end with
/// a send (`response.text(..).await`); the cause is a [`SendError`]
/// (`err.downcast_ref::<SendError>()`, or [`ConsumerError::is_closed`]).
#[derive(Debug)]
pub struct HttpResponse {
    outbox: Outbox,
    state: State,
}

impl HttpResponse {
    /// A response handle over `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        HttpResponse { outbox, state: State::NotStarted }
    }

    /// Starts the response with a status and headers; send the body with
    /// [`send_body`](Self::send_body).
    ///
    /// # Errors
    /// [`SendError::InvalidState`] if the response already started; [`SendError::Closed`] if
    /// the client left.
    pub async fn send_headers(&mut self, status: StatusCode, headers: HeaderMap) -> Result<(), ConsumerError> {
        if self.state != State::NotStarted {
            return Err(SendError::InvalidState("the HTTP response has already been started").into());
        }
        self.outbox.send(Outbound::HttpResponseStart(Box::new(ResponseStart { status, headers }))).await?;
        self.state = State::Streaming;
        Ok(())
    }

    /// Sends a body chunk; `more_body == false` finishes the response.
    ///
    /// # Errors
    /// [`SendError::InvalidState`] before `send_headers` or after the last chunk.
    pub async fn send_body(&mut self, body: impl Into<Bytes>, more_body: bool) -> Result<(), ConsumerError> {
        if self.state != State::Streaming {
            return Err(
                SendError::InvalidState("HTTP body sent before send_headers or after the response finished").into()
            );
        }
        self.outbox.send(Outbound::HttpResponseBody { body: body.into(), more_body }).await?;
        if !more_body {
            self.state = State::Finished;
        }
        Ok(())
    }

    /// Sends a whole response; `Content-Length` is set from the body.
    ///
    /// # Errors
    /// As [`send_headers`](Self::send_headers).
    pub async fn send_response(
        &mut self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<(), ConsumerError> {
        let body = body.into();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.send_headers(status, headers).await?;
        self.send_body(body, false).await
    }

    /// Sends a whole `text/plain; charset=utf-8` response.
    ///
    /// # Errors
    /// As [`send_headers`](Self::send_headers).
    pub async fn text(&mut self, status: StatusCode, body: impl Into<String>) -> Result<(), ConsumerError> {
        self.typed(status, "text/plain; charset=utf-8", Bytes::from(body.into())).await
    }

    /// Sends a whole `text/html; charset=utf-8` response.
    ///
    /// # Errors
    /// As [`send_headers`](Self::send_headers).
    pub async fn html(&mut self, status: StatusCode, body: impl Into<String>) -> Result<(), ConsumerError> {
        self.typed(status, "text/html; charset=utf-8", Bytes::from(body.into())).await
    }

    /// Sends a `302 Found` to `location` with an empty body (Django's `redirect`). As Django's
    /// `iri_to_uri`, characters a URL cannot carry as they are (non-ASCII, spaces, quotes,
    /// controls) are percent-encoded; `%` is kept, so an encoded URL stays as it is. A location
    /// taken from the request (a `?next=`) must be checked first:
    /// [`url_has_allowed_host_and_scheme`](crate::security::url_has_allowed_host_and_scheme).
    ///
    /// # Errors
    /// As [`send_headers`](Self::send_headers).
    pub async fn redirect(&mut self, location: &str) -> Result<(), ConsumerError> {
        let encoded = percent_encoding::utf8_percent_encode(location, IRI_ENCODED).to_string();
        let location = HeaderValue::from_str(&encoded)
            .map_err(|_| SendError::InvalidState("the redirect location is not a valid header value"))?;
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, location);
        self.send_response(StatusCode::FOUND, headers, Bytes::new()).await
    }

    /// Sends `value` as a whole `application/json` response.
    ///
    /// # Errors
    /// A serialization error, or as [`send_headers`](Self::send_headers).
    pub async fn json<T: Serialize + ?Sized>(&mut self, status: StatusCode, value: &T) -> Result<(), ConsumerError> {
        let body = serde_json::to_vec(value)?;
        self.typed(status, "application/json", Bytes::from(body)).await
    }

    async fn typed(
        &mut self,
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(), ConsumerError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.send_response(status, headers, body).await
    }

    /// True once headers were sent.
    pub fn is_started(&self) -> bool {
        self.state != State::NotStarted
    }

    /// True once the last body chunk was sent.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The outbox, to clone into a background task.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// An HTTP consumer (Channels' `AsyncHttpConsumer`).
///
/// `handle` gets the whole request body (the request itself is in the scope). It must at least
/// start the response; it may return with the body unfinished and keep streaming from
/// `handle_message` (long-poll, server-sent events) until the last chunk or the client leaves.
/// A `handle` that returns without starting a response is an error (HTTP 500).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `HttpConsumer`",
    note = "with the macros, a `#[consumer(http)]` struct needs a `#[consumer]` impl block with \
            `async fn handle(&mut self, body: Bytes, response: &mut HttpResponse)`"
)]
pub trait HttpConsumer: Send + 'static {
    /// Whether each instance gets a channel on the layer and receives its messages through
    /// `handle_message`. `#[consumer]` sets it to whether the impl block has handlers or groups.
    const RECEIVES_CHANNEL_MESSAGES: bool = true;

    /// The groups to join before `connect` (and leave at the end), e.g. a room from the URL.
    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where this connection starts in the history of the groups it joins that keep one
    /// ([`HistoryConfig`](crate::layers::HistoryConfig)). `requested` is what the client asked
    /// for with the `since` query-string parameter (`?since=<position>`: every message after
    /// it); the default takes it as is. Return e.g. `Since { last: 50, ..requested }` to also
    /// replay a room's last 50 messages on a fresh join or when resuming fails, or a position
    /// the client sent another way.
    fn since(&self, requested: Since) -> Since {
        requested
    }

    /// What to track in a group's presence while this connection lives (e.g. the user, in the
    /// room's group): tracked after the groups are joined, untracked when the consumer ends.
    /// The consumer then gets the group's state first (`"presence.state"`) and its changes
    /// (`"presence.diff"`). `None` (the default): nothing.
    fn presence(&self) -> Option<Track> {
        None
    }

    /// Handles the request.
    fn handle(
        &mut self,
        body: Bytes,
        response: &mut HttpResponse,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    /// A channel-layer message, while the response is still open.
    fn handle_message(
        &mut self,
        response: &mut HttpResponse,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = response;
        ready(unhandled_message(&message))
    }

    /// The request is over: the response was sent or the client left.
    fn disconnect(&mut self) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        ready(Ok(()))
    }

    /// This consumer as an application, built per request with [`FromScope`].
    fn as_app() -> ConsumerApp<Self>
    where
        Self: FromScope,
    {
        ConsumerApp::http(Self::from_scope)
    }
}

pub(super) async fn drive<C: HttpConsumer>(
    mut consumer: Box<C>,
    mut inbox: Inbox,
    outbox: Outbox,
) -> Result<(), AppError> {
    let mut response = HttpResponse::new(outbox);
    let mut body = BytesMut::new();
    // Layer messages that arrive while the body is read are handled after `handle`.
    let mut early = Vec::new();
    let body = loop {
        match inbox.recv().await {
            Some(Inbound::HttpRequest(chunk)) if chunk.more_body => body.extend_from_slice(&chunk.body),
            Some(Inbound::HttpRequest(chunk)) if body.is_empty() => break chunk.body,
            Some(Inbound::HttpRequest(chunk)) => {
                body.extend_from_slice(&chunk.body);
                break body.freeze();
            }
            Some(Inbound::Channel(message)) => early.push(message),
            Some(Inbound::HttpDisconnect) | None => return settle(consumer.disconnect().await),
            Some(_) => {}
        }
    };
    settle(consumer.handle(body, &mut response).await)?;
    if !response.is_started() {
        return Err(AppError::Consumer(ConsumerError::msg(
            "HttpConsumer::handle returned without starting a response",
        )));
    }
    for message in early {
        if response.is_finished() {
            break;
        }
        settle(consumer.handle_message(&mut response, message).await)?;
    }
    while !response.is_finished() {
        match inbox.recv().await {
            Some(Inbound::Channel(message)) => settle(consumer.handle_message(&mut response, message).await)?,
            Some(Inbound::HttpDisconnect) | None => break,
            Some(_) => {}
        }
    }
    settle(consumer.disconnect().await)
}
