//! Runs the echo example as a process and talks to it the way other clients will: over
//! /ws/echo/, /ws/json/, / and /health/; then stops it with SIGTERM.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use futures_util::SinkExt;
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example_binary() -> std::path::PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/echo
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("examples").join("echo")
}

async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn wait_until_listening(addr: SocketAddr) {
    within(async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn connect(addr: SocketAddr, path: &str) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://{addr}{path}").into_client_request().unwrap();
    within(tokio_tungstenite::client_async(request, tcp)).await.unwrap().0
}

#[tokio::test]
async fn echo_example_serves_its_stable_endpoints() {
    let binary = example_binary();
    if !binary.exists() {
        // `cargo test --workspace` builds examples; a filtered run may not have.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = Command::new(cargo).args(["build", "--example", "echo"]).status().expect("run cargo");
        assert!(built.success() && binary.exists(), "could not build {}", binary.display());
    }
    let addr = free_addr().await;
    let child = Command::new(&binary)
        .args(["--addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the echo example");
    let mut example = Example(child);
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

    let health = raw_http(addr, b"GET /health/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    let index = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(index.contains("<h1>channels echo</h1>"), "{index}");

    // SIGTERM: the open socket gets 1001 and the process exits cleanly.
    let status = Command::new("kill").args(["-TERM", &example.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(close_code(&mut echo).await, 1001);
    let exited = within(tokio::task::spawn_blocking(move || example.0.wait())).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");
}
