//! Runs the chat example as a process and uses its stable interface the way other clients do:
//! log in with the form, open a room over WebSocket with the session cookie, chat, log out.

mod support;

use std::net::SocketAddr;

use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn post_form(addr: SocketAddr, path: &str, form: &str, cookie: Option<&str>) -> String {
    let cookie = cookie.map(|c| format!("Cookie: sessionid={c}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n{cookie}Connection: close\r\n\r\n{form}",
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
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws/chat/{room}/").into_client_request().unwrap();
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
    let expected = serde_json::json!({ "user": "alice", "message": "hello, bob" });
    assert_eq!(json(next_message(&mut alice_ws).await), expected, "the sender gets it too");
    assert_eq!(json(next_message(&mut bob_ws).await), expected);

    assert_eq!(open_room(addr, "lobby", None, &origin).await.err(), Some(403), "anonymous");
    assert_eq!(open_room(addr, "lobby", Some(&alice), "https://evil.example").await.err(), Some(403), "cross-site");

    let out = post_form(addr, "/logout/", "", Some(&alice)).await;
    assert!(out.starts_with("HTTP/1.1 302") && out.to_ascii_lowercase().contains("max-age=0"), "{out}");
    assert_eq!(close_code(&mut alice_ws).await, 4001, "logout closes the user's open sockets");
    send_text(&mut bob_ws, r#"{"message": "still here"}"#).await;
    assert_eq!(json(next_message(&mut bob_ws).await)["message"], "still here", "other users stay");
    assert_eq!(open_room(addr, "lobby", Some(&alice), &origin).await.err(), Some(403), "logged out");
    let _ = std::fs::remove_file(&db);
}
