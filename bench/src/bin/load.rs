//! Load client for the benchmark harness. Loopback only; every loop is bounded in time and count.
//! Prints one JSON line per run, with the server's CPU time (from /proc) when `--server-pid` is
//! given, because on 2 cores the client can be the bottleneck: judge throughput *and* CPU.
//!
//! ```text
//! load --mode echo      --addr 127.0.0.1:8000 --path /ws/echo/ --connections 100 --seconds 10 [--in-flight 4]
//! load --mode handshake --addr ... --path /ws/auth-echo/ --cookie 'sessionid=...' --connections 8
//! load --mode idle      --addr ... --path /ws/auth-echo/ --cookie ... --connections 10000 --server-pid PID
//!      [--origin http://127.0.0.1:8000]   (for servers that check it)
//!      [--sources 127.0.0.2,127.0.0.3]   # bind these source addresses in turn (for many connections)
//!      [--rooms 100]   # connection i gets `{room}` in --path replaced by i % 100
//! load --mode broadcast --addr ... --path /ws/broadcast/ --connections 100 --seconds 10
//! load --mode broadcast-closed --addr ... --path /ws/broadcast/ --connections 100 --seconds 10
//!   (closed loop: publish one message, wait until every subscriber has it, repeat; messages
//!   are deliveries, latencies are whole rounds)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws = WebSocketStream<TcpStream>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Hard upper bounds, whatever the flags say.
const MAX_SECONDS: u64 = 600;
const MAX_CONNECTIONS: usize = 200_000;
/// Latency samples kept per connection (a ring of the most recent ones).
const SAMPLES_PER_CONNECTION: usize = 20_000;

#[derive(Clone)]
struct Args {
    mode: String,
    addr: SocketAddr,
    path: String,
    cookie: Option<String>,
    /// `--origin`: the Origin header (servers that check it, like the chat example, refuse
    /// handshakes without one).
    origin: Option<String>,
    connections: usize,
    seconds: u64,
    size: usize,
    /// Echo: messages each connection keeps in flight (`--in-flight`, default 1: send, wait for
    /// the echo, send again). More keep a fast server busy when the client would be the limit.
    in_flight: usize,
    server_pid: Option<u32>,
    /// Source addresses to bind (`--sources`); the kernel's choice otherwise.
    sources: Option<Vec<IpAddr>>,
    /// `--rooms`: connection `i` replaces `{room}` in the path with `i % rooms` (default 1).
    rooms: usize,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        mode: "echo".into(),
        addr: "127.0.0.1:8000".parse().map_err(|e| format!("{e}"))?,
        path: "/ws/echo/".into(),
        cookie: None,
        origin: None,
        connections: 100,
        seconds: 10,
        size: 32,
        in_flight: 1,
        server_pid: None,
        sources: None,
        rooms: 1,
        label: String::new(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => parsed.mode = value,
            "--addr" => parsed.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--path" => parsed.path = value,
            "--cookie" => parsed.cookie = Some(value),
            "--origin" => parsed.origin = Some(value),
            "--connections" => parsed.connections = value.parse().map_err(|e| format!("--connections: {e}"))?,
            "--seconds" => parsed.seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--size" => parsed.size = value.parse().map_err(|e| format!("--size: {e}"))?,
            "--rooms" => parsed.rooms = value.parse().map_err(|e| format!("--rooms: {e}"))?,
            "--in-flight" => parsed.in_flight = value.parse().map_err(|e| format!("--in-flight: {e}"))?,
            "--server-pid" => parsed.server_pid = Some(value.parse().map_err(|e| format!("--server-pid: {e}"))?),
            "--sources" => {
                parsed.sources = Some(
                    value
                        .split(',')
                        .map(|s| s.parse().map_err(|e| format!("--sources: {e}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--label" => parsed.label = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !parsed.addr.ip().is_loopback() || parsed.sources.iter().flatten().any(|ip| !ip.is_loopback()) {
        return Err("the load client only talks to loopback addresses".into());
    }
    parsed.seconds = parsed.seconds.clamp(1, MAX_SECONDS);
    parsed.connections = parsed.connections.clamp(1, MAX_CONNECTIONS);
    parsed.in_flight = parsed.in_flight.clamp(1, 1024);
    Ok(parsed)
}

/// utime + stime of `pid`, in seconds (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// A socket bound to source address `index % sources` when `--sources` was given. The port is
/// chosen here (bind-before-connect with port 0 makes the kernel search for a port unused by
/// any socket, which gets slow with tens of thousands open); a taken one is skipped.
fn source_socket(args: &Args, index: usize) -> Result<TcpSocket, Error> {
    let Some(sources) = &args.sources else {
        return Ok(if args.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? });
    };
    let source = sources[index % sources.len()];
    let slot = index / sources.len();
    let mut last = None;
    for attempt in 0..16 {
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let port = FIRST_PORT + ((slot + attempt * 7_919) % PORTS) as u16;
        match socket.bind(SocketAddr::new(source, port)) {
            Ok(()) => return Ok(socket),
            Err(err) => last = Some(err),
        }
    }
    Err(format!("no free source port on {source}: {last:?}").into())
}

/// Source ports the client picks itself: 10,000..=64,999.
const FIRST_PORT: u16 = 10_000;
const PORTS: usize = 55_000;
/// Handshakes in flight at once while opening idle connections.
const OPEN_BATCH: usize = 64;

async fn connect(args: &Args, index: usize) -> Result<Ws, Error> {
    let tcp = source_socket(args, index)?.connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let path = args.path.replace("{room}", &(index % args.rooms.max(1)).to_string());
    let mut request = format!("ws://{}{path}", args.addr).into_client_request()?;
    if let Some(cookie) = &args.cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie)?);
    }
    if let Some(origin) = &args.origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin)?);
    }
    // The library's default 128 KiB read buffer per connection would make the client, not the
    // server, the limit on how many connections one machine holds.
    let config = WebSocketConfig::default().read_buffer_size(4 << 10);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)),
    )
    .await??;
    Ok(ws)
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |t| t.as_secs_f64())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Total count and all latency samples of the per-connection tasks.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(u64, Vec<u32>)>>) -> Result<(u64, Vec<u32>), Error> {
    let (mut total, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (count, samples) = task.await?;
        total += count;
        latencies.extend(samples);
    }
    Ok((total, latencies))
}

struct Report {
    messages: u64,
    elapsed: f64,
    latencies: Vec<u32>,
    extra: serde_json::Value,
}

async fn echo(args: &Args) -> Result<Report, Error> {
    let mut sockets = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        sockets.push(connect(args, i).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let payload = "x".repeat(args.size);
    let start = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let (stop, payload, in_flight) = (stop.clone(), payload.clone(), args.in_flight);
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(1024);
                let mut count = 0u64;
                // Send times of the messages in flight, oldest first (echoes come back in order).
                let mut pending = std::collections::VecDeque::with_capacity(in_flight);
                while !stop.load(Ordering::Relaxed) {
                    let mut failed = false;
                    while pending.len() < in_flight {
                        // `feed` queues, one `flush` writes the lot.
                        if ws.feed(Message::Text(payload.clone().into())).await.is_err() {
                            failed = true;
                            break;
                        }
                        pending.push_back(Instant::now());
                    }
                    if failed || ws.flush().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                    let Some(sent) = pending.pop_front() else { break };
                    let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    if samples.len() < SAMPLES_PER_CONNECTION {
                        samples.push(micros);
                    } else {
                        samples[(count as usize) % SAMPLES_PER_CONNECTION] = micros;
                    }
                    count += 1;
                }
                let _ = ws.close(None).await;
                (count, samples)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (messages, latencies) = gather(tasks).await?;
    Ok(Report { messages, elapsed, latencies, extra: serde_json::json!({}) })
}

async fn handshake(args: &Args) -> Result<Report, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|worker| {
            let (args, stop, failures) = (args.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    match connect(&args, worker).await {
                        Ok(mut ws) => {
                            let _ = ws.close(None).await;
                            // Wait for the server's close so the cycle is complete.
                            let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
                            count += 1;
                            if samples.len() < SAMPLES_PER_CONNECTION {
                                samples.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            }
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (count, samples)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (messages, latencies) = gather(tasks).await?;
    Ok(Report {
        messages,
        elapsed,
        latencies,
        extra: serde_json::json!({ "failures": failures.load(Ordering::Relaxed) }),
    })
}

/// Holds one idle connection, reading so that the server's keepalive pings are answered, until
/// `stop`; then checks that it is still open with a ping of its own.
async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            message = ws.next() => if !matches!(message, Some(Ok(_))) { return false },
            _ = stop.changed() => break,
        }
    }
    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = loop {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => break true,
            Ok(Some(Ok(_))) => {}
            _ => break false,
        }
    };
    let _ = ws.close(None).await;
    alive
}

async fn idle(args: &Args) -> Result<Report, Error> {
    let before = rss_kb(args.server_pid);
    let start = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut held = Vec::with_capacity(args.connections);
    let mut failures = 0u64;
    // Open in batches of concurrent handshakes.
    let mut next = 0;
    while next < args.connections && start.elapsed() < Duration::from_secs(MAX_SECONDS) {
        let batch: Vec<_> = (next..(next + OPEN_BATCH).min(args.connections))
            .map(|i| {
                let args = args.clone();
                tokio::spawn(async move { connect(&args, i).await })
            })
            .collect();
        next += batch.len();
        for task in batch {
            match task.await? {
                Ok(ws) => held.push(tokio::spawn(hold(ws, stopped.clone()))),
                Err(_) => failures += 1,
            }
        }
    }
    let opened = held.len();
    let open_seconds = start.elapsed().as_secs_f64();
    let all_open_at = unix_seconds();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let after = rss_kb(args.server_pid);
    let checked_at = unix_seconds();
    let _ = stop.send(true);
    let mut alive = 0u64;
    for task in held {
        alive += u64::from(task.await?);
    }
    let per_connection = match (before, after) {
        (Some(before), Some(after)) if opened > 0 => Some((after.saturating_sub(before) * 1024) as f64 / opened as f64),
        _ => None,
    };
    let extra = serde_json::json!({
        "opened": opened, "failures": failures, "alive_after_hold": alive, "open_seconds": open_seconds,
        "all_open_at": all_open_at, "checked_at": checked_at,
        "rss_kb_before": before, "rss_kb_after": after, "bytes_per_connection": per_connection,
    });
    Ok(Report { messages: 0, elapsed: args.seconds as f64, latencies: Vec::new(), extra })
}

async fn broadcast(args: &Args) -> Result<Report, Error> {
    let mut subscribers = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        subscribers.push(connect(args, i).await?);
    }
    let sender = connect(args, args.connections).await?;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|mut ws| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut count, mut samples) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                        Ok(Some(Ok(Message::Text(text)))) => {
                            if let Ok(sent) = text.as_str().parse::<u64>() {
                                let now = epoch.elapsed().as_micros() as u64;
                                if samples.len() < SAMPLES_PER_CONNECTION {
                                    samples.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                                }
                            }
                            count += 1;
                        }
                        Ok(Some(Ok(_))) | Err(_) => {}
                        _ => break,
                    }
                }
                (count, samples)
            })
        })
        .collect();
    // The sender drains its own copies in the background.
    let (mut sink, mut own) = sender.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = own.next().await {} });
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(args.seconds) {
        // Closed loop per message, paced by 1 ms to leave room for delivery.
        sink.send(Message::Text(epoch.elapsed().as_micros().to_string().into())).await?;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (messages, latencies) = gather(tasks).await?;
    drain.abort();
    let _ = sink.close().await;
    Ok(Report { messages, elapsed, latencies, extra: serde_json::json!({ "sent": sent }) })
}

/// Closed-loop broadcast: one message at a time, the next once every subscriber has it. What it
/// measures is the server's fan-out path end to end (deliveries per second and round time),
/// without the open loop's queueing.
async fn broadcast_closed(args: &Args) -> Result<Report, Error> {
    let mut subscribers = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        subscribers.push(connect(args, i).await?);
    }
    let sender = connect(args, args.connections).await?;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let total = args.connections as u64;
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|mut ws| {
            let (received, progress, stop) = (received.clone(), progress.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                        Ok(Some(Ok(Message::Text(_)))) => {
                            if received.fetch_add(1, Ordering::Relaxed) % total == total - 1 {
                                progress.notify_one();
                            }
                        }
                        Ok(Some(Ok(_))) | Err(_) => {}
                        _ => break,
                    }
                }
                (0u64, Vec::new())
            })
        })
        .collect();
    let (mut sink, mut own) = sender.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = own.next().await {} });
    let (start, mut rounds, mut latencies) = (Instant::now(), 0u64, Vec::new());
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let target = received.load(Ordering::Relaxed) + total;
        let sent_at = Instant::now();
        sink.send(Message::Text(rounds.to_string().into())).await?;
        while received.load(Ordering::Relaxed) < target {
            if tokio::time::timeout(Duration::from_secs(5), progress.notified()).await.is_err() {
                return Err(format!(
                    "round {rounds}: only {} of {total} delivered in 5 s",
                    target - received.load(Ordering::Relaxed)
                )
                .into());
            }
        }
        if latencies.len() < 100_000 {
            latencies.push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        rounds += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    gather(tasks).await?;
    drain.abort();
    let _ = sink.close().await;
    Ok(Report { messages: rounds * total, elapsed, latencies, extra: serde_json::json!({ "rounds": rounds }) })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let cpu_before = cpu_seconds(args.server_pid);
    let mut report = match args.mode.as_str() {
        "echo" => echo(&args).await?,
        "handshake" => handshake(&args).await?,
        "idle" => idle(&args).await?,
        "broadcast" => broadcast(&args).await?,
        "broadcast-closed" => broadcast_closed(&args).await?,
        other => return Err(format!("unknown mode {other}").into()),
    };
    let cpu = cpu_seconds(args.server_pid).zip(cpu_before).map(|(after, before)| after - before);
    report.latencies.sort_unstable();
    let rate = report.messages as f64 / report.elapsed;
    let line = serde_json::json!({
        "mode": args.mode, "label": args.label, "connections": args.connections, "seconds": report.elapsed,
        "in_flight": args.in_flight,
        "count": report.messages, "per_second": rate,
        "p50_us": percentile(&report.latencies, 0.50), "p99_us": percentile(&report.latencies, 0.99),
        "server_cpu_s": cpu,
        "server_cpu_us_per_op": cpu.filter(|_| report.messages > 0).map(|cpu| cpu * 1e6 / report.messages as f64),
        "extra": report.extra,
    });
    println!("{line}");
    Ok(())
}
