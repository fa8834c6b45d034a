//! The flagship example: chat rooms with logins. Run with `cargo run --example chat`.
//!
//! Options: `--addr HOST:PORT` (default 127.0.0.1:8000), `--db PATH` (SQLite file, default
//! `chat.sqlite3`, created on first run with the demo users `alice` and `bob`),
//! `--demo-password PW` (their password on first run, default `channels-demo`),
//! `--allowed-host HOST` (repeatable; the names the site is reached by, as Django's
//! `ALLOWED_HOSTS`; default: the address it serves on and `localhost`, on its port only),
//! `--login-attempts N` (per client address and minute, default 20),
//! `--create-user NAME:PASSWORD`, `--redis URL` (channel layer and sessions in Redis),
//! `--presence-ttl SECONDS` (with `--redis`: how soon a dead process's users leave the online
//! list, default 30).
//!
//! Security defaults: cross-site form posts are refused (`CsrfMiddleware`), responses carry
//! Django's security headers, `?next=` only redirects within the site, password checks run on
//! one thread per core behind a short queue (503 when it is full) and are limited per client
//! address (429), the chat socket accepts only pages of the site's own origin (port included),
//! and each socket may send 20 messages a second (bursts of 40).
//!
//! Stable interface (other clients and tools drive it):
//! - `GET /login/`: the form; `POST /login/` (form fields `username`, `password`): 302 to the
//!   lobby (or to a local `?next=`) with the session cookie, or 200 with the form and an error;
//!   429 past the attempts limit, 503 when the password checks are saturated.
//! - `POST /logout/`: ends the session and closes the user's chat sockets (code 4001), 302 to
//!   `/login/`; other methods get 405.
//! - A cross-site `POST` (by `Sec-Fetch-Site` or `Origin`) gets 403.
//! - `GET /chat/<room>/`: the chat page (302 to `/login/?next=...` when logged out).
//! - `GET /metrics`: the server's metrics in Prometheus' text format (`channels::metrics` lists
//!   them; `channels_connections_open{protocol="websocket"}` is the open chat sockets), for
//!   clients on this machine only (others get 404): scrape it locally or through your proxy.
//! - WebSocket `/ws/chat/<room>/`: send `{"message": "..."}`; every member of the room, the
//!   sender too, receives `{"user": "<username>", "message": "...", "id": "<opaque>"}`. A fresh
//!   connection first gets the room's last 50 messages. With `?since=<id>` it first gets every
//!   message of the room after that id, in order, then live ones; when that cannot be done
//!   (the room's history no longer reaches back that far, was lost, or the id is not one), the
//!   first message is `{"recovered": false}`, then the last 50. With `?presence=1` it also
//!   gets `{"presence_state": {...}}` and `{"presence_diff": {...}}` (who is online; the
//!   protocol of `channels::docs::protocol`). With `--redis`, any process serving the room
//!   resumes what another delivered. Anonymous connections and cross-site `Origin`s are
//!   refused with HTTP 403.
//! - `GET /static/channels.js`: the JavaScript client the page uses.

mod db;
mod pages;

use channels::client::ClientScript;
use channels::consumer::{Form, unhandled_websocket_message};
use channels::http::{HeaderMap, HeaderValue};
use channels::layers::{
    HistoryConfig, InMemoryChannelLayer, Layer, LayerConfig, RedisChannelLayer, RedisLayerConfig, Since, Track,
    close_message, user_group,
};
use channels::middleware::{
    AllowedHostsOriginValidator, AuthConfig, AuthMiddlewareStack, CsrfMiddleware, InMemorySessionStore,
    RedisSessionStore, SecurityHeaders, login, logout,
};
use channels::prelude::*;
use channels::security::url_has_allowed_host_and_scheme;
use channels::{auth, consumer, routing};
use db::{Busy, Db, LoginLimiter, Users};
use serde::Deserialize;
use serde_json::json;

/// What the login page needs: app state, given to the router with `.extension(..)`.
#[derive(Clone)]
struct Logins {
    users: Users,
    limiter: std::sync::Arc<LoginLimiter>,
}

/// A page with a status and `Retry-After`.
async fn try_later(
    response: &mut HttpResponse,
    status: StatusCode,
    seconds: u32,
    error: &str,
) -> Result<(), ConsumerError> {
    let mut headers = HeaderMap::new();
    headers.insert(channels::http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(channels::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response.send_response(status, headers, pages::login(Some(error))).await?;
    Ok(())
}

/// `GET /login/` and `POST /login/`.
#[consumer(http)]
struct LoginPage {
    #[state]
    logins: Logins,
}

#[consumer]
impl LoginPage {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        if self.scope.method != Method::POST {
            response.html(StatusCode::OK, pages::login(None)).await?;
            return Ok(());
        }
        let logins = &self.logins;
        if !logins.limiter.allow(self.scope.client.map(|client| client.ip())) {
            return try_later(response, StatusCode::TOO_MANY_REQUESTS, 60, "Too many login attempts; wait a minute.")
                .await;
        }
        // Not a form (or a flood of fields): no credentials.
        let form = Form::parse(&self.scope, &body).unwrap_or_default();
        let (username, password) = (form.get("username").unwrap_or(""), form.get("password").unwrap_or(""));
        match logins.users.authenticate(username, password).await {
            Ok(Some(user)) => {
                login(&mut self.scope, user).await?;
                let next = self.scope.query_pairs().find(|(key, _)| key == "next").map(|(_, next)| next);
                // Only this site: never an open redirect (Django's check, on the decoded value).
                let host = self.scope.header("host").unwrap_or("");
                let next = next.filter(|next| url_has_allowed_host_and_scheme(next, &[host], false));
                response.redirect(next.as_deref().unwrap_or("/chat/lobby/")).await
            }
            Ok(None) => {
                response.html(StatusCode::OK, pages::login(Some("Wrong username or password."))).await?;
                Ok(())
            }
            Err(err) if err.is::<Busy>() => {
                try_later(response, StatusCode::SERVICE_UNAVAILABLE, 1, "Busy checking passwords; try again.").await
            }
            Err(err) => Err(ConsumerError::from_box(err)),
        }
    }
}

/// `POST /logout/`; never on a GET (a link or an image on another site must not log anyone
/// out): other methods get 405.
#[consumer(http, methods = ["POST"])]
struct LogoutPage;

#[consumer]
impl LogoutPage {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        // Close the user's open chat sockets too (every tab, every process).
        if let Some(group) = self.scope.user.id().and_then(|id| user_group(id).ok())
            && let Err(err) = self.scope.layer()?.group_send(&group, close_message(4001)).await
        {
            tracing::warn!(%err, "could not close the user's sockets");
        }
        logout(&mut self.scope).await?;
        response.redirect("/login/").await
    }
}

/// `GET /chat/<room>/`: the page; logged-out visitors go to the login form.
#[auth(stack, required, redirect = "/login/")]
#[consumer(http)]
struct ChatPage {
    #[url]
    room: String,
}

#[consumer]
impl ChatPage {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let name = self.scope.user.downcast_ref::<db::User>().map_or("", |user| user.username.as_str());
        response.html(StatusCode::OK, pages::chat(&self.room, name)).await?;
        Ok(())
    }
}

/// The Prometheus recorder installed in `main`, rendered by `GET /metrics`.
static PROMETHEUS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();

/// `GET /metrics`: Prometheus' text format, to clients on this machine.
#[consumer(http, methods = ["GET"])]
struct MetricsPage;

#[consumer]
impl MetricsPage {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let local = self.scope.client.is_some_and(|client| client.ip().is_loopback());
        let Some(prometheus) = PROMETHEUS.get().filter(|_| local) else {
            return response.text(StatusCode::NOT_FOUND, "not found").await;
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
        response.send_response(StatusCode::OK, headers, prometheus.render()).await
    }
}

/// `GET /`: to the lobby.
#[consumer(http)]
struct Home;

#[consumer]
impl Home {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.redirect("/chat/lobby/").await
    }
}

#[derive(Deserialize)]
struct Incoming {
    message: String,
}

#[derive(Deserialize, serde::Serialize)]
struct ChatMessage {
    user: String,
    message: String,
    /// The message's position in the room's history: clients reconnect with `?since=<id>`.
    #[serde(rename(deserialize = "__position__", serialize = "id"), default)]
    id: Option<String>,
}

/// A chat room over WebSocket; logged-in users only.
#[auth(stack, required)]
#[consumer(json)]
struct ChatConsumer {
    #[url]
    room: String,
}

#[consumer]
impl ChatConsumer {
    /// The room, and the user's own group (logout closes every socket in it).
    fn groups(&self) -> Vec<String> {
        let user = self.scope.user.id().and_then(|id| user_group(id).ok());
        std::iter::once(format!("chat.{}", self.room)).chain(user).collect()
    }

    /// Where a connection starts: after `?since=<id>` when the client gives one (the runtime
    /// reads it), and the room's last 50 messages on a fresh join or when resuming fails.
    fn since(&self, requested: Since) -> Since {
        Since { last: 50, ..requested }
    }

    /// Who is online: the user, once per open tab, in the room's presence.
    fn presence(&self) -> Option<Track> {
        let user = self.scope.user.downcast_ref::<db::User>()?;
        Some(Track::new(format!("chat.{}", self.room), &user.username, json!({})))
    }

    async fn receive_json(&mut self, _ws: &mut Websocket, incoming: Incoming) -> Result<(), ConsumerError> {
        let user = self.scope.user.downcast_ref::<db::User>().map_or("?", |user| user.username.as_str());
        let message = incoming.message.chars().take(2000).collect::<String>();
        let event = json!({ "type": "chat.message", "user": user, "message": message });
        if let Err(err) = self.scope.layer()?.group_send(&format!("chat.{}", self.room), event.into()).await {
            tracing::warn!(%err, "message not sent");
        }
        Ok(())
    }

    #[handler("chat.message")]
    async fn chat_message(&mut self, ws: &mut Websocket, event: ChatMessage) -> Result<(), ConsumerError> {
        ws.send_json(&event).await
    }

    /// The room's presence goes to clients that ask for it (`?presence=1`, as the page does),
    /// in the JavaScript client's protocol; other clients only get chat messages.
    #[handler("presence.state")]
    async fn presence_state(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        self.forward_presence(ws, event).await
    }

    #[handler("presence.diff")]
    async fn presence_diff(&mut self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        self.forward_presence(ws, event).await
    }
}

impl ChatConsumer {
    async fn forward_presence(&self, ws: &mut Websocket, event: serde_json::Value) -> Result<(), ConsumerError> {
        if self.scope.query_pairs().any(|(key, value)| key == "presence" && value == "1") {
            unhandled_websocket_message(ws, event.into()).await?;
        }
        Ok(())
    }
}

/// The chat example: rooms with logins, sessions in SQLite (or Redis), one or more processes.
#[derive(clap::Parser)]
#[command(name = "chat")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    addr: String,
    /// The SQLite file for users and keys (created on first run).
    #[arg(long, value_name = "PATH", default_value = "chat.sqlite3")]
    db: String,
    /// The demo users' (alice, bob) password when the database is created.
    #[arg(long, value_name = "PW", default_value = "channels-demo")]
    demo_password: String,
    /// A host name this site answers to (repeatable); default: the --addr host and localhost.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Failed logins allowed per client address per minute.
    #[arg(long, value_name = "PER_MINUTE", default_value_t = 20)]
    login_attempts: u32,
    /// Add a user before serving.
    #[arg(long, value_name = "NAME:PASSWORD", value_parser = parse_user)]
    create_user: Option<(String, String)>,
    /// Sessions and rooms in Redis, so several processes serve one chat.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// With --redis: seconds after which the online list drops the users of a process that
    /// died (it renews its own every third of that).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    presence_ttl: f64,
}

fn parse_user(spec: &str) -> Result<(String, String), String> {
    let (name, password) = spec.split_once(':').ok_or("takes NAME:PASSWORD")?;
    Ok((name.to_owned(), password.to_owned()))
}

/// The application: pages behind the security headers, the CSRF check and the session stack;
/// the chat socket behind the origin check.
fn app(logins: Logins, allowed_origins: Vec<String>, auth: AuthConfig, layer: Layer) -> impl Application {
    let router = routing! {
        http: [
            "" => SecurityHeaders([
                "metrics" => MetricsPage,
                "static/channels.js" => { ClientScript::as_app() },
                "" => CsrfMiddleware([
                    "chat/<slug:room>/" => ChatPage,
                    "" => AuthMiddlewareStack([
                        "login/" => LoginPage,
                        "logout/" => LogoutPage,
                        "" => Home,
                    ]),
                ]),
            ]),
        ],
        websocket: AllowedHostsOriginValidator([
            "ws/chat/<slug:room>/" => ChatConsumer,
        ], allowed_origins),
    };
    router.auth(auth).extension(logins).channel_layer(layer)
}

#[tokio::main]
async fn main() -> Result<(), channels::application::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colours for a terminal only: not escape codes in a log file (nor in every open
        // connection's span fields, which the subscriber keeps formatted).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = <Args as clap::Parser>::parse();
    // Before the server starts: it looks its per-message counters up once.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let _ = PROMETHEUS.set(prometheus.clone());
    // The exporter's histograms are compacted by its upkeep, which is the application's to run.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            prometheus.run_upkeep();
        }
    });
    let db = Db::open(&args.db, &args.demo_password)?;
    if let Some((name, password)) = &args.create_user {
        db.create_user(name, password)?;
        println!("created user {name:?}");
    }
    let keys = db.secret_keys()?;
    let users = Users::new(db, keys.clone())?;
    // The names the site answers to (the server refuses other `Host`s), and the origins whose
    // pages may open the chat socket: by default only this address and port (a page served on
    // another port of the same host is another site).
    let (allowed_hosts, allowed_origins) = if args.allowed_hosts.is_empty() {
        let (host, port) = args.addr.rsplit_once(':').unwrap_or((args.addr.as_str(), "80"));
        let origins = [host, "localhost"].map(|name| format!("{name}:{port}")).to_vec();
        (vec![host.to_owned(), "localhost".to_owned()], origins)
    } else {
        let names = args
            .allowed_hosts
            .iter()
            .map(|host| host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name).to_owned());
        (names.collect(), args.allowed_hosts.clone())
    };
    // Rooms keep their last 1,000 messages for a day: clients resume after a reconnect.
    let rooms = LayerConfig::default()
        .with_history("chat.", HistoryConfig::last(1_000).max_age(std::time::Duration::from_secs(86_400)));
    let (auth, layer): (AuthConfig, Layer) = match &args.redis {
        Some(url) => (
            AuthConfig::new(users.clone()).keys(keys).store(RedisSessionStore::connect(url, "chat").await?),
            RedisChannelLayer::connect_with(RedisLayerConfig {
                layer: rooms,
                presence_ttl: std::time::Duration::try_from_secs_f64(args.presence_ttl)?,
                ..RedisLayerConfig::new(url.as_str())
            })
            .await?
            .into_layer(),
        ),
        None => (
            AuthConfig::new(users.clone()).keys(keys).store(InMemorySessionStore::new()),
            InMemoryChannelLayer::with_config(rooms).into_layer(),
        ),
    };
    let logins = Logins { users, limiter: std::sync::Arc::new(LoginLimiter::new(args.login_attempts)) };
    let app = app(logins, allowed_origins.clone(), auth, layer);
    let server = channels::Server::new(app)
        .configure(|config| {
            config.allowed_hosts.clone_from(&allowed_hosts);
            config.inbound_rate = Some(channels::RateLimit { per_second: 20, burst: 40 });
        })
        .shutdown_on_signals()
        .bind(&args.addr)
        .await?;
    println!(
        "chat on http://{}/login/ (demo users alice and bob; origins allowed: {})",
        server.local_addr(),
        allowed_origins.join(", ")
    );
    server.run().await?;
    Ok(())
}
