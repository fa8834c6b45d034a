//! [`RedisChannelLayer`]: channels and groups shared by every process connected to Redis.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::Script;
use redis::cluster_routing::Slot;

use super::presence::{entry_id, state_of};
use super::{
    Catchup, ChannelLayer, Counters, GROUP_FIELD, HistoryConfig, LayerConfig, LayerError, LayerStats, LocalChannels,
    Lost, POSITION_FIELD, Position, Recovery, Since, Subscription, check_message, validate_channel_name,
    validate_group_name,
};
use super::{PresenceDiff, PresenceMeta, PresenceState, stable_hash, without_reserved};
use crate::BoxFuture;
use crate::error::BackendError;
use crate::event::ChannelMessage;
use crate::redis_retry::{Commands, Node, Timeouts, did_not_run, without_password};

/// Settings of a [`RedisChannelLayer`] (channels_redis' names and defaults). Its `Debug` output
/// shows the hosts without their passwords.
#[derive(Clone)]
pub struct RedisLayerConfig {
    /// Redis URLs (`redis://127.0.0.1:6379`); with several, keys are sharded by hash, the same
    /// way in every process (list the hosts in the same order everywhere). A host may be a
    /// master behind Redis Sentinel, followed across failovers:
    /// `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/<db>][?sentinel_password=…]`
    /// (the credentials and database are the master's). Or one Redis Cluster, found from any of
    /// its nodes: `redis+cluster://[[user]:password@]host:port[,host:port…]` (the only host; the
    /// cluster spreads the keys).
    pub hosts: Vec<String>,
    /// Prefix of every Redis key (default `"asgi"`), to share one Redis between applications.
    pub prefix: String,
    /// Capacity and expiries.
    pub layer: LayerConfig,
    /// The format and key layout of messages in Redis.
    pub wire: Wire,
    /// How long a presence entry lives without being renewed (default 30 s): each process
    /// renews its own every third of it, so a process that dies leaves the other processes'
    /// [`presence_list`](super::ChannelLayer::presence_list) within this time.
    pub presence_ttl: Duration,
}

/// How a [`RedisChannelLayer`] lays its messages out in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wire {
    /// This crate's own layout (JSON messages, one key per process under `<prefix>:local:`),
    /// the fastest; every process must be this crate's.
    #[default]
    Native,
    /// channels_redis 4.x's (the version pinned in `.ci/run`, tested with 4.3): msgpack messages
    /// behind a 12-byte random prefix, channel keys `<prefix><channel>` (for a process-specific
    /// channel, its part up to `!`), `__asgi_channel__` naming the receivers, scores in seconds.
    /// Django processes using channels_redis's `RedisChannelLayer` with the same prefix then
    /// share groups and channels with this server both ways. One host only: channels_redis's
    /// sharding over several is refused by [`connect_with`](RedisChannelLayer::connect_with),
    /// and its `symmetric_encryption_keys` are not spoken. A message this layer cannot
    /// decode (msgpack binary or extension values) is logged and counted as dropped.
    ChannelsRedis,
}

impl std::fmt::Debug for RedisLayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = self.hosts.iter().map(|url| without_password(url)).collect::<Vec<_>>();
        f.debug_struct("RedisLayerConfig")
            .field("hosts", &hosts)
            .field("prefix", &self.prefix)
            .field("layer", &self.layer)
            .field("wire", &self.wire)
            .field("presence_ttl", &self.presence_ttl)
            .finish()
    }
}

impl RedisLayerConfig {
    /// One host, default settings.
    pub fn new(url: impl Into<String>) -> Self {
        RedisLayerConfig {
            hosts: vec![url.into()],
            prefix: "asgi".to_owned(),
            layer: LayerConfig::default(),
            wire: Wire::Native,
            presence_ttl: Duration::from_secs(30),
        }
    }

    /// channels_redis's wire format and key layout (see [`Wire::ChannelsRedis`]).
    #[must_use]
    pub fn channels_redis(mut self) -> Self {
        self.wire = Wire::ChannelsRedis;
        self
    }
}

/// A channel layer in Redis: any number of server processes share channels and groups.
///
/// How it works: each channel is a sorted set of messages scored by their send time, so expiry
/// and capacity are checked in the same Lua script that adds a message; a group is a sorted set
/// of members scored by join time. Consumers' channels are process-local
/// (`specific.<process>!<n>`): all of a process's consumer messages share one Redis key that a
/// single background task pops and hands out in memory, so a connection costs no Redis
/// connection and no task. In a group, one member `@<process>` stands for all of a process's
/// channels there: `group_send` (one Lua script on one host) writes **one copy per process**, and
/// each process hands its copy to its own members, so a send costs Redis work and traffic in
/// proportion to the processes, not the members. Named channels (and another process's channels
/// added by name) are members one by one, as in channels_redis.
///
/// **Outages.** Commands fail with [`LayerError::Backend`] while Redis is unreachable (the
/// consumers keep their sockets; a failed `group_send` is the caller's to handle). The layer
/// reconnects by itself, logs the outage and its end, and [`is_connected`](Self::is_connected)
/// tells its state. Lost in an outage: messages sent while Redis was down (their senders got
/// errors) and messages waiting in Redis if it restarted without persistence. Kept: group
/// memberships of this process's consumers, which the layer re-adds after reconnecting. Once
/// the outage is known, commands get one second instead of the response timeout (5 s).
/// With Redis Sentinel (see [`RedisLayerConfig::hosts`]), a failover is an outage that ends on
/// the promoted replica; groups with history start a new epoch there. With Redis Cluster, the
/// same for the keys of the slots whose master failed (the cluster client retries a command
/// while their slots move, so most calls wait rather than fail).
///
/// A process-local channel's capacity is enforced where it is received (a full consumer's
/// messages are dropped and counted there), so `send` to another process's consumer does not
/// fail with `ChannelFull`; the process's shared key holds up to 1000 × capacity messages.
#[derive(Clone, Debug)]
pub struct RedisChannelLayer {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisLayerConfig,
    shards: Vec<Shard>,
    /// Consumers' channels of this process, demultiplexed from the shared key.
    local: LocalChannels,
    /// `specific.<id>!...` is this process's.
    id: String,
    next_channel: AtomicU64,
    /// Orders messages from this process that land in the same millisecond.
    next_seq: AtomicU64,
    counters: Counters,
    /// Memberships of this process's channels, re-added after Redis comes back.
    memberships: Mutex<HashMap<String, HashMap<String, Joined>>>,
    /// Presence entries of this process's channels: group → channel → entry (JSON), renewed
    /// in Redis every third of the presence TTL.
    tracked: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Serialises this process's presence writes, so a renewal that read `tracked` before an
    /// untrack cannot put the untracked entry back in Redis (a ghost join).
    presence_writes: tokio::sync::Mutex<()>,
    /// Pops of named channels in flight, one per channel (see `receive`).
    pops: Mutex<HashMap<String, Arc<Pop>>>,
    scripts: Scripts,
    /// A Redis Cluster: a group's keys carry the hash tag `{<group>}`.
    cluster: bool,
    /// The runtime the layer was made on: its own tasks (pops of named channels) are spawned
    /// there, not on whichever runtime a caller runs on (a server's connection workers end
    /// with the server).
    runtime: tokio::runtime::Handle,
}

/// One `BZPOPMIN` of a named channel, run in a task of its own: what it pops goes into this
/// process's mailbox of the channel, never into a caller that may have gone. A `receive` that
/// is dropped (a timeout, a `select!`) therefore loses nothing: the message waits for the next
/// `receive` in this process.
#[derive(Default)]
struct Pop {
    done: tokio::sync::Notify,
    finished: AtomicBool,
    failed: Mutex<Option<LayerError>>,
}

impl Pop {
    async fn finished(&self) {
        loop {
            let notified = self.done.notified();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The Lua scripts, hashed once (invocations use EVALSHA, loading a script when Redis lacks it).
struct Scripts {
    send: Script,
    group_send: Script,
    deliver_many: Script,
    group_members: Script,
    cr_send: Script,
    cr_deliver_many: Script,
    cr_group_members: Script,
    history_send: Script,
    history_read: Script,
    presence_track: Script,
    presence_untrack: Script,
    presence_list: Script,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = self.shards.iter().map(|shard| shard.node.name()).collect::<Vec<_>>();
        f.debug_struct("RedisChannelLayer").field("hosts", &hosts).field("id", &self.id).finish()
    }
}

struct Shard {
    node: Node,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn backend(err: redis::RedisError) -> LayerError {
    LayerError::Backend(BackendError::new(err))
}

/// How long the receive loop blocks in one `BZPOPMIN` (it also bounds how long a dropped layer's
/// loop lives on).
const POP_TIMEOUT_SECS: f64 = 1.0;

/// How many messages the receive loop takes per round trip once one has arrived.
const POP_BATCH: usize = 1000;

/// Lua shared by the scripts: `deliver(channel, member)` adds one message to a channel's key
/// unless it is full, after dropping expired messages; returns 1 (sent) or 0 (full) and the
/// number expired. A group member `@<process>` stands for all of that process's channels in
/// the group: `deliver_group` sends it one copy (`<id>\n#<group>\n<payload>`), which the
/// process hands to its members itself; other members get theirs as before. It returns
/// {direct members, delivered to them, expired, process copies, copies delivered}. ARGV[1] = key prefix, ARGV[2] = capacity, ARGV[3] = capacity of a
/// process's shared key, ARGV[4] = expiry (ms).
const DELIVER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function channel_key(channel)
  if string.sub(channel, 1, 1) == '@' then
    return ARGV[1] .. ':local:' .. string.sub(channel, 2), tonumber(ARGV[3])
  end
  local bang = string.find(channel, '!', 1, true)
  if bang then
    local process = string.match(string.sub(channel, 1, bang - 1), '([^.]*)$')
    return ARGV[1] .. ':local:' .. process, tonumber(ARGV[3])
  end
  return ARGV[1] .. ':' .. channel, tonumber(ARGV[2])
end
local function deliver(channel, member)
  local key, capacity = channel_key(channel)
  local expired = redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[4]))
  if redis.call('ZCARD', key) >= capacity then
    return 0, expired
  end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, ARGV[4])
  return 1, expired
end
local function deliver_group(members, id, group, payload)
  local delivered, expired, copies, copies_sent = 0, 0, 0, 0
  for i, channel in ipairs(members) do
    local head = id .. string.format('%06d', i) .. '\n'
    if string.sub(channel, 1, 1) == '@' then
      local sent, gone = deliver(channel, head .. '#' .. group .. '\n' .. payload)
      copies = copies + 1
      copies_sent = copies_sent + sent
      expired = expired + gone
    else
      local sent, gone = deliver(channel, head .. channel .. '\n' .. payload)
      delivered = delivered + sent
      expired = expired + gone
    end
  end
  return {#members - copies, delivered, expired, copies, copies_sent}
end
";

/// `send`: KEYS[1] = the channel's key; ARGV[5] = channel, ARGV[6] = member.
const SEND: &str = r"
local sent, expired = deliver(ARGV[5], ARGV[6])
return {sent, expired}
";

/// `group_send` on one host: KEYS[1] = group; ARGV[5] = group expiry (ms), ARGV[6] = message
/// id, ARGV[7] = payload, ARGV[8] = the group's name. Returns what `deliver_group` does.
const GROUP_SEND: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[5]))
return deliver_group(redis.call('ZRANGE', KEYS[1], 0, -1), ARGV[6], ARGV[8], ARGV[7])
";

/// Delivery to listed members (several hosts, or a cluster): KEYS[1] = the key of one of them
/// (all of theirs are on this host, in this slot); ARGV[5] = message id, ARGV[6] = the group's
/// name, ARGV[7] = payload, ARGV[8..] = members.
const DELIVER_MANY: &str = r"
local members = {}
for i = 8, #ARGV do members[#members + 1] = ARGV[i] end
return deliver_group(members, ARGV[5], ARGV[6], ARGV[7])
";

/// Live members of a group (several hosts): KEYS[1] = group, ARGV[1] = group expiry (ms).
const GROUP_MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// channels_redis's `send`: KEYS[1] = channel key; ARGV[1] = member, ARGV[2] = capacity,
/// ARGV[3] = expiry (s). Returns {sent, expired}.
const CR_SEND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(now) - tonumber(ARGV[3]))
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
  return {0, expired}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, expired}
";

/// channels_redis's group delivery: KEYS = channel keys; ARGV = one member per key, then the
/// capacity and the expiry (s). Returns {expired, delivered to key 1 (1 or 0), key 2, ...}.
const CR_DELIVER_MANY: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[#ARGV - 1])
local expiry = tonumber(ARGV[#ARGV])
local result = {0}
for i = 1, #KEYS do
  result[1] = result[1] + redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < capacity then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
    result[i + 1] = 1
  else
    result[i + 1] = 0
  end
end
return result
";

/// channels_redis's live group members: KEYS[1] = group, ARGV[1] = group expiry (s).
const CR_GROUP_MEMBERS: &str = r"
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, tonumber(t[1]) - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Lua shared by the history scripts. KEYS[1] = the group's history meta (a hash: `epoch`, the
/// last `offset`, the `replid` of the master that wrote it), KEYS[2] = its stream, whose entry ids are `<offset>-<unix ms>` (so a range
/// by offset is a range by id, and an entry's age is in its id) with the message in field `m`.
const HISTORY: &str = r"
local function history_epoch(candidate, ttl)
  local meta = redis.call('HMGET', KEYS[1], 'epoch', 'replid')
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''
  local epoch = meta[1]
  if not epoch or (meta[2] and meta[2] ~= replid) then
    -- New, or made on another master: this one is a promoted replica (a failover), which may
    -- lack the last writes (replication is asynchronous), or a restarted one (a new replid even
    -- with persistence, which may lose the last second too), so offsets handed out may come
    -- again. The history starts over in a new epoch, as after a restart without persistence.
    epoch = candidate
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'replid', replid)
    redis.call('DEL', KEYS[2])
  elseif not meta[2] then
    redis.call('HSET', KEYS[1], 'replid', replid)
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  return epoch
end
local function entry_offset(id)
  return tonumber(string.match(id, '^(%d+)-'))
end
local function trim_age(now, max_age)
  if max_age <= 0 then return end
  for _ = 1, 8 do
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 32)
    if #oldest == 0 then return end
    for _, entry in ipairs(oldest) do
      if tonumber(string.match(entry[1], '-(%d+)$')) > now - max_age then
        redis.call('XTRIM', KEYS[2], 'MINID', entry[1])
        return
      end
    end
    redis.call('XTRIM', KEYS[2], 'MINID', (entry_offset(oldest[#oldest][1]) + 1) .. '-0')
  end
end
";

/// `group_send` to a group with history: KEYS[3] = group; ARGV[5] = group expiry (ms), ARGV[6]
/// = message id, ARGV[7] and ARGV[8] = the payload before and after its position, ARGV[9] = a
/// new epoch if the history has none, ARGV[10] = meta TTL (ms), ARGV[11] = max age (ms, 0:
/// none), ARGV[12] = max messages, ARGV[13] = stream TTL (ms), ARGV[14] = '1' to deliver here
/// (one host) or '0' to return the members, ARGV[15] = the group's name. Returns what
/// `deliver_group` does, or {0, 0, 0, payload, members}.
const HISTORY_SEND: &str = r"
local epoch = history_epoch(ARGV[9], ARGV[10])
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
trim_age(now, tonumber(ARGV[11]))
local payload = ARGV[7] .. epoch .. '-' .. offset .. ARGV[8]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[12], offset .. '-' .. now, 'm', payload)
redis.call('PEXPIRE', KEYS[2], ARGV[13])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
local members = redis.call('ZRANGE', KEYS[3], 0, -1)
if ARGV[14] ~= '1' then
  return {0, 0, 0, payload, members}
end
return deliver_group(members, ARGV[6], ARGV[15], payload)
";

/// A join (and/or read) of a group with history: KEYS[3] = group; ARGV[1] = max age (ms, 0:
/// none), ARGV[2] = the epoch to resume ('' for none), ARGV[3] = the offset to resume after,
/// ARGV[4] = how many last messages to give otherwise, ARGV[5] = the channel joining ('' to
/// only read), ARGV[6] = its membership score, ARGV[7] = group expiry (ms). Returns {status,
/// epoch ('' when the group has no history yet: a read creates nothing), offset, payloads}.
const HISTORY_READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[2] == '' then return {'fresh', '', 0, {}} end
  return {'other_epoch', '', 0, {}}
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local max_age = tonumber(ARGV[1])
trim_age(now, max_age)
-- (trim_age removes a bounded number per call: older entries may remain, never returned.)
local function fresh(entry)
  return max_age <= 0 or tonumber(string.match(entry[1], '-(%d+)$')) > now - max_age
end
local function last(status)
  local n = tonumber(ARGV[4])
  local out = {}
  if n > 0 then
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
    for i = #newest, 1, -1 do
      if fresh(newest[i]) then out[#out + 1] = newest[i][2][2] end
    end
  end
  return {status, epoch, offset, out}
end
if ARGV[2] == '' then return last('fresh') end
if ARGV[2] ~= epoch then return last('other_epoch') end
local after = tonumber(ARGV[3])
if after > offset then return last('future') end
if after == offset then return {'recovered', epoch, offset, {}} end
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')
if #entries == 0 or entry_offset(entries[1][1]) ~= after + 1 or not fresh(entries[1]) then
  return last('too_old')
end
local out = {}
for i, entry in ipairs(entries) do out[i] = entry[2][2] end
return {'recovered', epoch, offset, out}
";
/// Lua shared by the presence scripts. KEYS[1] = the group's entries (a hash: channel → `{"key":
/// ..., "meta": ...}`), KEYS[2] = their expiry times (a sorted set: channel → unix ms).
/// `sweep()` removes lapsed entries and returns them as {channel, entry, ...}.
const PRESENCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function sweep()
  local left = {}
  for _, channel in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    local entry = redis.call('HGET', KEYS[1], channel)
    redis.call('HDEL', KEYS[1], channel)
    redis.call('ZREM', KEYS[2], channel)
    if entry then
      left[#left + 1] = channel
      left[#left + 1] = entry
    end
  end
  return left
end
";

/// Tracks (or renews) entries: ARGV[1] = TTL (ms), then channel, entry pairs. Returns {joined
/// pairs, left pairs}: the entries that were not there (or changed: the old one left), and the
/// lapsed ones swept.
const PRESENCE_TRACK: &str = r"
local left = sweep()
local ttl = tonumber(ARGV[1])
local joined = {}
for i = 2, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    joined[#joined + 1] = ARGV[i]
    joined[#joined + 1] = ARGV[i + 1]
    if old then
      left[#left + 1] = ARGV[i]
      left[#left + 1] = old
    end
  end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {joined, left}
";

/// Untracks ARGV[1]: returns its entry, or nil.
const PRESENCE_UNTRACK: &str = r"
local entry = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return entry
";

/// Lists a group's entries after sweeping lapsed ones: {all pairs, left pairs}.
const PRESENCE_LIST: &str = r"
local left = sweep()
return {redis.call('HGETALL', KEYS[1]), left}
";

/// The key under which channels_redis keeps a channel's messages: the prefix, then the channel
/// name, cut after its `!` for a process-specific one.
fn channels_redis_key(prefix: &str, channel: &str) -> String {
    match channel.find('!') {
        Some(bang) => format!("{prefix}{}", &channel[..=bang]),
        None => format!("{prefix}{channel}"),
    }
}

impl RedisChannelLayer {
    /// Connects to one Redis with default settings.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, LayerError> {
        RedisChannelLayer::connect_with(RedisLayerConfig::new(url)).await
    }

    /// Connects with `config`, and starts the task that receives this process's messages.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when a URL is invalid or a host does not answer.
    pub async fn connect_with(config: RedisLayerConfig) -> Result<Self, LayerError> {
        if config.hosts.is_empty() {
            return Err(LayerError::Backend(BackendError::msg("RedisLayerConfig::hosts is empty")));
        }
        if config.wire == Wire::ChannelsRedis && !config.layer.history.is_empty() {
            return Err(LayerError::Backend(BackendError::msg(
                "groups with history (LayerConfig::history) need the native wire, not channels_redis's",
            )));
        }
        if config.wire == Wire::ChannelsRedis && config.hosts.len() > 1 {
            // channels_redis spreads channels over its hosts by its own hash ring: a layer here
            // sharding another way would put messages where Python never looks.
            return Err(LayerError::Backend(BackendError::msg(
                "the channels_redis wire speaks to one Redis host; channels_redis's sharding over several hosts is not supported",
            )));
        }
        if config.hosts.len() > 1 && config.hosts.iter().any(|url| url.starts_with("redis+cluster://")) {
            return Err(LayerError::Backend(BackendError::msg(
                "a redis+cluster:// URL must be the only host: the cluster spreads the keys itself",
            )));
        }
        let cluster = config.hosts[0].starts_with("redis+cluster://");
        if config.wire == Wire::ChannelsRedis && cluster {
            return Err(LayerError::Backend(BackendError::msg(
                "the channels_redis wire does not speak to a Redis Cluster (channels_redis does not either)",
            )));
        }
        if cluster && config.prefix.contains(['{', '}']) {
            // Redis hashes the first `{...}` of a key: braces in the prefix would take the place
            // of the group's hash tag, and a group's keys would no longer share a slot.
            return Err(LayerError::Backend(BackendError::msg(
                "with a Redis Cluster, RedisLayerConfig::prefix may not contain '{' or '}'",
            )));
        }
        let timeouts = Timeouts { connection: Duration::from_secs(2), response: Duration::from_secs(5) };
        let mut shards = Vec::with_capacity(config.hosts.len());
        for url in &config.hosts {
            let node = Node::connect(url, timeouts).await.map_err(backend)?;
            shards.push(Shard { node });
        }
        let seed = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
        let inner = Arc::new(Inner {
            local: LocalChannels::new(config.layer.clone()),
            config,
            shards,
            id: format!("{seed:016x}"),
            next_channel: AtomicU64::new(1),
            next_seq: AtomicU64::new(1),
            counters: Counters::default(),
            memberships: Mutex::new(HashMap::new()),
            tracked: Mutex::new(HashMap::new()),
            presence_writes: tokio::sync::Mutex::new(()),
            pops: Mutex::new(HashMap::new()),
            scripts: Scripts {
                send: Script::new(&format!("{DELIVER}{SEND}")),
                group_send: Script::new(&format!("{DELIVER}{GROUP_SEND}")),
                deliver_many: Script::new(&format!("{DELIVER}{DELIVER_MANY}")),
                group_members: Script::new(GROUP_MEMBERS),
                cr_send: Script::new(CR_SEND),
                cr_deliver_many: Script::new(CR_DELIVER_MANY),
                cr_group_members: Script::new(CR_GROUP_MEMBERS),
                history_send: Script::new(&format!("{DELIVER}{HISTORY}{HISTORY_SEND}")),
                history_read: Script::new(&format!("{HISTORY}{HISTORY_READ}")),
                presence_track: Script::new(&format!("{PRESENCE}{PRESENCE_TRACK}")),
                presence_untrack: Script::new(PRESENCE_UNTRACK),
                presence_list: Script::new(&format!("{PRESENCE}{PRESENCE_LIST}")),
            },
            cluster,
            runtime: tokio::runtime::Handle::current(),
        });
        for index in 0..inner.shards.len() {
            let connection = watch_connection(&inner.shards[index].node).await.map_err(backend)?;
            crate::metrics::redis_connection(index, true);
            tokio::spawn(watch(Arc::downgrade(&inner), index, connection));
        }
        tokio::spawn(heartbeat(Arc::downgrade(&inner), inner.config.presence_ttl, inner.config.layer.group_expiry));
        if cluster {
            tokio::spawn(watch_failovers(Arc::downgrade(&inner)));
        }
        Ok(RedisChannelLayer { inner })
    }

    /// This layer as the shared [`Layer`](super::Layer) applications hold.
    pub fn into_layer(self) -> super::Layer {
        Arc::new(self)
    }

    /// False while a Redis host is unreachable (the outage is also logged).
    pub fn is_connected(&self) -> bool {
        self.inner.shards.iter().all(|shard| shard.node.is_reachable())
    }
}

impl Inner {
    fn key(&self, channel: &str) -> String {
        if self.config.wire == Wire::ChannelsRedis {
            return channels_redis_key(&self.config.prefix, channel);
        }
        if let Some(process) = channel.strip_prefix('@') {
            return format!("{}:local:{process}", self.config.prefix);
        }
        match channel.split_once('!') {
            Some((head, _)) => {
                let process = head.rsplit('.').next().unwrap_or(head);
                format!("{}:local:{process}", self.config.prefix)
            }
            None => format!("{}:{channel}", self.config.prefix),
        }
    }

    /// `group` in its keys: in a Redis Cluster the hash tag `{<group>}`, so that the group's
    /// keys (members, history, presence) share a slot and one script can touch them all;
    /// elsewhere the name alone (the key layout of earlier versions).
    fn tag<'a>(&self, group: &'a str) -> std::borrow::Cow<'a, str> {
        if self.cluster { std::borrow::Cow::Owned(format!("{{{group}}}")) } else { std::borrow::Cow::Borrowed(group) }
    }

    /// A group's members.
    fn group_key(&self, group: &str) -> String {
        format!("{}:group:{}", self.config.prefix, self.tag(group))
    }

    fn shard_of(&self, key: &str) -> usize {
        (stable_hash(key) % self.shards.len() as u64) as usize
    }

    /// Where a script touching `key` must run: its shard and, in a Redis Cluster, its slot
    /// (a script touches the keys of one slot only).
    fn place_of(&self, key: &str) -> (usize, Option<Slot>) {
        let shard = self.shard_of(key);
        (shard, self.shards[shard].node.is_cluster().then(|| Slot::for_key(key)))
    }

    /// True when every key is on one Redis server, so one script reaches them all.
    fn one_host(&self) -> bool {
        self.shards.len() == 1 && !self.shards[0].node.is_cluster()
    }

    /// The node holding `key`.
    fn commands(&self, key: &str) -> &Node {
        &self.shards[self.shard_of(key)].node
    }

    /// ARGV[1..=4] of every delivering script.
    fn deliver_args<'a, 's>(
        &self,
        invocation: &'a mut redis::ScriptInvocation<'s>,
    ) -> &'a mut redis::ScriptInvocation<'s> {
        let layer = &self.config.layer;
        invocation
            .arg(&self.config.prefix)
            .arg(layer.capacity)
            .arg(layer.capacity.saturating_mul(1000))
            .arg(u64::try_from(layer.expiry.as_millis()).unwrap_or(u64::MAX))
    }

    /// A message id that keeps this process's messages in send order within a millisecond.
    fn message_id(&self) -> String {
        format!("{:020}:", self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    fn is_own(&self, channel: &str) -> bool {
        channel.split_once('!').is_some_and(|(head, _)| head.rsplit('.').next() == Some(self.id.as_str()))
    }

    /// A group membership's score: the join time, in milliseconds (native) or seconds
    /// (channels_redis, which expires memberships by it).
    fn membership_score(&self) -> f64 {
        let ms = now_ms() as f64;
        if self.config.wire == Wire::ChannelsRedis { ms / 1000.0 } else { ms }
    }

    fn group_expiry_ms(&self) -> u64 {
        u64::try_from(self.config.layer.group_expiry.as_millis()).unwrap_or(u64::MAX)
    }

    async fn group_send(&self, group: &str, payload: &str) -> Result<(), LayerError> {
        let group_key = self.group_key(group);
        let totals = if self.config.wire == Wire::ChannelsRedis {
            self.channels_redis_group_send(&group_key, payload).await?
        } else if self.one_host() {
            let mut invocation = self.scripts.group_send.key(&group_key);
            self.deliver_args(&mut invocation)
                .arg(self.group_expiry_ms())
                .arg(self.message_id())
                .arg(payload)
                .arg(group);
            Fanout::from(retry_script::<[u64; 5]>(&self.shards[0].node, &invocation).await?)
        } else {
            let commands = self.commands(&group_key);
            let mut invocation = self.scripts.group_members.key(&group_key);
            invocation.arg(self.group_expiry_ms());
            let members: Vec<String> = retry_script(commands, &invocation).await?;
            self.deliver_sharded(group, members, payload).await?
        };
        self.count_group_send(group, totals);
        Ok(())
    }

    /// Delivers `payload` to `group`'s `members`, one script per shard (in a Redis Cluster, per
    /// slot) holding some of them, all at once. With one member per process (see `marker`),
    /// that is one script per process at most.
    async fn deliver_sharded(&self, group: &str, members: Vec<String>, payload: &str) -> Result<Fanout, LayerError> {
        // Per place: a key there (which routes the script) and the members whose keys are there.
        let mut by_place: HashMap<(usize, Option<Slot>), (String, Vec<String>)> = HashMap::new();
        for member in members {
            let key = self.key(&member);
            by_place.entry(self.place_of(&key)).or_insert_with(|| (key, Vec::new())).1.push(member);
        }
        let scripts = by_place.into_iter().map(|((shard, _), (key, channels))| async move {
            let mut invocation = self.scripts.deliver_many.key(&key);
            self.deliver_args(&mut invocation).arg(self.message_id()).arg(group).arg(payload).arg(channels);
            retry_script::<[u64; 5]>(&self.shards[shard].node, &invocation).await
        });
        let mut totals = Fanout::default();
        for one in futures_util::future::join_all(scripts).await {
            totals.add(Fanout::from(one?));
        }
        Ok(totals)
    }

    /// Counts a group send: deliveries to members named one by one here; a process copy is
    /// counted by the process that hands it to its members (as a delivery each, or a drop).
    fn count_group_send(&self, group: &str, totals: Fanout) {
        let members = totals.direct + totals.copies;
        crate::metrics::layer_group_send(usize::try_from(members).unwrap_or(usize::MAX));
        self.counters.sent(totals.delivered);
        self.counters.expired(totals.expired);
        let dropped = (totals.direct - totals.delivered.min(totals.direct))
            + (totals.copies - totals.copies_sent.min(totals.copies));
        if dropped > 0 {
            self.counters.dropped_for(group, dropped);
        }
    }

    /// How this process stands in group memberships: `@<process id>` stands for all of its
    /// channels in a group (see `deliver_group`).
    fn marker(&self) -> String {
        format!("@{}", self.id)
    }

    /// The member to store in a group for `channel`: this process's marker for its own
    /// channels (native wire), the channel itself otherwise.
    fn group_member<'a>(&self, channel: &'a str) -> std::borrow::Cow<'a, str> {
        if self.config.wire == Wire::Native && self.is_own(channel) {
            std::borrow::Cow::Owned(self.marker())
        } else {
            std::borrow::Cow::Borrowed(channel)
        }
    }

    /// The keys of `group`'s history: its meta hash and its stream (in the group's slot).
    fn history_keys(&self, group: &str) -> [String; 2] {
        let (prefix, group) = (&self.config.prefix, self.tag(group));
        [format!("{prefix}:hmeta:{group}"), format!("{prefix}:history:{group}")]
    }

    /// TTLs and limits of a history, in the scripts' units: {meta TTL, max age (0: none),
    /// stream TTL} in ms.
    fn history_times(&self, config: &HistoryConfig) -> (u64, u64, u64) {
        let ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1);
        let meta = self.group_expiry_ms().max(1);
        let max_age = config.max_age.map_or(0, ms);
        (meta, max_age, if max_age == 0 { meta } else { max_age })
    }

    /// `group_send` to a group with history: appended to its stream and delivered in one
    /// script, so members get its messages in offset order (on one host).
    async fn history_send(
        &self,
        group: &str,
        message: &ChannelMessage,
        config: &HistoryConfig,
    ) -> Result<(), LayerError> {
        let message = without_reserved(message.clone());
        let json = serde_json::to_string(message.value()).map_err(|err| LayerError::Backend(BackendError::new(err)))?;
        let group_json = serde_json::to_string(group).map_err(|err| LayerError::Backend(BackendError::new(err)))?;
        // `{"__group__":"g","__position__":"` + position + `",` + the message without its `{`.
        let head = format!("{{\"{GROUP_FIELD}\":{group_json},\"{POSITION_FIELD}\":\"");
        let tail = match json.get(1..) {
            Some(rest) if rest != "}" => format!("\",{rest}"),
            _ => "\"}".to_owned(),
        };
        let group_key = self.group_key(group);
        let [meta, stream] = self.history_keys(group);
        let (meta_ttl, max_age, stream_ttl) = self.history_times(config);
        let here = self.one_host();
        let mut invocation = self.scripts.history_send.key(&meta);
        invocation.key(&stream).key(&group_key);
        self.deliver_args(&mut invocation)
            .arg(self.group_expiry_ms())
            .arg(self.message_id())
            .arg(head)
            .arg(tail)
            .arg(format!("{:016x}", Position::new_epoch()))
            .arg(meta_ttl)
            .arg(max_age)
            .arg(config.max_messages)
            .arg(stream_ttl)
            .arg(if here { "1" } else { "0" })
            .arg(group);
        let commands = self.commands(&group_key);
        let totals = if here {
            Fanout::from(script_once::<[u64; 5]>(commands, &invocation).await?)
        } else {
            let (_, _, _, payload, members): (u64, u64, u64, String, Vec<String>) =
                script_once(commands, &invocation).await?;
            self.deliver_sharded(group, members, &payload).await?
        };
        self.count_group_send(group, totals);
        Ok(())
    }

    /// Reads `group`'s history as `since` asks, joining `channel` to it in the same script.
    async fn history_read(
        &self,
        group: &str,
        channel: Option<&str>,
        since: &Since,
        config: &HistoryConfig,
    ) -> Result<Catchup, LayerError> {
        let group_key = self.group_key(group);
        let [meta, stream] = self.history_keys(group);
        let (_, max_age, _) = self.history_times(config);
        let (after_epoch, after_offset) =
            since.after.map_or((String::new(), 0), |after| (format!("{:016x}", after.epoch), after.offset));
        let mut invocation = self.scripts.history_read.key(&meta);
        invocation
            .key(&stream)
            .key(&group_key)
            .arg(max_age)
            .arg(after_epoch)
            .arg(after_offset)
            .arg(since.last.min(config.max_messages))
            .arg(channel.map(|channel| self.group_member(channel)).as_deref().unwrap_or(""))
            .arg(self.membership_score())
            .arg(self.group_expiry_ms());
        let (status, epoch, offset, payloads): (String, String, u64, Vec<String>) =
            retry_script(self.commands(&group_key), &invocation).await?;
        // '' (epoch 0): the group has no history yet.
        let epoch = if epoch.is_empty() { Ok(0) } else { u64::from_str_radix(&epoch, 16) }
            .map_err(|_| LayerError::Backend(BackendError::msg(format!("bad history epoch {epoch:?} in Redis"))))?;
        let recovery = match status.as_str() {
            "fresh" => Recovery::Fresh,
            "recovered" => Recovery::Recovered,
            "other_epoch" => Recovery::NotRecovered(Lost::OtherEpoch),
            "future" => Recovery::NotRecovered(Lost::Future),
            _ => Recovery::NotRecovered(Lost::TooOld),
        };
        let messages = payloads
            .iter()
            .filter_map(|payload| match serde_json::from_str::<serde_json::Value>(payload) {
                Ok(value) => Some(ChannelMessage::new(value)),
                Err(err) => {
                    tracing::error!(group, %err, "undecodable message in a group's history; skipped");
                    None
                }
            })
            .collect();
        Ok(Catchup { position: Some(Position { epoch, offset }), recovery, messages })
    }

    /// The keys of `group`'s presence: its entries and their expiry times (in the group's slot).
    fn presence_keys(&self, group: &str) -> [String; 2] {
        let (prefix, group) = (&self.config.prefix, self.tag(group));
        [format!("{prefix}:presence:{group}"), format!("{prefix}:pexpiry:{group}")]
    }

    /// Tracks (or renews) `entries` (channel, entry JSON) in `group`, and sends the group the
    /// diff of what joined and what lapsed.
    async fn presence_track(&self, group: &str, entries: &[(String, String)]) -> Result<(), LayerError> {
        let [hash, expiry] = self.presence_keys(group);
        let mut invocation = self.scripts.presence_track.key(&hash);
        invocation.key(&expiry).arg(u64::try_from(self.config.presence_ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        for (channel, entry) in entries {
            invocation.arg(channel).arg(entry);
        }
        let (joined, left): (Vec<String>, Vec<String>) = retry_script(self.commands(&hash), &invocation).await?;
        self.send_presence_diff(group, &joined, &left).await
    }

    /// Sends `group` a diff from {channel, entry} pairs (nothing when both are empty).
    async fn send_presence_diff(&self, group: &str, joined: &[String], left: &[String]) -> Result<(), LayerError> {
        if joined.is_empty() && left.is_empty() {
            return Ok(());
        }
        let diff =
            PresenceDiff { group: group.to_owned(), joins: presence_state(joined), leaves: presence_state(left) };
        let payload = serde_json::to_string(diff.to_message().value())
            .map_err(|err| LayerError::Backend(BackendError::new(err)))?;
        self.group_send(group, &payload).await
    }

    /// Renews this process's presence entries (and sweeps lapsed ones in their groups).
    async fn renew_presence(&self) {
        let groups: Vec<String> = lock(&self.tracked).keys().cloned().collect();
        for group in groups {
            let _writing = self.presence_writes.lock().await;
            let entries: Vec<(String, String)> = match lock(&self.tracked).get(&group) {
                Some(entries) => entries.iter().map(|(channel, entry)| (channel.clone(), entry.clone())).collect(),
                None => continue,
            };
            if let Err(err) = self.presence_track(&group, &entries).await {
                tracing::warn!(group, %err, "could not renew presence entries");
            }
        }
    }

    /// Remembers a membership of this process's channel (to hand it the group's copies, and
    /// to restore it after an outage).
    fn remember(&self, group: &str, channel: &str, joined: Joined) {
        if self.is_own(channel) {
            lock(&self.memberships).entry(group.to_owned()).or_default().insert(channel.to_owned(), joined);
        }
    }

    /// Forgets a membership of this process's channel.
    fn forget(&self, group: &str, channel: &str) {
        let mut memberships = lock(&self.memberships);
        if let Some(channels) = memberships.get_mut(group) {
            channels.remove(channel);
            if channels.is_empty() {
                memberships.remove(group);
            }
        }
    }

    /// A join of a group with history is done, its catch-up ending at `position`: copies held
    /// meanwhile that the catch-up did not have are delivered, and later copies go through
    /// when they come after it.
    fn joined(&self, group: &str, channel: &str, position: Position) {
        // The held copies are handed over under the lock: a copy dispatched meanwhile either
        // was held (and goes after them) or waits for the lock (and finds `After`), so the
        // channel gets them in order.
        let mut memberships = lock(&self.memberships);
        let Some(joined) = memberships.get_mut(group).and_then(|channels| channels.get_mut(channel)) else {
            return;
        };
        let Joined::Holding(held) = std::mem::replace(joined, Joined::After(position)) else { return };
        for message in held {
            if Joined::After(position).wants(Position::of(&message)) && self.local.deliver(channel, message).is_err() {
                self.counters.dropped_for(group, 1);
            }
        }
    }

    /// channels_redis's `group_send`: the members, then one message per Redis key naming its
    /// receivers in `__asgi_channel__`. Returns {members, delivered, expired} as the native one.
    async fn channels_redis_group_send(&self, group_key: &str, payload: &str) -> Result<Fanout, LayerError> {
        let mut invocation = self.scripts.cr_group_members.key(group_key);
        invocation.arg(self.config.layer.group_expiry.as_secs());
        let members: Vec<String> = retry_script(self.commands(group_key), &invocation).await?;
        let message: serde_json::Value =
            serde_json::from_str(payload).map_err(|err| LayerError::Backend(BackendError::new(err)))?;
        // Channels sharing a key (one process's) get one message listing them all.
        let mut by_key: Vec<(String, Vec<&str>)> = Vec::new();
        for channel in &members {
            let key = self.key(channel);
            match by_key.iter_mut().find(|(known, _)| *known == key) {
                Some((_, channels)) => channels.push(channel),
                None => by_key.push((key, vec![channel])),
            }
        }
        // Per shard: the keys, their messages, and how many channels each key stands for.
        type Batch = (Vec<String>, Vec<Vec<u8>>, Vec<u64>);
        let mut by_shard: HashMap<usize, Batch> = HashMap::new();
        for (key, channels) in by_key {
            let count = u64::try_from(channels.len()).unwrap_or(u64::MAX);
            let member = self.encode_channels_redis(&message, Some(serde_json::Value::from(channels)))?;
            let entry = by_shard.entry(self.shard_of(&key)).or_default();
            entry.0.push(key);
            entry.1.push(member);
            entry.2.push(count);
        }
        let (mut delivered, mut expired) = (0u64, 0u64);
        for (shard, (keys, messages, counts)) in by_shard {
            let mut invocation = self.scripts.cr_deliver_many.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for message in &messages {
                invocation.arg(message.as_slice());
            }
            invocation.arg(self.config.layer.capacity).arg(self.config.layer.expiry.as_secs());
            let result: Vec<u64> = retry_script(&self.shards[shard].node, &invocation).await?;
            expired += result.first().copied().unwrap_or(0);
            // A key over capacity misses the message for every channel it stands for.
            delivered +=
                result.iter().skip(1).zip(&counts).filter(|(sent, _)| **sent == 1).map(|(_, count)| count).sum::<u64>();
        }
        let direct = u64::try_from(members.len()).unwrap_or(u64::MAX);
        Ok(Fanout { direct, delivered, expired, ..Fanout::default() })
    }

    /// A member as channels_redis writes it: a 12-byte prefix that keeps equal messages apart in
    /// the sorted set, then the message as msgpack with `__asgi_channel__`.
    fn encode_channels_redis(
        &self,
        message: &serde_json::Value,
        receivers: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, LayerError> {
        let mut message = message.clone();
        if let (serde_json::Value::Object(map), Some(receivers)) = (&mut message, receivers) {
            map.insert("__asgi_channel__".to_owned(), receivers);
        }
        let mut member = Vec::with_capacity(64);
        member.extend_from_slice(&self.next_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        member.extend_from_slice(&stable_hash(&self.id).to_be_bytes()[..4]);
        rmp_serde::encode::write_named(&mut member, &message)
            .map_err(|err| LayerError::Backend(BackendError::new(err)))?;
        Ok(member)
    }

    /// A popped channels_redis member: the message, and the channels it is for (none named for
    /// a message of a plain named channel).
    fn decode_channels_redis(member: &[u8]) -> Result<(ChannelMessage, Vec<String>), String> {
        let body = member.get(12..).ok_or("shorter than its 12-byte prefix")?;
        let mut value: serde_json::Value = rmp_serde::from_slice(body).map_err(|err| err.to_string())?;
        let receivers = match &mut value {
            serde_json::Value::Object(map) => match map.remove("__asgi_channel__") {
                Some(serde_json::Value::String(one)) => vec![one],
                Some(serde_json::Value::Array(many)) => {
                    many.into_iter().filter_map(|channel| channel.as_str().map(str::to_owned)).collect()
                }
                _ => Vec::new(),
            },
            _ => return Err("not a map".to_owned()),
        };
        Ok((ChannelMessage::new(value), receivers))
    }

    /// Hands one popped message to this process's consumers it is for.
    fn dispatch(&self, member: &[u8]) {
        if self.config.wire == Wire::ChannelsRedis {
            match Self::decode_channels_redis(member) {
                Ok((message, receivers)) => {
                    for channel in receivers {
                        if self.local.deliver(&channel, message.clone()).is_err() {
                            self.counters.dropped_for(&channel, 1);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(%err, "undecodable channels_redis message in this process's key; dropped");
                    self.counters.dropped_for("<undecodable>", 1);
                }
            }
            return;
        }
        let Ok(member) = std::str::from_utf8(member) else {
            tracing::error!("non-UTF-8 message in this process's Redis key; skipped");
            return;
        };
        let mut parts = member.splitn(3, '\n');
        let (Some(_id), Some(channel), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
            tracing::error!("malformed message in this process's Redis key; skipped");
            return;
        };
        let message = match serde_json::from_str::<serde_json::Value>(payload) {
            Ok(value) => ChannelMessage::new(value),
            Err(err) => {
                tracing::error!(channel, %err, "undecodable message in Redis; skipped");
                return;
            }
        };
        if let Some(group) = channel.strip_prefix('#') {
            // One copy for this process's members of `group`: handed to each here (a member
            // still joining a group with history holds it until its catch-up is known).
            let mut members = Vec::new();
            let position = Position::of(&message);
            if let Some(channels) = lock(&self.memberships).get_mut(group) {
                for (member, joined) in channels.iter_mut() {
                    match joined {
                        Joined::Holding(held) if held.len() < self.config.layer.capacity => held.push(message.clone()),
                        Joined::Holding(_) => self.counters.dropped_for(group, 1),
                        joined if joined.wants(position) => members.push(member.clone()),
                        _ => {}
                    }
                }
            }
            let mut delivered = 0;
            for member in &members {
                match self.local.deliver(member, message.clone()) {
                    Ok(()) => delivered += 1,
                    Err(_) => self.counters.dropped_for(group, 1),
                }
            }
            self.counters.sent(delivered);
            return;
        }
        if self.local.deliver(channel, message).is_err() {
            self.counters.dropped_for(channel, 1);
        }
    }

    /// Re-adds this process's memberships of groups on `shard` (after Redis came back, and
    /// periodically so they do not lapse).
    async fn restore_memberships(&self, shard: usize) -> Result<(), redis::RedisError> {
        let memberships: Vec<(String, Vec<String>)> = lock(&self.memberships)
            .iter()
            .filter(|(group, _)| self.shard_of(&self.group_key(group)) == shard)
            .map(|(group, channels)| (self.group_key(group), channels.keys().cloned().collect()))
            .collect();
        if memberships.is_empty() {
            return Ok(());
        }
        let node = &self.shards[shard].node;
        // One pipeline; in a Redis Cluster one per group (a pipeline stays within one slot).
        let mut pipes = Vec::new();
        for (group_key, channels) in &memberships {
            if pipes.is_empty() || node.is_cluster() {
                pipes.push(redis::pipe());
            }
            let Some(pipe) = pipes.last_mut() else { continue };
            let members: HashSet<std::borrow::Cow<'_, str>> =
                channels.iter().map(|channel| self.group_member(channel)).collect();
            for member in members {
                pipe.cmd("ZADD").arg(group_key).arg(self.membership_score()).arg(&*member).ignore();
            }
            pipe.cmd("PEXPIRE").arg(group_key).arg(self.group_expiry_ms()).ignore();
        }
        let commands = node.commands();
        let sent = pipes.iter().map(|pipe| {
            let mut commands = commands.clone();
            async move { pipe.query_async::<()>(&mut commands).await }
        });
        for result in futures_util::future::join_all(sent).await {
            result?;
        }
        tracing::info!(groups = memberships.len(), "group memberships restored in Redis");
        Ok(())
    }
}

/// A presence state from {channel, entry JSON} pairs (entries that do not decode are skipped).
fn presence_state(pairs: &[String]) -> PresenceState {
    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        meta: serde_json::Value,
    }
    state_of(pairs.chunks_exact(2).filter_map(|pair| {
        let entry: Entry = serde_json::from_str(&pair[1]).ok()?;
        Some((entry.key, PresenceMeta { id: entry_id(&pair[0]), meta: entry.meta }))
    }))
}

/// While the layer lives: every third of the presence TTL, renews this process's presence
/// entries; every quarter of the group expiry, its group memberships (one `@<process>` member
/// per group stands for all of its channels there, so it must not lapse while they live).
async fn heartbeat(layer: Weak<Inner>, ttl: Duration, group_expiry: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(50));
    let mut memberships_renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = layer.upgrade() else { return };
        inner.renew_presence().await;
        if memberships_renewed.elapsed() >= group_expiry / 4 {
            memberships_renewed = std::time::Instant::now();
            for shard in 0..inner.shards.len() {
                if let Err(err) = inner.restore_memberships(shard).await {
                    tracing::warn!(%err, "could not renew group memberships");
                }
            }
        }
    }
}

/// How this process hands a group's copies to one of its member channels.
#[derive(Debug)]
enum Joined {
    /// Every copy.
    Plain,
    /// Joining a group with history: copies wait here (up to the channel capacity) until the
    /// catch-up's position is known.
    Holding(Vec<ChannelMessage>),
    /// Copies after this position of the group's history (the catch-up had the rest); copies
    /// of another epoch too.
    After(Position),
}

impl Joined {
    /// Whether to hand over a copy at `position` (the copy's, if it has one).
    fn wants(&self, position: Option<Position>) -> bool {
        match (self, position) {
            (Joined::After(after), Some(position)) => position.epoch != after.epoch || position.offset > after.offset,
            (Joined::Holding(_), _) => false,
            _ => true,
        }
    }
}

/// What one group send did (`deliver_group`'s answer, summed over shards).
#[derive(Debug, Default, Clone, Copy)]
struct Fanout {
    /// Members named one by one (another process's channels, named channels).
    direct: u64,
    /// Deliveries to them.
    delivered: u64,
    /// Messages found expired on the way.
    expired: u64,
    /// Processes sent one copy for all of their members.
    copies: u64,
    /// Copies that fitted in their process's key.
    copies_sent: u64,
}

impl From<[u64; 5]> for Fanout {
    fn from([direct, delivered, expired, copies, copies_sent]: [u64; 5]) -> Self {
        Fanout { direct, delivered, expired, copies, copies_sent }
    }
}

impl Fanout {
    fn add(&mut self, other: Fanout) {
        self.direct += other.direct;
        self.delivered += other.delivered;
        self.expired += other.expired;
        self.copies += other.copies;
        self.copies_sent += other.copies_sent;
    }
}

/// Client-side milliseconds for membership scores (only compared against `group_expiry`).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// The watch loop's own connection: `BZPOPMIN` blocks it, so nothing else uses it.
async fn watch_connection(node: &Node) -> Result<Commands, redis::RedisError> {
    node.dedicated(Some(Duration::from_secs_f64(POP_TIMEOUT_SECS + 4.0))).await
}

/// One per shard while the layer lives: on the shard holding this process's key, pops and
/// dispatches messages; on every shard, notices outages, reconnects, logs, and restores
/// memberships once the host is back.
async fn watch(layer: Weak<Inner>, shard: usize, connection: Commands) {
    let mut connection = Some(connection);
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<std::time::Instant> = None;
    let Some((own_key, pops)) = layer.upgrade().map(|inner| {
        let own_key = inner.key(&format!("specific.{}!", inner.id));
        let pops = inner.shard_of(&own_key) == shard;
        (own_key, pops)
    }) else {
        return;
    };
    loop {
        let Some(inner) = layer.upgrade() else { return };
        let result: Result<Vec<Vec<u8>>, redis::RedisError> = async {
            if connection.is_none() {
                connection = Some(watch_connection(&inner.shards[shard].node).await?);
            }
            let Some(conn) = connection.as_mut() else { return Ok(Vec::new()) };
            if pops {
                let popped: Option<(String, Vec<u8>, f64)> =
                    redis::cmd("BZPOPMIN").arg(&own_key).arg(POP_TIMEOUT_SECS).query_async(conn).await?;
                let Some((_, first, _)) = popped else { return Ok(Vec::new()) };
                // Drain what else is waiting in the same round trip.
                let rest: Vec<(Vec<u8>, f64)> =
                    redis::cmd("ZPOPMIN").arg(&own_key).arg(POP_BATCH).query_async(conn).await?;
                Ok(std::iter::once(first).chain(rest.into_iter().map(|(member, _)| member)).collect())
            } else {
                redis::cmd("PING").query_async::<String>(conn).await?;
                Ok(Vec::new())
            }
        }
        .await;
        match result {
            Ok(popped) => {
                if let Some(since) = down_since.take() {
                    tracing::info!(host = %inner.shards[shard].node.name(), outage = ?since.elapsed(), "Redis is back");
                    if let Err(err) = inner.restore_memberships(shard).await {
                        tracing::warn!(%err, "could not restore group memberships yet");
                        down_since = Some(since);
                        continue;
                    }
                    inner.shards[shard].node.set_reachable(true);
                    crate::metrics::redis_connection(shard, true);
                    backoff = Duration::from_millis(100);
                    // Messages may have expired or vanished in Redis meanwhile: consumers of
                    // groups with history read what they missed.
                    inner.local.mark_all_lost();
                }
                for member in &popped {
                    inner.dispatch(member);
                }
                if !pops {
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(err) => {
                let err: redis::RedisError = err;
                connection = None;
                if down_since.is_none() {
                    tracing::error!(host = %inner.shards[shard].node.name(), %err, "Redis unreachable; the channel layer retries");
                    inner.shards[shard].node.set_reachable(false);
                    crate::metrics::redis_connection(shard, false);
                    down_since = Some(std::time::Instant::now());
                }
                // With Sentinel, the master may have moved (a failover): pop there at once
                // (messages for this process pile up there meanwhile), and ask again soon while
                // the sentinels still name the dead one.
                let node = &inner.shards[shard].node;
                if node.recover(&err).await {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                let max_backoff = if node.is_sentinel() || node.is_cluster() {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(2)
                };
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// In a Redis Cluster, every second: a failover anywhere in the cluster (its current epoch
/// grew) re-adds this process's group memberships (writes the old master had not yet copied to
/// its replica are lost with it) and has consumers of groups with history read what they
/// missed. The watch loop sees only the master of this process's own key.
async fn watch_failovers(layer: Weak<Inner>) {
    let mut epoch: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(inner) = layer.upgrade() else { return };
        let node = &inner.shards[0].node;
        let info: Result<String, _> =
            node.attempt(redis::cmd("CLUSTER").arg("INFO").query_async(&mut node.commands())).await;
        let current = info.ok().and_then(|info| {
            info.lines().find_map(|line| line.strip_prefix("cluster_current_epoch:")?.trim().parse::<u64>().ok())
        });
        let Some(current) = current else { continue };
        if epoch.is_some_and(|known| current > known) {
            tracing::warn!(epoch = current, "Redis Cluster failed over; restoring group memberships");
            match inner.restore_memberships(0).await {
                Ok(()) => inner.local.mark_all_lost(),
                Err(err) => {
                    tracing::warn!(%err, "could not restore group memberships yet");
                    continue;
                }
            }
        }
        epoch = Some(current);
    }
}

/// The pop of `channel` in flight, or a new one.
fn start_pop(inner: &Arc<Inner>, channel: &str) -> Arc<Pop> {
    let mut pops = lock(&inner.pops);
    if let Some(pop) = pops.get(channel) {
        return pop.clone();
    }
    let pop = Arc::new(Pop::default());
    pops.insert(channel.to_owned(), pop.clone());
    drop(pops);
    let (runtime, inner, channel, task_pop) = (inner.runtime.clone(), inner.clone(), channel.to_owned(), pop.clone());
    runtime.spawn(async move {
        match pop_once(&inner, &channel).await {
            Ok(Some(message)) => {
                if inner.local.deliver(&channel, message).is_err() {
                    inner.counters.dropped_for(&channel, 1);
                }
            }
            Ok(None) => {}
            Err(err) => *lock(&task_pop.failed) = Some(err),
        }
        let mut pops = lock(&inner.pops);
        if pops.get(&channel).is_some_and(|current| Arc::ptr_eq(current, &task_pop)) {
            pops.remove(&channel);
        }
        drop(pops);
        task_pop.finished.store(true, Ordering::Release);
        task_pop.done.notify_waiters();
    });
    pop
}

/// One blocking pop of a named channel (`None` when nothing came within the pop timeout).
async fn pop_once(inner: &Inner, channel: &str) -> Result<Option<ChannelMessage>, LayerError> {
    let key = inner.key(channel);
    let mut conn = inner.shards[inner.shard_of(&key)].node.dedicated(None).await.map_err(backend)?;
    let popped: Option<(String, Vec<u8>, f64)> =
        redis::cmd("BZPOPMIN").arg(&key).arg(POP_TIMEOUT_SECS).query_async(&mut conn).await.map_err(backend)?;
    let Some((_, member, _)) = popped else { return Ok(None) };
    if inner.config.wire == Wire::ChannelsRedis {
        return match Inner::decode_channels_redis(&member) {
            Ok((message, _)) => Ok(Some(message)),
            Err(err) => {
                tracing::error!(channel, %err, "undecodable channels_redis message; skipped");
                inner.counters.dropped_for(channel, 1);
                Ok(None)
            }
        };
    }
    let member = String::from_utf8_lossy(&member);
    let payload = member.splitn(3, '\n').nth(2).unwrap_or("");
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(value) => Ok(Some(ChannelMessage::new(value))),
        Err(err) => {
            tracing::error!(channel, %err, "undecodable message in Redis; skipped");
            Ok(None)
        }
    }
}

/// Runs a script exactly once: for a script that must not run twice (a history append would
/// store the message again under a new offset), a broken connection is the caller's error.
async fn script_once<T: redis::FromRedisValue>(
    node: &Node,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<T, LayerError> {
    let started = std::time::Instant::now();
    let mut result = node.attempt(invocation.invoke_async(&mut node.once())).await;
    // In a Redis Cluster: sent again while its slot moves (the script did not run).
    for wait in [50, 100, 200, 400, 800] {
        match &result {
            Err(err) if did_not_run(err) => {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                result = node.attempt(invocation.invoke_async(&mut node.once())).await;
            }
            _ => break,
        }
    }
    crate::metrics::redis_round_trip(started.elapsed());
    if let Err(err) = &result {
        // Not retried (see the callers), but the next call goes to the new master.
        node.recover(err).await;
    }
    result.map_err(backend)
}

/// Runs a script (once more on a broken connection: see [`crate::redis_retry`]).
async fn retry_script<T: redis::FromRedisValue>(
    node: &Node,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<T, LayerError> {
    let started = std::time::Instant::now();
    let result = node.retry(|mut commands| async move { invocation.invoke_async(&mut commands).await }).await;
    crate::metrics::redis_round_trip(started.elapsed());
    result.map_err(backend)
}

impl ChannelLayer for RedisChannelLayer {
    fn send<'a>(&'a self, channel: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            crate::metrics::layer_send();
            validate_channel_name(channel)?;
            check_message(&message)?;
            let message = without_reserved(message);
            let inner = &self.inner;
            let (sent, expired): (u64, u64) = if inner.config.wire == Wire::ChannelsRedis {
                // Only a process-specific channel's message names its receiver.
                let receiver = channel.contains('!').then(|| serde_json::Value::from(channel));
                let member = inner.encode_channels_redis(message.value(), receiver)?;
                let key = inner.key(channel);
                let mut invocation = inner.scripts.cr_send.key(&key);
                invocation.arg(member).arg(inner.config.layer.capacity).arg(inner.config.layer.expiry.as_secs());
                retry_script(inner.commands(&key), &invocation).await?
            } else {
                let payload = serde_json::to_string(message.value())
                    .map_err(|err| LayerError::Backend(BackendError::new(err)))?;
                let member = format!("{}\n{channel}\n{payload}", inner.message_id());
                // The key (computed again by the script) routes it in a Redis Cluster.
                let key = inner.key(channel);
                let mut invocation = inner.scripts.send.key(&key);
                inner.deliver_args(&mut invocation).arg(channel).arg(member);
                retry_script(inner.commands(&key), &invocation).await?
            };
            inner.counters.expired(expired);
            if sent == 0 {
                return Err(LayerError::ChannelFull {
                    channel: channel.to_owned(),
                    capacity: inner.config.layer.capacity,
                });
            }
            inner.counters.sent(1);
            Ok(())
        })
    }

    fn receive<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelMessage, LayerError>> {
        Box::pin(async move {
            validate_channel_name(channel)?;
            let inner = &self.inner;
            if inner.is_own(channel) {
                return Ok(inner.local.receive(channel).await);
            }
            if channel.contains('!') {
                // Its messages are in another process's key, mixed with that process's other
                // channels: popping them here would steal (and misdeliver) them.
                return Err(LayerError::NotLocal { channel: channel.to_owned() });
            }
            // A named channel: its messages are popped by one task at a time into this process's
            // mailbox for it, and taken from there (cancel safe; see `Pop`).
            loop {
                let pop = start_pop(inner, channel);
                tokio::select! {
                    biased;
                    message = inner.local.receive(channel) => return Ok(message),
                    () = pop.finished() => {
                        if let Some(err) = lock(&pop.failed).take() {
                            return Err(err);
                        }
                    }
                }
            }
        })
    }

    fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let n = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}.{}!{n}", self.inner.id);
        validate_channel_name(&name)?;
        Ok(name)
    }

    fn group_add<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            validate_channel_name(channel)?;
            let inner = &self.inner;
            let key = inner.group_key(group);
            let commands = inner.commands(&key);
            // Remembered first: a copy for the group that arrives right after the ZADD finds it.
            inner.remember(group, channel, Joined::Plain);
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(inner.membership_score())
                .arg(&*inner.group_member(channel))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(inner.group_expiry_ms())
                .ignore();
            let pipe = &pipe;
            commands
                .retry(|mut commands| async move { pipe.query_async::<()>(&mut commands).await })
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn history_config(&self, group: &str) -> Option<HistoryConfig> {
        self.inner.config.layer.history_for(group)
    }

    fn group_join<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        Box::pin(async move {
            let Some(config) = self.history_config(group) else {
                self.group_add(group, channel).await?;
                return Ok(Catchup::none());
            };
            validate_group_name(group)?;
            validate_channel_name(channel)?;
            // Copies arriving while the join runs are held until its catch-up is known, so
            // that no message is both in the catch-up and delivered live.
            self.inner.remember(group, channel, Joined::Holding(Vec::new()));
            let catchup = self.inner.history_read(group, Some(channel), since, &config).await;
            match &catchup {
                Ok(Catchup { position: Some(position), .. }) => self.inner.joined(group, channel, *position),
                Ok(_) => self.inner.joined(group, channel, Position { epoch: 0, offset: 0 }),
                Err(_) => self.inner.forget(group, channel),
            }
            catchup
        })
    }

    fn presence_track<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        key: &'a str,
        meta: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            validate_channel_name(channel)?;
            let entry = serde_json::json!({ "key": key, "meta": meta }).to_string();
            let inner = &self.inner;
            let _writing = inner.presence_writes.lock().await;
            inner.presence_track(group, &[(channel.to_owned(), entry.clone())]).await?;
            if inner.is_own(channel) {
                lock(&inner.tracked).entry(group.to_owned()).or_default().insert(channel.to_owned(), entry);
            }
            Ok(())
        })
    }

    fn presence_untrack<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            validate_channel_name(channel)?;
            let inner = &self.inner;
            let _writing = inner.presence_writes.lock().await;
            {
                let mut tracked = lock(&inner.tracked);
                if let Some(entries) = tracked.get_mut(group) {
                    entries.remove(channel);
                    if entries.is_empty() {
                        tracked.remove(group);
                    }
                }
            }
            let [hash, expiry] = inner.presence_keys(group);
            let mut invocation = inner.scripts.presence_untrack.key(&hash);
            invocation.key(&expiry).arg(channel);
            let entry: Option<String> = retry_script(inner.commands(&hash), &invocation).await?;
            match entry {
                Some(entry) => inner.send_presence_diff(group, &[], &[channel.to_owned(), entry]).await,
                None => Ok(()),
            }
        })
    }

    fn presence_list<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceState, LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            let inner = &self.inner;
            let [hash, expiry] = inner.presence_keys(group);
            let mut invocation = inner.scripts.presence_list.key(&hash);
            invocation.key(&expiry);
            let (all, left): (Vec<String>, Vec<String>) = retry_script(inner.commands(&hash), &invocation).await?;
            inner.send_presence_diff(group, &[], &left).await?;
            Ok(presence_state(&all))
        })
    }

    fn group_history<'a>(&'a self, group: &'a str, since: &'a Since) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            match self.history_config(group) {
                Some(config) => self.inner.history_read(group, None, since, &config).await,
                None => Ok(Catchup::none()),
            }
        })
    }

    fn group_discard<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            validate_channel_name(channel)?;
            let inner = &self.inner;
            inner.forget(group, channel);
            let key = inner.group_key(group);
            let commands = inner.commands(&key);
            let zrem = redis::cmd("ZREM").arg(&key).arg(channel).clone();
            let zrem = &zrem;
            commands
                .retry(|mut commands| async move { zrem.query_async::<()>(&mut commands).await })
                .await
                .map_err(backend)
        })
    }

    fn group_send<'a>(&'a self, group: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        Box::pin(async move {
            validate_group_name(group)?;
            check_message(&message)?;
            if let Some(config) = self.history_config(group) {
                return self.inner.history_send(group, &message, &config).await;
            }
            let message = without_reserved(message);
            let payload =
                serde_json::to_string(message.value()).map_err(|err| LayerError::Backend(BackendError::new(err)))?;
            self.inner.group_send(group, &payload).await
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), LayerError>> {
        Box::pin(async move {
            let pattern = match self.inner.config.wire {
                Wire::Native => format!("{}:*", self.inner.config.prefix),
                // channels_redis's keys are the prefix followed directly by the channel name.
                Wire::ChannelsRedis => format!("{}*", self.inner.config.prefix),
            };
            for shard in &self.inner.shards {
                let mut commands = shard.node.commands();
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(&pattern).query_async(&mut commands).await.map_err(backend)?;
                for chunk in keys.chunks(512) {
                    redis::cmd("DEL").arg(chunk).query_async::<()>(&mut commands).await.map_err(backend)?;
                }
            }
            lock(&self.inner.memberships).clear();
            lock(&self.inner.tracked).clear();
            self.inner.local.clear();
            Ok(())
        })
    }

    fn stats(&self) -> LayerStats {
        let own = self.inner.counters.snapshot();
        LayerStats { expired: own.expired + self.inner.local.expired(), ..own }
    }

    fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError> {
        if !self.inner.is_own(channel) {
            return Err(LayerError::Backend(BackendError::msg(format!(
                "{channel:?} is not a channel of this process; subscribe to a name from new_channel()"
            ))));
        }
        self.inner.local.subscribe(channel)
    }
}
