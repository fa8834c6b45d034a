//! Compile-time checks that `routing!` emits as `const` items: each returns the message of a
//! failed check, and the expansion panics with it, so the compile error (E0080) carries the
//! message and points at the consumer in the route table.

/// A failed check's message, built in const evaluation.
#[derive(Debug)]
pub struct Failure {
    buf: [u8; 1024],
    len: usize,
}

impl Failure {
    /// The message.
    pub const fn as_str(&self) -> &str {
        let (message, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(message) {
            Ok(message) => message,
            Err(_) => "a routing! check failed",
        }
    }
}

/// Fails when `consumer` (declared for `declared`) is routed under `protocol`.
pub const fn check_protocol(consumer: &str, declared: &str, protocol: &str) -> Option<Failure> {
    if !str_eq(declared, protocol) {
        return fail(&[
            "`",
            consumer,
            "` speaks `",
            declared,
            "` but is routed under `",
            protocol,
            "`: move the route under `",
            declared,
            ":`, or change the protocol in its `#[consumer(...)]`",
        ]);
    }
    None
}

/// Fails when a URL parameter in `needed` is not in `captured`.
pub const fn check_url_params(consumer: &str, needed: &[&str], route: &str, captured: &[&str]) -> Option<Failure> {
    let mut i = 0;
    while i < needed.len() {
        if !contains(captured, needed[i]) {
            return fail(&[
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
    None
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

/// The concatenated `parts` (cut at 1 KiB).
const fn fail(parts: &[&str]) -> Option<Failure> {
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
    Some(Failure { buf, len })
}
