//! The connection scope: everything known about one connection when it opens.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::layers::{Layer, LayerError};
use http::{HeaderMap, Method, Version};

/// The protocol of a connection; [`ProtocolTypeRouter`](crate::ProtocolTypeRouter) dispatches on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP (`"http"`).
    Http,
    /// WebSocket (`"websocket"`).
    Websocket,
    /// Any other protocol, by name (`"chat"`, `"mqtt"`...).
    Custom(Cow<'static, str>),
}

impl Protocol {
    /// The protocol's name as Channels spells it: `"http"`, `"websocket"` or the custom name.
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Http => "http",
            Protocol::Websocket => "websocket",
            Protocol::Custom(name) => name,
        }
    }

    /// The protocol of a [`Worker`](crate::worker::Worker)'s scopes: `"channel"` (Channels'
    /// scope type for `ChannelNameRouter`).
    pub fn channel() -> Self {
        Protocol::Custom(Cow::Borrowed("channel"))
    }

    /// True for [`Protocol::channel`].
    pub fn is_channel(&self) -> bool {
        self.as_str() == "channel"
    }

    /// Parses a protocol name; anything but `http` and `websocket` is a custom protocol.
    pub fn from_name(name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        match &*name {
            "http" => Protocol::Http,
            "websocket" => Protocol::Websocket,
            _ => Protocol::Custom(name),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the URL routers captured: positional `args` and named `kwargs`, accumulated across
/// nested routers (Channels' `scope["url_route"]`).
///
/// Values are the matched strings; parse them with [`UrlRoute::parse`] or `str::parse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlRoute {
    /// Unnamed regex groups, in order (only filled when a pattern has no named groups).
    pub args: Vec<String>,
    /// Named captures (`<int:id>` in `path()`, `(?P<id>...)` in `re_path()`), in capture order.
    pub kwargs: Vec<(String, String)>,
}

impl UrlRoute {
    /// The named capture `name`, if the route captured it.
    pub fn kwarg(&self, name: &str) -> Option<&str> {
        // Later (inner) routers override earlier ones, as in Channels' `{**outer, **inner}`.
        self.kwargs.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Parses the named capture `name` with `FromStr`.
    ///
    /// # Errors
    /// [`UrlParamError::Missing`] when the route has no such capture, [`UrlParamError::Invalid`]
    /// when the value does not parse.
    pub fn parse<T>(&self, name: &str) -> Result<T, UrlParamError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.kwarg(name).ok_or_else(|| UrlParamError::Missing { name: name.to_owned() })?;
        raw.parse().map_err(|err: T::Err| UrlParamError::Invalid {
            name: name.to_owned(),
            value: raw.to_owned(),
            reason: err.to_string(),
        })
    }
}

/// A URL parameter could not be read from [`UrlRoute`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlParamError {
    /// The route did not capture a parameter of that name.
    #[error("the route captured no URL parameter named `{name}`")]
    Missing {
        /// Parameter name.
        name: String,
    },
    /// The captured text did not parse as the field's type.
    #[error("URL parameter `{name}` = {value:?} is invalid: {reason}")]
    Invalid {
        /// Parameter name.
        name: String,
        /// What the URL contained.
        value: String,
        /// The parse error.
        reason: String,
    },
}

/// The user of a connection: anonymous, or the application's own user value.
///
/// `AuthMiddleware` fills `scope.user` before the consumer runs; until then (or without it) the
/// user is anonymous. The app's user type is reached with [`User::downcast_ref`], no casts.
#[derive(Clone, Default)]
pub struct User {
    inner: Option<Arc<dyn Any + Send + Sync>>,
    id: Option<Arc<str>>,
}

impl User {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        User { inner: None, id: None }
    }

    /// An authenticated user holding the application's user value.
    pub fn authenticated<U: Any + Send + Sync>(user: U) -> Self {
        User { inner: Some(Arc::new(user)), id: None }
    }

    /// An authenticated user with its id (as `AuthMiddleware` makes them).
    pub fn with_id<U: Any + Send + Sync>(id: impl Into<Arc<str>>, user: U) -> Self {
        User { inner: Some(Arc::new(user)), id: Some(id.into()) }
    }

    /// The user's id, when known (users loaded by `AuthMiddleware` have one), e.g. for
    /// [`user_group`](crate::layers::user_group).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// An authenticated user from a shared value.
    pub fn from_arc(user: Arc<dyn Any + Send + Sync>) -> Self {
        User { inner: Some(user), id: None }
    }

    /// True for a logged-in user.
    pub fn is_authenticated(&self) -> bool {
        self.inner.is_some()
    }

    /// True for the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.inner.is_none()
    }

    /// The application's user value, if the user is authenticated and of type `U`.
    pub fn downcast_ref<U: Any>(&self) -> Option<&U> {
        self.inner.as_deref().and_then(|user| user.downcast_ref())
    }

    /// The shared user value, if authenticated.
    pub fn as_arc(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.inner.as_ref()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_authenticated() { "User(authenticated)" } else { "User(anonymous)" })
    }
}

/// Everything known about one connection when it opens (Channels' `scope` dict, typed).
///
/// The server builds it from the HTTP request; routers and middleware add to it on the way in
/// (`url_route`, `root_path`, `cookies`, `user`, `extensions`), and the consumer owns it.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `Http`, `Websocket` or a custom protocol.
    pub protocol: Protocol,
    /// HTTP version of the request.
    pub http_version: Version,
    /// `http`/`https` for HTTP, `ws`/`wss` for WebSocket (from `X-Forwarded-Proto` when the
    /// server trusts proxy headers).
    pub scheme: Cow<'static, str>,
    /// Request method (`GET` for a WebSocket handshake).
    pub method: Method,
    /// The path, percent-decoded (`/foo%20bar` is `/foo bar`).
    pub path: String,
    /// The path as sent, still percent-encoded, without the query.
    pub raw_path: String,
    /// The prefix of `path` that routers (or the server's mount point) have consumed:
    /// `path` always starts with `root_path`.
    pub root_path: String,
    /// The raw query string, still percent-encoded, without the `?`.
    pub query_string: String,
    /// Request headers (names are lowercase).
    ///
    /// A WebSocket's leave out the handshake's own, which the server answered and which mean
    /// nothing once the socket is open: `Connection`, `Upgrade`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version` and `Sec-WebSocket-Extensions` (daphne keeps them; here they
    /// would cost every open socket ~0.5 KB). `Sec-WebSocket-Protocol` stays, and is parsed
    /// into [`subprotocols`](Self::subprotocols).
    pub headers: HeaderMap,
    /// The client's address (from `X-Forwarded-For` when the server trusts proxy headers).
    pub client: Option<SocketAddr>,
    /// The server's address the client connected to.
    pub server: Option<SocketAddr>,
    /// Subprotocols the WebSocket client offered, in its order.
    pub subprotocols: Vec<String>,
    /// Cookies sent by the client, filled by `CookieMiddleware`.
    pub cookies: HashMap<String, String>,
    /// The connection's session, filled by `SessionMiddleware` (`None` without it).
    pub session: Option<crate::session::Session>,
    /// The connection's user, filled by `AuthMiddleware`; anonymous until then.
    pub user: User,
    /// What the URL routers captured.
    pub url_route: UrlRoute,
    /// Typed values that custom middleware attaches for the consumer.
    pub extensions: http::Extensions,
    /// The application's channel layer, set by the `ProtocolTypeRouter` (see
    /// [`layer`](Self::layer)).
    pub channel_layer: Option<Layer>,
    /// This consumer's own channel on the layer (Channels' `self.channel_name`): set when the
    /// consumer receives channel-layer messages, which `#[consumer]` consumers with handlers
    /// or groups do.
    pub channel_name: Option<String>,
    /// Where in `path` the next URL router starts matching; `None` before the outermost router.
    pub(crate) route_offset: Option<usize>,
    /// The `Cookie` headers were parsed into `cookies` (by `CookieMiddleware`), so that
    /// `SessionMiddleware` can tell "no cookies" from "no `CookieMiddleware`". A field, not a
    /// marker in `extensions`: the map would grow to its next size in every scope.
    pub(crate) cookies_parsed: bool,
}

impl Scope {
    /// A scope for `protocol` and `path` (percent-decoded here; the query string, if any,
    /// is split off into `query_string`), with every other field empty.
    ///
    /// The server and the test communicators build scopes with this, then fill in the rest.
    pub fn new(protocol: Protocol, path_and_query: &str) -> Self {
        let (raw_path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        let scheme = match protocol {
            Protocol::Websocket => "ws",
            _ => "http",
        };
        Scope {
            protocol,
            http_version: Version::HTTP_11,
            scheme: Cow::Borrowed(scheme),
            method: Method::GET,
            path: percent_decode(raw_path),
            raw_path: raw_path.to_owned(),
            root_path: String::new(),
            query_string: query.to_owned(),
            headers: HeaderMap::new(),
            client: None,
            server: None,
            subprotocols: Vec::new(),
            cookies: HashMap::new(),
            session: None,
            user: User::anonymous(),
            url_route: UrlRoute::default(),
            extensions: http::Extensions::new(),
            channel_layer: None,
            channel_name: None,
            route_offset: None,
            cookies_parsed: false,
        }
    }

    /// The first value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The query string's `key=value` pairs, percent-decoded (`+` is a space).
    pub fn query_pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.query_string.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&key.replace('+', " ")), percent_decode(&value.replace('+', " ")))
        })
    }

    /// The channel layer, to `send`, `group_send`, `group_add`... from a consumer.
    ///
    /// # Errors
    /// [`LayerError::NoLayer`] when the application is not served through a
    /// `ProtocolTypeRouter` (which always provides one).
    pub fn layer(&self) -> Result<&Layer, LayerError> {
        self.channel_layer.as_ref().ok_or(LayerError::NoLayer)
    }

    /// The part of `path` that the next URL router matches (after `root_path`).
    pub fn path_remaining(&self) -> &str {
        self.path.get(self.route_offset.unwrap_or(0)..).unwrap_or("")
    }
}

/// Percent-decodes, replacing invalid UTF-8 with U+FFFD rather than failing.
pub(crate) fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_scope_splits_query_and_decodes_path() {
        let scope = Scope::new(Protocol::Websocket, "/ws/a%20b/?x=1&y=two%21");
        assert_eq!(scope.path, "/ws/a b/");
        assert_eq!(scope.raw_path, "/ws/a%20b/");
        assert_eq!(scope.query_string, "x=1&y=two%21");
        assert_eq!(scope.scheme, "ws");
        let pairs: Vec<_> = scope.query_pairs().collect();
        assert_eq!(pairs, vec![("x".into(), "1".into()), ("y".into(), "two!".into())]);
    }

    #[test]
    fn url_route_parse_reports_missing_and_invalid() {
        let route = UrlRoute { args: vec![], kwargs: vec![("id".into(), "12x".into())] };
        assert!(matches!(route.parse::<u32>("id"), Err(UrlParamError::Invalid { .. })));
        assert!(matches!(route.parse::<u32>("nope"), Err(UrlParamError::Missing { .. })));
        assert_eq!(route.parse::<String>("id").unwrap(), "12x");
    }

    #[test]
    fn user_downcasts_to_the_app_type() {
        struct MyUser {
            name: &'static str,
        }
        let user = User::authenticated(MyUser { name: "alice" });
        assert!(user.is_authenticated());
        assert_eq!(user.downcast_ref::<MyUser>().map(|u| u.name), Some("alice"));
        assert!(user.downcast_ref::<String>().is_none());
        assert!(User::anonymous().downcast_ref::<MyUser>().is_none());
    }

    #[test]
    fn protocol_names_round_trip() {
        assert_eq!(Protocol::from_name("http"), Protocol::Http);
        assert_eq!(Protocol::from_name("websocket"), Protocol::Websocket);
        assert_eq!(Protocol::from_name("chat").as_str(), "chat");
    }
}
