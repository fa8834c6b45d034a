//! Cookie and session middleware, driven through HTTP and WebSocket consumers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use channels::middleware::{
    CookieMiddleware, CookieSessionStore, InMemorySessionStore, SecretKeys, SessionConfig, SessionMiddleware,
    SessionStore,
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
    Arc::new(CookieMiddleware::new(SessionMiddleware::with_config(router, store, keys(), config)))
}

fn app(store: &InMemorySessionStore) -> Arc<dyn Application> {
    app_with(Arc::new(store.clone()), SessionConfig::default())
}

async fn visit(app: &Arc<dyn Application>, query: &str, cookie: Option<&str>) -> TestResponse {
    let mut request = HttpCommunicator::new(app.clone(), Method::GET, &format!("/visits/?{query}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", &format!("sessionid={cookie}"));
    }
    request.get_response().await.unwrap()
}

/// The session cookie's value from a response.
fn session_cookie(response: &TestResponse) -> Option<String> {
    let header = response.headers.get("set-cookie")?.to_str().ok()?;
    let value = header.strip_prefix("sessionid=")?.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

#[tokio::test]
async fn http_session_is_saved_with_a_secure_by_default_cookie() {
    let store = InMemorySessionStore::new();
    let app = app(&store);
    let first = visit(&app, "", None).await;
    assert_eq!(first.text(), "1");
    let header = first.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1209600"] {
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
    let header = flushed.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(header.starts_with("sessionid=;") && header.contains("Max-Age=0"), "{header}");
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
    let app = SessionMiddleware::new(router, InMemorySessionStore::new(), keys());
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
