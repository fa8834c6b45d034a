//! [`Client`]: the protocol's Rust client (reconnect with backoff and jitter, resume from the
//! last id, presence, heartbeats), over plain `ws://`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Uri};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::HEARTBEAT;
use crate::layers::{PresenceDiff, PresenceState};

/// Settings of a [`Client`] (the JavaScript client's defaults).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Wait before the first reconnect (default 500 ms); doubled per failed attempt.
    pub backoff_initial: Duration,
    /// The longest wait between reconnects (default 10 s).
    pub backoff_max: Duration,
    /// Each wait is shortened by up to this fraction, at random (default 0.5).
    pub jitter: f64,
    /// Between heartbeats while connected (default 25 s).
    pub heartbeat_interval: Duration,
    /// Without any message this long after a heartbeat, the connection counts as dead and is
    /// replaced (default 10 s).
    pub heartbeat_timeout: Duration,
    /// Ask for presence (`?presence=1`).
    pub presence: bool,
    /// Resume after this id on the first connection too.
    pub since: Option<String>,
    /// Extra handshake headers (a session `Cookie`, an `Origin`).
    pub headers: Vec<(String, String)>,
    /// Connection attempts after which [`Client::next`] gives up (`None`: never).
    pub max_attempts: Option<u32>,
    /// How long connecting (TCP and handshake) and sending may take (default 10 s).
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            jitter: 0.5,
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            presence: false,
            since: None,
            headers: Vec::new(),
            max_attempts: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What [`Client::next`] yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An application message (a JSON value; a text that is not JSON comes as a string).
    Message(serde_json::Value),
    /// Messages were lost (`{"recovered": false}`): reload state.
    NotRecovered,
    /// The presence state changed; see [`Client::presence`].
    Presence,
    /// The connection dropped (close code, 1006 without one); the client reconnects, except
    /// after 1000 and 4000–4999 (the application's codes, e.g. logged out): then
    /// [`next`](Client::next) returns `None` next.
    Disconnected(u16),
    /// Connected again after a drop, resuming after [`Client::last_id`].
    Reconnected,
}

/// A client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not a `ws://` URL with a host.
    #[error("not a ws:// URL: {0}")]
    Url(String),
    /// Connecting or sending took longer than [`ClientConfig::timeout`].
    #[error("timed out")]
    Timeout,
    /// Connecting or talking to the server failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// Connecting failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// Sending while disconnected (nothing is queued).
    #[error("not connected")]
    NotConnected,
    /// The client gave up after `max_attempts`, or was closed.
    #[error("closed")]
    Closed,
}

type Socket = WebSocketStream<TcpStream>;

/// A reconnecting client of the protocol. Drive it with [`next`](Self::next): reconnects
/// happen inside it, resuming after the last `"id"` received.
#[derive(Debug)]
pub struct Client {
    url: String,
    config: ClientConfig,
    socket: Option<Socket>,
    last_id: Option<String>,
    presence: PresenceState,
    attempt: u32,
    /// When the current connection opened (the attempt count resets once it has lasted).
    opened: Instant,
    next_heartbeat: Instant,
    /// A heartbeat is out: the connection is dead if nothing arrives by then.
    dead_at: Option<Instant>,
    closed: bool,
    seed: u64,
}

impl Client {
    /// Connects (the first attempt must succeed).
    ///
    /// # Errors
    /// A bad URL, or the connection or handshake failed.
    pub async fn connect(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let seed = crate::layers::Position::new_epoch();
        let mut client = Client {
            url: url.to_owned(),
            last_id: config.since.clone(),
            config,
            socket: None,
            presence: PresenceState::new(),
            attempt: 0,
            opened: Instant::now(),
            next_heartbeat: Instant::now(),
            dead_at: None,
            closed: false,
            seed,
        };
        client.open().await?;
        Ok(client)
    }

    /// The id of the last message received with one: where a reconnect resumes.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The merged presence state.
    pub fn presence(&self) -> &PresenceState {
        &self.presence
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `value` as JSON.
    ///
    /// # Errors
    /// [`ClientError::NotConnected`] between connections, or a send failure.
    pub async fn send_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClientError> {
        let text = serde_json::to_string(value).map_err(|err| ClientError::Url(err.to_string()))?;
        let socket = self.socket.as_mut().ok_or(ClientError::NotConnected)?;
        tokio::time::timeout(self.config.timeout, socket.send(Message::Text(text.into())))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Closes for good.
    pub async fn close(&mut self) {
        self.closed = true;
        if let Some(mut socket) = self.socket.take() {
            let _ = socket.close(None).await;
        }
    }

    /// The next event; reconnects (with backoff) as needed. `None` once closed or given up.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if self.closed {
                return None;
            }
            let Some(socket) = self.socket.as_mut() else {
                if self.config.max_attempts.is_some_and(|max| self.attempt >= max) {
                    self.closed = true;
                    return None;
                }
                tokio::time::sleep(self.backoff()).await;
                self.attempt += 1;
                if self.open().await.is_ok() {
                    return Some(Event::Reconnected);
                }
                continue;
            };
            let deadline = self.dead_at.unwrap_or(self.next_heartbeat);
            let received = tokio::select! {
                received = socket.next() => received,
                () = tokio::time::sleep_until(deadline) => {
                    if self.dead_at.is_some() {
                        self.socket = None;
                        return Some(Event::Disconnected(1006));
                    }
                    let sent = tokio::time::timeout(self.config.timeout, socket.send(Message::Text(HEARTBEAT.into()))).await;
                    self.dead_at = Some(Instant::now() + self.config.heartbeat_timeout);
                    if !matches!(sent, Ok(Ok(()))) {
                        self.socket = None;
                        return Some(Event::Disconnected(1006));
                    }
                    continue;
                }
            };
            self.dead_at = None;
            self.next_heartbeat = Instant::now() + self.config.heartbeat_interval;
            match received {
                Some(Ok(Message::Text(text))) => {
                    if let Some(event) = self.receive(text.as_str()) {
                        return Some(event);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    self.socket = None;
                    let code = frame.map_or(1005, |frame| u16::from(frame.code));
                    // A normal close or an application's code (e.g. logged out): do not come back.
                    self.closed = code == 1000 || (4000..5000).contains(&code);
                    return Some(Event::Disconnected(code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    self.socket = None;
                    return Some(Event::Disconnected(1006));
                }
            }
        }
    }

    /// One text message: the protocol's own, or the app's (remembering its id).
    fn receive(&mut self, text: &str) -> Option<Event> {
        if text == HEARTBEAT {
            return None;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return Some(Event::Message(serde_json::Value::String(text.to_owned())));
        };
        if let Some(object) = value.as_object() {
            if object.len() == 1 && object.get("recovered") == Some(&serde_json::Value::Bool(false)) {
                return Some(Event::NotRecovered);
            }
            if let Some(state) = object.get("presence_state") {
                self.presence = serde_json::from_value(state.clone()).unwrap_or_default();
                return Some(Event::Presence);
            }
            if let Some(diff) = object.get("presence_diff") {
                let diff: PresenceDiff = serde_json::from_value(diff.clone()).unwrap_or_default();
                apply_diff(&mut self.presence, diff);
                return Some(Event::Presence);
            }
            // Only a position is remembered for resuming (an app's own `id` fields are not).
            if let Some(id) = object.get("id").and_then(serde_json::Value::as_str)
                && id.parse::<crate::layers::Position>().is_ok()
            {
                self.last_id = Some(id.to_owned());
            }
        }
        Some(Event::Message(value))
    }

    /// The wait before the next attempt: exponential, capped, shortened by up to `jitter`.
    /// A connection that lasted at least `backoff_max` resets the count (one that opens and
    /// drops at once keeps backing off).
    fn backoff(&mut self) -> Duration {
        if self.opened.elapsed() >= self.config.backoff_max {
            self.attempt = 0;
        }
        let full = self.config.backoff_initial.saturating_mul(2u32.saturating_pow(self.attempt.min(16)));
        let full = full.min(self.config.backoff_max);
        // xorshift: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let random = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        full.mul_f64(1.0 - self.config.jitter.clamp(0.0, 1.0) * random)
    }

    /// Opens a connection, resuming after the last id.
    async fn open(&mut self) -> Result<(), ClientError> {
        let mut url = self.url.clone();
        let mut params = Vec::new();
        if let Some(id) = &self.last_id {
            params.push(format!(
                "since={}",
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        if self.config.presence {
            params.push("presence=1".to_owned());
        }
        if !params.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&params.join("&"));
        }
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.clone()))?;
        if uri.scheme_str() != Some("ws") {
            return Err(ClientError::Url(url));
        }
        let host = uri.host().ok_or_else(|| ClientError::Url(url.clone()))?;
        let tcp =
            TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), uri.port_u16().unwrap_or(80)))
                .await?;
        let mut request = url.as_str().into_client_request()?;
        for (name, value) in &self.config.headers {
            let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            else {
                return Err(ClientError::Url(format!("bad header {name:?}")));
            };
            request.headers_mut().insert(name, value);
        }
        let (socket, _) = tokio::time::timeout(self.config.timeout, tokio_tungstenite::client_async(request, tcp))
            .await
            .map_err(|_| ClientError::Timeout)??;
        self.socket = Some(socket);
        self.opened = Instant::now();
        self.dead_at = None;
        self.next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        Ok(())
    }
}

/// Merges `diff` into `state`: leaves by id, then joins not already there.
pub(crate) fn apply_diff(state: &mut PresenceState, diff: PresenceDiff) {
    for (key, metas) in diff.leaves {
        if let Some(current) = state.get_mut(&key) {
            current.retain(|meta| !metas.iter().any(|gone| gone.id == meta.id));
            if current.is_empty() {
                state.remove(&key);
            }
        }
    }
    for (key, metas) in diff.joins {
        let current = state.entry(key).or_default();
        for meta in metas {
            if !current.iter().any(|known| known.id == meta.id) {
                current.push(meta);
            }
        }
    }
}
