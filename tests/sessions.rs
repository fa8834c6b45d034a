//! Cookie and session middleware, driven through HTTP and WebSocket consumers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use channels::middleware::{
    CookieMiddleware, CookieSessionStore, InMemorySessionStore, Middleware, SecretKeys, SessionConfig,
    SessionMiddleware, SessionMiddlewareStack, SessionStore,
};
use channels::prelude::*;
use channels::testing::{HttpCommunicator, TestError, TestResponse, WebsocketCommunicator};
use channels::{consumer, routing};
use http::{Method, StatusCode};

/// Counts visits in the session; `?flush` logs out, `?cycle` cycles the key.
#[consumer(http)]
struct Visits;

#[consumer]
impl Visits {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let session = self.scope.session.clone().ok_or_else(|| ConsumerError::msg("no session"))?;
        match self.scope.query_string.as_str() {
            "flush" => session.flush().await?,
            "cycle" => {
                session.insert("visits", &0).await?;
                session.cycle_key().await?;
            }
            _ => {
                let visits: u32 = session.get("visits").await?.unwrap_or(0) + 1;
                session.insert("visits", &visits).await?;
            }
        }
        let visits: u32 = session.get("visits").await?.unwrap_or(0);
        response.text(StatusCode::OK, visits.to_string()).await?;
        Ok(())
    }
}

/// Inside a WebSocket: bumps the visit count by 10 and saves explicitly.
#[consumer(websocket)]
struct LiveVisits;

#[consumer]
impl LiveVisits {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let session = self.scope.session.clone().ok_or_else(|| ConsumerError::msg("no session"))?;
        let visits: u32 = session.get("visits").await?.unwrap_or(0);
        session.insert("visits", &(visits + 10)).await?;
        session.save().await?;
        ws.accept().await?;
        ws.send_text(format!("{}", visits + 10)).await?;
        Ok(())
    }
}

fn keys() -> SecretKeys {
    SecretKeys::new([b"a test key that is long enough to sign cookies"]).unwrap()
}

fn app_with(store: Arc<dyn SessionStore>, config: SessionConfig) -> Arc<dyn Application> {
    let router = routing! {
        http: [ "visits/" => Visits ],
        websocket: [ "ws/visits/" => LiveVisits ],
    };
    Arc::new(SessionMiddlewareStack::new(store, keys()).config(config).wrap(router))
}

fn app(store: &InMemorySessionStore) -> Arc<dyn Application> {
    app_with(Arc::new(store.clone()), SessionConfig::default())
}

async fn visit(app: &Arc<dyn Application>, query: &str, cookie: Option<&str>) -> TestResponse {
    let mut request = HttpCommunicator::new(app.clone(), Method::GET, &format!("/visits/?{query}"));
    if let Some(cookie) = cookie {
        request = request.cookie("sessionid", cookie);
    }
    request.get_response().await.unwrap()
}

/// The session cookie's value from a response.
fn session_cookie(response: &TestResponse) -> Option<String> {
    response.cookie("sessionid").filter(|value| !value.is_empty())
}

#[tokio::test]
async fn http_session_is_saved_with_a_secure_by_default_cookie() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let first = visit(&app, "", None).await;
    assert_eq!(first.text(), "1");
    let header = first.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1209600", "Expires="] {
        assert!(header.contains(attribute), "{attribute} in {header}");
    }
    let cookie = session_cookie(&first).unwrap();
    let second = visit(&app, "", Some(&cookie)).await;
    assert_eq!(second.text(), "2");
    assert_eq!(store.len(), 1, "the same session, not a new one");
}

#[tokio::test]
async fn tampered_unknown_and_expired_cookies_give_a_fresh_session() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    assert_eq!(visit(&app, "", Some(&cookie)).await.text(), "2");

    // Flip one character of the key, of the expiry, of the signature: each is a fresh session.
    for position in [0, cookie.find('.').unwrap() + 1, cookie.len() - 1] {
        let mut tampered = cookie.clone().into_bytes();
        tampered[position] = if tampered[position] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let response = visit(&app, "", Some(&tampered)).await;
        assert_eq!((response.status, response.text().as_str()), (StatusCode::OK, "1"), "{tampered}");
    }
    for garbage in ["", "...", "x.y.z", "%ff%00.1.x", "a.99999999999999999999999.b", &"a".repeat(5000)] {
        assert_eq!(visit(&app, "", Some(garbage)).await.text(), "1", "{garbage:?}");
    }

    // A validly signed cookie whose session the store no longer has.
    let other_store = InMemorySessionStore::new();
    assert_eq!(visit(&self::app(&other_store), "", Some(&cookie)).await.text(), "1");

    // An expired cookie (age zero: it expires as it is issued).
    let config = SessionConfig { age: Duration::ZERO, ..SessionConfig::default() };
    let short = app_with(Arc::new(InMemorySessionStore::new()), config);
    let expired = session_cookie(&visit(&short, "", None).await).unwrap();
    assert_eq!(visit(&short, "", Some(&expired)).await.text(), "1");
}

#[tokio::test]
async fn cycle_key_moves_the_session_and_the_old_key_stops_working() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let old = session_cookie(&visit(&app, "", None).await).unwrap();
    assert_eq!(visit(&app, "", Some(&old)).await.text(), "2");
    let cycled = visit(&app, "cycle", Some(&old)).await;
    let new = session_cookie(&cycled).unwrap();
    assert_ne!(new.split('.').next(), old.split('.').next(), "a new key");
    assert_eq!(visit(&app, "", Some(&new)).await.text(), "1", "data moved (visits reset to 0 by ?cycle)");
    assert_eq!(visit(&app, "", Some(&old)).await.text(), "1", "the old key is a fresh session now");
}

#[tokio::test]
async fn flush_deletes_the_session_and_the_cookie() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    let flushed = visit(&app, "flush", Some(&cookie)).await;
    assert_eq!(flushed.text(), "0");
    assert_eq!(flushed.cookie("sessionid").as_deref(), Some(""), "deleted");
    let header = flushed.header("set-cookie").unwrap();
    assert!(header.contains("Max-Age=0"), "{header}");
    assert!(store.is_empty());
    assert_eq!(visit(&app, "", Some(&cookie)).await.text(), "1");
}

#[tokio::test]
async fn session_saved_inside_a_websocket_is_seen_by_the_next_http_request() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    let mut ws = WebsocketCommunicator::new(app.clone(), "/ws/visits/").cookie("sessionid", &cookie);
    assert!(ws.connect().await.unwrap().accepted);
    assert_eq!(ws.receive_text().await.unwrap(), "11");
    ws.disconnect(1000).await.unwrap();
    assert_eq!(visit(&app, "", Some(&cookie)).await.text(), "12");
}

#[tokio::test]
async fn cookie_store_keeps_the_data_in_the_signed_cookie() {
    let app = app_with(Arc::new(CookieSessionStore), SessionConfig::default());
    let first = session_cookie(&visit(&app, "", None).await).unwrap();
    let second = visit(&app, "", Some(&first)).await;
    assert_eq!(second.text(), "2");
    // Re-encode the data with a higher count but keep the old signature: rejected.
    let (data, rest) = first.split_once('.').unwrap();
    let forged_data = data.replace(data, &base64_json(r#"{"visits":1000}"#));
    assert_eq!(visit(&app, "", Some(&format!("{forged_data}.{rest}"))).await.text(), "1");
}

fn base64_json(json: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn session_middleware_without_cookie_middleware_names_the_fix() {
    let router = routing! { http: [ "visits/" => Visits ] };
    let app = SessionMiddleware::new(InMemorySessionStore::new(), keys()).wrap(router);
    let result = HttpCommunicator::new(app, Method::GET, "/visits/").get_response().await;
    let Err(TestError::App(AppError::Misconfigured(message))) = result else { panic!("{result:?}") };
    assert!(message.contains("CookieMiddleware") && message.contains("AuthMiddlewareStack"), "{message}");
}

#[tokio::test]
async fn redis_store_is_shared_by_two_app_instances() {
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|url| !url.is_empty()) else {
        assert!(std::env::var_os("CI").is_none(), "CI=true but REDIS_URL is not set");
        eprintln!("SKIPPED redis_store_is_shared_by_two_app_instances: REDIS_URL is not set");
        return;
    };
    let prefix = format!("test-sessions-{}", std::process::id());
    let store = |url: String, prefix: String| async move {
        let store = channels::middleware::RedisSessionStore::connect(&url, &prefix).await.unwrap();
        app_with(Arc::new(store), SessionConfig::default())
    };
    let first = store(url.clone(), prefix.clone()).await;
    let second = store(url, prefix).await;
    let cookie = session_cookie(&visit(&first, "", None).await).unwrap();
    assert_eq!(visit(&second, "", Some(&cookie)).await.text(), "2", "the other instance sees the session");
    assert_eq!(visit(&first, "", Some(&cookie)).await.text(), "3");
    let cycled = session_cookie(&visit(&second, "cycle", Some(&cookie)).await).unwrap();
    assert_eq!(visit(&first, "", Some(&cookie)).await.text(), "1", "the old key was deleted");
    assert_eq!(visit(&first, "", Some(&cycled)).await.text(), "1");
}

#[tokio::test]
async fn a_non_ascii_cookie_beside_the_session_cookie_keeps_the_session() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    // Another app on the same host set a raw UTF-8 cookie.
    let response = HttpCommunicator::new(app.clone(), Method::GET, "/visits/")
        .header("cookie", &format!("theme=caf\u{e9}; sessionid={cookie}; lang=\u{fc}ber"))
        .get_response()
        .await
        .unwrap();
    assert_eq!(response.text(), "2", "the session cookie is still read");
}

/// Stores a value in the session, while "another tab" logs out (deletes the session) before
/// the response is saved.
struct LoggedOutMeanwhile {
    scope: Scope,
    store: Arc<dyn SessionStore>,
}

impl HttpConsumer for LoggedOutMeanwhile {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let session = self.scope.session.clone().ok_or_else(|| ConsumerError::msg("no session"))?;
        session.insert("visits", &99).await?;
        let key = session.session_key().await?.ok_or_else(|| ConsumerError::msg("no key"))?;
        self.store.delete(&key).await?;
        response.text(StatusCode::OK, "saved").await?;
        Ok(())
    }
}

async fn a_session_deleted_during_a_request_stays_deleted(store: Arc<dyn SessionStore>) {
    let racing = {
        let store = store.clone();
        channels::routing::URLRouter::new(vec![
            path("visits/", Visits::as_app()),
            path("race/", ConsumerApp::http(move |scope| Ok(LoggedOutMeanwhile { scope, store: store.clone() }))),
        ])
    };
    // Channels' spelling of the two middleware, one around the other.
    let app: Arc<dyn Application> = Arc::new(CookieMiddleware(SessionMiddleware(racing, store.clone(), keys())));
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    let response = HttpCommunicator::new(app.clone(), Method::GET, "/race/")
        .cookie("sessionid", &cookie)
        .get_response()
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{}", response.text());
    assert!(response.text().contains("deleted before the request completed"), "{}", response.text());
    assert!(response.headers.get("set-cookie").is_none(), "no cookie brings the session back");
    assert_eq!(visit(&app, "", Some(&cookie)).await.text(), "1", "the logout stands: a fresh session");
}

#[tokio::test]
async fn a_session_deleted_during_a_request_stays_deleted_in_memory() {
    a_session_deleted_during_a_request_stays_deleted(Arc::new(InMemorySessionStore::new())).await;
}

#[tokio::test]
async fn a_session_deleted_during_a_request_stays_deleted_in_redis() {
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|url| !url.is_empty()) else {
        assert!(std::env::var_os("CI").is_none(), "CI=true but REDIS_URL is not set");
        eprintln!("SKIPPED a_session_deleted_during_a_request_stays_deleted_in_redis: REDIS_URL is not set");
        return;
    };
    let prefix = format!("test-sessions-race-{}", std::process::id());
    let store = channels::middleware::RedisSessionStore::connect(&url, &prefix).await.unwrap();
    a_session_deleted_during_a_request_stays_deleted(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_store_answers_the_first_request_after_a_redis_restart() {
    use std::process::{Command, Stdio};
    if Command::new("redis-server").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI=true but redis-server is not on the PATH");
        eprintln!("SKIPPED redis_store_answers_the_first_request_after_a_redis_restart: no redis-server");
        return;
    }
    struct Redis(std::process::Child);
    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let start = |port: u16| {
        Redis(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        )
    };
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let wait = || async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server listening");
    };
    let redis = start(port);
    wait().await;
    let store = channels::middleware::RedisSessionStore::connect(&format!("redis://127.0.0.1:{port}"), "restart")
        .await
        .unwrap();
    let app = app_with(Arc::new(store), SessionConfig::default());
    assert_eq!(visit(&app, "", None).await.status, StatusCode::OK);
    drop(redis);
    let _redis = start(port);
    wait().await;
    // The data is gone (no persistence), but the first request is served, not a 500.
    let response = visit(&app, "", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.text(), "1");
    assert!(session_cookie(&response).is_some(), "the session was saved: {:?}", response.headers);
}

#[tokio::test]
async fn session_middleware_stack_is_cookie_then_session() {
    let store = InMemorySessionStore::new();
    let app: Arc<dyn Application> =
        Arc::new(SessionMiddlewareStack(routing! { http: [ "visits/" => Visits ] }, store.clone(), keys()));
    let cookie = session_cookie(&visit(&app, "", None).await).unwrap();
    assert_eq!(visit(&app, "", Some(&cookie)).await.text(), "2");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn a_store_error_keeps_the_backends_error_as_its_source() {
    // Nothing listens on port 1: the Redis client's own error is kept, not flattened to text.
    let err = channels::middleware::RedisSessionStore::connect("redis://127.0.0.1:1", "x").await.unwrap_err();
    let channels::middleware::SessionError::Store(backend) = &err else { panic!("{err:?}") };
    let source = std::error::Error::source(&err).expect("the backend's error is the source");
    assert_eq!(source.to_string(), backend.get().to_string());
    assert!(err.to_string().starts_with("session store error: "), "{err}");
}
