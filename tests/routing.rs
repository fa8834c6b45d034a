//! Router behaviour, driven through the in-process communicators.

use channels::prelude::*;
use channels::routing::Route;
use channels::testing::{HttpCommunicator, TestError, WebsocketCommunicator};
use channels::{AppError, application_fn};
use serde_json::{Value, json};

/// Accepts and reports what routing put in its scope.
struct Spy {
    scope: Scope,
}

impl WebsocketConsumer for Spy {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        let kwargs: serde_json::Map<String, Value> =
            self.scope.url_route.kwargs.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        ws.send_json(&json!({
            "path": self.scope.path,
            "root_path": self.scope.root_path,
            "args": self.scope.url_route.args,
            "kwargs": kwargs,
        }))
        .await
    }
}

fn spy() -> ConsumerApp<Spy> {
    ConsumerApp::websocket(|scope| Ok(Spy { scope }))
}

async fn route(app: impl Application, path: &str) -> Result<Value, TestError> {
    let mut ws = WebsocketCommunicator::new(app, path);
    let handshake = ws.connect().await?;
    assert!(handshake.accepted);
    ws.receive_json_from().await
}

#[tokio::test]
async fn path_converters_capture_kwargs() {
    let app = || {
        URLRouter::new(vec![
            path("items/<int:id>/", spy()),
            path("slug/<slug:s>/", spy()),
            path("uuid/<uuid:u>/", spy()),
            path("files/<path:p>", spy()),
            path("rooms/<room>/", spy()),
        ])
    };
    assert_eq!(route(app(), "/items/42/").await.unwrap()["kwargs"], json!({"id": "42"}));
    assert_eq!(route(app(), "/slug/a-b_c/").await.unwrap()["kwargs"], json!({"s": "a-b_c"}));
    let uuid = "123e4567-e89b-12d3-a456-426614174000";
    assert_eq!(route(app(), &format!("/uuid/{uuid}/")).await.unwrap()["kwargs"], json!({"u": uuid}));
    assert_eq!(route(app(), "/files/a/b/c.txt").await.unwrap()["kwargs"], json!({"p": "a/b/c.txt"}));
    assert_eq!(route(app(), "/rooms/lobby/").await.unwrap()["kwargs"], json!({"room": "lobby"}));
    // A converter that does not match is no match at all.
    assert!(matches!(route(app(), "/items/abc/").await, Err(TestError::App(AppError::NoRoute { .. }))));
    assert!(matches!(route(app(), "/uuid/not-a-uuid/").await, Err(TestError::App(AppError::NoRoute { .. }))));
}

#[tokio::test]
async fn re_path_named_groups_are_kwargs_and_unnamed_are_args() {
    let app = || URLRouter::new(vec![re_path(r"^chat/(?P<room>\w+)/$", spy()), re_path(r"^year/(\d+)/(\d+)/$", spy())]);
    let named = route(app(), "/chat/lobby/").await.unwrap();
    assert_eq!(named["kwargs"], json!({"room": "lobby"}));
    assert_eq!(named["args"], json!([]));
    let unnamed = route(app(), "/year/2024/11/").await.unwrap();
    assert_eq!(unnamed["args"], json!(["2024", "11"]));
    assert_eq!(unnamed["kwargs"], json!({}));
}

#[tokio::test]
async fn leading_slashes_are_stripped_before_matching() {
    for path in ["/x/", "//x/", "x/"] {
        let app = URLRouter::new(vec![path_route("x/")]);
        assert!(route(app, path).await.is_ok(), "{path} should match");
    }
}

fn path_route(pattern: &str) -> Route {
    path(pattern, spy())
}

#[tokio::test]
async fn nested_router_moves_the_matched_prefix_to_root_path() {
    let inner = URLRouter::new(vec![path("items/<int:id>/", spy())]);
    let app = URLRouter::new(vec![path("api/<str:version>/", inner)]);
    let seen = route(app, "/api/v2/items/7/").await.unwrap();
    assert_eq!(seen["root_path"], "/api/v2/");
    assert_eq!(seen["path"], "/api/v2/items/7/");
    assert_eq!(seen["kwargs"], json!({"version": "v2", "id": "7"}));
}

#[tokio::test]
async fn nested_router_without_a_match_falls_through_to_the_next_route() {
    let app = || URLRouter::new(vec![path("api/", URLRouter::new(vec![path("a/", spy())])), path("api/b/", spy())]);
    assert_eq!(route(app(), "/api/b/").await.unwrap()["root_path"], "");
    assert_eq!(route(app(), "/api/a/").await.unwrap()["root_path"], "/api/");
    assert!(matches!(route(app(), "/api/c/").await, Err(TestError::App(AppError::NoRoute { .. }))));
}

/// A pass-through middleware: nested routing must still work through it (Channels #1428). Being
/// a `Router` (forwarding to its inner one) is what lets `nest` take it: without the impl,
/// `nest("api/", Passthrough(..))` does not compile.
struct Passthrough<A>(A);

impl<A: Application> Application for Passthrough<A> {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> channels::BoxFuture<'_, Result<(), AppError>> {
        self.0.call(scope, inbox, outbox)
    }
}

impl<A: Router> Router for Passthrough<A> {
    fn routes(&self, path: &str) -> bool {
        self.0.routes(path)
    }
}

#[tokio::test]
async fn nested_path_routing_works_through_middleware() {
    let app = URLRouter::new(vec![nest("api/", Passthrough(URLRouter::new(vec![path("items/<int:id>/", spy())])))]);
    let seen = route(app, "/api/items/3/").await.unwrap();
    assert_eq!(seen["kwargs"], json!({"id": "3"}));
    assert_eq!(seen["root_path"], "/api/");
}

#[tokio::test]
async fn default_kwargs_are_merged_and_captures_win() {
    let app = || URLRouter::new(vec![path("a/<int:id>/", spy()).kwarg("id", "0").kwarg("mode", "full")]);
    assert_eq!(route(app(), "/a/5/").await.unwrap()["kwargs"], json!({"id": "5", "mode": "full"}));
}

#[tokio::test]
async fn no_match_is_a_typed_error_naming_the_path() {
    let app = URLRouter::new(vec![path("a/", spy())]);
    match route(app, "/nope/x/").await {
        Err(TestError::App(AppError::NoRoute { path })) => assert_eq!(path, "nope/x/"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
}

#[tokio::test]
async fn root_path_mount_point_is_not_part_of_the_route() {
    let mut ws = WebsocketCommunicator::new(URLRouter::new(vec![path("ws/", spy())]), "/app/ws/");
    ws.scope_mut().root_path = "/app".to_owned();
    assert!(ws.connect().await.unwrap().accepted);
    let seen: Value = ws.receive_json_from().await.unwrap();
    assert_eq!(seen["path"], "/app/ws/");

    let mut outside = WebsocketCommunicator::new(URLRouter::new(vec![path("ws/", spy())]), "/other/ws/");
    outside.scope_mut().root_path = "/app".to_owned();
    assert!(matches!(outside.connect().await, Err(TestError::App(AppError::NoRoute { .. }))));
}

#[test]
fn invalid_patterns_are_errors_not_panics_with_try_constructors() {
    let app = || application_fn(|_, _, _| async { Ok(()) });
    assert!(Route::try_path("a/<float:x>/", app()).is_err());
    assert!(Route::try_re_path("a/(unclosed", app()).is_err());
    assert!(Route::try_path("a/<int:x>/", app()).is_ok());
}

struct Hello;

impl HttpConsumer for Hello {
    async fn handle(&mut self, _body: bytes::Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.text(http::StatusCode::OK, "hello http").await?;
        Ok(())
    }
}

#[tokio::test]
async fn protocol_type_router_dispatches_by_protocol() {
    let app = std::sync::Arc::new(
        ProtocolTypeRouter::new()
            .websocket(URLRouter::new(vec![path("ws/", spy())]))
            .http(URLRouter::new(vec![path("", ConsumerApp::http(|_| Ok(Hello)))])),
    );
    assert!(route(app.clone(), "/ws/").await.is_ok());
    let response = HttpCommunicator::new(app.clone(), http::Method::GET, "/").get_response().await.unwrap();
    assert_eq!(response.text(), "hello http");

    let ws_only = ProtocolTypeRouter::new().websocket(spy());
    let err = HttpCommunicator::new(ws_only, http::Method::GET, "/").get_response().await.unwrap_err();
    assert!(matches!(err, TestError::App(AppError::NoProtocol { ref protocol }) if protocol == "http"), "{err:?}");
}

/// A custom protocol consumer: answers each `line` event with its upper-case text.
struct Shout;

impl GenericConsumer for Shout {
    async fn handle(&mut self, outbox: &Outbox, event: Inbound) -> Result<channels::consumer::Flow, ConsumerError> {
        use channels::consumer::Flow;
        use channels::event::CustomEvent;
        match event {
            Inbound::Custom(CustomEvent { kind, payload }) if kind == "line" => {
                let text = payload.as_str().unwrap_or_default().to_uppercase();
                outbox.send(Outbound::Custom(CustomEvent::new("line", Value::from(text)))).await?;
                Ok(Flow::Continue)
            }
            Inbound::Custom(event) if event.kind == "quit" => Ok(Flow::Stop),
            _ => Ok(Flow::Continue),
        }
    }
}

#[tokio::test]
async fn custom_protocol_is_routed_and_served_by_a_generic_consumer() {
    use channels::event::CustomEvent;
    use channels::testing::ApplicationCommunicator;
    let app = ProtocolTypeRouter::new().protocol(Protocol::from_name("shout"), ConsumerApp::generic(|_| Ok(Shout)));
    let mut comm = ApplicationCommunicator::new(app, Scope::new(Protocol::from_name("shout"), "/"));
    comm.send_input(Inbound::Custom(CustomEvent::new("line", json!("hi there")))).await.unwrap();
    match comm.receive_output().await.unwrap() {
        Outbound::Custom(event) => assert_eq!(event.payload, json!("HI THERE")),
        other => panic!("unexpected {other:?}"),
    }
    comm.send_input(Inbound::Custom(CustomEvent::new("quit", Value::Null))).await.unwrap();
    comm.wait().await.unwrap();
}
