//! Routing: [`ProtocolTypeRouter`] by protocol, [`URLRouter`] by URL path with [`path`] and
//! [`re_path`] routes.
//!
//! ```
//! use channels::routing::{ProtocolTypeRouter, URLRouter, path, re_path};
//! use channels::application_fn;
//!
//! let chat = application_fn(|_, _, _| async { Ok(()) });
//! let api = application_fn(|_, _, _| async { Ok(()) });
//! let app = ProtocolTypeRouter::new()
//!     .websocket(URLRouter::new(vec![
//!         re_path(r"^ws/chat/(?P<room>\w+)/$", chat),
//!         path("api/", URLRouter::new(vec![path("items/<int:id>/", api)])),
//!     ]));
//! # let _ = app;
//! ```
//!
//! Matching follows Channels: leading `/` are stripped before matching; `path()` patterns match
//! the whole remaining path; `re_path()` patterns are searched like Django's `re.search`, so
//! anchor them with `^...$`. Named groups become `url_route.kwargs`; unnamed groups become
//! `url_route.args` only when there are no named ones. Patterns are compiled once, when the
//! router is built.
//!
//! **Nesting** is decided when the router is built, never probed at run time: [`nest`] (or
//! [`re_nest`]) routes a prefix to a [`Router`] — a [`URLRouter`], or middleware around one —
//! which matches the rest; if it has no match, the outer router tries its next route. A
//! middleware type that cannot route is a compile error there, not a silent 404. `path()` with a
//! bare `URLRouter` nests too, as in Channels; `routing!` writes `nest` for every `[ ... ]`.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

use crate::BoxFuture;
pub use crate::application::Router;
use crate::application::{Application, Inbox, Outbox};
use crate::error::AppError;
use crate::layers::{InMemoryChannelLayer, Layer};
use crate::middleware::AuthConfig;
use crate::scope::{Protocol, Scope};

/// A route pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// `path()` used a converter that does not exist.
    #[error("unknown path converter `{converter}` in {pattern:?}; use one of str, int, slug, uuid, path")]
    UnknownConverter {
        /// The pattern.
        pattern: String,
        /// The converter name.
        converter: String,
    },
    /// A `<...>` placeholder in `path()` is malformed.
    #[error("malformed placeholder in path pattern {pattern:?}: {reason}")]
    Placeholder {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// A `re_path()` regex does not compile.
    #[error("invalid regex {pattern:?}: {reason}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The regex error.
        reason: String,
    },
}

pub use crate::path_grammar::PATH_CONVERTERS;
use crate::path_grammar::{GrammarError, Piece, parse_path};

#[derive(Debug)]
enum Pattern {
    /// A `path()` without placeholders: compared as a string.
    Literal(String),
    /// A `path()` with placeholders, compiled to an anchored regex.
    Path(Regex),
    /// A `re_path()` regex, searched.
    Regex(Regex),
}

/// What one pattern matched.
#[derive(Debug, Default)]
struct Matched {
    /// Bytes of the remaining path consumed by the pattern.
    end: usize,
    args: Vec<String>,
    kwargs: Vec<(String, String)>,
}

impl Pattern {
    fn matches(&self, path: &str, prefix: bool) -> Option<Matched> {
        match self {
            Pattern::Literal(literal) => {
                let hit = if prefix { path.starts_with(literal.as_str()) } else { path == literal };
                hit.then(|| Matched { end: literal.len(), ..Matched::default() })
            }
            Pattern::Path(regex) => {
                let caps = regex.captures(path)?;
                let end = caps.get(0).map_or(0, |m| m.end());
                if !prefix && end != path.len() {
                    return None;
                }
                Some(Matched { end, args: Vec::new(), kwargs: named(regex, &caps) })
            }
            Pattern::Regex(regex) => {
                let caps = regex.captures(path)?;
                let end = caps.get(0).map_or(0, |m| m.end());
                let kwargs = named(regex, &caps);
                let args = if kwargs.is_empty() {
                    caps.iter().skip(1).flatten().map(|m| m.as_str().to_owned()).collect()
                } else {
                    Vec::new()
                };
                Some(Matched { end, args, kwargs })
            }
        }
    }
}

fn named(regex: &Regex, caps: &regex::Captures<'_>) -> Vec<(String, String)> {
    regex
        .capture_names()
        .flatten()
        .filter_map(|name| caps.name(name).map(|m| (name.to_owned(), m.as_str().to_owned())))
        .collect()
}

/// Compiles a `path()` pattern: literal text and `<converter:name>` / `<name>` placeholders
/// (the grammar is [`crate::path_grammar`], which the macros check patterns with too).
fn compile_path(pattern: &str) -> Result<Pattern, RouteError> {
    if !pattern.contains('<') && !pattern.contains('>') {
        return Ok(Pattern::Literal(pattern.to_owned()));
    }
    let pieces = parse_path(pattern).map_err(|err| match err {
        GrammarError::UnknownConverter(converter) => {
            RouteError::UnknownConverter { pattern: pattern.to_owned(), converter }
        }
        other => RouteError::Placeholder { pattern: pattern.to_owned(), reason: other.to_string() },
    })?;
    let mut regex = String::from("^");
    for piece in pieces {
        match piece {
            Piece::Literal(text) => regex.push_str(&regex::escape(text)),
            Piece::Param { name, class } => regex.push_str(&format!("(?P<{name}>{class})")),
        }
    }
    let compiled =
        Regex::new(&regex).map_err(|err| RouteError::Regex { pattern: pattern.to_owned(), reason: err.to_string() })?;
    Ok(Pattern::Path(compiled))
}

/// Where a route leads.
enum Target {
    /// An application that takes the whole remaining path.
    Endpoint(Arc<dyn Application>),
    /// A router for what follows the matched prefix.
    Nested(Arc<dyn Router>),
}

/// One entry of a [`URLRouter`]: a pattern and the application it leads to.
pub struct Route {
    pattern: Pattern,
    source: String,
    target: Target,
    defaults: Vec<(String, String)>,
}

impl Route {
    fn new<A: Application>(pattern: Pattern, source: &str, app: A) -> Route {
        // A bare `URLRouter` nests (Channels' `path("chat/", URLRouter([...]))`); anything else
        // is an endpoint unless given to `nest`.
        let mut app = Some(app);
        let target = match (&mut app as &mut dyn std::any::Any).downcast_mut::<Option<URLRouter>>() {
            Some(router) => router.take().map(|router| Target::Nested(Arc::new(router))),
            None => app.take().map(|app| Target::Endpoint(Arc::new(app))),
        };
        let Some(target) = target else { unreachable!("the app was set just above") };
        Route { pattern, source: source.to_owned(), target, defaults: Vec::new() }
    }

    fn nested(pattern: Pattern, source: &str, router: impl Router) -> Route {
        Route { pattern, source: source.to_owned(), target: Target::Nested(Arc::new(router)), defaults: Vec::new() }
    }

    /// A prefix `path()` pattern leading to `router`, which matches the rest.
    ///
    /// # Errors
    /// [`RouteError`] for an unknown converter or a malformed placeholder.
    pub fn try_nest(pattern: &str, router: impl Router) -> Result<Route, RouteError> {
        Ok(Route::nested(compile_path(pattern)?, pattern, router))
    }

    /// A prefix regex leading to `router`, which matches the rest.
    ///
    /// # Errors
    /// [`RouteError::Regex`] with the regex engine's message.
    pub fn try_re_nest(pattern: &str, router: impl Router) -> Result<Route, RouteError> {
        let regex = Regex::new(pattern)
            .map_err(|err| RouteError::Regex { pattern: pattern.to_owned(), reason: err.to_string() })?;
        Ok(Route::nested(Pattern::Regex(regex), pattern, router))
    }

    /// A Django `path()` route, or an error naming what is wrong with the pattern.
    ///
    /// # Errors
    /// [`RouteError`] for an unknown converter or a malformed placeholder.
    pub fn try_path(pattern: &str, app: impl Application) -> Result<Route, RouteError> {
        Ok(Route::new(compile_path(pattern)?, pattern, app))
    }

    /// A Django `re_path()` route, or an error if the regex does not compile.
    ///
    /// # Errors
    /// [`RouteError::Regex`] with the regex engine's message.
    pub fn try_re_path(pattern: &str, app: impl Application) -> Result<Route, RouteError> {
        let regex = Regex::new(pattern)
            .map_err(|err| RouteError::Regex { pattern: pattern.to_owned(), reason: err.to_string() })?;
        Ok(Route::new(Pattern::Regex(regex), pattern, app))
    }

    /// Adds a default kwarg, as Django's `path(..., kwargs={...})`; captured values win.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.defaults.push((name.into(), value.into()));
        self
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.source
    }

    fn matches(&self, path: &str) -> Option<Matched> {
        match &self.target {
            Target::Endpoint(_) => self.pattern.matches(path, false),
            Target::Nested(router) => {
                let matched = self.pattern.matches(path, true)?;
                router.routes(strip_slashes(&path[matched.end..])).then_some(matched)
            }
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route").field("pattern", &self.source).finish_non_exhaustive()
    }
}

/// A `path()` route: literal text with `<converter:name>` placeholders (`str`, `int`, `slug`,
/// `uuid`, `path`; `<name>` alone is `str`).
///
/// # Panics
/// On an invalid pattern, when the router is built (like `Regex::new(..).unwrap()` in a static).
/// Use [`Route::try_path`] to handle the error, or the `routing!` macro to get it at compile time.
pub fn path(pattern: &str, app: impl Application) -> Route {
    match Route::try_path(pattern, app) {
        Ok(route) => route,
        Err(err) => panic!("{err}"),
    }
}

/// A nested route: the `path()` pattern matches a prefix and `router` the rest (Django's
/// `path("api/", include(...))`). `router` is a [`URLRouter`] or middleware around one; anything
/// else is a compile error.
///
/// # Panics
/// On an invalid pattern, when the router is built. Use [`Route::try_nest`] to handle it.
pub fn nest(pattern: &str, router: impl Router) -> Route {
    match Route::try_nest(pattern, router) {
        Ok(route) => route,
        Err(err) => panic!("{err}"),
    }
}

/// A nested route whose prefix is a regex (see [`nest`]).
///
/// # Panics
/// On an invalid regex, when the router is built. Use [`Route::try_re_nest`] to handle it.
pub fn re_nest(pattern: &str, router: impl Router) -> Route {
    match Route::try_re_nest(pattern, router) {
        Ok(route) => route,
        Err(err) => panic!("{err}"),
    }
}

/// A `re_path()` route: a regex; named groups become kwargs, unnamed ones args.
///
/// # Panics
/// On an invalid regex, when the router is built. Use [`Route::try_re_path`] to handle it.
pub fn re_path(pattern: &str, app: impl Application) -> Route {
    match Route::try_re_path(pattern, app) {
        Ok(route) => route,
        Err(err) => panic!("{err}"),
    }
}

/// Routes a connection by its URL path to the first matching route (Channels' `URLRouter`).
#[derive(Debug)]
#[allow(clippy::upper_case_acronyms)]
pub struct URLRouter {
    routes: Vec<Route>,
}

impl URLRouter {
    /// A router over `routes` (a `Vec`, an array...), tried in order.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        URLRouter { routes: routes.into_iter().collect() }
    }

    /// Adds a route at the end.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    fn find(&self, path: &str) -> Option<(&Route, Matched)> {
        self.routes.iter().find_map(|route| route.matches(path).map(|m| (route, m)))
    }
}

fn strip_slashes(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl Application for URLRouter {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let start = match scope.route_offset {
            Some(offset) => offset as usize,
            // The outermost router: the server's mount point (root_path) is not part of the route.
            None if scope.root_path.is_empty() => 0,
            None if scope.path.starts_with(&scope.root_path) => scope.root_path.len(),
            None => return Box::pin(async move { Err(AppError::NoRoute { path: scope.path }) }),
        };
        let remaining = scope.path.get(start..).unwrap_or("");
        let stripped = strip_slashes(remaining);
        let start = start + (remaining.len() - stripped.len());
        let Some((route, matched)) = self.find(stripped) else {
            let path = stripped.to_owned();
            return Box::pin(async move { Err(AppError::NoRoute { path }) });
        };
        let end = start + matched.end;
        let Ok(offset) = u32::try_from(end) else {
            return Box::pin(async move { Err(AppError::NoRoute { path: scope.path }) });
        };
        if matches!(route.target, Target::Nested(_)) {
            // The prefix goes to root_path; the nested router matches the rest.
            scope.root_path = scope.path[..end].to_owned();
        }
        scope.route_offset = Some(offset);
        scope.url_route.args.extend(matched.args);
        for (name, value) in &route.defaults {
            if !matched.kwargs.iter().any(|(key, _)| key == name) {
                scope.url_route.kwargs.push((name.clone(), value.clone()));
            }
        }
        scope.url_route.kwargs.extend(matched.kwargs);
        match &route.target {
            Target::Endpoint(app) => {
                // The scope lives as long as the connection: no spare room in what routing added.
                scope.url_route.args.shrink_to_fit();
                scope.url_route.kwargs.shrink_to_fit();
                app.call(scope, inbox, outbox)
            }
            Target::Nested(router) => router.call(scope, inbox, outbox),
        }
    }
}

impl Router for URLRouter {
    fn routes(&self, path: &str) -> bool {
        self.find(strip_slashes(path)).is_some()
    }
}

/// Routes a connection by its protocol (Channels' `ProtocolTypeRouter`), and gives every
/// connection the application's channel layer (`scope.channel_layer`).
pub struct ProtocolTypeRouter {
    apps: Vec<(Protocol, Arc<dyn Application>)>,
    layer: Layer,
    /// What [`extension`](Self::extension) gives every scope (shared, not copied).
    extensions: Arc<http::Extensions>,
}

impl Default for ProtocolTypeRouter {
    fn default() -> Self {
        ProtocolTypeRouter {
            apps: Vec::new(),
            layer: InMemoryChannelLayer::new().into_layer(),
            extensions: Arc::default(),
        }
    }
}

impl ProtocolTypeRouter {
    /// An empty router with an in-memory channel layer; add protocols with the builder methods.
    pub fn new() -> Self {
        ProtocolTypeRouter::default()
    }

    /// Uses `layer` as the application's channel layer instead of the in-memory default (e.g. a
    /// `RedisChannelLayer` shared by several server processes).
    pub fn channel_layer(mut self, layer: Layer) -> Self {
        self.layer = layer;
        self
    }

    /// Puts `value` into every connection's scope: app-wide state such as a database pool, a
    /// store shared by all consumers, a client (axum's `Extension`, Channels'
    /// `as_asgi(**kwargs)`). Consumers read it with `self.scope.extensions.get::<T>()`, or get it
    /// in a field with `#[state]` (see [`consumer`](macro@crate::consumer)). Every scope shares
    /// the one value (an idle connection holds no copy); `get_mut` or `remove` through a scope
    /// changes that scope's alone, and `#[state]` takes a clone, so share what must be shared
    /// through an `Arc` (or a type that is one inside, like a pool). A second value of the same
    /// type replaces the first.
    ///
    /// ```
    /// # use channels::ProtocolTypeRouter;
    /// #[derive(Clone)]
    /// struct Votes(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);
    ///
    /// let app = ProtocolTypeRouter::new().extension(Votes(Default::default()));
    /// ```
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        Arc::make_mut(&mut self.extensions).insert(value);
        self
    }

    /// The application's authentication: user backend, session store, keys. Every
    /// `AuthMiddlewareStack` (and `#[auth(stack)]` consumer) under this router uses it.
    /// Sugar for [`extension`](Self::extension) with the finished configuration.
    pub fn auth(self, config: AuthConfig) -> Self {
        self.extension(Arc::new(config.finish()))
    }

    /// A clone of the app-wide value of type `T` given with [`extension`](Self::extension).
    pub(crate) fn extension_value<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.get::<T>().cloned()
    }

    /// The application's channel layer, for code outside consumers (background tasks, other
    /// services) to `group_send` through.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The application for plain HTTP requests.
    pub fn http(self, app: impl Application) -> Self {
        self.protocol(Protocol::Http, app)
    }

    /// The application for WebSocket connections.
    pub fn websocket(self, app: impl Application) -> Self {
        self.protocol(Protocol::Websocket, app)
    }

    /// The application for a [`Worker`](crate::worker::Worker)'s channels (scopes of
    /// [`Protocol::channel`]), usually a [`ChannelNameRouter`].
    pub fn channel(self, app: impl Application) -> Self {
        self.protocol(Protocol::channel(), app)
    }

    /// The application for `protocol` (a custom protocol is named with
    /// [`Protocol::from_name`]). A later call for the same protocol replaces the earlier one.
    pub fn protocol(mut self, protocol: Protocol, app: impl Application) -> Self {
        self.apps.retain(|(known, _)| *known != protocol);
        self.apps.push((protocol, Arc::new(app)));
        self
    }
}

impl fmt::Debug for ProtocolTypeRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.apps.iter().map(|(protocol, _)| protocol.as_str())).finish()
    }
}

impl Application for ProtocolTypeRouter {
    fn call(&self, mut scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        if scope.channel_layer.is_none() {
            scope.channel_layer = Some(self.layer.clone());
        }
        scope.extensions.add_shared(&self.extensions);
        match self.apps.iter().find(|(protocol, _)| *protocol == scope.protocol) {
            Some((_, app)) => app.call(scope, inbox, outbox),
            None => {
                let protocol = scope.protocol.as_str().to_owned();
                Box::pin(async move { Err(AppError::NoProtocol { protocol }) })
            }
        }
    }
}

/// Routes a [`Worker`](crate::worker::Worker)'s scopes by their channel name (Channels'
/// `ChannelNameRouter`): `ChannelNameRouter::new().route("thumbnails", Thumbnails::as_app())`.
/// A channel it has no route for is [`AppError::NoRoute`] (logged by the worker).
#[derive(Default)]
pub struct ChannelNameRouter {
    routes: Vec<(String, Arc<dyn Application>)>,
}

impl ChannelNameRouter {
    /// An empty router.
    pub fn new() -> Self {
        ChannelNameRouter::default()
    }

    /// Routes `channel` to `app` (a later route for the same channel replaces it).
    pub fn route(mut self, channel: impl Into<String>, app: impl Application) -> Self {
        let channel = channel.into();
        self.routes.retain(|(known, _)| *known != channel);
        self.routes.push((channel, Arc::new(app)));
        self
    }

    /// The channels it routes, for [`Worker::new`](crate::worker::Worker::new).
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(channel, _)| channel.as_str())
    }
}

impl fmt::Debug for ChannelNameRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.channels()).finish()
    }
}

impl Application for ChannelNameRouter {
    fn call(&self, scope: Scope, inbox: Inbox, outbox: Outbox) -> BoxFuture<'_, Result<(), AppError>> {
        let channel = scope.channel_name.as_deref().unwrap_or("");
        match self.routes.iter().find(|(known, _)| known == channel) {
            Some((_, app)) => app.call(scope, inbox, outbox),
            None => {
                let path = channel.to_owned();
                Box::pin(async move { Err(AppError::NoRoute { path }) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_converters_compile_to_anchored_regexes() {
        let Pattern::Path(regex) = compile_path("a/<int:id>/<slug:s>/").unwrap() else { panic!() };
        assert_eq!(regex.as_str(), "^a/(?P<id>[0-9]+)/(?P<s>[-a-zA-Z0-9_]+)/");
        assert!(matches!(compile_path("plain/"), Ok(Pattern::Literal(_))));
    }

    #[test]
    fn bad_path_patterns_are_errors() {
        assert!(matches!(compile_path("a/<float:x>/"), Err(RouteError::UnknownConverter { .. })));
        assert!(matches!(compile_path("a/<int:x/"), Err(RouteError::Placeholder { .. })));
        assert!(matches!(compile_path("a/<int:1x>/"), Err(RouteError::Placeholder { .. })));
        assert!(matches!(compile_path("a/<x>/<x>/"), Err(RouteError::Placeholder { .. })));
        assert!(matches!(compile_path("a/x>/"), Err(RouteError::Placeholder { .. })));
    }

    #[test]
    fn re_path_searches_like_django() {
        let pattern = Pattern::Regex(Regex::new("bar").unwrap());
        assert!(pattern.matches("foo/bar/", false).is_some());
        let anchored = Pattern::Regex(Regex::new(r"^a/(\d+)/(?P<n>\w+)/$").unwrap());
        let m = anchored.matches("a/1/x/", false).unwrap();
        assert!(m.args.is_empty(), "positional groups are dropped when named ones exist");
        assert_eq!(m.kwargs, vec![("n".to_owned(), "x".to_owned())]);
        let unnamed = Pattern::Regex(Regex::new(r"^a/(\d+)/(\w+)/$").unwrap());
        assert_eq!(unnamed.matches("a/1/x/", false).unwrap().args, vec!["1", "x"]);
    }
}
