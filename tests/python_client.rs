//! Interop with a client written by others: Python's `websockets` against the echo example.
//! Needs a Python with `websockets` (`.ci/run` makes a venv and sets `CHANNELS_TEST_PYTHON`);
//! without it the test prints that it skipped, except under `CI=true`.

mod support;

use support::*;

/// The Python to run, or `None` (skipped) outside CI.
fn python() -> Option<String> {
    let python = std::env::var("CHANNELS_TEST_PYTHON").ok().filter(|python| !python.is_empty());
    let usable = python.as_ref().is_some_and(|python| {
        std::process::Command::new(python)
            .args(["-c", "import websockets"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if usable {
        return python;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI=true but CHANNELS_TEST_PYTHON has no `websockets` (.ci/run sets it up)"
    );
    eprintln!("SKIPPED python websockets interop: set CHANNELS_TEST_PYTHON to a Python with `websockets`");
    None
}

#[tokio::test]
async fn python_websockets_client_gets_a_clean_close() {
    let Some(python) = python() else { return };
    let addr = free_addr().await;
    let _echo = Example::start("echo", &["--addr", &addr.to_string()]).await;
    wait_until_listening(addr).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ws_close.py");
    for code in [1000, 1001, 3000, 4999] {
        let (python, script) = (python.clone(), script.clone());
        let run = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(script)
                .arg(format!("ws://{addr}/ws/echo/"))
                .arg(code.to_string())
                .output()
        });
        let output = tokio::time::timeout(std::time::Duration::from_secs(20), run).await.unwrap().unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(seen["echoed"], "hello from python");
        // The server answered the client's close frame with its own (RFC 6455 5.5.1): no 1006.
        assert_eq!(seen["close_rcvd"]["code"], code, "{seen}");
        assert_eq!(seen["close_code"], code, "{seen}");
    }
}
