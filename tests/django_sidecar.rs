//! `examples/django_sidecar` as a process, next to a real Django, with real WebSocket clients:
//! its stable interface (`--addr`, the `DJANGO_*` variables, `/ws/whoami/`, `/ws/chat/<room>/`).

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::django::{Django, SECRET, python, unique};
use support::{Client, Example, free_addr, wait_until_listening, within};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

async fn open(addr: std::net::SocketAddr, path: &str, cookie: Option<&str>) -> Result<Client, Error> {
    open_from(addr, path, cookie, &format!("http://{addr}")).await
}

async fn open_from(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
    origin: &str,
) -> Result<Client, Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert("origin", origin.parse().unwrap());
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", format!("sessionid={cookie}").parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    within(tokio_tungstenite::client_async(request, tcp)).await.map(|(client, _)| client)
}

async fn next_json(client: &mut Client) -> Value {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn status(err: Result<Client, Error>) -> u16 {
    match err {
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => 101,
    }
}

#[tokio::test]
async fn the_sidecar_serves_djangos_users_over_real_sockets() {
    let Some(python) = python() else { return };
    let path = std::env::temp_dir().join(format!("{}.sqlite3", unique("channels_sidecar")));
    let url = format!("sqlite:///{}", path.display());
    let django = Django::new(&python, &url, "django.contrib.sessions.backends.db", SECRET);
    django.run(&["migrate"]);
    django.run(&["create-user", "alice", "correct horse", "pbkdf2_sha256"]);
    django.run(&["create-user", "bob", "correct horse", "pbkdf2_sha256"]);
    let (alice, bob) = (django.login("alice", "correct horse"), django.login("bob", "correct horse"));

    let addr = free_addr().await;
    let redis = support::redis_url("the_sidecar_serves_djangos_users_over_real_sockets");
    let prefix = unique("sidecar");
    let mut env = vec![("DJANGO_SECRET_KEY", SECRET), ("DJANGO_DATABASE_URL", url.as_str())];
    if let Some(redis) = &redis {
        env.extend([("DJANGO_CHANNEL_LAYER_URL", redis.as_str()), ("DJANGO_CHANNEL_LAYER_PREFIX", prefix.as_str())]);
    }
    let django = match &redis {
        Some(redis) => {
            django.with_env("DJANGO_CHANNEL_LAYER_URL", redis).with_env("DJANGO_CHANNEL_LAYER_PREFIX", &prefix)
        }
        None => django,
    };
    let _server = Example::start_with_env("django_sidecar", &["--addr", &addr.to_string()], &env).await;
    wait_until_listening(addr).await;

    let mut whoami = open(addr, "/ws/whoami/", Some(&alice)).await.unwrap();
    assert_eq!(next_json(&mut whoami).await, json!({"username": "alice", "is_authenticated": true}));
    let mut anonymous = open(addr, "/ws/whoami/", None).await.unwrap();
    assert_eq!(next_json(&mut anonymous).await, json!({"username": "", "is_authenticated": false}));

    // The tutorial's chat: members only, every member gets every message.
    assert_eq!(status(open(addr, "/ws/chat/lobby/", None).await), 403);
    let mut a = open(addr, "/ws/chat/lobby/", Some(&alice)).await.unwrap();
    let mut b = open(addr, "/ws/chat/lobby/", Some(&bob)).await.unwrap();
    let mut elsewhere = open(addr, "/ws/chat/kitchen/", Some(&bob)).await.unwrap();
    within(a.send(Message::text(r#"{"message": "hello"}"#))).await.unwrap();
    assert_eq!(next_json(&mut a).await, json!({"message": "hello"}));
    assert_eq!(next_json(&mut b).await, json!({"message": "hello"}));
    within(elsewhere.send(Message::text(r#"{"message": "only here"}"#))).await.unwrap();
    assert_eq!(next_json(&mut elsewhere).await, json!({"message": "only here"}));

    // A Django view's group_send (channels_redis) reaches the sockets served here.
    if redis.is_some() {
        django.run(&["say", &bob, "lobby", "from a Django view"]);
        assert_eq!(next_json(&mut a).await, json!({"message": "from a Django view"}));
        assert_eq!(next_json(&mut b).await, json!({"message": "from a Django view"}));
    }

    // A page of another site cannot open a socket with the user's cookie.
    assert_eq!(status(open_from(addr, "/ws/whoami/", Some(&alice), "https://evil.example").await), 403);

    // Logged out in Django: anonymous here at the next handshake.
    django.run(&["logout", &alice]);
    let mut after = open(addr, "/ws/whoami/", Some(&alice)).await.unwrap();
    assert_eq!(next_json(&mut after).await["is_authenticated"], false);
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_sidecar_refuses_a_configuration_it_cannot_serve() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("DJANGO_DATABASE_URL", "sqlite:////tmp/x.sqlite3")], "DJANGO_SECRET_KEY is not set"),
        (
            &[("DJANGO_SECRET_KEY", SECRET), ("DJANGO_SESSION_ENGINE", "django.contrib.sessions.backends.file")],
            "supported: django.contrib.sessions.backends.db, django.contrib.sessions.backends.signed_cookies",
        ),
        (&[("DJANGO_SECRET_KEY", SECRET), ("DJANGO_SESSION_COOKIE_AGE", "two weeks")], "not a number of seconds"),
    ];
    for (env, expected) in cases {
        let out = Example::run_to_end("django_sidecar", &["--addr", "127.0.0.1:0"], env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}
