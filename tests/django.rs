//! Next to a real Django (examples/django_sidecar/site, driven by tests/django/helper.py): its
//! logins, sessions, users and password hashes, on SQLite and on PostgreSQL.
//!
//! Needs `CHANNELS_TEST_PYTHON` pointing at a Python with Django (and psycopg, argon2-cffi,
//! bcrypt) installed; `.ci/run` makes that venv. PostgreSQL: the machine's service on
//! 127.0.0.1:5432 (trust auth); each run makes its own database and drops it.

mod support;

use std::path::Path;

use channels::consumer::Form;
use channels::django::{DjangoConfig, DjangoUser};
use channels::middleware::{authenticate, login};
use channels::prelude::*;
use channels::testing::{HttpCommunicator, WebsocketCommunicator};
use channels::{auth, consumer, routing};
use serde_json::{Value, json};
use support::django::{Django, TestDb, python, unique};

use support::django::SECRET;
const ROTATED: &str = "django-insecure-channels-next-key-9876543210zyxwvutsrq";

/// Sends `{"username": ..., "is_authenticated": ...}` on connect.
#[auth(stack)]
#[consumer(websocket)]
struct Whoami;

#[consumer]
impl Whoami {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        let user = self.scope.user.downcast_ref::<DjangoUser>();
        ws.accept().await?;
        ws.send_json(&json!({
            "username": user.map_or("", |user| user.username.as_str()),
            "is_authenticated": user.is_some(),
        }))
        .await
    }
}

/// `POST /login/` with `username` and `password`: Django's users, checked here.
#[auth(stack)]
#[consumer(http, methods = ["POST"])]
struct Login;

#[consumer]
impl Login {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        let form = Form::parse(&self.scope, &body)?;
        let (name, password) = (form.get("username").unwrap_or(""), form.get("password").unwrap_or(""));
        match authenticate(&self.scope, name, password).await? {
            Some(user) => {
                login(&mut self.scope, user).await?;
                response.text(StatusCode::OK, "logged in").await
            }
            None => response.text(StatusCode::UNAUTHORIZED, "no").await,
        }
    }
}

fn app(config: &DjangoConfig) -> ProtocolTypeRouter {
    routing! {
        http: [ "login/" => Login ],
        websocket: [ "ws/whoami/" => Whoami ],
    }
    .auth(config.auth_config().expect("a usable Django configuration"))
}

/// The server's logs in the test's captured output: a failure shows why a user came out
/// anonymous (a database error, a timeout, a bad signature...).
fn capture_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("channels=debug").try_init();
}

/// Who this server says the cookie belongs to ("" for nobody).
async fn whoami(config: &DjangoConfig, cookie: &str) -> String {
    capture_logs();
    // A database that is down is waited for up to the pool's acquire timeout (3 s).
    let mut ws = WebsocketCommunicator::new(app(config), "/ws/whoami/")
        .cookie("sessionid", cookie)
        .with_timeout(std::time::Duration::from_secs(10));
    assert!(ws.connect().await.unwrap().accepted);
    let hello: Value = ws.receive_json_from().await.unwrap();
    assert_eq!(hello["is_authenticated"], hello["username"] != "", "{hello}");
    hello["username"].as_str().unwrap_or("").to_owned()
}

/// Asserts who this server says the cookie belongs to; on a mismatch the message carries the
/// session row as Django sees it (a failure seen a few times in CI: a user logged in through
/// Django read as anonymous here).
async fn assert_whoami(django: &Django, config: &DjangoConfig, cookie: &str, expected: &str) {
    let seen = whoami(config, cookie).await;
    if seen != expected {
        panic!(
            "cookie {cookie:?} is {seen:?} here, expected {expected:?}; Django's session row: {}",
            django.run(&["session-row", cookie])
        );
    }
}

/// Logs in here; the session cookie's value, or `None` when refused.
async fn login_here(config: &DjangoConfig, name: &str, password: &str) -> Option<String> {
    // Django's PBKDF2 default is 1,000,000 rounds, and scrypt and argon2 are as costly on
    // purpose: most of a second each on a slow machine, several on a loaded one (CI).
    let response = HttpCommunicator::new(app(config), Method::POST, "/login/")
        .with_timeout(std::time::Duration::from_secs(30))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={name}&password={password}"))
        .get_response()
        .await
        .unwrap();
    (response.status == StatusCode::OK)
        .then(|| response.cookie("sessionid").unwrap_or_else(|| panic!("a session cookie: {:?}", response.headers)))
}

/// Every point of the story on one database.
async fn logins_sessions_and_users(python: &Path, database_url: &str) {
    const DB: &str = "django.contrib.sessions.backends.db";
    let django = Django::new(python, database_url, DB, SECRET);
    django.run(&["migrate"]);
    for (name, hasher) in [
        ("alice", "pbkdf2_sha256"),
        ("bob", "argon2"),
        ("carol", "bcrypt_sha256"),
        ("dave", "scrypt"),
        ("erin", "pbkdf2_sha1"),
    ] {
        django.run(&["create-user", name, "correct horse", hasher]);
    }
    let here = DjangoConfig::new(SECRET).database_url(database_url).session_engine(DB);

    // Logged in through Django's login view: the same user here.
    let cookie = django.login("alice", "correct horse");
    assert_whoami(&django, &here, &cookie, "alice").await;
    // Anonymous: no cookie, a tampered one, another SECRET_KEY.
    assert_eq!(whoami(&here, "").await, "");
    let tampered = support::tampered(&cookie);
    assert_eq!(whoami(&here, &tampered).await, "");
    assert_eq!(whoami(&DjangoConfig::new(ROTATED).database_url(database_url), &cookie).await, "");
    // An expired session, a garbage row.
    let expired = django.login("alice", "correct horse");
    django.run(&["expire", &expired]);
    assert_eq!(whoami(&here, &expired).await, "");
    let garbage = django.login("alice", "correct horse");
    django.run(&["corrupt", &garbage]);
    assert_eq!(whoami(&here, &garbage).await, "");
    // An inactive user.
    let bobs = django.login("bob", "correct horse");
    assert_whoami(&django, &here, &bobs, "bob").await;
    django.run(&["set-active", "bob", "false"]);
    assert_eq!(whoami(&here, &bobs).await, "");
    django.run(&["set-active", "bob", "true"]);

    // SECRET_KEY rotated, the old one in SECRET_KEY_FALLBACKS: still the same user.
    let old_cookie = django.login("alice", "correct horse");
    let rotated = DjangoConfig::new(ROTATED).secret_key_fallbacks([SECRET]).database_url(database_url);
    assert_eq!(whoami(&rotated, &old_cookie).await, "alice");
    assert_eq!(whoami(&rotated, &old_cookie).await, "alice", "a WebSocket keeps its session key");
    // That session moved to the new key, as Django moves it; an untouched one needed the fallback.
    assert_eq!(django.with_secret(ROTATED).whoami(&old_cookie), "alice");
    let untouched = django.login("alice", "correct horse");
    assert_eq!(django.with_secret(ROTATED).whoami(&untouched), "", "Django without the fallback");

    // Logged in here (Django's password hashes checked here): Django sees the user; logged out
    // in Django: anonymous here.
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        assert!(login_here(&here, name, "wrong").await.is_none(), "{name} with a wrong password");
        let cookie = login_here(&here, name, "correct%20horse").await.unwrap_or_else(|| panic!("{name} logs in"));
        assert_eq!(django.whoami(&cookie), name, "Django reads the session made here");
        assert_eq!(whoami(&here, &cookie).await, name);
    }
    let cookie = login_here(&here, "alice", "correct%20horse").await.unwrap();
    django.run(&["logout", &cookie]);
    assert_eq!(whoami(&here, &cookie).await, "");
    assert!(login_here(&here, "nobody", "correct%20horse").await.is_none());

    // A password changed in Django ends the sessions here.
    let cookie = django.login("alice", "correct horse");
    assert_eq!(whoami(&here, &cookie).await, "alice");
    django.run(&["set-password", "alice", "battery staple"]);
    assert_eq!(whoami(&here, &cookie).await, "");
    assert!(login_here(&here, "alice", "correct%20horse").await.is_none());
    assert!(login_here(&here, "alice", "battery%20staple").await.is_some());
}

#[tokio::test]
async fn django_logins_sessions_and_users_on_sqlite() {
    let Some(python) = python() else { return };
    logins_sessions_and_users(&python, &TestDb::sqlite("channels_django").url).await;
}

#[tokio::test]
async fn django_logins_sessions_and_users_on_postgres() {
    let Some(python) = python() else { return };
    logins_sessions_and_users(&python, &TestDb::postgres(&python, "channels_test").url).await;
}

#[tokio::test]
async fn django_signed_cookie_sessions_on_both_databases() {
    let Some(python) = python() else { return };
    const SIGNED: &str = "django.contrib.sessions.backends.signed_cookies";
    for db in TestDb::both(&python, "channels_signed") {
        let django = Django::new(&python, &db.url, SIGNED, SECRET);
        django.run(&["migrate"]);
        django.run(&["create-user", "alice", "correct horse", "pbkdf2_sha256"]);
        let here = DjangoConfig::new(SECRET).database_url(&db.url).session_engine(SIGNED);

        let cookie = django.login("alice", "correct horse");
        assert!(cookie.contains(':'), "the data itself, signed: {cookie}");
        assert_eq!(whoami(&here, &cookie).await, "alice", "{}", db.url);
        assert_eq!(whoami(&here, &cookie.replacen(':', "x:", 1)).await, "");
        let made_here = login_here(&here, "alice", "correct%20horse").await.unwrap();
        assert_eq!(django.whoami(&made_here), "alice", "{}", db.url);
    }
}

#[tokio::test]
async fn a_database_that_is_down_makes_connections_anonymous_not_failed() {
    // Nothing listens on port 9: every query fails at once.
    let down = DjangoConfig::new(SECRET).database_url("postgres://postgres@127.0.0.1:9/nothing");
    assert_eq!(whoami(&down, "abcdefghijklmnopqrstuvwxyz012345").await, "");
    // A login cannot check anything: the view fails (500), it does not let anyone in.
    let response = HttpCommunicator::new(app(&down), Method::POST, "/login/")
        .with_timeout(std::time::Duration::from_secs(10))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=alice&password=x")
        .get_response()
        .await;
    let Err(channels::testing::TestError::App(AppError::Consumer(err))) = response else { panic!("{response:?}") };
    assert!(err.to_string().contains("user backend failed"), "{err}");
}

#[tokio::test]
async fn django_cache_and_cached_db_session_engines_on_both_databases() {
    let Some(python) = python() else { return };
    let Some(redis) = support::redis_url("django_cache_and_cached_db_session_engines") else { return };
    let engines = ["django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.cached_db"];
    // Django's own RedisCache, and django-redis's with its default (pickle) serializer.
    let caches = ["django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"];
    for db in TestDb::both(&python, "channels_cache") {
        let url = db.url.clone();
        let setup = Django::new(&python, &url, engines[1], SECRET);
        setup.run(&["migrate"]);
        setup.run(&["create-user", "alice", "correct horse", "pbkdf2_sha256"]);
        for (engine, cache) in engines.into_iter().flat_map(|engine| caches.map(|cache| (engine, cache))) {
            let prefix = unique("djcache");
            let django = Django::new(&python, &url, engine, SECRET)
                .with_env("DJANGO_CACHE_URL", &redis)
                .with_env("DJANGO_CACHE_BACKEND", cache)
                .with_env("DJANGO_CACHE_KEY_PREFIX", &prefix);
            let here = DjangoConfig::new(SECRET).database_url(&url).session_engine(engine).cache(&redis, &prefix);

            let cookie = django.login("alice", "correct horse");
            assert_eq!(whoami(&here, &cookie).await, "alice", "{engine} with {cache} on {url}");
            let made_here = login_here(&here, "alice", "correct%20horse").await.unwrap();
            assert_eq!(django.whoami(&made_here), "alice", "{engine} with {cache} on {url}");
            django.run(&["logout", &made_here]);
            assert_eq!(whoami(&here, &made_here).await, "", "{engine} with {cache} on {url}");

            if engine.ends_with(".cache") {
                // A session holding a value only pickle can carry: unreadable here, so anonymous.
                let dated = django.login("alice", "correct horse");
                django.run(&["store-date", &dated]);
                assert_eq!(whoami(&here, &dated).await, "", "{engine} with {cache} on {url}");
            } else {
                // cached_db with its cache down still reads the table.
                let down = DjangoConfig::new(SECRET)
                    .database_url(&url)
                    .session_engine(engine)
                    .cache("redis://127.0.0.1:9", &prefix);
                assert_eq!(whoami(&down, &cookie).await, "alice", "{engine} with {cache} on {url}");
            }
        }
    }
}

/// A TCP relay to PostgreSQL that the test can cut and restore: the database "goes down" for
/// this server only, without touching the shared service.
struct Relay {
    addr: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(addr: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the relay");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, task: Some(task) }
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[tokio::test]
async fn a_database_outage_refuses_nobody_and_is_recovered_from() {
    let Some(python) = python() else { return };
    let db = TestDb::postgres(&python, "channels_outage");
    let django = Django::new(&python, &db.url, "django.contrib.sessions.backends.db", SECRET);
    django.run(&["migrate"]);
    django.run(&["create-user", "alice", "correct horse", "pbkdf2_sha256"]);
    let cookie = django.login("alice", "correct horse");

    let mut relay = Relay::start(support::free_addr().await).await;
    let here = DjangoConfig::new(SECRET).database_url(db.url.replace("127.0.0.1:5432", &relay.addr.to_string()));
    let handshake = |app: std::sync::Arc<ProtocolTypeRouter>| {
        let cookie = cookie.clone();
        async move {
            let mut ws = WebsocketCommunicator::new(app, "/ws/whoami/")
                .cookie("sessionid", &cookie)
                .with_timeout(std::time::Duration::from_secs(10));
            assert!(ws.connect().await.unwrap().accepted, "never refused");
            ws.receive_json_from::<Value>().await.unwrap()["username"].as_str().unwrap_or("").to_owned()
        }
    };
    // One app (one pool) through the whole story, as a running server has.
    let server = std::sync::Arc::new(app(&here));
    assert_eq!(handshake(server.clone()).await, "alice");
    // The database restarts between two handshakes: the pooled connection is dead, yet the
    // next handshake (too soon for the pool to check it) still sees alice, on a new connection.
    relay.cut().await;
    let mut relay = Relay::start(relay.addr).await;
    assert_eq!(handshake(server.clone()).await, "alice", "a broken pooled connection is replaced, not reported");
    relay.cut().await;
    assert_eq!(handshake(server.clone()).await, "", "anonymous while the database is unreachable");
    let _relay = Relay::start(relay.addr).await;
    assert_eq!(handshake(server.clone()).await, "alice", "back once it is");
}

#[tokio::test]
async fn permissions_are_djangos_direct_by_group_and_superuser_on_both_databases() {
    use channels::django::{DjangoUserBackend, UserTable};
    use channels::middleware::UserBackend;
    let Some(python) = python() else { return };
    for db in TestDb::both(&python, "channels_perms") {
        let url = db.url.clone();
        let django = Django::new(&python, &url, "django.contrib.sessions.backends.db", SECRET);
        django.run(&["migrate"]);
        let mut ids = std::collections::HashMap::new();
        for name in ["alice", "bob", "carol", "dave"] {
            let created = django.json(&["create-user", name, "pw", "pbkdf2_sha256"]);
            ids.insert(name, created["id"].as_i64().unwrap());
        }
        django.run(&["grant", "alice", "auth.view_user"]);
        django.run(&["grant", "bob", "sessions.view_session", "staffers"]);
        django.run(&["make-superuser", "carol"]);
        let config = DjangoConfig::new(SECRET).database_url(&url);
        let users = DjangoUserBackend::new(config.database().unwrap(), UserTable::default(), config.keys(), Vec::new());
        for (name, perm) in [
            ("alice", "auth.view_user"),
            ("alice", "sessions.view_session"),
            ("bob", "sessions.view_session"),
            ("bob", "auth.view_user"),
            ("carol", "auth.delete_group"),
            ("dave", "auth.view_user"),
            ("alice", "not-a-permission"),
        ] {
            let user = users.get_user(&ids[name].to_string()).await.unwrap().expect("an active user");
            let django_says: bool = serde_json::from_value(django.json(&["has-perm", name, perm])).unwrap();
            assert_eq!(user.has_perm(perm).await.unwrap(), django_says, "{name} {perm} on {url}");
        }
    }
}

#[tokio::test]
async fn the_postgres_pool_reuses_connections_and_closes_one_cut_short() {
    use channels::django::PgConnections;
    use channels::django::sqlx::{self, Row};
    let Some(url) = support::django::postgres_url() else { return };
    let db = PgConnections::new(&url, 1, std::time::Duration::from_secs(3)).unwrap();
    let backend = async || -> i32 {
        let row = db.fetch_optional(|| sqlx::query("SELECT pg_backend_pid()")).await.unwrap().unwrap();
        row.try_get(0).unwrap()
    };
    let first = backend().await;
    assert_eq!(backend().await, first, "one connection, reused");

    // A handshake that goes away mid-query: its connection is closed, not handed to the next.
    let slow = db.fetch_optional(|| sqlx::query("SELECT pg_sleep(5)"));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(200), slow).await.is_err());
    let second = backend().await;
    assert_ne!(second, first, "a new connection after the cut-short query");
    assert_eq!(backend().await, second);

    // The server ends the connection (as on a restart: FATAL 57P01 to the client): the next
    // query is run again on a new connection instead of failing.
    let admin = PgConnections::new(&url, 1, std::time::Duration::from_secs(3)).unwrap();
    let killed = admin.fetch_optional(|| sqlx::query("SELECT pg_terminate_backend($1)").bind(second)).await.unwrap();
    assert!(killed.unwrap().try_get::<bool, _>(0).unwrap());
    let third = backend().await;
    assert_ne!(third, second);
    let second = third;

    // A query error (not the connection's) leaves the connection in the pool.
    assert!(db.fetch_optional(|| sqlx::query("SELECT * FROM no_such_table")).await.is_err());
    assert_eq!(backend().await, second);

    // With its only connection busy, a query waits at most the acquire timeout.
    let short = PgConnections::new(&url, 1, std::time::Duration::from_millis(100)).unwrap();
    let busy = short.fetch_optional(|| sqlx::query("SELECT pg_sleep(1)"));
    let waiting = short.fetch_optional(|| sqlx::query("SELECT 1"));
    let (busy, waiting) = tokio::join!(busy, waiting);
    assert!(busy.is_ok());
    assert!(matches!(waiting, Err(sqlx::Error::PoolTimedOut)), "{waiting:?}");
}
