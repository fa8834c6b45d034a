//! Runs the chat example as a process and uses its stable interface the way other clients do:
//! log in with the form, open a room over WebSocket with the session cookie, chat, log out.

mod support;

use std::net::SocketAddr;

use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn post_form(addr: SocketAddr, path: &str, form: &str, cookie: Option<&str>) -> String {
    let cookie = cookie.map(|c| format!("Cookie: sessionid={c}\r\n")).unwrap_or_default();
    post_with(addr, path, form, &cookie).await
}

/// `POST` of a form with extra header lines (each ending in `\r\n`).
async fn post_with(addr: SocketAddr, path: &str, form: &str, headers: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n{headers}Connection: close\r\n\r\n{form}",
        form.len()
    );
    raw_http(addr, request.as_bytes()).await
}

fn session_cookie(response: &str) -> Option<String> {
    let line = response.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie: sessionid="))?;
    let value = line.split_once('=')?.1.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

async fn log_in(addr: SocketAddr, user: &str) -> String {
    let response = post_form(addr, "/login/", &format!("username={user}&password=demo-pw"), None).await;
    assert!(response.starts_with("HTTP/1.1 302"), "{response}");
    assert!(response.to_ascii_lowercase().contains("location: /chat/lobby/"), "{response}");
    session_cookie(&response).expect("a session cookie")
}

async fn open_room(addr: SocketAddr, room: &str, cookie: Option<&str>, origin: &str) -> Result<Client, u16> {
    open_room_with(addr, room, "", cookie, origin).await
}

/// `open_room` with a query string (`?since=...`).
async fn open_room_with(
    addr: SocketAddr,
    room: &str,
    query: &str,
    cookie: Option<&str>,
    origin: &str,
) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws/chat/{room}/{query}").into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(&format!("sessionid={cookie}")).unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    match within(tokio_tungstenite::client_async(request, tcp)).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("{other}"),
    }
}

/// One sample of the chat's `GET /metrics` (Prometheus text format): `series` is the name with
/// its labels as the exporter writes them; absent counts as 0.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let response = raw_http(addr, format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Waits (up to 10 s) until `series` reads `value`: a connection's end is counted once its
/// task is done, a moment after its client has seen the close.
async fn metric_becomes(addr: SocketAddr, series: &str, value: f64) {
    for _ in 0..200 {
        if metric(addr, series).await == value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(metric(addr, series).await, value, "{series}");
}

fn json(message: Message) -> serde_json::Value {
    serde_json::from_str(message.into_text().unwrap().as_str()).unwrap()
}

#[tokio::test]
async fn chat_example_logs_in_chats_and_logs_out() {
    let db = std::env::temp_dir().join(format!("channels-chat-test-{}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let addr = free_addr().await;
    let args = ["--addr", &addr.to_string(), "--db", db.to_str().unwrap(), "--demo-password", "demo-pw"];
    let _chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    let origin = format!("http://{addr}");

    let form = raw_http(addr, format!("GET /login/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(form.starts_with("HTTP/1.1 200") && form.contains("name=\"password\""), "{form}");
    let wrong = post_form(addr, "/login/", "username=alice&password=nope", None).await;
    assert!(wrong.starts_with("HTTP/1.1 200") && wrong.contains("Wrong username or password"), "{wrong}");
    assert_eq!(session_cookie(&wrong), None);

    let alice = log_in(addr, "alice").await;
    let bob = log_in(addr, "bob").await;
    let page = raw_http(
        addr,
        format!("GET /chat/lobby/ HTTP/1.1\r\nHost: {addr}\r\nCookie: sessionid={alice}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<b id=\"user\">alice</b>"), "{page}");

    let mut alice_ws = open_room(addr, "lobby", Some(&alice), &origin).await.expect("alice connects");
    let mut bob_ws = open_room(addr, "lobby", Some(&bob), &origin).await.expect("bob connects");
    send_text(&mut alice_ws, r#"{"message": "hello, bob"}"#).await;
    let to_alice = json(next_message(&mut alice_ws).await);
    let id = to_alice["id"].as_str().expect("chat messages carry their id").to_owned();
    let expected = serde_json::json!({ "user": "alice", "message": "hello, bob", "id": id });
    assert_eq!(to_alice, expected, "the sender gets it too");
    assert_eq!(json(next_message(&mut bob_ws).await), expected);

    assert_eq!(open_room(addr, "lobby", None, &origin).await.err(), Some(403), "anonymous");
    assert_eq!(open_room(addr, "lobby", Some(&alice), "https://evil.example").await.err(), Some(403), "cross-site");

    // What a Prometheus scrape sees after that traffic.
    assert_eq!(metric(addr, r#"channels_connections_open{protocol="websocket"}"#).await, 2.0);
    assert_eq!(metric(addr, r#"channels_handshakes_total{outcome="accepted"}"#).await, 2.0);
    assert_eq!(metric(addr, r#"channels_handshakes_total{outcome="origin"}"#).await, 1.0);
    assert_eq!(metric(addr, r#"channels_handshakes_total{outcome="refused"}"#).await, 1.0);
    assert_eq!(metric(addr, "channels_websocket_messages_received_total").await, 1.0);
    assert_eq!(metric(addr, "channels_websocket_messages_sent_total").await, 2.0, "to alice and bob");
    let sent_bytes = metric(addr, "channels_websocket_sent_bytes_total").await;
    assert_eq!(sent_bytes, 2.0 * expected.to_string().len() as f64);
    assert!(metric(addr, r#"channels_layer_sends_total{kind="group_send"}"#).await >= 1.0);
    assert!(metric(addr, r#"channels_session_loads_total{outcome="found"}"#).await >= 3.0);
    assert!(metric(addr, r#"channels_http_requests_total{status="2xx"}"#).await >= 2.0);
    // Only this machine may read them.
    let remote = raw_http(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(remote.starts_with("HTTP/1.1 200"), "proxy headers are not trusted by default: {remote}");

    let out = post_form(addr, "/logout/", "", Some(&alice)).await;
    assert!(out.starts_with("HTTP/1.1 302") && out.to_ascii_lowercase().contains("max-age=0"), "{out}");
    assert_eq!(close_code(&mut alice_ws).await, 4001, "logout closes the user's open sockets");
    send_text(&mut bob_ws, r#"{"message": "still here"}"#).await;
    assert_eq!(json(next_message(&mut bob_ws).await)["message"], "still here", "other users stay");
    assert_eq!(open_room(addr, "lobby", Some(&alice), &origin).await.err(), Some(403), "logged out");
    drop(alice_ws);
    metric_becomes(addr, r#"channels_connections_open{protocol="websocket"}"#, 1.0).await;
    assert_eq!(metric(addr, r#"channels_websocket_closes_total{reason="application"}"#).await, 1.0);
    let _ = std::fs::remove_file(&db);
}

async fn start_chat(extra: &[&str]) -> (Example, SocketAddr, std::path::PathBuf) {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = std::env::temp_dir().join(format!("channels-chat-sec-{}-{n}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let addr = free_addr().await;
    let mut args = vec!["--addr".to_owned(), addr.to_string(), "--db".to_owned(), db.to_string_lossy().into_owned()];
    args.extend(["--demo-password".to_owned(), "demo-pw".to_owned()]);
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    (chat, addr, db)
}

fn location(response: &str) -> Option<String> {
    let line = response.lines().find(|line| line.to_ascii_lowercase().starts_with("location:"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

#[tokio::test]
async fn chat_example_refuses_forged_requests_and_open_redirects() {
    let (_chat, addr, db) = start_chat(&[]).await;
    let form = "username=alice&password=demo-pw";
    // Login CSRF: a cross-site auto-submitted form.
    let forged =
        post_with(addr, "/login/", form, "Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n").await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    assert_eq!(session_cookie(&forged), None);
    let forged = post_with(addr, "/login/", form, "Origin: https://evil.example\r\n").await;
    assert!(forged.starts_with("HTTP/1.1 403"), "older browsers (no Sec-Fetch-Site): {forged}");
    // The site's own form.
    let own =
        post_with(addr, "/login/", form, &format!("Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n")).await;
    assert!(own.starts_with("HTTP/1.1 302"), "{own}");
    let alice = session_cookie(&own).unwrap();
    // Security headers on every page.
    let lower = own.to_ascii_lowercase();
    for header in ["x-frame-options: deny", "x-content-type-options: nosniff", "referrer-policy: same-origin"] {
        assert!(lower.contains(header), "{header} in {own}");
    }
    // Logout is POST-only, and a cross-site POST does not log anyone out.
    let cookie = format!("Cookie: sessionid={alice}\r\n");
    let get = raw_http(addr, format!("GET /logout/ HTTP/1.1\r\nHost: {addr}\r\n{cookie}\r\n").as_bytes()).await;
    assert!(get.starts_with("HTTP/1.1 405"), "{get}");
    let forged = post_with(addr, "/logout/", "", &format!("{cookie}Sec-Fetch-Site: cross-site\r\n")).await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    let origin = format!("http://{addr}");
    let mut still = open_room(addr, "lobby", Some(&alice), &origin).await.expect("still logged in");
    send_text(&mut still, r#"{"message": "still here"}"#).await;
    assert_eq!(json(next_message(&mut still).await)["message"], "still here");

    // `next=` stays on the site, however it is spelled.
    for (next, expected) in [
        ("/chat/kitchen/", "/chat/kitchen/"),
        ("/%5Cevil.example", "/chat/lobby/"),
        ("/%09/evil.example", "/chat/lobby/"),
        ("//evil.example", "/chat/lobby/"),
        ("https://evil.example/", "/chat/lobby/"),
        ("javascript:alert(1)", "/chat/lobby/"),
    ] {
        let response = post_with(addr, &format!("/login/?next={next}"), form, "").await;
        assert_eq!(location(&response).as_deref(), Some(expected), "next={next}: {response}");
    }

    // A page on another port of the same host is another site: no chat socket for it.
    let other_port = format!("http://{}:{}", addr.ip(), addr.port() + 1);
    assert_eq!(open_room(addr, "lobby", Some(&alice), &other_port).await.err(), Some(403));
    assert!(open_room(addr, "lobby", Some(&alice), &format!("http://localhost:{}", addr.port())).await.is_ok());
    // A Host the site does not answer to.
    let evil_host = raw_http(addr, b"GET /login/ HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(evil_host.starts_with("HTTP/1.1 400"), "{evil_host}");
    let _ = std::fs::remove_file(&db);
}

#[tokio::test]
async fn chat_example_login_floods_are_bounded() {
    // A generous attempts limit, so that the hashing bound is what the flood meets.
    let (chat, addr, db) = start_chat(&["--login-attempts", "100000"]).await;
    let pid = chat.0.id();
    let baseline = memory(pid, "VmRSS");
    let attempts: Vec<_> =
        (0..128).map(|_| tokio::spawn(post_with(addr, "/login/", "username=alice&password=wrong", ""))).collect();
    let mut statuses = std::collections::BTreeMap::new();
    for attempt in attempts {
        let response = tokio::time::timeout(std::time::Duration::from_secs(60), attempt).await.unwrap().unwrap();
        *statuses.entry(response.get(9..12).unwrap_or("").to_owned()).or_insert(0) += 1;
    }
    let grown = memory(pid, "VmHWM").saturating_sub(baseline);
    println!("statuses {statuses:?}; peak RSS grew {} MB", grown >> 20);
    assert!(statuses.keys().all(|status| status == "200" || status == "503"), "{statuses:?}");
    assert!(statuses.get("200").copied().unwrap_or(0) >= 2, "some attempts were checked: {statuses:?}");
    // One argon2 hash (19 MiB) per core at a time, not 128.
    assert!(grown < 100 << 20, "peak RSS grew {} MB", grown >> 20);
    drop(chat);

    // The per-address limit: past it, 429 without a password check.
    let (_chat, addr, db2) = start_chat(&["--login-attempts", "3"]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = post_with(addr, "/login/", "username=alice&password=wrong", "").await;
        statuses.push(response.get(9..12).unwrap_or("").to_owned());
    }
    assert_eq!(statuses, ["200", "200", "200", "429", "429"]);
    let _ = std::fs::remove_file(&db);
    let _ = std::fs::remove_file(&db2);
}

/// The room's history over the stable interface, with a plain WebSocket client: a fresh
/// connection gets the last messages first, `?since=<id>` gets exactly what came after that id,
/// and an id that cannot be resumed gets `{"recovered": false}` first.
#[tokio::test]
async fn chat_example_resumes_with_since_and_says_when_it_cannot() {
    let db = std::env::temp_dir().join(format!("channels-chat-since-{}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let addr = free_addr().await;
    let args = ["--addr", &addr.to_string(), "--db", db.to_str().unwrap(), "--demo-password", "demo-pw"];
    let _chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    let origin = format!("http://{addr}");
    let alice = log_in(addr, "alice").await;
    let mut writer = open_room(addr, "history", Some(&alice), &origin).await.expect("alice connects");
    let mut ids = Vec::new();
    for n in 0..60 {
        send_text(&mut writer, &format!(r#"{{"message": "m{n}"}}"#)).await;
        let echoed = json(next_message(&mut writer).await);
        assert_eq!(echoed["message"], format!("m{n}"));
        ids.push(echoed["id"].as_str().expect("an id").to_owned());
        if n % 15 == 14 {
            // Stay under the per-socket rate limit (20 messages a second).
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        }
    }
    // A fresh join: the last 50, oldest first.
    let mut fresh = open_room(addr, "history", Some(&alice), &origin).await.unwrap();
    for n in 10..60 {
        assert_eq!(json(next_message(&mut fresh).await)["message"], format!("m{n}"));
    }
    // Resuming after m41: m42..m59, then live ones.
    let mut resumed =
        open_room_with(addr, "history", &format!("?since={}", ids[41]), Some(&alice), &origin).await.unwrap();
    for (n, id) in ids.iter().enumerate().skip(42) {
        let message = json(next_message(&mut resumed).await);
        assert_eq!((message["message"].as_str(), message["id"].as_str()), (Some(&*format!("m{n}")), Some(id.as_str())));
    }
    send_text(&mut writer, r#"{"message": "live"}"#).await;
    assert_eq!(json(next_message(&mut resumed).await)["message"], "live");
    // Not an id: `{"recovered": false}` first, then the last 50.
    let mut lost = open_room_with(addr, "history", "?since=not-an-id", Some(&alice), &origin).await.unwrap();
    assert_eq!(json(next_message(&mut lost).await), serde_json::json!({ "recovered": false }));
    assert_eq!(json(next_message(&mut lost).await)["message"], "m11");
    let _ = std::fs::remove_file(&db);
}
