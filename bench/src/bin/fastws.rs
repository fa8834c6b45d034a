//! The second physical reference (issue 17): `/ws/echo/` on deno's fastwebsockets, upgraded
//! through hyper as its README shows, one-thread runtime like the other servers of the harness.
//! Echo only: it sets the bar for server CPU per echoed message.
//!
//! `fastws [--addr 127.0.0.1:8002]`

use std::net::SocketAddr;

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn echo(upgraded: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    // Whole messages, as the other servers hand them to their applications.
    let mut ws = FragmentCollector::new(upgraded.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn route(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    if request.uri().path() != "/ws/echo/" || !upgrade::is_upgrade_request(&request) {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::task::spawn_local(async move {
        let _ = echo(upgraded).await;
    });
    Ok(response)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:8002".parse()?;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            other => return Err(format!("unknown flag {other}; usage: fastws [--addr HOST:PORT]").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let connection = http1::Builder::new().serve_connection(TokioIo::new(tcp), service_fn(route));
                let _ = connection.with_upgrades().await;
            });
        }
    })
}
