//! Origin validation over a real socket with a real WebSocket client.

mod support;

use channels::middleware::{AllowedHostsOriginValidator, OriginValidator};
use channels::routing;
use support::*;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn status(server: &TestServer, path: &str, origin: Option<&str>) -> u16 {
    let mut request = server.request(path);
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match server.try_connect(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn origins_are_allowed_refused_and_missing_as_channels_does() {
    let app = routing! {
        websocket: [
            "strict/" => OriginValidator([ "ws/<slug:room>/<slug:user>/" => Member ], ["https://chat.example.com", "*.example.org"]),
            "dev/" => AllowedHostsOriginValidator([ "ws/<slug:room>/<slug:user>/" => Member ], Vec::<String>::new()),
            "open/" => OriginValidator([ "ws/<slug:room>/<slug:user>/" => Member ], ["*"]),
        ],
    };
    let server = TestServer::start(app).await;
    let strict = "/strict/ws/lobby/ann/";
    assert_eq!(status(&server, strict, Some("https://chat.example.com")).await, 101);
    assert_eq!(status(&server, strict, Some("https://team.example.org")).await, 101);
    assert_eq!(status(&server, strict, Some("https://evil.example")).await, 403);
    assert_eq!(status(&server, strict, Some("http://chat.example.com")).await, 403, "scheme differs");
    assert_eq!(status(&server, strict, None).await, 403, "missing Origin needs `*`");
    let dev = "/dev/ws/lobby/ann/";
    assert_eq!(status(&server, dev, Some("http://localhost:8000")).await, 101);
    assert_eq!(status(&server, dev, Some("http://127.0.0.1:3000")).await, 101);
    assert_eq!(status(&server, dev, Some("http://attacker.test")).await, 403);
    assert_eq!(status(&server, "/open/ws/lobby/ann/", None).await, 101);
    server.shutdown().await;
}
