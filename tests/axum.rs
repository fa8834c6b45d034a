//! With axum, both ways, over real sockets with real clients: channels consumers mounted in an
//! axum router (one listener), an axum router inside `routing!`, and a user logged in by an
//! axum handler who is `self.scope.user` in a consumer.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::{Extension, Json};
use channels::axum::{ChannelsService, TowerApp};
use channels::middleware::{AuthConfig, AuthMiddlewareStack, AuthUser, UserBackend, login};
use channels::prelude::*;
use channels::{auth, consumer, routing};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Clone)]
struct Account {
    id: u32,
    name: String,
}

impl AuthUser for Account {
    fn id(&self) -> String {
        self.id.to_string()
    }

    fn session_auth_hash(&self) -> String {
        format!("hash-of-{}", self.name)
    }
}

#[derive(Clone, Default)]
struct Accounts(Arc<Mutex<HashMap<u32, Account>>>);

impl UserBackend for Accounts {
    type User = Account;

    async fn get_user(&self, id: &str) -> Result<Option<Account>, channels::application::BoxError> {
        let Ok(id) = id.parse::<u32>() else { return Ok(None) };
        Ok(self.0.lock().unwrap().get(&id).cloned())
    }
}

fn accounts() -> Accounts {
    let accounts = Accounts::default();
    accounts.0.lock().unwrap().insert(7, Account { id: 7, name: "grace".to_owned() });
    accounts
}

/// Sends `{"user": <name or null>, "client": <scope.client>}` on connect, then echoes.
#[auth(stack)]
#[consumer(websocket)]
struct Whoami;

#[consumer]
impl Whoami {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let user = self.scope.user.downcast_ref::<Account>().map(|account| account.name.clone());
        let client = self.scope.client.map(|client| client.to_string());
        ws.send_json(&json!({ "user": user, "client": client })).await
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

/// Opens `path` with an optional session cookie; the first message, as JSON.
async fn whoami(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (Client, Value, SocketAddr) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", cookie.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (mut client, _) = within(tokio_tungstenite::client_async(request, tcp)).await.unwrap();
    let WsMessage::Text(text) = next_message(&mut client).await else { panic!("expected text") };
    (client, serde_json::from_str(text.as_str()).unwrap(), local)
}

/// `name=value` of a response's `Set-Cookie: sessionid=...`.
fn session_cookie(response: &str) -> Option<String> {
    let line = response.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie: sessionid="))?;
    Some(line.split_once(':')?.1.trim().split(';').next()?.to_owned())
}

#[tokio::test]
async fn channels_consumers_mounted_in_an_axum_router_share_its_listener_and_shut_down_in_batches() {
    let app = routing! { websocket: [ "ws/whoami/" => Whoami ] }.auth(AuthConfig::new(accounts()));
    let cookie = channels::testing::force_login(&app, Account { id: 7, name: "grace".to_owned() }).await.unwrap();
    let channels = ChannelsService::new(app);
    let router = axum::Router::new()
        .route("/api/health/", get(|| async { Json(json!({ "status": "ok" })) }))
        .nest_service("/ws", channels.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = channels.shutdown_handle();
    let signal = channels.shutdown_signal();
    let serving = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .await
    });

    let health = raw_http(addr, format!("GET /api/health/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with(r#"{"status":"ok"}"#), "{health}");
    let session = format!("{}={}", cookie.name, cookie.value);
    let (mut grace, hello, local) = whoami(addr, "/ws/whoami/", Some(&session)).await;
    assert_eq!(hello, json!({ "user": "grace", "client": local.to_string() }), "the auth stack, through axum");
    let (mut anonymous, hello, _) = whoami(addr, "/ws/whoami/", None).await;
    assert_eq!(hello["user"], Value::Null);
    send_text(&mut grace, "still there").await;
    assert_eq!(next_message(&mut grace).await, WsMessage::Text("still there".into()));
    assert_eq!(
        raw_http(addr, format!("GET /ws/nowhere/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await[..12].to_owned(),
        "HTTP/1.1 404"
    );

    shutdown.shutdown();
    within(serving).await.unwrap().unwrap();
    channels.drain().await;
    assert_eq!(close_code(&mut grace).await, 1012);
    assert_eq!(close_code(&mut anonymous).await, 1012);
}

/// The axum side of the other direction: a login that writes this crate's session, and a page
/// that reads the scope.
fn api() -> axum::Router {
    axum::Router::new()
        .route(
            "/api/login/",
            post(|Extension(mut scope): Extension<Scope>, body: String| async move {
                let accounts = accounts();
                let found = body.parse::<u32>().ok().and_then(|id| accounts.0.lock().unwrap().get(&id).cloned());
                match found {
                    Some(account) => match login(&mut scope, account).await {
                        Ok(()) => (axum::http::StatusCode::OK, "logged in"),
                        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no session"),
                    },
                    None => (axum::http::StatusCode::UNAUTHORIZED, "who?"),
                }
            }),
        )
        .route(
            "/api/me/",
            get(|Extension(scope): Extension<Scope>| async move {
                let name = scope.user.downcast_ref::<Account>().map(|account| account.name.clone());
                Json(json!({ "user": name, "path": scope.path, "query": scope.query_string }))
            }),
        )
}

#[tokio::test]
async fn an_axum_router_inside_routing_logs_users_in_for_the_consumers() {
    let app = routing! {
        http: [
            "" => AuthMiddlewareStack([ "api/<path:rest>" => { TowerApp::new(api()) } ]),
        ],
        websocket: [ "ws/whoami/" => Whoami ],
    }
    .auth(AuthConfig::new(accounts()));
    let server = TestServer::start(app).await;
    let addr = server.addr;

    let me = raw_http(addr, format!("GET /api/me/?x=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    assert!(me.ends_with(r#"{"path":"/api/me/","query":"x=1","user":null}"#), "{me}");

    // A path that decodes to something else (a space here) reaches axum as the client sent it.
    let odd = raw_http(addr, format!("GET /api/a%20b/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(odd.starts_with("HTTP/1.1 404"), "axum's own 404, not a 500: {odd}");

    let post = |body: &str| {
        format!("POST /api/login/ HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let refused = raw_http(addr, post("8").as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 401") && session_cookie(&refused).is_none(), "{refused}");
    let logged_in = raw_http(addr, post("7").as_bytes()).await;
    assert!(logged_in.starts_with("HTTP/1.1 200"), "{logged_in}");
    let cookie = session_cookie(&logged_in).expect("the auth stack sets the session cookie on axum's response");

    let (_grace, hello, _) = whoami(addr, "/ws/whoami/", Some(&cookie)).await;
    assert_eq!(hello["user"], "grace", "logged in by axum, seen by the consumer");
    let me =
        raw_http(addr, format!("GET /api/me/ HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n").as_bytes()).await;
    assert!(me.contains(r#""user":"grace""#), "{me}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_axum_app_example_serves_its_stable_endpoints() {
    let addr = free_addr().await;
    let mut example = Example::start("axum_app", &["--addr", &addr.to_string()]).await;
    wait_until_listening(addr).await;
    let health = raw_http(addr, format!("GET /api/health/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with(r#"{"status":"ok"}"#), "{health}");
    let mut echo = connect(addr, "/ws/echo/").await;
    send_text(&mut echo, "hello").await;
    assert_eq!(next_message(&mut echo).await, WsMessage::Text("hello".into()));

    let status = Command::new("kill").args(["-TERM", &example.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(close_code(&mut echo).await, 1012);
    let exited = within(tokio::task::spawn_blocking(move || example.0.wait())).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");
}
