//! Runs the echo example as a process and talks to it the way other clients will: over
//! /ws/echo/, /ws/json/, / and /health/; then stops it with SIGTERM.

mod support;

use std::process::Command;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_example_serves_its_stable_endpoints() {
    let addr = free_addr().await;
    let mut example = Example::start("echo", &["--addr", &addr.to_string()]).await;
    wait_until_listening(addr).await;

    let mut echo = connect(addr, "/ws/echo/").await;
    send_text(&mut echo, "hello").await;
    assert_eq!(next_message(&mut echo).await, Message::Text("hello".into()));
    within(echo.send(Message::Binary(vec![9u8, 8, 7].into()))).await.unwrap();
    assert_eq!(next_message(&mut echo).await, Message::Binary(vec![9u8, 8, 7].into()));

    let mut json = connect(addr, "/ws/json/").await;
    send_text(&mut json, r#"{"a": [1, 2]}"#).await;
    let Message::Text(text) = next_message(&mut json).await else { panic!("expected text") };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap(),
        serde_json::json!({"echo": {"a": [1, 2]}})
    );

    let health = raw_http(addr, b"GET /health/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    let index = raw_http(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(index.contains("<h1>channels echo</h1>"), "{index}");

    // SIGTERM: the open socket gets 1012 (service restart) and the process exits cleanly.
    let status = Command::new("kill").args(["-TERM", &example.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(close_code(&mut echo).await, 1012);
    let exited = within(tokio::task::spawn_blocking(move || example.0.wait())).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");
}

#[test]
fn the_examples_command_lines_explain_themselves() {
    let help = Example::run_to_end("echo", &["--help"], &[]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--addr <HOST:PORT>") && text.contains("[default: 127.0.0.1:8000]"), "{text}");
    let wrong = Example::run_to_end("echo", &["--adr", "127.0.0.1:1"], &[]);
    assert_eq!(wrong.status.code(), Some(2));
    let text = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        text.contains("unexpected argument '--adr'") && text.contains("tip: a similar argument exists: '--addr'"),
        "{text}"
    );
}
