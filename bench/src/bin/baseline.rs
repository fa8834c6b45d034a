//! The physical reference: the same endpoints as `examples/bench.rs` on nothing but tokio and
//! tokio-tungstenite (read buffer sized down like ours), so the harness can say how close the
//! framework stays to the bare library.
//!
//! - `/ws/echo/`: echo. `/ws/auth-echo/`: echo, refused (403) without a `Cookie` header (no
//!   session, no user: only the header's presence). `/ws/broadcast/`: every text message to every
//!   connection on this path (a tokio broadcast channel).
//!
//! `baseline [--addr 127.0.0.1:8001]`

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Echo,
    Broadcast,
}

// The callback's signature is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, hub: broadcast::Sender<String>) {
    let _ = tcp.set_nodelay(true);
    let mut endpoint = None;
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let refuse = |status: StatusCode| {
            let mut error = ErrorResponse::new(None);
            *error.status_mut() = status;
            Err(error)
        };
        match request.uri().path() {
            "/ws/echo/" => endpoint = Some(Endpoint::Echo),
            "/ws/auth-echo/" if request.headers().contains_key("cookie") => endpoint = Some(Endpoint::Echo),
            "/ws/auth-echo/" => return refuse(StatusCode::FORBIDDEN),
            "/ws/broadcast/" => endpoint = Some(Endpoint::Broadcast),
            _ => return refuse(StatusCode::NOT_FOUND),
        }
        Ok(response)
    };
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await else { return };
    match endpoint {
        Some(Endpoint::Echo) => {
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
        Some(Endpoint::Broadcast) => {
            let mut inbox = hub.subscribe();
            loop {
                tokio::select! {
                    incoming = ws.next() => match incoming {
                        Some(Ok(Message::Text(text))) => { let _ = hub.send(text.as_str().to_owned()); }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    relayed = inbox.recv() => match relayed {
                        Ok(text) => if ws.send(Message::Text(text.into())).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
            }
        }
        None => {}
    }
}

/// One-thread runtime, as the bench server (both are pinned to one core); `--multi-thread` for
/// tokio's default runtime, `--workers N` for it with N worker threads.
fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:8001".parse().map_err(std::io::Error::other)?;
    let mut multi_thread = false;
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or_else(|| std::io::Error::other("--addr needs HOST:PORT"))?;
                addr = value.parse().map_err(std::io::Error::other)?;
            }
            "--multi-thread" => multi_thread = true,
            "--workers" => {
                let value = args.next().ok_or_else(|| std::io::Error::other("--workers needs N"))?;
                workers = Some(value.parse::<usize>().map_err(std::io::Error::other)?);
            }
            _ => {
                return Err(std::io::Error::other("usage: baseline [--addr HOST:PORT] [--multi-thread] [--workers N]"));
            }
        }
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
    runtime.block_on(run(addr))
}

async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("baseline server on ws://{}", listener.local_addr()?);
    let (hub, _) = broadcast::channel(1024);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(serve(tcp, hub.clone()));
    }
}
