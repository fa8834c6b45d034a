//! [`CookieMiddleware`](struct@CookieMiddleware) and helpers to set and delete cookies on an HTTP response.

use http::HeaderMap;
use http::HeaderValue;
use http::header::{COOKIE, InvalidHeaderValue, SET_COOKIE};

pub use cookie::{Cookie, SameSite};

use super::{Middleware, Step, Wrapped};
use crate::application::Application;
use crate::error::AppError;
use crate::scope::Scope;

/// Parses the request's `Cookie` headers into `scope.cookies` (Channels' `CookieMiddleware`).
///
/// Malformed pairs are skipped, not fatal; values are percent-decoded; when a name repeats,
/// the first value wins (the most specific path, as browsers order them).
/// `CookieMiddleware(inner)` in a `routing!` table is `CookieMiddleware::new().wrap(inner)`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CookieMiddleware {}

impl CookieMiddleware {
    /// The middleware.
    pub fn new() -> Self {
        CookieMiddleware {}
    }
}

/// `CookieMiddleware(inner)`, spelled as in Channels (and in `routing!` tables).
#[allow(non_snake_case)]
pub fn CookieMiddleware<A: Application>(inner: A) -> Wrapped<CookieMiddleware, A> {
    CookieMiddleware::new().wrap(inner)
}

impl Middleware for CookieMiddleware {
    type State = ();

    async fn prepare(&self, scope: &mut Scope) -> Result<Step, AppError> {
        parse_into(scope);
        Ok(Step::Continue)
    }
}

/// Fills `scope.cookies` from the `Cookie` headers and marks the scope as parsed.
pub(crate) fn parse_into(scope: &mut Scope) {
    for header in scope.headers.get_all(COOKIE) {
        for (name, value) in parse_cookie_header(header.as_bytes()) {
            scope.cookies.entry(name).or_insert(value);
        }
    }
    scope.cookies_parsed = true;
}

/// The `name=value` pairs of one `Cookie` header; malformed pairs are skipped.
pub fn parse_cookies(header: &str) -> impl Iterator<Item = (String, String)> + '_ {
    Cookie::split_parse_encoded(header)
        .filter_map(Result::ok)
        .map(|cookie| (cookie.name().to_owned(), cookie.value().to_owned()))
}

/// The `name=value` pairs of one raw `Cookie` header value, pair by pair: a pair that is not
/// UTF-8 (a raw non-ASCII cookie another app on the host set) is skipped alone, so it cannot
/// hide the session cookie beside it. What [`CookieMiddleware`](struct@CookieMiddleware) reads.
pub fn parse_cookie_header(header: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    header.split(|byte| *byte == b';').filter_map(|pair| std::str::from_utf8(pair).ok()).flat_map(parse_cookies)
}

/// Adds a `Set-Cookie` header for `cookie`, with whatever attributes it carries (Max-Age,
/// Expires, Path, Domain, Secure, HttpOnly, SameSite); name and value are percent-encoded.
///
/// # Errors
/// When an attribute holds a character a header cannot carry.
pub fn set_cookie(headers: &mut HeaderMap, cookie: &Cookie<'_>) -> Result<(), InvalidHeaderValue> {
    headers.append(SET_COOKIE, HeaderValue::from_str(&cookie.encoded().to_string())?);
    Ok(())
}

/// Adds a `Set-Cookie` header that deletes cookie `name` (empty value, `Max-Age=0`, an
/// `Expires` in the past). `path` and `domain` must match the ones it was set with.
///
/// # Errors
/// When `path` or `domain` hold a character a header cannot carry.
pub fn delete_cookie(
    headers: &mut HeaderMap,
    name: &str,
    path: Option<&str>,
    domain: Option<&str>,
) -> Result<(), InvalidHeaderValue> {
    let mut cookie = Cookie::new(name.to_owned(), "");
    if let Some(path) = path {
        cookie.set_path(path.to_owned());
    }
    if let Some(domain) = domain {
        cookie.set_domain(domain.to_owned());
    }
    cookie.make_removal();
    set_cookie(headers, &cookie)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn malformed_pairs_are_skipped() {
        let pairs: Vec<_> = parse_cookies("a=1; ; =x; b=two%20words; c; d=\"q\"").collect();
        assert!(pairs.contains(&("a".into(), "1".into())));
        assert!(pairs.contains(&("b".into(), "two words".into())));
        assert!(!pairs.iter().any(|(name, _)| name.is_empty()));
    }

    #[test]
    fn set_and_delete_carry_every_attribute() {
        let mut headers = HeaderMap::new();
        let mut cookie = Cookie::new("sessionid", "abc");
        cookie.set_path("/");
        cookie.set_domain("example.com");
        cookie.set_secure(true);
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_max_age(cookie::time::Duration::seconds(60));
        set_cookie(&mut headers, &cookie).unwrap();
        delete_cookie(&mut headers, "old", Some("/"), None).unwrap();
        let values: Vec<_> = headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for part in
            ["sessionid=abc", "HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Domain=example.com", "Max-Age=60"]
        {
            assert!(values[0].contains(part), "{part} in {}", values[0]);
        }
        assert!(values[1].starts_with("old=;") && values[1].contains("Max-Age=0"), "{}", values[1]);
    }

    proptest! {
        #[test]
        fn cookie_headers_never_panic(header in any::<String>()) {
            let _ = parse_cookies(&header).count();
        }

        #[test]
        fn raw_cookie_header_bytes_never_panic(header in any::<Vec<u8>>()) {
            let _ = parse_cookie_header(&header).count();
        }
    }

    #[test]
    fn a_non_utf8_pair_costs_only_itself() {
        let header = b"a=1; bad=\xff\xfe; sessionid=abc; c=3";
        let names: Vec<String> = parse_cookie_header(header).map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "sessionid", "c"]);
    }
}
