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

/// Typed values attached to a [`Scope`], one per type (as [`http::Extensions`]).
///
/// The application's values, given once to
/// [`ProtocolTypeRouter::extension`](crate::ProtocolTypeRouter::extension), are shared by every
/// scope instead of being copied into each (an idle socket would carry a map and a copy of every
/// value); values inserted into a scope are its own and shadow the application's of the same
/// type. Changing or removing a shared value through one scope leaves the other scopes' alone.
///
/// ```
/// use channels::scope::Extensions;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Tenant(&'static str);
///
/// let mut extensions = Extensions::new();
/// assert_eq!(extensions.insert(Tenant("acme")), None);
/// assert_eq!(extensions.get::<Tenant>(), Some(&Tenant("acme")));
/// assert_eq!(extensions.remove::<Tenant>(), Some(Tenant("acme")));
/// assert!(extensions.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    /// This scope's own values.
    own: http::Extensions,
    /// The application's, shared; `own` shadows them.
    app: Option<Arc<http::Extensions>>,
}

impl Extensions {
    /// No values.
    pub fn new() -> Self {
        Extensions::default()
    }

    /// The value of type `T`, if there is one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.own.get().or_else(|| self.app.as_deref()?.get())
    }

    /// The value of type `T`, to change in this scope only.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        if self.own.get::<T>().is_none() && self.shares::<T>() {
            self.detach();
        }
        self.own.get_mut()
    }

    /// Puts `value` in, returning the value of its type it replaces.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        let replaced = self.own.insert(value);
        replaced.or_else(|| self.app.as_deref()?.get::<T>().cloned())
    }

    /// Takes the value of type `T` out.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        if self.shares::<T>() {
            self.detach();
        }
        self.own.remove()
    }

    /// True when there is a value of type `T`.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.get::<T>().is_some()
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.own.clear();
        self.app = None;
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.app.as_deref().is_none_or(http::Extensions::is_empty)
    }

    /// Adds the application's values (`app`), which replace this scope's of the same types.
    /// The common case, a scope with no values yet, shares `app` instead of copying it.
    pub(crate) fn add_shared(&mut self, app: &Arc<http::Extensions>) {
        if app.is_empty() {
            return;
        }
        if self.is_empty() {
            self.app = Some(Arc::clone(app));
        } else {
            self.detach();
            self.own.extend(http::Extensions::clone(app));
        }
    }

    fn shares<T: Send + Sync + 'static>(&self) -> bool {
        self.app.as_deref().is_some_and(|app| app.get::<T>().is_some())
    }

    /// Copies the shared values into this scope's own (which keep precedence).
    fn detach(&mut self) {
        if let Some(app) = self.app.take() {
            let own = std::mem::replace(&mut self.own, http::Extensions::clone(&app));
            self.own.extend(own);
        }
    }
}

impl From<http::Extensions> for Extensions {
    fn from(own: http::Extensions) -> Self {
        Extensions { own, app: None }
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("own", &self.own).field("app", &self.app).finish()
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
    /// Typed values: the application's (from
    /// [`ProtocolTypeRouter::extension`](crate::ProtocolTypeRouter::extension), shared by every
    /// connection) and the ones custom middleware attaches for the consumer.
    pub extensions: Extensions,
    /// The application's channel layer, set by the `ProtocolTypeRouter` (see
    /// [`layer`](Self::layer)).
    pub channel_layer: Option<Layer>,
    /// This consumer's own channel on the layer (Channels' `self.channel_name`): set when the
    /// consumer receives channel-layer messages, which `#[consumer]` consumers with handlers
    /// or groups do.
    pub channel_name: Option<String>,
    /// Where in `path` the next URL router starts matching; `None` before the outermost router.
    /// (`u32`: 8 bytes less in every scope; a router refuses a longer path.)
    pub(crate) route_offset: Option<u32>,
    /// The `Cookie` headers were parsed into `cookies` (by `CookieMiddleware`), so that
    /// `SessionMiddleware` can tell "no cookies" from "no `CookieMiddleware`". A field, not a
    /// marker in `extensions`: the map would grow to its next size in every scope.
    pub(crate) cookies_parsed: bool,
    /// An `AuthMiddleware` resolved `user` (see [`user_resolved`](Self::user_resolved)).
    pub(crate) user_resolved: bool,
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
            extensions: Extensions::new(),
            channel_layer: None,
            channel_name: None,
            route_offset: None,
            cookies_parsed: false,
            user_resolved: false,
        }
    }

    /// True once an [`AuthMiddleware`](struct@crate::middleware::AuthMiddleware) has resolved
    /// `user` (anonymous or not): a `#[auth(stack, required)]` consumer tells "anonymous" from
    /// "no auth stack" with it.
    pub fn user_resolved(&self) -> bool {
        self.user_resolved
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
        self.path.get(self.route_offset.map_or(0, |offset| offset as usize)..).unwrap_or("")
    }
}

/// Percent-decodes, replacing invalid UTF-8 with U+FFFD rather than failing.
pub(crate) fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Pool(u32);
    #[derive(Clone, Debug, PartialEq)]
    struct Tag(&'static str);

    fn app_values() -> Arc<http::Extensions> {
        let mut app = http::Extensions::new();
        app.insert(Pool(1));
        app.insert(Tag("app"));
        Arc::new(app)
    }

    #[test]
    fn a_scope_shares_the_applications_values_and_its_own_shadow_them() {
        let app = app_values();
        let mut first = Extensions::new();
        first.add_shared(&app);
        let mut second = first.clone();
        assert!(first.app.as_ref().is_some_and(|shared| Arc::ptr_eq(shared, &app)), "shared, not copied");
        assert_eq!(first.get::<Pool>(), Some(&Pool(1)));
        assert!(first.contains::<Tag>() && !first.contains::<String>());

        // Inserting over a shared value shadows it and hands back the shared one.
        assert_eq!(first.insert(Tag("own")), Some(Tag("app")));
        assert_eq!(first.get::<Tag>(), Some(&Tag("own")));
        // Changing or removing a shared value through one scope leaves the others alone.
        first.get_mut::<Pool>().expect("shared pool").0 = 2;
        assert_eq!(first.get::<Pool>(), Some(&Pool(2)));
        assert_eq!(second.remove::<Pool>(), Some(Pool(1)));
        assert_eq!(second.get::<Pool>(), None);
        assert_eq!(second.get::<Tag>(), Some(&Tag("app")), "the others stay");
        assert_eq!(app.get::<Pool>(), Some(&Pool(1)));
        assert_eq!(first.get::<Tag>(), Some(&Tag("own")), "its own value outlived the copy");

        second.clear();
        assert!(second.is_empty() && second.get::<Tag>().is_none());
        assert_eq!(app.get::<Tag>(), Some(&Tag("app")));
    }

    #[test]
    fn the_applications_values_replace_a_scopes_values_of_their_types() {
        // As inserting them did: a scope preset by a test keeps what the router does not set.
        let mut extensions = Extensions::new();
        extensions.insert(Tag("preset"));
        extensions.insert(7u8);
        extensions.add_shared(&app_values());
        assert_eq!(extensions.get::<Tag>(), Some(&Tag("app")));
        assert_eq!(extensions.get::<u8>(), Some(&7));
        assert_eq!(extensions.get::<Pool>(), Some(&Pool(1)));
        // An application without values leaves an empty scope empty.
        let mut empty = Extensions::new();
        empty.add_shared(&Arc::default());
        assert!(empty.is_empty() && empty.app.is_none());
    }

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
