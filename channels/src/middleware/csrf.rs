//! [`CsrfMiddleware`](struct@CsrfMiddleware) (cross-site request forgery) and
//! [`SecurityHeaders`](struct@SecurityHeaders) (Django's `SecurityMiddleware` and
//! `XFrameOptionsMiddleware` defaults) for HTTP consumers.
//!
//! **CSRF, the choice made here.** Django checks a secret token in every unsafe form post. This
//! middleware checks where the request comes from instead, with the headers every current
//! browser sends and no page can forge: `Sec-Fetch-Site` (sent on every request) and `Origin`
//! (sent on every cross-origin request and every `POST`). It is what Go's
//! `http.CrossOriginProtection` does, and needs no token in the forms:
//!
//! 1. `GET`, `HEAD`, `OPTIONS` and `TRACE` pass (they must not change anything).
//! 2. With `Sec-Fetch-Site`: `same-origin` and `none` (the user typed the address or used a
//!    bookmark) pass; `same-site` and `cross-site` are refused unless the `Origin` is trusted.
//! 3. Without it (an older browser): a request whose `Origin` names this host (the `Host`
//!    header), or a trusted origin, passes; another `Origin` is refused.
//! 4. Neither header: not a browser (curl, a service), which no other site can drive: passes.
//!
//! A refused request gets `403` and never reaches the application (nor its session). Trusted
//! origins are Django's `CSRF_TRUSTED_ORIGINS`: `"https://app.example.com"`, or
//! `"https://*.example.com"` for subdomains. WebSocket handshakes pass through; check their
//! `Origin` with [`OriginValidator`](struct@crate::middleware::OriginValidator).

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Middleware, Refusal, Step, Wrapped};
use crate::application::Application;
use crate::error::AppError;
use crate::event::ResponseStart;
use crate::scope::{Protocol, Scope};

/// Refuses cross-site unsafe HTTP requests (see the [module docs](self)).
///
/// `CsrfMiddleware(inner)` in a `routing!` table is `CsrfMiddleware::new().wrap(inner)`.
#[derive(Debug, Clone, Default)]
pub struct CsrfMiddleware {
    trusted: Vec<String>,
}

impl CsrfMiddleware {
    /// Only same-origin unsafe requests pass.
    pub fn new() -> Self {
        CsrfMiddleware { trusted: Vec::new() }
    }

    /// Also trusts these origins (`"https://app.example.com"`, `"https://*.example.com"`).
    #[must_use]
    pub fn trusted_origins<S: AsRef<str>>(mut self, origins: impl IntoIterator<Item = S>) -> Self {
        self.trusted.extend(origins.into_iter().map(|origin| origin.as_ref().to_ascii_lowercase()));
        self
    }

    /// True when a request with these headers may change something (see the module docs).
    pub fn allows(&self, method: &Method, headers: &HeaderMap) -> bool {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE) {
            return true;
        }
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let origin = header("origin").map(str::to_ascii_lowercase);
        let trusted = origin.as_deref().is_some_and(|origin| self.is_trusted(origin));
        match header("sec-fetch-site") {
            Some(site) if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") => true,
            Some(_) => trusted,
            None => match &origin {
                None => true,
                Some(origin) => {
                    trusted
                        || header("host").is_some_and(|host| origin_host(origin) == Some(&host.to_ascii_lowercase()))
                }
            },
        }
    }

    fn is_trusted(&self, origin: &str) -> bool {
        self.trusted.iter().any(|pattern| match pattern.split_once("://*.") {
            Some((scheme, domain)) => origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host == domain || host.ends_with(&format!(".{domain}"))),
            None => pattern == origin,
        })
    }
}

/// `host[:port]` of an origin (`scheme://host[:port]`).
fn origin_host(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, host)| host).filter(|host| !host.is_empty() && !host.contains('/'))
}

/// `CsrfMiddleware(inner)`, spelled as a function for `routing!` tables.
#[allow(non_snake_case)]
pub fn CsrfMiddleware<A: Application>(inner: A) -> Wrapped<CsrfMiddleware, A> {
    CsrfMiddleware::new().wrap(inner)
}

const REFUSED: &str = "Forbidden (CSRF check failed: a cross-site request may not change anything here).";

impl Middleware for CsrfMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        if scope.protocol != Protocol::Http || self.allows(&scope.method, &scope.headers) {
            return Ok(Step::Continue);
        }
        tracing::debug!(
            origin = scope.header("origin").unwrap_or("<none>"),
            site = scope.header("sec-fetch-site").unwrap_or("<none>"),
            "cross-site request refused (CSRF)"
        );
        Ok(Step::Refuse(Refusal::forbidden(REFUSED)))
    }
}

/// Adds the response headers Django's `SecurityMiddleware` and `XFrameOptionsMiddleware` add by
/// default, to every HTTP response that does not set them itself: `X-Frame-Options: DENY`
/// (no framing: clickjacking), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`
/// and `Cross-Origin-Opener-Policy: same-origin`. Replace or add headers with
/// [`header`](Self::header).
///
/// `SecurityHeaders(inner)` in a `routing!` table is `SecurityHeaders::new().wrap(inner)`.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        SecurityHeaders::new()
    }
}

impl SecurityHeaders {
    /// Django's defaults.
    pub fn new() -> Self {
        let headers = [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("cross-origin-opener-policy", "same-origin"),
        ]
        .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value)));
        SecurityHeaders { headers: headers.to_vec() }
    }

    /// Sets `name` to `value` on every response that has no `name` of its own (replacing a
    /// default of the same name), e.g. `Strict-Transport-Security` or `Content-Security-Policy`.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.retain(|(known, _)| *known != name);
        self.headers.push((name, value));
        self
    }
}

/// `SecurityHeaders(inner)`, spelled as a function for `routing!` tables.
#[allow(non_snake_case)]
pub fn SecurityHeaders<A: Application>(inner: A) -> Wrapped<SecurityHeaders, A> {
    SecurityHeaders::new().wrap(inner)
}

impl Middleware for SecurityHeaders {
    type State = ();

    async fn prepare(&self, _scope: &mut Scope) -> Result<Step, AppError> {
        Ok(Step::Watch(()))
    }

    async fn response_start(&self, _state: &mut (), start: &mut ResponseStart) -> Result<(), Refusal> {
        for (name, value) in &self.headers {
            if !start.headers.contains_key(name) {
                start.headers.insert(name.clone(), value.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csrf(trusted: &[&str]) -> CsrfMiddleware {
        CsrfMiddleware::new().trusted_origins(trusted.iter().copied())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn cross_site_unsafe_requests_are_refused() {
        let csrf = csrf(&["https://partner.example", "https://*.corp.example"]);
        let post = Method::POST;
        assert!(csrf.allows(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])));
        assert!(csrf.allows(&post, &headers(&[("sec-fetch-site", "same-origin")])));
        assert!(csrf.allows(&post, &headers(&[("sec-fetch-site", "none")])));
        assert!(!csrf.allows(&post, &headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")])));
        assert!(!csrf.allows(&post, &headers(&[("sec-fetch-site", "same-site"), ("origin", "https://a.example")])));
        assert!(
            csrf.allows(&post, &headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://partner.example")]))
        );
        assert!(
            csrf.allows(&post, &headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://x.corp.example")]))
        );
        assert!(
            !csrf.allows(&post, &headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://corp.example.evil")]))
        );
        // Older browsers: Origin against Host.
        assert!(csrf.allows(&post, &headers(&[("origin", "http://chat.test:8000"), ("host", "chat.test:8000")])));
        assert!(!csrf.allows(&post, &headers(&[("origin", "http://evil.test"), ("host", "chat.test:8000")])));
        assert!(!csrf.allows(&post, &headers(&[("origin", "null"), ("host", "chat.test")])));
        // Not a browser.
        assert!(csrf.allows(&post, &HeaderMap::new()));
        assert!(!csrf.allows(&Method::DELETE, &headers(&[("sec-fetch-site", "cross-site")])));
    }
}
