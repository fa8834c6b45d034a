//! Compile-time checks that `routing!` emits as `const _: () = ...;` items. They run in const
//! evaluation, so a failure is a compile error (E0080) carrying the message built here.
//!
//! Keep this file small and stable: compile-fail snapshots quote line numbers from it.

/// Fails compilation when `consumer` (declared for `declared`) is routed under `protocol`.
pub const fn check_protocol(consumer: &str, declared: &str, protocol: &str) {
    if !str_eq(declared, protocol) {
        fail(&[
            "`",
            consumer,
            "` is a `",
            declared,
            "` consumer but is routed under `",
            protocol,
            "`: move the route under `",
            declared,
            ":`, or change the protocol in its `#[consumer(...)]`",
        ]);
    }
}

/// Fails compilation when a URL parameter in `needed` is not in `captured`.
pub const fn check_url_params(consumer: &str, needed: &[&str], route: &str, captured: &[&str]) {
    let mut i = 0;
    while i < needed.len() {
        if !contains(captured, needed[i]) {
            fail(&[
                "`",
                consumer,
                "` needs the URL parameter `",
                needed[i],
                "`, which the route `",
                route,
                "` does not capture: add `<",
                needed[i],
                ">` (path) or `(?P<",
                needed[i],
                ">...)` (re_path) to the pattern, or make the field an `Option`",
            ]);
        }
        i += 1;
    }
}

const fn contains(names: &[&str], name: &str) -> bool {
    let mut i = 0;
    while i < names.len() {
        if str_eq(names[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Panics (in const evaluation: a compile error) with the concatenated `parts`.
const fn fail(parts: &[&str]) -> ! {
    let mut buf = [0u8; 1024];
    let mut len = 0;
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() && len < buf.len() {
            buf[len] = bytes[j];
            len += 1;
            j += 1;
        }
        i += 1;
    }
    let (message, _) = buf.split_at(len);
    match core::str::from_utf8(message) {
        Ok(message) => panic!("{}", message),
        Err(_) => panic!("a routing! check failed"),
    }
}
