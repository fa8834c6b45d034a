//! Echo server. Run with `cargo run --release --example echo [-- --addr 127.0.0.1:8000]`.
//!
//! Stable endpoints (load tests and other clients rely on them):
//! - `ws://HOST:PORT/ws/echo/`: every text or binary message comes straight back unchanged.
//! - `ws://HOST:PORT/ws/json/`: a JSON consumer answering `{"echo": <what it received>}`.
//! - `GET /`: a short HTML page; `GET /health/`: `200 ok`.

use bytes::Bytes;
use channels::prelude::*;
use channels::{consumer, routing};
use http::StatusCode;

/// Sends every message straight back.
#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

/// Answers each JSON value with `{"echo": value}`.
#[consumer(json)]
struct JsonEcho;

#[consumer]
impl JsonEcho {
    async fn receive_json(&mut self, ws: &mut Websocket, content: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_json(&serde_json::json!({ "echo": content })).await
    }
}

/// `GET /health/`.
#[consumer(http)]
struct Health;

#[consumer]
impl Health {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.text(StatusCode::OK, "ok").await?;
        Ok(())
    }
}

/// `GET /`.
#[consumer(http)]
struct Index;

#[consumer]
impl Index {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.html(StatusCode::OK, INDEX).await?;
        Ok(())
    }
}

const INDEX: &str = r#"<!doctype html>
<meta charset="utf-8"><title>channels echo</title>
<h1>channels echo</h1>
<input id="text" value="hello"><button id="send">send</button>
<pre id="log"></pre>
<script>
const log = (line) => document.getElementById("log").textContent += line + "\n";
const ws = new WebSocket(`ws://${location.host}/ws/echo/`);
ws.onopen = () => log("open");
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("send").onclick = () => ws.send(document.getElementById("text").value);
</script>
"#;

/// The echo application; `tests/echo_example.rs` serves the same routes.
fn app() -> ProtocolTypeRouter {
    routing! {
        websocket: [
            "ws/echo/" => Echo,
            "ws/json/" => JsonEcho,
        ],
        http: [
            "health/" => Health,
            "" => Index,
        ],
    }
}

/// The echo example: WebSocket echo (text, JSON) and two HTTP pages.
#[derive(clap::Parser)]
#[command(name = "echo")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    addr: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = <Args as clap::Parser>::parse();
    let server = channels::Server::new(app()).shutdown_on_signals().bind(&args.addr).await?;
    println!("echo server on http://{} (ws://{}/ws/echo/)", server.local_addr(), server.local_addr());
    server.run().await
}
