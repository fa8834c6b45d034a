//! [`OriginValidator`](struct@OriginValidator) and [`AllowedHostsOriginValidator`](fn@AllowedHostsOriginValidator): refuse WebSocket handshakes from
//! pages of other sites (cross-site WebSocket hijacking), as Channels does.

use super::{Middleware, Refusal, Step, Wrapped};
use crate::application::Application;
use crate::error::AppError;
use crate::scope::{Protocol, Scope};

/// One allowed-origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: any origin, and a missing one.
    Any,
    Host {
        scheme: Option<String>,
        /// `example.com`, or `.example.com` for the domain and its subdomains (`*.example.com`
        /// means the same).
        host: String,
        port: Option<u16>,
    },
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `[scheme://]host[:port]` (IPv6 hosts in brackets).
fn split(text: &str) -> Option<(Option<&str>, &str, Option<u16>)> {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (host, port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (rest, None),
        }
    };
    (!host.is_empty() && !host.contains('/')).then_some((scheme, host, port))
}

impl Pattern {
    fn parse(pattern: &str) -> Pattern {
        if pattern == "*" {
            return Pattern::Any;
        }
        let pattern = pattern.to_ascii_lowercase();
        let (scheme, host, port) = split(&pattern).unwrap_or((None, &pattern, None));
        let host = host.strip_prefix('*').unwrap_or(host);
        Pattern::Host { scheme: scheme.map(str::to_owned), host: host.to_owned(), port }
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Pattern::Host { scheme: want_scheme, host: want_host, port: want_port } = self else { return true };
        if want_scheme.as_deref().is_some_and(|want| want != scheme) {
            return false;
        }
        let host_ok = match want_host.strip_prefix('.') {
            Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
            None => host == want_host,
        };
        let port_ok = want_port.is_none_or(|want| Some(want) == port.or_else(|| default_port(scheme)));
        host_ok && port_ok
    }
}

/// Refuses (HTTP 403) WebSocket handshakes whose `Origin` is not allowed (Channels'
/// `OriginValidator`); HTTP requests pass through.
///
/// Patterns: `"*"` (anything, and a missing `Origin`), `"example.com"`, `".example.com"` or
/// `"*.example.com"` (the domain and its subdomains), with an optional port
/// (`"localhost:8000"`) and scheme (`"https://example.com"`). A pattern without a port allows
/// any port; one without a scheme any scheme. A handshake without an `Origin` header (not a
/// browser) is refused unless `"*"` is allowed, as in Channels.
///
/// `OriginValidator(inner, allowed)` in a `routing!` table is
/// `OriginValidator::new(allowed).wrap(inner)`.
#[derive(Debug, Clone)]
pub struct OriginValidator {
    allowed: Vec<Pattern>,
}

impl OriginValidator {
    /// Allows the `allowed` origin patterns.
    pub fn new<S: AsRef<str>>(allowed: impl IntoIterator<Item = S>) -> Self {
        OriginValidator { allowed: allowed.into_iter().map(|p| Pattern::parse(p.as_ref())).collect() }
    }

    /// Allows the application's own hosts (Channels' `AllowedHostsOriginValidator`, with
    /// Django's `ALLOWED_HOSTS` passed in). An empty list means development: `localhost`,
    /// `127.0.0.1` and `[::1]` on any port.
    pub fn allowed_hosts<S: AsRef<str>>(allowed_hosts: impl IntoIterator<Item = S>) -> Self {
        let validator = OriginValidator::new(allowed_hosts);
        if validator.allowed.is_empty() {
            return OriginValidator::new(["localhost", "127.0.0.1", "[::1]"]);
        }
        validator
    }

    /// True when a handshake with this `Origin` header value (or none) may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return self.allowed.contains(&Pattern::Any) };
        let origin = origin.to_ascii_lowercase();
        // Browsers send `null` for opaque origins (sandboxed frames, files): only `*` allows it.
        let Some((Some(scheme), host, port)) = split(&origin) else { return self.allowed.contains(&Pattern::Any) };
        self.allowed.iter().any(|pattern| pattern.matches(scheme, host, port))
    }
}

/// `OriginValidator(inner, allowed)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn OriginValidator<A: Application, S: AsRef<str>>(
    inner: A,
    allowed: impl IntoIterator<Item = S>,
) -> Wrapped<OriginValidator, A> {
    OriginValidator::new(allowed).wrap(inner)
}

/// `AllowedHostsOriginValidator(inner, hosts)`, spelled as in Channels (and in `routing!`
/// tables): [`OriginValidator::allowed_hosts`] around `inner`.
#[allow(non_snake_case)]
pub fn AllowedHostsOriginValidator<A: Application, S: AsRef<str>>(
    inner: A,
    allowed_hosts: impl IntoIterator<Item = S>,
) -> Wrapped<OriginValidator, A> {
    OriginValidator::allowed_hosts(allowed_hosts).wrap(inner)
}

/// The reason of the origin check's refusals (the server counts those handshakes apart).
pub(crate) const ORIGIN_REFUSED: &str = "origin not allowed";

impl Middleware for OriginValidator {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        if scope.protocol != Protocol::Websocket || self.allows(scope.header("origin")) {
            return Ok(Step::Continue);
        }
        tracing::debug!(origin = scope.header("origin").unwrap_or("<none>"), "WebSocket origin refused");
        Ok(Step::Refuse(Refusal::forbidden(ORIGIN_REFUSED)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(allowed: &[&str]) -> OriginValidator {
        OriginValidator::new(allowed.iter().copied())
    }

    #[test]
    fn patterns_mean_what_they_say() {
        let v = validator(&["example.com", "*.example.org", ".example.net", "localhost:8000", "https://secure.io"]);
        assert!(v.allows(Some("https://example.com")));
        assert!(v.allows(Some("http://example.com:8080")), "no port in the pattern: any port");
        assert!(!v.allows(Some("https://evil.example.com")));
        assert!(v.allows(Some("https://a.b.example.org")) && v.allows(Some("https://example.org")));
        assert!(!v.allows(Some("https://notexample.org")));
        assert!(v.allows(Some("http://chat.example.net")));
        assert!(v.allows(Some("http://localhost:8000")) && !v.allows(Some("http://localhost:9000")));
        assert!(v.allows(Some("https://secure.io")) && !v.allows(Some("http://secure.io")));
        assert!(v.allows(Some("HTTPS://EXAMPLE.COM")));
        assert!(!v.allows(None), "a missing Origin needs `*`");
        assert!(!v.allows(Some("null")) && !v.allows(Some("garbage")));
        let any = validator(&["*"]);
        assert!(any.allows(None) && any.allows(Some("null")) && any.allows(Some("https://x.y")));
        let v6 = validator(&["[::1]"]);
        assert!(v6.allows(Some("http://[::1]:8000")));
    }
}
