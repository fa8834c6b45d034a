//! Micro-benchmarks of the per-connection and per-message hot paths:
//! `cargo bench -p channels-bench --bench hot_paths`.

use std::hint::black_box;

use channels::event::ChannelMessage;
use channels::middleware::SecretKeys;
use channels::middleware::cookie::parse_cookie_header;
use channels::prelude::*;
use channels::{consumer, routing};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

#[consumer(websocket)]
struct Room {
    #[url]
    name: String,
    seen: u64,
}

#[derive(Deserialize, Serialize)]
struct Say {
    user: String,
    message: String,
}

#[consumer]
impl Room {
    #[handler("chat.message")]
    async fn say(&mut self, _ws: &mut Websocket, event: Say) -> Result<(), ConsumerError> {
        self.seen += event.message.len() as u64;
        Ok(())
    }

    #[handler("chat.join")]
    async fn join(&mut self, _ws: &mut Websocket, _event: serde_json::Value) -> Result<(), ConsumerError> {
        Ok(())
    }
}

fn hot_paths(c: &mut Criterion) {
    // A URLRouter like routing! builds (the ProtocolTypeRouter above it only picks by protocol).
    let router = URLRouter::new([
        path("ws/echo/<name>/", Room::as_app()),
        re_path(r"^ws/chat/(?P<name>\w+)/$", Room::as_app()),
        path(
            "api/",
            URLRouter::new([path("rooms/<slug:name>/", Room::as_app()), path("users/<int:name>/", Room::as_app())]),
        ),
    ]);
    let _checked_by_the_macro = routing! { websocket: [ "ws/chat/<name>/" => Room ] };
    c.bench_function("route_match/nested_path", |b| {
        b.iter(|| channels::routing::Router::routes(&router, black_box("/api/users/42/")))
    });

    let header = "csrftoken=abcdefghijklmnop; sessionid=3MmEPzutBozCQ4bYNcGk5AdfgdpNmJJpPyn3-XzkMcU.1796678891.\
                  QrfvI4XIc9P03eyooDuMGQtpKhe1n9boNqoaHQA45dQ; theme=dark";
    c.bench_function("cookie/parse_header", |b| b.iter(|| parse_cookie_header(black_box(header.as_bytes())).count()));

    let keys = SecretKeys::new([b"a benchmark key that is long enough to sign"]).unwrap();
    let payload = "3MmEPzutBozCQ4bYNcGk5AdfgdpNmJJpPyn3-XzkMcU.1796678891";
    let signature = keys.sign(payload);
    c.bench_function("session/verify_signed_cookie", |b| {
        b.iter(|| keys.verify(black_box(payload), black_box(&signature)))
    });

    c.bench_function("scope/new", |b| b.iter(|| Scope::new(Protocol::Websocket, black_box("/ws/chat/lobby/?x=1"))));

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let message: ChannelMessage =
        serde_json::json!({ "type": "chat.message", "user": "alice", "message": "hello there" }).into();
    c.bench_function("dispatch/handler_by_type", |b| {
        let (outbox, _events) = Outbox::channel(8);
        let mut ws = Websocket::new(outbox);
        let mut scope = Scope::new(Protocol::Websocket, "/ws/chat/lobby/");
        scope.url_route.kwargs.push(("name".into(), "lobby".into()));
        let mut room = <Room as FromScope>::from_scope(scope).unwrap();
        b.iter(|| runtime.block_on(WebsocketConsumer::handle_message(&mut room, &mut ws, message.clone())))
    });

    let say = Say { user: "alice".into(), message: "hello there, how is everyone today?".into() };
    let text = serde_json::to_string(&say).unwrap();
    c.bench_function("json/encode", |b| b.iter(|| serde_json::to_string(black_box(&say)).unwrap()));
    c.bench_function("json/decode", |b| b.iter(|| serde_json::from_str::<Say>(black_box(&text)).unwrap()));
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
