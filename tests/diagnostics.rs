//! What a newcomer sees when something goes wrong: a server without a log subscriber says so
//! on stderr, and a communicator's timeout carries the last error the application logged.

mod support;

use std::process::Command;
use std::time::Duration;

use channels::prelude::*;
use channels::testing::{LiveServer, TestError, WebsocketCommunicator};
use channels::{auth, consumer, routing};
use serde::Deserialize;

#[consumer(websocket)]
struct Votes;

#[derive(Deserialize)]
struct Vote {
    choice: u32,
}

#[consumer]
impl Votes {
    #[handler("poll.vote")]
    async fn vote(&mut self, ws: &mut Websocket, vote: Vote) -> Result<(), ConsumerError> {
        ws.send_text(format!("vote for {}", vote.choice)).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_timeout_carries_the_last_error_the_application_logged() {
    let mut ws = WebsocketCommunicator::new(routing! { websocket: [ "ws/" => Votes ] }, "/ws/")
        .with_timeout(Duration::from_millis(300));
    assert!(ws.connect().await.unwrap().accepted);
    let bad = ChannelMessage::from_serialize(&serde_json::json!({"type": "poll.vote", "choice": "blue"})).unwrap();
    ws.send_channel_message(bad).await.unwrap();
    let err = ws.receive_text().await.unwrap_err();
    let TestError::Timeout { last_logged: Some(line), .. } = &err else { panic!("{err:?}") };
    assert!(line.starts_with("ERROR: ") && line.contains("does not decode") && line.contains("poll.vote"), "{line}");
    assert!(err.to_string().contains("the application last logged ERROR"), "{err}");

    // A quiet application times out with nothing to add.
    let good = ChannelMessage::from_serialize(&serde_json::json!({"type": "poll.vote", "choice": 2})).unwrap();
    let mut quiet = WebsocketCommunicator::new(routing! { websocket: [ "ws/" => Votes ] }, "/ws/")
        .with_timeout(Duration::from_millis(100));
    assert!(quiet.connect().await.unwrap().accepted);
    quiet.send_channel_message(good).await.unwrap();
    assert_eq!(quiet.receive_text().await.unwrap(), "vote for 2");
    assert!(matches!(quiet.receive_text().await, Err(TestError::Timeout { last_logged: None, .. })));
}

const CHILD: &str = "CHANNELS_DIAGNOSTICS_CHILD";
const NOTICE: &str = "no tracing subscriber is installed";

/// Run in a child process (the notice is once per process): a server started under a
/// subscriber says nothing, then two without one say it once.
#[test]
fn a_server_without_a_log_subscriber_says_so_once_on_stderr() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let subscriber = tracing_subscriber::fmt().with_writer(std::io::sink).finish();
        runtime.block_on(async {
            {
                let _guard = tracing::subscriber::set_default(subscriber);
                let heard = LiveServer::start(routing! { websocket: [ "ws/" => Votes ] }).await;
                tokio::task::yield_now().await;
                eprintln!("--- after the server with a subscriber");
                drop(heard);
            }
            let first = LiveServer::start(routing! { websocket: [ "ws/" => Votes ] }).await;
            let second = LiveServer::start(routing! { websocket: [ "ws/" => Votes ] }).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop((first, second));
        });
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_server_without_a_log_subscriber_says_so_once_on_stderr",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (before, after) = stderr.split_once("--- after the server with a subscriber").expect("the child ran");
    assert!(!before.contains(NOTICE), "a server with a subscriber stays quiet: {before}");
    assert_eq!(after.matches(NOTICE).count(), 1, "{after}");
    assert!(after.contains("tracing_subscriber::fmt::init()"), "{after}");
}

/// A user of the span test.
#[derive(Clone)]
struct Ada;

impl channels::middleware::AuthUser for Ada {
    fn id(&self) -> String {
        "42".to_owned()
    }

    fn session_auth_hash(&self) -> String {
        "ada".to_owned()
    }
}

struct OnlyAda;

impl channels::middleware::UserBackend for OnlyAda {
    type User = Ada;

    async fn get_user(&self, id: &str) -> Result<Option<Ada>, channels::application::BoxError> {
        Ok((id == "42").then_some(Ada))
    }
}

/// Logs a line for each message.
#[auth(stack)]
#[consumer(websocket)]
struct Chatty;

#[consumer]
impl Chatty {
    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        tracing::warn!(text = message.as_text().unwrap_or(""), "the consumer says");
        ws.send_text("logged").await?;
        Ok(())
    }
}

/// The line the `Chatty` consumer logs for one message from a logged-in client, under an
/// INFO subscriber (DEBUG for the consumer's events), with the connection span at `level`; and
/// the client's address.
async fn chatty_line(level: tracing::Level) -> (String, std::net::SocketAddr) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let lines = support::LogLines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("info,channels::consumer=debug")
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = routing! { websocket: [ "ws/chatty/" => Chatty ] }.auth(channels::middleware::AuthConfig::new(OnlyAda));
    let cookie = channels::testing::force_login(&app, Ada).await.unwrap();
    let mut config = channels::ServerConfig::default();
    config.connection_span = level;
    let server = LiveServer::start_with(app, config).await;
    let mut request = server.ws_url("/ws/chatty/").into_client_request().unwrap();
    let header = format!("{}={}", cookie.name, cookie.value);
    request.headers_mut().insert("cookie", header.parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    futures_util::SinkExt::send(&mut client, "hi there".into()).await.unwrap();
    assert!(futures_util::StreamExt::next(&mut client).await.unwrap().unwrap().is_text());
    futures_util::SinkExt::close(&mut client).await.unwrap();
    server.shutdown().await.unwrap();

    let text = lines.text();
    let line = text.lines().find(|line| line.contains("the consumer says")).unwrap_or_else(|| panic!("{text}"));
    (line.to_owned(), local)
}

#[tokio::test]
async fn a_connections_log_lines_carry_its_number_path_client_and_user() {
    let (line, local) = chatty_line(tracing::Level::INFO).await;
    for field in ["connection{conn=", "protocol=websocket", "path=/ws/chatty/", &format!("client={local}"), "user=42"] {
        assert!(line.contains(field), "{field} missing in: {line}");
    }
    assert!(line.contains("event{kind=\"receive\""), "the consumer event's span: {line}");
}

#[tokio::test]
async fn by_default_the_connection_span_is_at_debug() {
    let (line, _) = chatty_line(channels::ServerConfig::default().connection_span).await;
    assert!(!line.contains("connection{"), "an INFO subscriber keeps no connection span: {line}");
    assert!(line.contains("event{kind=\"receive\""), "the consumer event's span: {line}");
}
