//! The Redis connections of the channel layer and the session store: one server named by a
//! `redis://` URL, the master that Redis Sentinel names (`redis+sentinel://`), followed across
//! failovers, or a Redis Cluster (`redis+cluster://`), whose client routes each command to the
//! master of its key's slot and follows slot moves and failovers itself; and one retry for a
//! command whose connection turned out to be broken.
//!
//! After a Redis restart the connection manager still holds the dead connection: the first
//! command fails on it, and the manager reconnects. Without a retry, that first command is a
//! user's failed login or refused handshake. The retry happens only for errors of a connection
//! that was dropped or refused, where the command almost surely never ran, and for writes a
//! demoted master refused (`READONLY`, which never ran); if Redis died while running a command,
//! a retried send may be delivered twice (at-most-once turns into at-least-once for that one
//! message).
//!
//! With Sentinel, a failover moves the master: the old one is dead (connections fail) or comes
//! back as a replica (writes fail with `READONLY`). Either error makes the [`Node`] ask the
//! sentinels for the master again and reconnect there, before its one retry.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, RedisError, RedisFuture, RedisResult};

/// True for errors of a dropped or refused connection, where a retry may succeed. Not a
/// timeout: a command that timed out may have run.
pub(crate) fn is_broken_connection(err: &RedisError) -> bool {
    (err.is_io_error() && !err.is_timeout()) || err.is_connection_dropped() || err.is_connection_refusal()
}

/// True for a Redis Cluster error that says the command did not run (its slot is elsewhere,
/// moving, or without a master for now): sending it again cannot run it twice.
pub(crate) fn did_not_run(err: &RedisError) -> bool {
    matches!(err.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}

/// True for a write refused by a replica: the master it was sent to has been demoted.
fn is_read_only(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
}

/// How long asking the sentinels for the master may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a command may take while an outage is known (see [`Node::attempt`]).
const OUTAGE_PROBE: Duration = Duration::from_secs(1);

/// Default port of a sentinel named without one.
const SENTINEL_PORT: u16 = 26379;

/// One Redis master (a fixed server, or the one Sentinel names), or a Redis Cluster.
pub(crate) struct Node {
    /// The URL without its password, for logs.
    name: String,
    sentinel: Option<tokio::sync::Mutex<Lookup>>,
    /// With Redis Cluster: its seed nodes, for dedicated connections.
    cluster: Option<Vec<ConnectionInfo>>,
    /// With Redis Cluster: a connection that never sends a command twice by itself (see
    /// [`once`](Node::once)).
    once: Option<ClusterConnection>,
    /// The runtime the node was made on: connections made later (following a moved master)
    /// are made there, so that they outlive the task (and runtime) that noticed the move.
    runtime: tokio::runtime::Handle,
    timeouts: Timeouts,
    current: Mutex<Current>,
    /// False while an outage is known (the channel layer's watch task sets it): commands then
    /// get [`OUTAGE_PROBE`] instead of the response timeout, so that handshakes and sends
    /// during an outage fail soon (and do not pile up), while a Redis that came back answers.
    reachable: AtomicBool,
}

/// The sentinels, and when they were last asked.
struct Lookup {
    client: SentinelClient,
    last: Option<std::time::Instant>,
}

#[derive(Clone)]
struct Current {
    /// The server's (or Sentinel's master's) client; none for a cluster.
    client: Option<Client>,
    commands: Commands,
}

/// How long connecting and a command may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connection: Duration,
    pub(crate) response: Duration,
}

/// A connection commands are sent on: one server's (shared, reconnecting by itself, or
/// dedicated to blocking commands), or a cluster's (routing each command by its key's slot).
#[derive(Clone)]
pub(crate) enum Commands {
    Manager(ConnectionManager),
    Dedicated(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Commands::Manager(connection) => connection.req_packed_command(cmd),
            Commands::Dedicated(connection) => connection.req_packed_command(cmd),
            Commands::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Commands::Manager(connection) => connection.req_packed_commands(pipeline, offset, count),
            Commands::Dedicated(connection) => connection.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Manager(connection) => connection.get_db(),
            Commands::Dedicated(connection) => connection.get_db(),
            Commands::Cluster(connection) => connection.get_db(),
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Node {
    /// Connects to `url`: `redis://…` (one server),
    /// `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/<master name>[/<db>][?sentinel_password=…]`
    /// (the master the sentinels name; the credentials and database are the master's) or
    /// `redis+cluster://[[user]:password@]host:port[,host:port…]` (a Redis Cluster, found from
    /// any of these nodes).
    pub(crate) async fn connect(url: &str, timeouts: Timeouts) -> RedisResult<Node> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let seeds = cluster_seeds(rest)?;
            let commands =
                cluster_client(&seeds, Some(timeouts.response), timeouts, None)?.get_async_connection().await?;
            let once =
                cluster_client(&seeds, Some(timeouts.response), timeouts, Some(0))?.get_async_connection().await?;
            return Ok(Node {
                name: without_password(url),
                sentinel: None,
                cluster: Some(seeds),
                once: Some(once),
                runtime: tokio::runtime::Handle::current(),
                timeouts,
                current: Mutex::new(Current { client: None, commands: Commands::Cluster(commands) }),
                reachable: AtomicBool::new(true),
            });
        }
        let (name, mut sentinel) = match url.strip_prefix("redis+sentinel://") {
            Some(rest) => {
                let (name, client) = sentinel_client(rest)?;
                (name, Some(client))
            }
            None => (without_password(url), None),
        };
        let client = match &mut sentinel {
            Some(sentinel) => resolve(sentinel).await?,
            None => Client::open(url)?,
        };
        let commands = ConnectionManager::new_with_config(client.clone(), manager_config(timeouts)).await?;
        Ok(Node {
            name,
            sentinel: sentinel.map(|client| tokio::sync::Mutex::new(Lookup { client, last: None })),
            cluster: None,
            once: None,
            runtime: tokio::runtime::Handle::current(),
            timeouts,
            current: Mutex::new(Current { client: Some(client), commands: Commands::Manager(commands) }),
            reachable: AtomicBool::new(true),
        })
    }

    /// The URL this node was made from, without its password.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// False while an outage is known.
    pub(crate) fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records an outage (false) or its end.
    pub(crate) fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    /// The error of a command refused because an outage is known.
    pub(crate) fn unreachable(&self) -> RedisError {
        // `TimedOut`: never retried, since the command given up on may still run.
        RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("Redis ({}) is unreachable; the connection is being retried", self.name),
        ))
    }

    /// True when Sentinel names the master.
    pub(crate) fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// True for a Redis Cluster: keys live on the masters of their slots, and a command (a
    /// script, a pipeline) may only touch keys of one slot.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The command connection (cheap to clone; reconnects by itself).
    pub(crate) fn commands(&self) -> Commands {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).commands.clone()
    }

    /// The connection for a command that must not run twice (a history append). The cluster
    /// client retries a command by itself when its connection drops, though it may have run:
    /// this connection does not (it still refreshes the slots on `MOVED`); the caller sends
    /// again only on errors that say the command did not run ([`did_not_run`]).
    pub(crate) fn once(&self) -> Commands {
        match &self.once {
            Some(once) => Commands::Cluster(once.clone()),
            None => self.commands(),
        }
    }

    /// A connection of its own to the current master (or the cluster), for blocking commands,
    /// waiting at most `response_timeout` for an answer (`None`: as long as it takes).
    pub(crate) async fn dedicated(&self, response_timeout: Option<Duration>) -> RedisResult<Commands> {
        if let Some(seeds) = &self.cluster {
            let client = cluster_client(seeds, response_timeout, self.timeouts, None)?;
            return Ok(Commands::Cluster(client.get_async_connection().await?));
        }
        let client = self.current.lock().unwrap_or_else(PoisonError::into_inner).client.clone();
        let Some(client) = client else { return Err(self.unreachable()) };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connection))
            .set_response_timeout(response_timeout);
        Ok(Commands::Dedicated(client.get_multiplexed_async_connection_with_config(&config).await?))
    }

    /// The address of the current master (not for a cluster).
    fn address(&self) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.client.as_ref().map(|client| client.get_connection_info().addr().to_string())
    }

    /// After `err`: with Sentinel, when the error says the master may have moved, asks the
    /// sentinels for it and reconnects there. True when the master moved.
    pub(crate) async fn recover(&self, err: &RedisError) -> bool {
        if self.sentinel.is_none() || !(is_broken_connection(err) || err.is_timeout() || is_read_only(err)) {
            return false;
        }
        match self.follow_master().await {
            Ok(moved) => moved,
            Err(err) => {
                tracing::debug!(node = %self.name, %err, "could not ask Redis Sentinel for the master yet");
                false
            }
        }
    }

    /// With Sentinel: asks for the master; reconnects when it moved. True when it did. One
    /// lookup at a time, and callers that waited for another's lookup take its answer instead
    /// of asking again (the failures of a burst of commands cost one lookup, not one each).
    async fn follow_master(&self) -> RedisResult<bool> {
        let Some(sentinel) = &self.sentinel else { return Ok(false) };
        let asked = std::time::Instant::now();
        let mut lookup = sentinel.lock().await;
        if lookup.last.is_some_and(|last| last >= asked) {
            return Ok(false);
        }
        let resolved = resolve(&mut lookup.client).await;
        lookup.last = Some(std::time::Instant::now());
        let client = resolved?;
        let old = self.address().unwrap_or_default();
        let new = client.get_connection_info().addr().to_string();
        if old == new {
            return Ok(false);
        }
        // Made on the node's runtime: its driver task must not die with the caller's runtime.
        let config = manager_config(self.timeouts);
        let made = self.runtime.spawn(ConnectionManager::new_with_config(client.clone(), config)).await;
        let commands = made.map_err(|err| RedisError::from(std::io::Error::other(err.to_string())))??;
        tracing::warn!(node = %self.name, from = %old, to = %new, "Redis Sentinel moved the master; following it");
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Current { client: Some(client), commands: Commands::Manager(commands) };
        Ok(true)
    }

    /// Runs `command`, and once more when it failed on a broken connection or on a demoted
    /// master (then on the master Sentinel names).
    pub(crate) async fn retry<T, F, Fut>(&self, mut command: F) -> RedisResult<T>
    where
        F: FnMut(Commands) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self.attempt(command(self.commands())).await {
            Err(err) if is_broken_connection(&err) || is_read_only(&err) => {
                tracing::debug!(node = %self.name, %err, "Redis connection broken; retrying once");
                self.recover(&err).await;
                self.attempt(command(self.commands())).await
            }
            result => result,
        }
    }

    /// Runs one attempt of a command: while an outage is known, for at most [`OUTAGE_PROBE`]
    /// (a Redis that came back answers at once; one out of reach costs the caller a second,
    /// not the response timeout).
    pub(crate) async fn attempt<T>(&self, command: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        if self.is_reachable() {
            return command.await;
        }
        tokio::time::timeout(OUTAGE_PROBE, command).await.unwrap_or_else(|_| Err(self.unreachable()))
    }
}

/// The shared connection's settings: it reconnects by itself, twice at most per command.
fn manager_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connection))
        .set_response_timeout(Some(timeouts.response))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1))
}

/// A cluster client from its seed nodes: a command (with the client's own retries on moved
/// slots and reconnections, `retries` of them or its default) takes `response_timeout` in all
/// (`None`: as long as it takes).
fn cluster_client(
    seeds: &[ConnectionInfo],
    response_timeout: Option<Duration>,
    timeouts: Timeouts,
    retries: Option<u32>,
) -> RedisResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec()).connection_timeout(timeouts.connection);
    if let Some(retries) = retries {
        builder = builder.retries(retries);
    }
    if let Some(timeout) = response_timeout {
        builder = builder.response_timeout(timeout);
    }
    builder.overall_response_timeout(response_timeout).build()
}

/// The seed nodes of a `redis+cluster://` URL (`rest` follows the scheme).
fn cluster_seeds(rest: &str) -> RedisResult<Vec<ConnectionInfo>> {
    let invalid = |reason: &'static str| RedisError::from((redis::ErrorKind::InvalidClientConfig, reason));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err(invalid("redis+cluster:// URL: a Redis Cluster has one database (0) and takes no other path"));
    }
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let seeds = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            let userinfo = userinfo.map(|userinfo| format!("{userinfo}@")).unwrap_or_default();
            format!("redis://{userinfo}{host}").into_connection_info()
        })
        .collect::<RedisResult<Vec<_>>>()?;
    if seeds.is_empty() {
        return Err(invalid("redis+cluster:// URL names no node"));
    }
    Ok(seeds)
}

/// The master the sentinels name now.
async fn resolve(sentinel: &mut SentinelClient) -> RedisResult<Client> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, sentinel.async_get_client()).await {
        Ok(client) => client,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no Redis Sentinel answered in time",
        ))),
    }
}

/// `url` with its password (between `:` and `@` in the authority, or a unix socket URL's
/// `pass=`) replaced by `***`.
pub(crate) fn without_password(url: &str) -> String {
    if let Some((head, query)) = url.split_once('?') {
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key == "pass" || key.ends_with("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        return format!("{}?{query}", without_password(head));
    }
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The sentinel client and log name of a `redis+sentinel://` URL (`rest` follows the scheme).
fn sentinel_client(rest: &str) -> RedisResult<(String, SentinelClient)> {
    let invalid = |reason: &'static str| RedisError::from((redis::ErrorKind::InvalidClientConfig, reason));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) =
        rest.split_once('/').ok_or_else(|| invalid("redis+sentinel:// URL needs /<master name>"))?;
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    let service = segments.next().ok_or_else(|| invalid("redis+sentinel:// URL needs /<master name>"))?;
    let db = segments.next();
    if segments.next().is_some() {
        return Err(invalid("redis+sentinel:// URL path is /<master name>[/<db>]"));
    }
    let mut sentinel_password = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinel_password", value)) => sentinel_password = Some(value),
            _ => return Err(invalid("redis+sentinel:// URL knows one query parameter, sentinel_password")),
        }
    }
    let sentinels = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            let host = if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
                host.to_owned()
            } else {
                format!("{host}:{SENTINEL_PORT}")
            };
            match sentinel_password {
                Some(password) => format!("redis://:{password}@{host}"),
                None => format!("redis://{host}"),
            }
        })
        .collect::<Vec<_>>();
    if sentinels.is_empty() {
        return Err(invalid("redis+sentinel:// URL names no sentinel"));
    }
    // The master's credentials and database, parsed as the crate parses a `redis://` URL.
    let node_url = format!(
        "redis://{}localhost/{}",
        userinfo.map(|userinfo| format!("{userinfo}@")).unwrap_or_default(),
        db.unwrap_or("0")
    );
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(node_url.into_connection_info()?.redis_settings().clone());
    let client = SentinelClient::build(sentinels, service.to_owned(), Some(node), SentinelServerType::Master)?;
    let name = without_password(&format!("redis+sentinel://{}", rest));
    Ok((name, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(without_password("redis://:secret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(without_password("redis://user:secret@h:1"), "redis://user:***@h:1");
        assert_eq!(without_password("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(without_password("redis+sentinel://:pw@a:1,b:2/m"), "redis+sentinel://:***@a:1,b:2/m");
        assert_eq!(
            without_password("redis+sentinel://a:1/m?sentinel_password=secret"),
            "redis+sentinel://a:1/m?sentinel_password=***"
        );
        assert_eq!(
            without_password("redis+unix:///run/redis.sock?db=1&pass=secret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
    }

    #[test]
    fn sentinel_urls_are_parsed_strictly() {
        assert!(sentinel_client("a:1,b/mymaster/2?sentinel_password=x").is_ok());
        assert!(sentinel_client(":pw@a:26380/mymaster").is_ok());
        for bad in ["a:1", "a:1/", "a:1/m/0/extra", "/m", "a:1/m?db=2", "a:1/m/notanumber"] {
            assert!(sentinel_client(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn cluster_urls_name_seed_nodes() {
        let seeds = cluster_seeds(":pw@a:7000,b:7001/").unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].addr().to_string(), "b:7001");
        assert_eq!(seeds[0].redis_settings().password(), Some("pw"));
        assert_eq!(without_password("redis+cluster://u:pw@a:7000,b:7001"), "redis+cluster://u:***@a:7000,b:7001");
        for bad in ["", ",", "a:7000/1", "a:7000/x"] {
            assert!(cluster_seeds(bad).is_err(), "{bad} should be refused");
        }
    }
}
