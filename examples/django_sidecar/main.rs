//! The WebSocket half of a Django site: Django (`examples/django_sidecar/site`) serves its pages,
//! logins and admin; this server serves `/ws/...` with Django's own users and sessions.
//!
//! ```sh
//! cargo run --example django_sidecar -- --addr 127.0.0.1:8001
//! ```
//!
//! Stable interface (other tools drive it):
//! - `--addr HOST:PORT` (default `127.0.0.1:8001`).
//! - Environment, named after Django's settings: `DJANGO_SECRET_KEY` (required),
//!   `DJANGO_SECRET_KEY_FALLBACKS` (comma-separated), `DJANGO_DATABASE_URL`
//!   (`sqlite:////abs/path.sqlite3` or `postgres://...`), `DJANGO_SESSION_ENGINE` (Django's
//!   dotted name, default `django.contrib.sessions.backends.db`), `DJANGO_SESSION_COOKIE_NAME`
//!   (default `sessionid`), `DJANGO_CACHE_URL` and `DJANGO_CACHE_KEY_PREFIX` (the `cache` and
//!   `cached_db` engines' Redis: `CACHES["default"]`'s `LOCATION` and `KEY_PREFIX`),
//!   `DJANGO_CHANNEL_LAYER_URL` (channels_redis's Redis, spoken in its wire format, so a Django
//!   view's `group_send` reaches these sockets; in-memory when unset),
//!   `DJANGO_CHANNEL_LAYER_PREFIX` (channels_redis's `prefix`, default `asgi`),
//!   `DJANGO_ALLOWED_HOSTS` (comma-separated; default localhost and 127.0.0.1).
//! - WebSocket `/ws/whoami/`: anyone; on connect sends
//!   `{"username": "<name or empty>", "is_authenticated": true|false}`.
//! - WebSocket `/ws/chat/<room>/`: the Channels tutorial's chat, logged-in users only (403
//!   otherwise). The client sends `{"message": "..."}`; the consumer sends
//!   `{"type": "chat.message", "message": "..."}` to the group `chat_<room>`; every member
//!   receives `{"message": "..."}`.
//! - Handshakes from pages of other sites are refused (403): the `Origin` must be one of the
//!   allowed hosts.
//!
//! Exit status 2 with a message on stderr for a configuration it cannot serve.

use channels::django::{DjangoConfig, DjangoUser};
use channels::layers::{RedisChannelLayer, RedisLayerConfig};
use channels::middleware::AllowedHostsOriginValidator;
use channels::prelude::*;
use channels::{auth, consumer, routing};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `/ws/whoami/`: who Django says the session belongs to.
#[auth(stack)]
#[consumer(websocket)]
struct Whoami;

#[consumer]
impl Whoami {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let user = self.scope.user.downcast_ref::<DjangoUser>();
        ws.accept().await?;
        ws.send_json(&json!({
            "username": user.map_or("", |user| user.username.as_str()),
            "is_authenticated": user.is_some(),
        }))
        .await
    }
}

/// What a chat client sends.
#[derive(Deserialize)]
struct Incoming {
    message: String,
}

/// What every member gets (the group message's `message`).
#[derive(Deserialize, Serialize)]
struct ChatMessage {
    message: String,
}

/// `/ws/chat/<room>/`: the Channels tutorial's chat, for Django's logged-in users.
#[auth(stack, required)]
#[consumer(json)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {
    fn groups(&self) -> [String; 1] {
        [format!("chat_{}", self.room)]
    }

    async fn receive_json(&mut self, _ws: &mut Websocket, incoming: Incoming) -> Result<(), ConsumerError> {
        let event = json!({ "type": "chat.message", "message": incoming.message });
        self.scope.layer()?.group_send(&format!("chat_{}", self.room), event.into()).await?;
        Ok(())
    }

    #[handler("chat.message")]
    async fn chat_message(&mut self, ws: &mut Websocket, event: ChatMessage) -> Result<(), ConsumerError> {
        ws.send_json(&event).await
    }
}

/// The server's settings, from the environment and `--addr`.
struct Settings {
    addr: String,
    django: DjangoConfig,
    allowed_hosts: Vec<String>,
    /// channels_redis's Redis and prefix, if set.
    channel_layer: Option<RedisLayerConfig>,
}

/// The WebSockets of a Django site: its users, sessions and channel layer. Settings come from
/// DJANGO_* environment variables named after Django's (DJANGO_SECRET_KEY, DJANGO_DATABASE_URL,
/// DJANGO_SESSION_ENGINE, DJANGO_CHANNEL_LAYER_URL, ...; see the README).
#[derive(clap::Parser)]
#[command(name = "django_sidecar")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8001")]
    addr: String,
}

fn settings() -> Result<Settings, String> {
    let Args { addr } = clap::Parser::parse();
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
    let channel_layer = var("DJANGO_CHANNEL_LAYER_URL").map(|url| {
        let prefix = var("DJANGO_CHANNEL_LAYER_PREFIX").unwrap_or_else(|| "asgi".to_owned());
        RedisLayerConfig { prefix, ..RedisLayerConfig::new(url) }.channels_redis()
    });
    let allowed_hosts = var("DJANGO_ALLOWED_HOSTS")
        .map(|hosts| hosts.split(',').map(str::trim).filter(|host| !host.is_empty()).map(str::to_owned).collect())
        .unwrap_or_else(|| vec!["localhost".to_owned(), "127.0.0.1".to_owned()]);
    let django = DjangoConfig::from_env().map_err(|err| err.to_string())?;
    Ok(Settings { addr, django, allowed_hosts, channel_layer })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let fail = |message: String| -> ! {
        eprintln!("django_sidecar: {message}");
        std::process::exit(2)
    };
    let settings = settings().unwrap_or_else(|message| fail(message));
    let auth = settings.django.auth_config().unwrap_or_else(|err| fail(err.to_string()));
    let mut app = routing! {
        websocket: AllowedHostsOriginValidator([
            "ws/whoami/" => Whoami,
            "ws/chat/<slug:room>/" => Chat,
        ], settings.allowed_hosts.clone()),
    }
    .auth(auth);
    if let Some(config) = settings.channel_layer.clone() {
        let layer = RedisChannelLayer::connect_with(config)
            .await
            .unwrap_or_else(|err| fail(format!("DJANGO_CHANNEL_LAYER_URL: {err}")));
        app = app.channel_layer(layer.into_layer());
    }
    let server = channels::Server::new(app)
        .configure(|config| config.allowed_hosts = settings.allowed_hosts.clone())
        .shutdown_on_signals();
    let listening = server.bind(&settings.addr).await?;
    tracing::info!(addr = %listening.local_addr(), "serving Django's WebSockets");
    listening.run().await
}
