//! The benchmark server: this framework doing Channels' work, for `bench/run.sh`.
//! Run with `cargo run --release --example bench -- [--addr 127.0.0.1:8000] [--print-cookie] [--multi-thread] [--workers N]`.
//!
//! - `/ws/echo/`: every message comes back.
//! - `/ws/auth-echo/`: the same behind the full auth stack (cookie ► session ► user lookup);
//!   anonymous handshakes are refused (403). `--print-cookie` logs the demo user in at startup
//!   and prints `sessionid=...` on the first line, for the load client's `--cookie`.
//! - `/ws/broadcast/`: every text message goes to all members of one group (the in-memory layer).

use bytes::Bytes;
use channels::application::BoxError;
use channels::middleware::{AuthConfig, AuthMiddlewareStack, AuthUser, SecretKeys, UserBackend, login};
use channels::prelude::*;
use channels::testing::HttpCommunicator;
use channels::{auth, consumer, routing};
use http::{Method, StatusCode};
use serde::Deserialize;

struct BenchUser;

impl AuthUser for BenchUser {
    fn id(&self) -> String {
        "1".to_owned()
    }

    fn session_auth_hash(&self) -> String {
        "bench".to_owned()
    }
}

/// One user, id 1, looked up without I/O (the harness measures the framework, not a database).
struct BenchUsers;

impl UserBackend for BenchUsers {
    type User = BenchUser;

    async fn get_user(&self, id: &str) -> Result<Option<BenchUser>, BoxError> {
        Ok((id == "1").then_some(BenchUser))
    }
}

#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

#[auth(stack, required)]
#[consumer(websocket)]
struct AuthEcho;

#[consumer]
impl AuthEcho {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Relay {
    text: String,
}

#[consumer(websocket)]
struct Broadcast;

#[consumer]
impl Broadcast {
    fn groups(&self) -> [&'static str; 1] {
        ["bench"]
    }

    async fn receive(&mut self, _ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        let Message::Text(text) = message else { return Ok(()) };
        let relay = serde_json::json!({ "type": "bench.relay", "text": text.as_str() });
        self.scope.layer()?.group_send("bench", relay.into()).await?;
        Ok(())
    }

    #[handler("bench.relay")]
    async fn relay(&mut self, ws: &mut Websocket, event: Relay) -> Result<(), ConsumerError> {
        ws.send_text(event.text).await?;
        Ok(())
    }
}

/// `POST /login/`: logs the demo user in (how `--print-cookie` gets a real session cookie).
#[consumer(http)]
struct Login;

#[consumer]
impl Login {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        login(&mut self.scope, BenchUser).await?;
        response.text(StatusCode::OK, "ok").await?;
        Ok(())
    }
}

fn app() -> ProtocolTypeRouter {
    let keys = SecretKeys::new([b"bench key: not a secret, only for the benchmark run"])
        .unwrap_or_else(|_| SecretKeys::random());
    routing! {
        http: AuthMiddlewareStack([ "login/" => Login ]),
        websocket: [
            "ws/echo/" => Echo,
            "ws/auth-echo/" => AuthEcho,
            "ws/broadcast/" => Broadcast,
        ],
    }
    .auth(AuthConfig::new(BenchUsers).keys(keys))
}

/// The benchmark server (bench/run.sh): echo, JSON echo and broadcast behind the auth stack.
#[derive(clap::Parser)]
#[command(name = "bench")]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    addr: String,
    /// Print a valid session cookie for the load client and exit.
    #[arg(long)]
    print_cookie: bool,
    /// Run on tokio's multi-thread runtime instead of a one-thread one.
    #[arg(long)]
    multi_thread: bool,
    /// Worker threads of the multi-thread runtime (implies `--multi-thread`; tokio's default is
    /// one per core the process may run on).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Install a Prometheus recorder (what metrics cost on the hot path).
    #[arg(long)]
    metrics: bool,
    /// Log at INFO to stderr (what the connection spans cost on the hot path).
    #[arg(long)]
    log: bool,
}

/// The harness pins each server to one core, where a one-thread runtime is the fitting choice
/// (the baseline server runs the same way); `--multi-thread` runs tokio's default runtime.
fn main() -> Result<(), BoxError> {
    let Args { addr, print_cookie, multi_thread, workers, metrics, log } = clap::Parser::parse();
    if log {
        tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    }
    if metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    }
    let runtime = if multi_thread || workers.is_some() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(workers) = workers {
            builder.worker_threads(workers);
        }
        builder.enable_all().build()?
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    };
    runtime.block_on(serve(addr, print_cookie))
}

async fn serve(addr: String, print_cookie: bool) -> Result<(), BoxError> {
    let app = std::sync::Arc::new(app());
    if print_cookie {
        let response = HttpCommunicator::new(app.clone(), Method::POST, "/login/").get_response().await?;
        let cookie = response.headers.get("set-cookie").and_then(|v| v.to_str().ok()).ok_or("no session cookie")?;
        println!("{}", cookie.split(';').next().unwrap_or_default());
    }
    let server = channels::Server::new(app).shutdown_on_signals().bind(&addr).await?;
    eprintln!("bench server on ws://{}", server.local_addr());
    server.run().await?;
    Ok(())
}
