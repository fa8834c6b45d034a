//! An axum service with channels consumers on the same port (the `axum` feature). Run with
//! `cargo run --example axum_app [-- --addr 127.0.0.1:8000]`.
//!
//! Stable endpoints (tests and other clients rely on them):
//! - `GET /api/health/`: `{"status": "ok"}` (an axum handler); `{"status": "draining"}` with 503
//!   once a shutdown has started.
//! - `ws://HOST:PORT/ws/echo/`: a channels consumer; every message comes straight back.
//! - On SIGTERM or ctrl-c: the listener stops, WebSockets close with 1012 in batches.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use channels::axum::ChannelsService;
use channels::prelude::*;
use channels::server::ShutdownHandle;
use channels::{consumer, routing};
use serde_json::{Value, json};

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

/// `GET /api/health/`: ok, or 503 once the server is draining (for a load balancer).
async fn health(State(shutdown): State<ShutdownHandle>) -> (StatusCode, Json<Value>) {
    if shutdown.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })))
    } else {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    }
}

/// The axum service with channels consumers on the same port.
#[derive(clap::Parser)]
#[command(name = "axum_app")]
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
    // Routes are the requests' whole paths, nested or not.
    let channels = ChannelsService::new(routing! { websocket: [ "ws/echo/" => Echo ] });
    let router = axum::Router::new()
        .route("/api/health/", get(health))
        .with_state(channels.shutdown_handle())
        .nest_service("/ws", channels.clone());
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("axum_app on http://{} (ws://{}/ws/echo/)", listener.local_addr()?, listener.local_addr()?);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(channels.shutdown_signal())
        .await?;
    channels.drain().await;
    Ok(())
}
