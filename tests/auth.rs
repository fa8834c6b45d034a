//! Authentication: login / logout through HTTP consumers, `scope.user` in WebSocket consumers,
//! and every way a session stops authenticating.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use channels::application::BoxError;
use channels::middleware::{
    AuthConfig, AuthMiddleware, AuthMiddlewareStack, AuthUser, Middleware, SecretKeys, UserBackend, login, logout,
};
use channels::prelude::*;
use channels::testing::{HttpCommunicator, TestError, TestResponse, WebsocketCommunicator};
use channels::{consumer, routing};
use http::{Method, StatusCode};

#[derive(Clone, Debug)]
struct Account {
    id: u32,
    name: String,
    password: String,
}

impl AuthUser for Account {
    fn id(&self) -> String {
        self.id.to_string()
    }

    fn session_auth_hash(&self) -> String {
        // A real app derives this from the password hash; any change logs other sessions out.
        format!("pw:{}", self.password)
    }
}

#[derive(Clone, Default)]
struct Accounts(Arc<Mutex<HashMap<u32, Account>>>);

impl Accounts {
    fn add(&self, id: u32, name: &str, password: &str) {
        let account = Account { id, name: name.to_owned(), password: password.to_owned() };
        self.0.lock().unwrap().insert(id, account);
    }

    fn find(&self, name: &str, password: &str) -> Option<Account> {
        self.0.lock().unwrap().values().find(|a| a.name == name && a.password == password).cloned()
    }
}

impl UserBackend for Accounts {
    type User = Account;

    async fn get_user(&self, id: &str) -> Result<Option<Account>, BoxError> {
        let Ok(id) = id.parse::<u32>() else { return Ok(None) };
        Ok(self.0.lock().unwrap().get(&id).cloned())
    }
}

/// `POST /login/` with body `name:password`.
#[consumer(http)]
struct Login {
    #[init(Accounts::default())]
    accounts: Accounts,
}

#[consumer]
impl Login {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let accounts = self.scope.extensions.get::<Accounts>().cloned().unwrap_or_else(|| self.accounts.clone());
        let body = String::from_utf8_lossy(&body).into_owned();
        let (name, password) = body.split_once(':').unwrap_or((&body, ""));
        match accounts.find(name, password) {
            Some(account) => {
                login(&mut self.scope, account).await?;
                response.text(StatusCode::OK, "logged in").await?;
            }
            None => response.text(StatusCode::UNAUTHORIZED, "bad credentials").await?,
        }
        Ok(())
    }
}

#[consumer(http)]
struct Logout;

#[consumer]
impl Logout {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        logout(&mut self.scope).await?;
        response.text(StatusCode::OK, "logged out").await?;
        Ok(())
    }
}

/// `POST /remember/` keeps the body in the session as `note`; `GET /note/` reads it back.
#[consumer(http)]
struct Note;

#[consumer]
impl Note {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let session = self.scope.session.clone().ok_or_else(|| ConsumerError::msg("no session"))?;
        if !body.is_empty() {
            session.insert("note", &String::from_utf8_lossy(&body)).await?;
        }
        let note: Option<String> = session.get("note").await?;
        response.text(StatusCode::OK, note.unwrap_or_default()).await?;
        Ok(())
    }
}

/// Says who the connection's user is: name, id, and the user id stored in the session.
#[consumer(websocket)]
struct Whoami;

#[consumer]
impl Whoami {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let name = self.scope.user.downcast_ref::<Account>().map_or("anonymous", |account| &account.name);
        let id = self.scope.user.id().unwrap_or("-");
        // The session as the consumer reads it after the auth middleware (which lets go of its
        // data on WebSockets): loaded again from the store.
        let session = self.scope.session.as_ref().ok_or_else(|| ConsumerError::msg("no session"))?;
        let stored: Option<String> = session.get("_auth_user_id").await?;
        ws.send_text(format!("{name} {id} {}", stored.as_deref().unwrap_or("-"))).await?;
        Ok(())
    }
}

/// `#[auth]` outside `#[consumer]`.
#[channels::auth(stack, required)]
#[consumer(websocket)]
struct Members;

#[consumer]
impl Members {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let name = self.scope.user.downcast_ref::<Account>().map_or("?", |account| &account.name);
        ws.send_text(format!("member {name}")).await?;
        Ok(())
    }
}

/// `#[auth]` inside `#[consumer]`, not required.
#[consumer(websocket)]
#[channels::auth(stack)]
struct Greeter;

#[consumer]
impl Greeter {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let greeting = if self.scope.user.is_authenticated() { "welcome back" } else { "hello stranger" };
        ws.send_text(greeting).await?;
        Ok(())
    }
}

/// `#[auth]` with a redirect, on an HTTP consumer.
#[channels::auth(stack, required, redirect = "/login/")]
#[consumer(http)]
struct AccountPage;

#[consumer]
impl AccountPage {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let id = self.scope.user.id().unwrap_or("-").to_owned();
        response.text(StatusCode::OK, format!("account {id}")).await?;
        Ok(())
    }
}

/// Puts the accounts where `Login` finds them (a test stand-in for app state).
fn app(accounts: &Accounts) -> Arc<dyn Application> {
    let keys = SecretKeys::new([b"0123456789abcdef0123456789abcdef"]).unwrap();
    let router = routing! {
        http: [
            // Not wrapped here: the consumer's own #[auth] brings the stack.
            "account/" => AccountPage,
            "" => AuthMiddlewareStack([
                "login/" => Login,
                "logout/" => Logout,
                "note/" => Note,
                "private/" => { AuthMiddlewareStack::new().required_redirect("/login/").wrap(Logout::as_app()) },
            ]),
        ],
        websocket: [
            "ws/whoami/" => AuthMiddlewareStack(Whoami),
            "ws/private/" => { AuthMiddlewareStack::new().required().wrap(Whoami::as_app()) },
            "ws/members/" => Members,
            // Built by hand (as the README shows for handing a consumer some state): no stack.
            "ws/members-by-hand/" => { ConsumerApp::websocket(Members::from_scope) },
            // Behind a stack that does not itself require a user.
            "ws/members-stacked/" => { AuthMiddlewareStack::new().wrap(ConsumerApp::websocket(Members::from_scope)) },
            "ws/greeter/" => Greeter,
        ],
    };
    Arc::new(router.auth(AuthConfig::new(accounts.clone()).keys(keys)).extension(accounts.clone()))
}

fn accounts() -> Accounts {
    let accounts = Accounts::default();
    accounts.add(1, "alice", "wonderland");
    accounts.add(2, "bob", "builder");
    accounts
}

fn cookie_of(response: &TestResponse) -> Option<String> {
    response.cookie("sessionid").filter(|value| !value.is_empty())
}

async fn post(app: &Arc<dyn Application>, path: &str, body: &str, cookie: Option<&str>) -> TestResponse {
    let mut request = HttpCommunicator::new(app.clone(), Method::POST, path).body(body.to_owned());
    if let Some(cookie) = cookie {
        request = request.cookie("sessionid", cookie);
    }
    request.get_response().await.unwrap()
}

async fn log_in(app: &Arc<dyn Application>, who: &str) -> String {
    let response = post(app, "/login/", who, None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    cookie_of(&response).expect("a session cookie")
}

/// What the WebSocket consumer sees as its user.
async fn whoami(app: &Arc<dyn Application>, path: &str, cookie: Option<&str>) -> Option<String> {
    let mut ws = WebsocketCommunicator::new(app.clone(), path);
    if let Some(cookie) = cookie {
        ws = ws.cookie("sessionid", cookie);
    }
    let handshake = ws.connect().await.unwrap();
    if !handshake.accepted {
        return None;
    }
    Some(ws.receive_text().await.unwrap())
}

#[tokio::test]
async fn logged_in_user_reaches_connect_and_anonymous_does_not_pass_required() {
    let accounts = accounts();
    let app = app(&accounts);
    let cookie = log_in(&app, "alice:wonderland").await;
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&cookie)).await.as_deref(), Some("alice 1 1"));
    assert_eq!(whoami(&app, "/ws/private/", Some(&cookie)).await.as_deref(), Some("alice 1 1"));
    assert_eq!(whoami(&app, "/ws/whoami/", None).await.as_deref(), Some("anonymous - -"));
    assert_eq!(whoami(&app, "/ws/private/", None).await, None, "refused before connect");
    let bad = post(&app, "/login/", "alice:wrong", None).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tampered_deleted_and_password_changed_sessions_are_anonymous() {
    let accounts = accounts();
    let app = app(&accounts);
    let cookie = log_in(&app, "alice:wonderland").await;
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&tampered)).await.as_deref(), Some("anonymous - -"));

    // Password change: this session no longer authenticates, a new login does.
    accounts.add(1, "alice", "looking-glass");
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&cookie)).await.as_deref(), Some("anonymous - -"));
    let fresh = log_in(&app, "alice:looking-glass").await;
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&fresh)).await.as_deref(), Some("alice 1 1"));

    // Deleted user.
    let bob = log_in(&app, "bob:builder").await;
    accounts.0.lock().unwrap().remove(&2);
    // Anonymous, though the session still names the user (as in Django: nothing to flush).
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&bob)).await.as_deref(), Some("anonymous - 2"));
}

#[tokio::test]
async fn login_over_another_users_session_starts_an_empty_one() {
    let app = app(&accounts());
    let alice = log_in(&app, "alice:wonderland").await;
    assert_eq!(post(&app, "/note/", "alice's secret", Some(&alice)).await.text(), "alice's secret");
    // The same user logging in again keeps the session's data (the key still changes).
    let again = cookie_of(&post(&app, "/login/", "alice:wonderland", Some(&alice)).await).unwrap();
    assert_ne!(again, alice);
    assert_eq!(post(&app, "/note/", "", Some(&again)).await.text(), "alice's secret");
    // Another user logging in over it gets nothing of alice's.
    let bob = cookie_of(&post(&app, "/login/", "bob:builder", Some(&again)).await).unwrap();
    assert_eq!(post(&app, "/note/", "", Some(&bob)).await.text(), "", "alice's data must not reach bob");
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&bob)).await.as_deref().map(|w| w.starts_with("bob")), Some(true));
}

#[tokio::test]
async fn login_cycles_the_key_and_logout_ends_the_session() {
    let accounts = accounts();
    let app = app(&accounts);
    // A session before login (an attacker could have planted this cookie: session fixation).
    let anonymous = post(&app, "/logout/", "", None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    let first = log_in(&app, "alice:wonderland").await;
    let again = post(&app, "/login/", "alice:wonderland", Some(&first)).await;
    let second = cookie_of(&again).unwrap();
    assert_ne!(first.split('.').next(), second.split('.').next(), "login gives a new key");
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&first)).await.as_deref(), Some("anonymous - -"), "old key is dead");
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&second)).await.as_deref(), Some("alice 1 1"));

    let out = post(&app, "/logout/", "", Some(&second)).await;
    assert!(out.headers.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&second)).await.as_deref(), Some("anonymous - -"));
}

#[tokio::test]
async fn required_http_routes_redirect_anonymous_users_to_login() {
    let accounts = accounts();
    let app = app(&accounts);
    let response = HttpCommunicator::new(app.clone(), Method::GET, "/private/").get_response().await.unwrap();
    assert_eq!(response.status, StatusCode::FOUND);
    assert_eq!(response.headers.get("location").unwrap(), "/login/?next=/private/");
    let cookie = log_in(&app, "bob:builder").await;
    let response = post(&app, "/private/", "", Some(&cookie)).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn many_concurrent_handshakes_on_one_session_agree() {
    let accounts = accounts();
    let app = app(&accounts);
    let cookie = log_in(&app, "alice:wonderland").await;
    let handshakes: Vec<_> = (0..50)
        .map(|_| {
            let (app, cookie) = (app.clone(), cookie.clone());
            tokio::spawn(async move { whoami(&app, "/ws/whoami/", Some(&cookie)).await })
        })
        .collect();
    for handshake in handshakes {
        assert_eq!(handshake.await.unwrap().as_deref(), Some("alice 1 1"));
    }
    assert_eq!(whoami(&app, "/ws/whoami/", Some(&cookie)).await.as_deref(), Some("alice 1 1"));
}

#[tokio::test]
async fn wiring_mistakes_give_errors_that_name_the_fix() {
    // No AuthConfig on the router.
    let router = routing! { websocket: [ "ws/" => AuthMiddlewareStack(Whoami) ] };
    let result = WebsocketCommunicator::new(router, "/ws/").connect().await;
    let Err(TestError::App(AppError::Misconfigured(message))) = result else { panic!("{result:?}") };
    assert!(message.contains("ProtocolTypeRouter::auth"), "{message}");

    // AuthMiddleware without the session middleware.
    let router = routing! { websocket: [ "ws/" => AuthMiddleware(Whoami) ] }.auth(AuthConfig::new(accounts()));
    let result = WebsocketCommunicator::new(router, "/ws/").connect().await;
    let Err(TestError::App(AppError::Misconfigured(message))) = result else { panic!("{result:?}") };
    assert!(message.contains("AuthMiddlewareStack"), "{message}");

    // A custom protocol has no headers to carry a session cookie.
    let router = routing! { "chat": AuthMiddlewareStack({ Whoami::as_app() }) }.auth(AuthConfig::new(accounts()));
    let scope = Scope::new(Protocol::from_name("chat"), "/");
    let mut comm = channels::testing::ApplicationCommunicator::new(router, scope);
    let result = comm.wait().await;
    let Err(TestError::App(AppError::Misconfigured(message))) = result else { panic!("{result:?}") };
    assert!(message.contains("no") && message.contains("headers"), "{message}");
}

#[tokio::test]
async fn auth_attribute_puts_the_consumer_behind_the_stack() {
    let accounts = accounts();
    let app = app(&accounts);
    let cookie = log_in(&app, "alice:wonderland").await;
    assert_eq!(whoami(&app, "/ws/members/", Some(&cookie)).await.as_deref(), Some("member alice"));
    assert_eq!(whoami(&app, "/ws/members/", None).await, None, "required: refused before connect");
    assert_eq!(whoami(&app, "/ws/greeter/", Some(&cookie)).await.as_deref(), Some("welcome back"));
    assert_eq!(whoami(&app, "/ws/greeter/", None).await.as_deref(), Some("hello stranger"));
    let redirected = HttpCommunicator::new(app.clone(), Method::GET, "/account/").get_response().await.unwrap();
    assert_eq!(redirected.status, StatusCode::FOUND);
    assert_eq!(redirected.headers.get("location").unwrap(), "/login/?next=/account/");
    assert_eq!(post(&app, "/account/", "", Some(&cookie)).await.text(), "account 1");
}

#[tokio::test]
async fn required_fails_closed_however_the_consumer_is_routed() {
    let accounts = accounts();
    let app = app(&accounts);
    let cookie = log_in(&app, "alice:wonderland").await;
    let refusal = |path: &'static str, cookie: Option<String>| {
        let app = app.clone();
        async move {
            let mut ws = WebsocketCommunicator::new(app, path);
            if let Some(cookie) = cookie {
                ws = ws.cookie("sessionid", &cookie);
            }
            match ws.connect().await {
                Err(TestError::App(AppError::LoginRequired(message))) => message,
                other => panic!("{path}: expected a login-required refusal, got {other:?}"),
            }
        }
    };
    // Without the stack nobody is ever logged in: refused, and the message names the fix.
    let message = refusal("/ws/members-by-hand/", Some(cookie.clone())).await;
    assert!(message.contains("no AuthMiddleware ran") && message.contains("AuthMiddlewareStack"), "{message}");
    let message = refusal("/ws/members-by-hand/", None).await;
    assert!(message.contains("no AuthMiddleware ran"), "{message}");
    // Behind a stack without `required`: anonymous refused, logged-in served.
    let message = refusal("/ws/members-stacked/", None).await;
    assert!(message.contains("requires a logged-in user"), "{message}");
    assert_eq!(whoami(&app, "/ws/members-stacked/", Some(&cookie)).await.as_deref(), Some("member alice"));
}

mod over_real_sockets {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue as WsHeaderValue;

    use super::support;

    async fn login_over_tcp(addr: std::net::SocketAddr, credentials: &str) -> Option<String> {
        let request = format!(
            "POST /login/ HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{credentials}",
            credentials.len()
        );
        let response = support::raw_http(addr, request.as_bytes()).await;
        let line = response.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie: sessionid="))?;
        line.split_once('=')?.1.split(';').next().map(str::to_owned)
    }

    /// The first message the WebSocket gets, or the HTTP status that refused it.
    async fn whoami_over_tcp(server: &support::TestServer, path: &str, cookie: Option<&str>) -> Result<String, u16> {
        let mut request = format!("ws://{}{path}", server.addr).into_client_request().unwrap();
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", WsHeaderValue::from_str(&format!("sessionid={cookie}")).unwrap());
        }
        match server.try_connect(request).await {
            Ok((mut client, _)) => {
                Ok(support::next_message(&mut client).await.into_text().unwrap().as_str().to_owned())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn the_same_rules_hold_over_tcp() {
        let accounts = accounts();
        let server = support::TestServer::start(app(&accounts)).await;
        assert_eq!(login_over_tcp(server.addr, "alice:nope").await, None);
        let cookie = login_over_tcp(server.addr, "alice:wonderland").await.expect("a session cookie");
        assert_eq!(whoami_over_tcp(&server, "/ws/whoami/", Some(&cookie)).await, Ok("alice 1 1".to_owned()));
        assert_eq!(whoami_over_tcp(&server, "/ws/private/", None).await, Err(403));
        assert_eq!(whoami_over_tcp(&server, "/ws/members-by-hand/", Some(&cookie)).await, Err(403), "no stack");
        assert_eq!(whoami_over_tcp(&server, "/ws/members-stacked/", None).await, Err(403));
        let tampered = support::tampered(&cookie);
        assert_eq!(whoami_over_tcp(&server, "/ws/whoami/", Some(&tampered)).await, Ok("anonymous - -".to_owned()));
        assert_eq!(whoami_over_tcp(&server, "/ws/private/", Some(&tampered)).await, Err(403));
        accounts.add(1, "alice", "new password");
        assert_eq!(whoami_over_tcp(&server, "/ws/private/", Some(&cookie)).await, Err(403), "password changed");
        let bob = login_over_tcp(server.addr, "bob:builder").await.expect("a session cookie");
        accounts.0.lock().unwrap().remove(&2);
        assert_eq!(
            whoami_over_tcp(&server, "/ws/whoami/", Some(&bob)).await,
            Ok("anonymous - 2".to_owned()),
            "deleted"
        );
        server.shutdown().await;
    }
}
