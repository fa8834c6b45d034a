//! The chat example in headless Chromium, driven over the DevTools protocol: log in through
//! the page, open a room, send a message and see it with the username; then, logged out, a
//! page's WebSocket is refused. A screenshot is saved to `target/chat-browser.png`. With Redis,
//! the page (its JavaScript client) shows who is online, and after the server process is
//! killed and restarted it catches up with the messages sent meanwhile.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it); without it the test says it skipped.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

struct Browser {
    process: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| Command::new(name).arg("--version").output().is_ok())
}

/// A DevTools connection to one page.
struct Page {
    socket: Client,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        within(self.socket.send(Message::Text(request.to_string().into()))).await.unwrap();
        within(async {
            loop {
                let message = self.socket.next().await.expect("devtools open").expect("devtools message");
                let Message::Text(text) = message else { continue };
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["id"] == id {
                    assert!(value.get("error").is_none(), "{method} failed: {value}");
                    return value["result"].clone();
                }
            }
        })
        .await
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        self.call("Runtime.evaluate", params).await["result"]["value"].clone()
    }

    /// Evaluates `condition` until it is true (bounded).
    async fn wait_for(&mut self, condition: &str) {
        within(async {
            while self.eval(condition).await != json!(true) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

async fn open_browser(binary: &str) -> (Browser, Page) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("channels-chromium-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let process = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            &format!("--user-data-dir={}", profile.display()),
            "about:blank",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let browser = Browser { process, profile: profile.clone() };
    // Chromium writes its DevTools port to the profile once it listens.
    let port: u16 = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
                && let Some(port) = text.lines().next().and_then(|line| line.parse().ok())
            {
                return port;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("chromium's DevTools port");
    let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listing = raw_http(devtools, b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await;
    let body = &listing[listing.find("\r\n\r\n").expect("a response") + 4..];
    let body = body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace()); // chunk size, if any
    let end = body.rfind(']').expect("a JSON list") + 1;
    let targets: Value = serde_json::from_str(&body[..end]).expect("target list");
    let url = targets
        .as_array()
        .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
        .and_then(|page| page["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_owned();
    let path = url.find("/devtools/").map(|start| url[start..].to_owned()).expect("devtools path");
    let socket = connect(devtools, &path).await;
    (browser, Page { socket, next_id: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_real_browser() {
    let Some(binary) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI=true but chromium is not installed (.ci/run installs it)");
        eprintln!("SKIPPED chat_in_a_real_browser: chromium is not installed (apt-get install chromium)");
        return;
    };
    let db = std::env::temp_dir().join(format!("channels-chat-browser-{}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let addr = free_addr().await;
    let args = ["--addr", &addr.to_string(), "--db", db.to_str().unwrap(), "--demo-password", "demo-pw"];
    let _chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    let (_browser, mut page) = open_browser(binary).await;

    page.call("Page.navigate", json!({ "url": format!("http://{addr}/login/") })).await;
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')").await;
    page.eval(
        "document.getElementById('username').value = 'alice';\
         document.getElementById('password').value = 'demo-pw';\
         document.getElementById('login').submit(); true",
    )
    .await;
    page.wait_for(
        "location.pathname === '/chat/lobby/' && document.getElementById('status')?.textContent === 'connected'",
    )
    .await;
    page.eval(
        "document.getElementById('message').value = 'hello from chromium';\
         document.getElementById('send').requestSubmit(); true",
    )
    .await;
    page.wait_for("[...document.querySelectorAll('.line')].some(l => l.textContent === 'alice: hello from chromium')")
        .await;

    // A page that closes its socket gets the server's close frame back: a clean close.
    let closed = page
        .eval(&format!(
            "new Promise(done => {{\
               const socket = new WebSocket('ws://{addr}/ws/chat/lobby/');\
               socket.onopen = () => socket.close(1000, 'leaving');\
               socket.onclose = (event) => done(event.wasClean + ' ' + event.code);\
             }})"
        ))
        .await;
    assert_eq!(closed, json!("true 1000"), "RFC 6455 5.5.1: the server answers the close");

    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let png = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    };
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("chat-browser.png"), png).unwrap();

    // The page's own logout form passes the CSRF check (same-origin POST) and ends the session.
    page.eval("document.querySelector('form[action=\"/logout/\"]').submit(); true").await;
    page.wait_for("location.pathname === '/login/' && !!document.getElementById('login')").await;
    // Logged out (cookies gone), a page's WebSocket to the room is refused.
    page.call("Network.clearBrowserCookies", json!({})).await;
    page.call("Page.navigate", json!({ "url": format!("http://{addr}/login/") })).await;
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')").await;
    let outcome = page
        .eval(&format!(
            "new Promise(done => {{\
               const socket = new WebSocket('ws://{addr}/ws/chat/lobby/');\
               socket.onopen = () => done('opened');\
               socket.onclose = (event) => done('closed ' + event.code);\
             }})"
        ))
        .await;
    assert_eq!(outcome, json!("closed 1006"), "the handshake was refused (403), so the browser saw 1006");
    let _ = std::fs::remove_file(&db);
}

/// Logs `user` in through the page and opens `room`; returns once the socket is connected.
async fn open_room_page(page: &mut Page, addr: std::net::SocketAddr, user: &str, room: &str) {
    page.call("Page.navigate", json!({ "url": format!("http://{addr}/login/?next=/chat/{room}/") })).await;
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')").await;
    page.eval(&format!(
        "document.getElementById('username').value = '{user}';\
         document.getElementById('password').value = 'demo-pw';\
         document.getElementById('login').submit(); true"
    ))
    .await;
    page.wait_for(&format!(
        "location.pathname === '/chat/{room}/' && document.getElementById('status')?.textContent === 'connected'"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_recovers_after_a_restart_and_shows_who_is_online() {
    use channels::layers::{ChannelLayer, HistoryConfig, LayerConfig, RedisChannelLayer, RedisLayerConfig};
    let Some(binary) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI=true but chromium is not installed (.ci/run installs it)");
        eprintln!(
            "SKIPPED the_chat_page_recovers_after_a_restart: chromium is not installed (apt-get install chromium)"
        );
        return;
    };
    let Some(url) = redis_url("the_chat_page_recovers_after_a_restart_and_shows_who_is_online") else { return };
    let db = std::env::temp_dir().join(format!("channels-chat-browser-restart-{}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let addr = free_addr().await;
    let args =
        ["--addr", &addr.to_string(), "--db", db.to_str().unwrap(), "--demo-password", "demo-pw", "--redis", &url];
    let mut chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    let (_browser, mut page) = open_browser(binary).await;
    let room = format!("restart{}", std::process::id());
    open_room_page(&mut page, addr, "alice", &room).await;
    page.wait_for("document.getElementById('online').textContent === 'alice'").await;
    // The JavaScript module's pure parts, as the page imports them.
    let checks = page
        .eval(
            "import('/static/channels.js').then(({ applyPresenceDiff, backoff }) => {\
               const state = { ann: [{ id: 'a', meta: {} }] };\
               applyPresenceDiff(state, { joins: { bo: [{ id: 'b', meta: {} }], ann: [{ id: 'a', meta: {} }] } });\
               applyPresenceDiff(state, { leaves: { ann: [{ id: 'a', meta: {} }] } });\
               const waits = [0, 1, 2, 10].map(n => backoff(n, {}, () => 0));\
               const jittered = backoff(3, {}, () => 1);\
               return JSON.stringify({ keys: Object.keys(state), ids: state.bo.map(m => m.id), waits, jittered });\
             })",
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(checks.as_str().unwrap()).unwrap(),
        json!({ "keys": ["bo"], "ids": ["b"], "waits": [500, 1000, 2000, 10000], "jittered": 2000 }),
    );
    page.eval(
        "document.getElementById('message').value = 'before the restart';\
         document.getElementById('send').requestSubmit(); true",
    )
    .await;
    page.wait_for("[...document.querySelectorAll('.line')].some(l => l.textContent === 'alice: before the restart')")
        .await;

    // The server dies; messages are sent to the room while it is down.
    chat.0.kill().unwrap();
    let _ = chat.0.wait();
    page.wait_for("document.getElementById('status').textContent === 'reconnecting…'").await;
    let rooms =
        LayerConfig::default().with_history("chat.", HistoryConfig::last(1_000).max_age(Duration::from_secs(86_400)));
    let publisher =
        RedisChannelLayer::connect_with(RedisLayerConfig { layer: rooms, ..RedisLayerConfig::new(url.as_str()) })
            .await
            .unwrap();
    for n in 1..=3 {
        let message = json!({ "type": "chat.message", "user": "bob", "message": format!("missed {n}") });
        publisher.group_send(&format!("chat.{room}"), message.into()).await.unwrap();
    }
    let _chat = Example::start("chat", &args).await;
    wait_until_listening(addr).await;
    page.wait_for(
        "[...document.querySelectorAll('.line')].map(l => l.textContent).join('|')\
         .endsWith('alice: before the restart|bob: missed 1|bob: missed 2|bob: missed 3')",
    )
    .await;
    page.wait_for("document.getElementById('status').textContent === 'connected'").await;
    assert_eq!(page.eval("document.querySelectorAll('.notice').length").await, json!(0), "everything was recovered");
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('.line')].filter(l => l.textContent === 'alice: before the restart').length"
        )
        .await,
        json!(1),
        "nothing twice"
    );
    page.wait_for("document.getElementById('online').textContent === 'alice'").await;
    let _ = std::fs::remove_file(&db);
}
