//! Host and redirect checks, as Django does them: [`host_is_allowed`] (Django's
//! `ALLOWED_HOSTS` check, which the server applies to every request through
//! [`ServerConfig::allowed_hosts`](crate::ServerConfig::allowed_hosts)) and
//! [`url_has_allowed_host_and_scheme`] (Django's function of the same name, for `?next=`
//! redirects after a login).
//!
//! ```
//! use channels::security::{host_is_allowed, url_has_allowed_host_and_scheme};
//!
//! assert!(host_is_allowed("chat.example.com:8443", &[".example.com"]));
//! assert!(!host_is_allowed("evil.test", &[".example.com"]));
//!
//! let hosts = ["chat.example.com"];
//! assert!(url_has_allowed_host_and_scheme("/rooms/lobby/", &hosts, false));
//! assert!(!url_has_allowed_host_and_scheme("/\\evil.example", &hosts, false));
//! assert!(!url_has_allowed_host_and_scheme("https://evil.example/", &hosts, false));
//! ```

/// The domain of a `Host` header value (`name`, `name:port`, `[v6]:port`), as Django's
/// `split_domain_port` finds it (trailing dot removed; compare it case-insensitively). `None`
/// for a value that is not a valid host. Allocates nothing: it runs on every request.
fn domain_of(host: &str) -> Option<&str> {
    let (domain, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let inner = &host[1..end];
        let valid = inner.contains(':') && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let port = match &host[end + 1..] {
            "" => "",
            rest => rest.strip_prefix(':')?,
        };
        (valid.then_some(&host[..=end])?, port)
    } else {
        let (domain, port) = host.rsplit_once(':').unwrap_or((host, ""));
        let valid = !domain.is_empty() && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        (valid.then_some(domain.trim_end_matches('.'))?, port)
    };
    port.bytes().all(|b| b.is_ascii_digit()).then_some(domain)
}

/// True when `pattern` (an `ALLOWED_HOSTS` entry) matches `domain`: `*` matches anything,
/// `.example.com` the domain and its subdomains, anything else itself (case-insensitive).
fn pattern_matches(pattern: &str, domain: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('.') {
        Some(parent) => {
            domain.eq_ignore_ascii_case(parent)
                || (domain.len() > pattern.len()
                    && domain.is_char_boundary(domain.len() - pattern.len())
                    && domain[domain.len() - pattern.len()..].eq_ignore_ascii_case(pattern))
        }
        None => domain.eq_ignore_ascii_case(pattern),
    }
}

/// True when a `Host` header value (`name`, `name:port`, `[v6]:port`) is valid and its name
/// matches one of `allowed` (Django's `ALLOWED_HOSTS` rules: `"*"` allows any valid host,
/// `".example.com"` the domain and its subdomains, anything else exactly that name; ports are
/// not compared; names compare case-insensitively).
pub fn host_is_allowed<S: AsRef<str>>(host: &str, allowed: &[S]) -> bool {
    let Some(domain) = domain_of(host) else { return false };
    allowed.iter().any(|pattern| pattern_matches(pattern.as_ref(), domain))
}

/// True when `url` is safe to redirect to: a relative URL on this site, or an absolute one whose
/// host is in `allowed_hosts` (exact names, compared case-insensitively, with their port if
/// they have one) and whose scheme is `http` or `https` (`https` only when `require_https`).
///
/// This is Django's `url_has_allowed_host_and_scheme`: it refuses what browsers would follow
/// to another site, such as `//evil.example`, `/\evil.example`, `\\evil.example`,
/// `/%09/evil.example` once decoded (control characters and leading spaces), `javascript:`
/// and `///evil.example`. Check the *decoded* value (what a query-string parser returns).
pub fn url_has_allowed_host_and_scheme<S: AsRef<str>>(url: &str, allowed_hosts: &[S], require_https: bool) -> bool {
    let url = url.trim();
    if url.is_empty() {
        return false;
    }
    // Browsers treat a backslash as a slash; check both spellings (as Django does).
    allowed(url, allowed_hosts, require_https) && allowed(&url.replace('\\', "/"), allowed_hosts, require_https)
}

fn allowed<S: AsRef<str>>(url: &str, allowed_hosts: &[S], require_https: bool) -> bool {
    // `///evil.example` is `//evil.example` to a browser.
    if url.starts_with("///") {
        return false;
    }
    // Browsers strip control characters (tabs, newlines) inside a URL and leading ones.
    if url.chars().any(char::is_control) {
        return false;
    }
    let (scheme, rest) = match url.split_once(':') {
        // A colon before any `/`, `?` or `#` ends a scheme.
        Some((scheme, rest)) if !scheme.contains(['/', '?', '#']) => (Some(scheme.to_ascii_lowercase()), rest),
        _ => (None, url),
    };
    if let Some(scheme) = &scheme {
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return false;
        }
    }
    let netloc = rest.strip_prefix("//").map(|after| after.split(['/', '?', '#']).next().unwrap_or(""));
    // A scheme without an authority (`javascript:alert(1)`, `http:evil`) is never followed here.
    if scheme.is_some() && netloc.is_none() {
        return false;
    }
    if let Some(scheme) = &scheme {
        let ok = if require_https { scheme == "https" } else { scheme == "http" || scheme == "https" };
        if !ok {
            return false;
        }
    }
    match netloc {
        None => true,
        Some(netloc) => {
            // `user:pass@host` is still `host`.
            let host = netloc.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
            !host.is_empty() && allowed_hosts.iter().any(|allowed| allowed.as_ref().eq_ignore_ascii_case(&host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_djangos_allowed_hosts_rules() {
        let allowed = [".localhost", "127.0.0.1", "[::1]", "Example.COM"];
        for ok in ["localhost", "localhost:8000", "app.localhost", "127.0.0.1:1", "[::1]:8000", "[::1]", "example.com."]
        {
            assert!(host_is_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "",
            "evil.test",
            "localhost.evil.test",
            "127.0.0.2",
            "example.com:x",
            "exa mple.com",
            "[::1",
            "[::1]x",
            "local\u{e9}host",
            "example.com@evil",
            "evillocalhost",
        ] {
            assert!(!host_is_allowed(bad, &allowed), "{bad}");
        }
        assert!(host_is_allowed("anything.test:9", &["*"]));
        assert!(!host_is_allowed("bad host", &["*"]), "`*` still needs a valid host");
    }

    #[test]
    fn redirects_stay_on_allowed_hosts() {
        let hosts = ["testserver", "chat.example.com:8443"];
        for ok in [
            "/",
            "/chat/lobby/?x=1",
            "chat/",
            "http://testserver/x",
            "https://testserver",
            "//testserver/a",
            "https://chat.example.com:8443/",
        ] {
            assert!(url_has_allowed_host_and_scheme(ok, &hosts, false), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "\x08//evil.example",
            "http://evil.example",
            "https://testserver@evil.example",
            "javascript:alert(1)",
            "http:evil.example",
            "ftp://testserver/",
            "https://chat.example.com/",
            "http:///evil.example",
        ] {
            assert!(!url_has_allowed_host_and_scheme(bad, &hosts, false), "{bad:?}");
        }
        assert!(!url_has_allowed_host_and_scheme("http://testserver/", &hosts, true));
        assert!(url_has_allowed_host_and_scheme("https://testserver/", &hosts, true));
    }
}
