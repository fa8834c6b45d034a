//! Clients of the protocol in [`docs::protocol`](crate::docs::protocol): resume after a
//! reconnect, presence, heartbeats.
//!
//! - **JavaScript**: [`JS`] is an ES module (no build step) with TypeScript declarations in
//!   [`TYPES`]; route [`ClientScript`] to serve them, e.g.
//!   `"static/channels.js" => { ClientScript::as_app() }` and
//!   `"static/channels.d.ts" => { ClientScript::as_app() }` in `routing!` (the path's ending
//!   picks the file). A page then does
//!   `import { Socket } from "/static/channels.js"`.
//! - **Rust**: [`Client`], for services and tests.
//!
//! ```no_run
//! use channels::client::{Client, ClientConfig, Event};
//!
//! # async fn run() -> Result<(), channels::client::ClientError> {
//! let mut client = Client::connect("ws://127.0.0.1:8000/ws/chat/lobby/", ClientConfig::default()).await?;
//! client.send_json(&serde_json::json!({ "message": "hi" })).await?;
//! while let Some(event) = client.next().await {
//!     match event {
//!         Event::Message(message) => println!("{message}"),
//!         Event::NotRecovered => println!("messages were lost: reload"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod socket;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, StatusCode};

pub use self::socket::{Client, ClientConfig, ClientError, Event};
pub use crate::consumer::HEARTBEAT;
use crate::consumer::{ConsumerError, FromScope, HttpConsumer, HttpResponse, require_method};
use crate::scope::Scope;

/// The JavaScript client: an ES module exporting `Socket`, `applyPresenceDiff` and `backoff`.
pub const JS: &str = include_str!("channels.js");

/// TypeScript declarations of [`JS`].
pub const TYPES: &str = include_str!("channels.d.ts");

/// Serves [`JS`] (or [`TYPES`] when the path ends with `.d.ts`) to `GET` and `HEAD`, with an
/// `ETag` (a matching `If-None-Match` gets 304) and an hour of caching.
#[derive(Debug)]
pub struct ClientScript {
    scope: Scope,
}

impl FromScope for ClientScript {
    fn from_scope(scope: Scope) -> Result<Self, ConsumerError> {
        require_method(&scope, &["GET", "HEAD"])?;
        Ok(ClientScript { scope })
    }
}

/// A strong `ETag` for `body` (FNV-1a of its bytes; it is a constant of this build).
fn etag(body: &str) -> String {
    format!("\"{:016x}\"", crate::layers::stable_hash(body))
}

impl HttpConsumer for ClientScript {
    const RECEIVES_CHANNEL_MESSAGES: bool = false;

    async fn handle(&mut self, _body: bytes::Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let (body, content_type) = if self.scope.path.ends_with(".d.ts") {
            (TYPES, "application/typescript; charset=utf-8")
        } else {
            (JS, "text/javascript; charset=utf-8")
        };
        let tag = etag(body);
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
        headers.insert(ETAG, HeaderValue::from_str(&tag)?);
        if self.scope.header(IF_NONE_MATCH.as_str()).is_some_and(|given| given.split(',').any(|one| one.trim() == tag))
        {
            return response.send_response(StatusCode::NOT_MODIFIED, headers, bytes::Bytes::new()).await;
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response.send_response(StatusCode::OK, headers, body).await
    }
}
