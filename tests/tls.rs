//! TLS terminated by the server (the `tls` feature): a real TLS WebSocket client against a
//! certificate this test makes, a certificate reloaded while serving, and what is refused.

mod support;

use std::sync::Arc;

use channels::prelude::*;
use channels::server::{TlsConfig, TlsError};
use channels::{Server, consumer, routing};
use support::*;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Says the scope's scheme on connect, then echoes.
#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        ws.send_text(self.scope.scheme.to_string()).await
    }

    async fn receive(&mut self, ws: &mut Websocket, message: Message) -> Result<(), ConsumerError> {
        ws.send(message).await?;
        Ok(())
    }
}

/// A self-signed certificate for `localhost`, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path) -> CertificateDer<'static> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    made.cert.der().clone()
}

/// A client trusting `trusted` only.
fn connector(trusted: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// `wss://localhost:<port>/ws/echo/` through `connector`; the TLS or WebSocket error otherwise.
async fn open(addr: std::net::SocketAddr, connector: &TlsConnector) -> Result<Client2, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|err| err.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(connector.connect(name, tcp)).await.map_err(|err| err.to_string())?;
    let url = format!("wss://localhost:{}/ws/echo/", addr.port());
    let (client, _) = within(tokio_tungstenite::client_async(url, tls)).await.map_err(|err| err.to_string())?;
    Ok(client)
}

type Client2 = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn next_text(client: &mut Client2) -> String {
    match within(futures_util::StreamExt::next(client)).await {
        Some(Ok(WsMessage::Text(text))) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn websockets_over_tls_with_a_certificate_reloaded_while_serving() {
    let dir = std::env::temp_dir().join(format!("channels-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = certificate(&dir);
    let tls = TlsConfig::from_pem_files(dir.join("cert.pem"), dir.join("key.pem")).unwrap();
    let listening = Server::new(routing! { websocket: [ "ws/echo/" => Echo ] })
        .configure(|config| config.handshake_timeout = std::time::Duration::from_secs(2))
        .tls(tls.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listening.local_addr();
    let handle = listening.shutdown_handle();
    let serving = tokio::spawn(listening.run());

    let mut client = open(addr, &connector(&first)).await.unwrap();
    assert_eq!(next_text(&mut client).await, "wss", "the scope knows it came over TLS");
    futures_util::SinkExt::send(&mut client, WsMessage::Text("over tls".into())).await.unwrap();
    assert_eq!(next_text(&mut client).await, "over tls");

    // Plain text to the TLS port: no handshake, nothing served, the server carries on.
    let plain = raw_http(addr, b"GET /ws/echo/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(!plain.contains("HTTP/1.1 101"), "{plain}");

    // A renewed certificate: new connections get it, the open one goes on.
    let second = certificate(&dir);
    tls.reload().unwrap();
    let mut renewed = open(addr, &connector(&second)).await.unwrap();
    assert_eq!(next_text(&mut renewed).await, "wss");
    let stale = open(addr, &connector(&first)).await;
    assert!(stale.is_err_and(|err| err.to_lowercase().contains("certificate")), "the old certificate is gone");
    futures_util::SinkExt::send(&mut client, WsMessage::Text("still here".into())).await.unwrap();
    assert_eq!(next_text(&mut client).await, "still here");

    // A client written by others: Python's `websockets` over its own TLS stack.
    if let Some(python) = support::django::python() {
        let script = r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect
async def main():
    context = ssl.create_default_context(cafile=sys.argv[2])
    async with connect(sys.argv[1], ssl=context) as ws:
        scheme = await ws.recv()
        await ws.send("from python")
        print(scheme, await ws.recv())
asyncio.run(main())
"#;
        let url = format!("wss://localhost:{}/ws/echo/", addr.port());
        let cert = dir.join("cert.pem");
        let args = ["-c".to_owned(), script.to_owned(), url, cert.to_string_lossy().into_owned()];
        let run = move || std::process::Command::new(python).args(args).output();
        let out = tokio::task::spawn_blocking(run).await.unwrap().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "wss from python");
    }

    // A client that opens TCP and never starts TLS holds nothing past the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut silent, &mut buf));
    assert!(matches!(read.await, Ok(Ok(0) | Err(_))), "closed by the server after handshake_timeout (2 s)");

    // A broken renewal keeps the working certificate.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let Err(err) = tls.reload() else { panic!("garbage accepted") };
    assert!(matches!(err, TlsError::Pem { ref path, .. } if path.ends_with("cert.pem")), "{err}");
    let mut after = open(addr, &connector(&second)).await.unwrap();
    assert_eq!(next_text(&mut after).await, "wss");

    handle.shutdown();
    within(serving).await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_or_mismatched_pem_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("channels-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = TlsConfig::from_pem_files(dir.join("nope.pem"), dir.join("nope-key.pem")).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    certificate(&dir);
    let cert = std::fs::read(dir.join("cert.pem")).unwrap();
    certificate(&dir); // another key
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    let err = TlsConfig::from_pem_files(dir.join("cert.pem"), dir.join("key.pem")).unwrap_err();
    assert!(matches!(err, TlsError::Rustls(_)), "a key that is not the certificate's: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
