//! A real Django (examples/django_sidecar/site) driven through tests/django/helper.py.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The `SECRET_KEY` the tests' Django and server share.
pub const SECRET: &str = "django-insecure-channels-test-key-0123456789abcdefghij";

/// The venv's Python, if it has Django; `None` (the test is skipped) outside CI.
pub fn python() -> Option<PathBuf> {
    let python = std::env::var_os("CHANNELS_TEST_PYTHON").map(PathBuf::from);
    let ready = python.as_ref().is_some_and(|python| {
        Command::new(python).args(["-c", "import django, psycopg"]).output().is_ok_and(|out| out.status.success())
    });
    if ready {
        return python;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI=true but CHANNELS_TEST_PYTHON has no Django (.ci/run installs it in target/py-venv)"
    );
    eprintln!("SKIPPED: CHANNELS_TEST_PYTHON does not point at a Python with Django and psycopg");
    None
}

/// The machine's PostgreSQL (127.0.0.1:5432, trust auth), its `postgres` database: `None`
/// (skipped) when nothing answers there, except under CI.
pub fn postgres_url() -> Option<String> {
    if std::net::TcpStream::connect("127.0.0.1:5432").is_ok() {
        return Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI=true but PostgreSQL does not answer on 127.0.0.1:5432 (.ci/run starts it)"
    );
    eprintln!("SKIPPED: PostgreSQL does not answer on 127.0.0.1:5432");
    None
}

/// The real Django, with its settings in the environment.
#[derive(Clone)]
pub struct Django {
    python: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Django {
    pub fn new(python: &Path, database_url: &str, engine: &str, secret: &str) -> Self {
        Django {
            python: python.to_path_buf(),
            env: vec![
                ("DJANGO_SECRET_KEY", secret.to_owned()),
                ("DJANGO_DATABASE_URL", database_url.to_owned()),
                ("DJANGO_SESSION_ENGINE", engine.to_owned()),
            ],
        }
    }

    pub fn with_secret(&self, secret: &str) -> Self {
        self.with_env("DJANGO_SECRET_KEY", secret)
    }

    /// The same Django with one more (or another) setting.
    pub fn with_env(&self, name: &'static str, value: &str) -> Self {
        let mut other = self.clone();
        other.env.retain(|(known, _)| *known != name);
        other.env.push((name, value.to_owned()));
        other
    }

    pub fn run(&self, args: &[&str]) -> String {
        let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django/helper.py");
        let out = Command::new(&self.python)
            .arg(helper)
            .args(args)
            .envs(self.env.iter().map(|(name, value)| (*name, value.as_str())))
            .output()
            .expect("run the Django helper");
        assert!(out.status.success(), "helper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args)).unwrap_or(Value::Null)
    }

    /// Logs in through Django's own LoginView; the session cookie's value.
    pub fn login(&self, name: &str, password: &str) -> String {
        self.json(&["login", name, password])["cookie"].as_str().expect("a session cookie").to_owned()
    }

    /// Who Django says the cookie belongs to ("" for nobody).
    pub fn whoami(&self, cookie: &str) -> String {
        self.json(&["whoami", cookie])["username"].as_str().unwrap_or("").to_owned()
    }
}

/// A database of the test's own, dropped (or deleted) when it goes: SQLite in a temporary file,
/// or PostgreSQL on the machine's service.
pub struct TestDb {
    pub url: String,
    admin: Option<(Django, String)>,
    file: Option<PathBuf>,
}

impl TestDb {
    pub fn sqlite(prefix: &str) -> TestDb {
        let path = std::env::temp_dir().join(format!("{}.sqlite3", unique(prefix)));
        TestDb { url: format!("sqlite:///{}", path.display()), admin: None, file: Some(path) }
    }

    pub fn postgres(python: &Path, prefix: &str) -> TestDb {
        let name = unique(prefix);
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let admin = Django::new(python, &url, "django.contrib.sessions.backends.db", "unused");
        admin.run(&["createdb", &name]);
        TestDb { url, admin: Some((admin, name)), file: None }
    }

    /// One of each.
    pub fn both(python: &Path, prefix: &str) -> [TestDb; 2] {
        [TestDb::sqlite(prefix), TestDb::postgres(python, prefix)]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.admin {
            admin.run(&["dropdb", name]);
        }
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A name no other run uses (databases, files).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}
