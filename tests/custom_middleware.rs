//! Custom middleware with `Middleware`: the seed's query-string auth (insecure), a signed
//! token in the query string or `Sec-WebSocket-Protocol` (browsers cannot set headers on a
//! WebSocket), and auth over a custom protocol that has no headers at all.

use std::time::{SystemTime, UNIX_EPOCH};

use channels::event::{CustomEvent, Outbound};
use channels::middleware::{
    AuthConfig, AuthMiddlewareStack, AuthUser, Middleware, Refusal, SecretKeys, Step, UserBackend,
};
use channels::prelude::*;
use channels::testing::{ApplicationCommunicator, TestError, WebsocketCommunicator};
use channels::{consumer, routing};
use serde_json::json;

/// INSECURE, for demos only: believes whatever `?user_id=` says.
struct QueryAuthMiddleware;

impl Middleware for QueryAuthMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        let id = scope.query_pairs().find(|(key, _)| key == "user_id").map(|(_, id)| id);
        if let Some(id) = id {
            scope.user = User::with_id(id.clone(), id);
        }
        Ok(Step::Continue)
    }
}

/// A signed, expiring token `user.expires.signature`, read from `?token=` or from a
/// `token.<token>` entry of `Sec-WebSocket-Protocol`.
struct TokenAuthMiddleware {
    keys: SecretKeys,
}

fn issue_token(keys: &SecretKeys, user: &str, valid_for_secs: u64) -> String {
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + valid_for_secs;
    let payload = format!("{user}.{expires}");
    format!("{payload}.{}", keys.sign(&payload))
}

impl TokenAuthMiddleware {
    fn user_of(&self, token: &str) -> Option<String> {
        let (payload, signature) = token.rsplit_once('.')?;
        if !self.keys.verify(payload, signature) {
            return None;
        }
        let (user, expires) = payload.rsplit_once('.')?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (expires.parse::<u64>().ok()? > now).then(|| user.to_owned())
    }
}

impl Middleware for TokenAuthMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        let from_query = scope.query_pairs().find(|(key, _)| key == "token").map(|(_, token)| token);
        let from_protocol = scope.subprotocols.iter().find_map(|p| p.strip_prefix("token.")).map(str::to_owned);
        if let Some(user) = from_query.or(from_protocol).and_then(|token| self.user_of(&token)) {
            scope.user = User::with_id(user.clone(), user);
        }
        Ok(Step::Continue)
    }
}

/// The custom "chat" protocol's server puts the user's name in the query string.
struct ChatUserMiddleware;

impl Middleware for ChatUserMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        let name = scope.query_pairs().find(|(key, _)| key == "username").map(|(_, name)| name);
        match name {
            Some(name) if !name.is_empty() => {
                scope.user = User::with_id(name.clone(), name);
                Ok(Step::Continue)
            }
            _ => Ok(Step::Refuse(Refusal::forbidden("the chat protocol needs a username"))),
        }
    }
}

#[consumer(websocket)]
struct Whoami;

#[consumer]
impl Whoami {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        ws.send_text(self.scope.user.id().unwrap_or("anonymous").to_owned()).await?;
        Ok(())
    }
}

#[consumer(protocol = "chat")]
struct ChatLines;

#[consumer]
impl ChatLines {
    async fn handle(&mut self, outbox: &Outbox, event: Inbound) -> Result<Flow, ConsumerError> {
        let Inbound::Custom(line) = event else { return Ok(Flow::Stop) };
        let user = self.scope.user.id().unwrap_or("?");
        outbox.send(Outbound::Custom(CustomEvent::new("line", json!(format!("{user}: {}", line.payload))))).await?;
        Ok(Flow::Continue)
    }
}

fn keys() -> SecretKeys {
    SecretKeys::new([b"token signing key, 32 bytes or more....."]).unwrap()
}

async fn who(app: impl Application, path: &str, subprotocol: Option<&str>) -> String {
    let mut ws = WebsocketCommunicator::new(app, path);
    if let Some(subprotocol) = subprotocol {
        ws = ws.subprotocol(subprotocol);
    }
    assert!(ws.connect().await.unwrap().accepted);
    ws.receive_text().await.unwrap()
}

#[tokio::test]
async fn query_auth_middleware_fills_the_user() {
    let app = || routing! { websocket: [ "ws/" => { QueryAuthMiddleware.wrap(Whoami::as_app()) } ] };
    assert_eq!(who(app(), "/ws/?user_id=42", None).await, "42");
    assert_eq!(who(app(), "/ws/", None).await, "anonymous");
}

#[tokio::test]
async fn signed_token_in_query_or_subprotocol() {
    let app = || routing! { websocket: [ "ws/" => { TokenAuthMiddleware { keys: keys() }.wrap(Whoami::as_app()) } ] };
    let token = issue_token(&keys(), "carol", 60);
    assert_eq!(who(app(), &format!("/ws/?token={token}"), None).await, "carol");
    assert_eq!(who(app(), "/ws/", Some(&format!("token.{token}"))).await, "carol");
    let forged = token.replace("carol", "admin");
    assert_eq!(who(app(), &format!("/ws/?token={forged}"), None).await, "anonymous");
    let expired = issue_token(&keys(), "carol", 0);
    assert_eq!(who(app(), &format!("/ws/?token={expired}"), None).await, "anonymous");
    let other_key = SecretKeys::new([b"some other key, also 32 bytes or more"]).unwrap();
    assert_eq!(who(app(), &format!("/ws/?token={}", issue_token(&other_key, "carol", 60)), None).await, "anonymous");
}

struct NoUsers;

struct Nobody;

impl AuthUser for Nobody {
    fn id(&self) -> String {
        String::new()
    }

    fn session_auth_hash(&self) -> String {
        String::new()
    }
}

impl UserBackend for NoUsers {
    type User = Nobody;

    async fn get_user(&self, _id: &str) -> Result<Option<Nobody>, channels::application::BoxError> {
        Ok(None)
    }
}

#[tokio::test]
async fn custom_protocol_auth_by_username_and_auth_middleware_says_why_not() {
    let app = || routing! { "chat": { ChatUserMiddleware.wrap(ChatLines::as_app()) } };
    let mut chat = ApplicationCommunicator::new(app(), Scope::new(Protocol::from_name("chat"), "/?username=dave"));
    chat.send_input(Inbound::Custom(CustomEvent::new("line", json!("hi")))).await.unwrap();
    let Outbound::Custom(line) = chat.receive_output().await.unwrap() else { panic!("expected a line") };
    assert_eq!(line.payload, json!("dave: \"hi\""));

    let mut anonymous = ApplicationCommunicator::new(app(), Scope::new(Protocol::from_name("chat"), "/"));
    let refused = anonymous.wait().await;
    assert!(
        matches!(refused, Err(TestError::App(AppError::Refused(ref why))) if why.contains("username")),
        "{refused:?}"
    );

    // The cookie-based stack cannot work here, and says so.
    let wrong = routing! { "chat": AuthMiddlewareStack({ ChatLines::as_app() }) }.auth(AuthConfig::new(NoUsers));
    let mut comm = ApplicationCommunicator::new(wrong, Scope::new(Protocol::from_name("chat"), "/?username=dave"));
    let Err(TestError::App(AppError::Misconfigured(message))) = comm.wait().await else { panic!("expected an error") };
    assert!(message.contains("custom protocol `chat`") && message.contains("headers"), "{message}");
}

/// Stamps every HTTP response with the time it took (a middleware that watches responses), and
/// refuses clients named in `blocked` with a reason.
struct Stamp {
    blocked: &'static str,
}

impl Middleware for Stamp {
    type State = std::time::Instant;

    async fn prepare(&self, scope: &mut Scope) -> Result<Step<std::time::Instant>, AppError> {
        if scope.query_pairs().any(|(key, value)| key == "user" && value == self.blocked) {
            return Ok(Step::Refuse(Refusal::forbidden(format!("{} is blocked", self.blocked))));
        }
        Ok(Step::Watch(std::time::Instant::now()))
    }

    async fn response_start(
        &self,
        started: &mut std::time::Instant,
        start: &mut channels::event::ResponseStart,
    ) -> Result<(), Refusal> {
        if start.status == http::StatusCode::IM_A_TEAPOT {
            return Err(Refusal::new(http::StatusCode::BAD_GATEWAY, "no teapots here"));
        }
        let micros = started.elapsed().as_micros().to_string();
        start.headers.insert("x-elapsed-us", micros.parse().unwrap());
        Ok(())
    }
}

/// Answers its path's last segment as a status code.
#[consumer(http)]
struct Status;

#[consumer]
impl Status {
    async fn handle(&mut self, _body: bytes::Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let code: u16 = self.scope.path.trim_matches('/').rsplit('/').next().unwrap_or("").parse().unwrap_or(200);
        response.text(http::StatusCode::from_u16(code)?, "from the consumer").await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_middleware_sees_the_response_start_and_can_replace_it() {
    use channels::routing::{URLRouter, nest, path};
    use channels::testing::HttpCommunicator;
    // A user's middleware around a route table nests under a prefix with nothing forwarded by
    // hand: the wrapper is a `Router` because the table is.
    let app = || {
        let api = Stamp { blocked: "mallory" }.wrap(URLRouter::new([path("status/<int:code>/", Status::as_app())]));
        routing! { http: { URLRouter::new([nest("api/", api)]) } }
    };
    let ok = HttpCommunicator::new(app(), http::Method::GET, "/api/status/201/").get_response().await.unwrap();
    assert_eq!(ok.status, http::StatusCode::CREATED);
    assert_eq!(ok.text(), "from the consumer");
    assert!(ok.headers.get("x-elapsed-us").is_some(), "{:?}", ok.headers);

    let replaced = HttpCommunicator::new(app(), http::Method::GET, "/api/status/418/").get_response().await.unwrap();
    assert_eq!((replaced.status, replaced.text().as_str()), (http::StatusCode::BAD_GATEWAY, "no teapots here"));

    let refused =
        HttpCommunicator::new(app(), http::Method::GET, "/api/status/200/?user=mallory").get_response().await.unwrap();
    assert_eq!((refused.status, refused.text().as_str()), (http::StatusCode::FORBIDDEN, "mallory is blocked"));

    let missing = HttpCommunicator::new(app(), http::Method::GET, "/api/nothing/").get_response().await;
    assert!(matches!(missing, Err(TestError::App(AppError::NoRoute { .. }))), "{missing:?}");
}

#[tokio::test]
async fn a_refused_handshake_carries_the_middlewares_reason() {
    let app = || routing! { websocket: [ "ws/" => { Stamp { blocked: "mallory" }.wrap(Whoami::as_app()) } ] };
    assert_eq!(who(app(), "/ws/?user=alice", None).await, "anonymous");
    let mut ws = WebsocketCommunicator::new(app(), "/ws/?user=mallory");
    let handshake = ws.connect().await.unwrap();
    assert!(!handshake.accepted);
    assert_eq!(handshake.close_code, Some(1008));
    assert_eq!(handshake.close_reason.as_deref(), Some("mallory is blocked"));
}
