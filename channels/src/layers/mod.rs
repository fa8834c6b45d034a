//! Channel layers: how consumers talk to each other (Channels' `channel_layer`).
//!
//! A layer carries [`ChannelMessage`]s (JSON objects with a `"type"`) to named **channels**
//! (one per consumer instance, [`Scope::channel_name`](crate::Scope::channel_name)) and to
//! **groups** of channels. A consumer's `#[handler("chat.message")]` methods receive them.
//!
//! | Backend | For |
//! |---|---|
//! | [`InMemoryChannelLayer`] | one process; the default |
//! | `RedisChannelLayer` (feature `redis`) | any number of server processes sharing Redis |
//!
//! ```
//! use channels::layers::{ChannelLayer, InMemoryChannelLayer};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels::layers::LayerError> {
//! let layer = InMemoryChannelLayer::new();
//! let alice = layer.new_channel("specific")?;
//! layer.group_add("room.lobby", &alice).await?;
//! layer.group_send("room.lobby", json!({"type": "chat.message", "text": "hi"}).into()).await?;
//! let message = layer.receive(&alice).await?;
//! assert_eq!(message.message_type(), Some("chat.message"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Semantics (both backends)
//! - **At most once, FIFO per channel.** A message goes to one receiver of its channel, in send
//!   order; it is never delivered twice. A message nobody receives expires.
//! - **Capacity** per channel (default 100 messages): [`send`](ChannelLayer::send) to a full
//!   channel fails with [`LayerError::ChannelFull`]; [`group_send`](ChannelLayer::group_send)
//!   skips that member, logs it and counts it in [`LayerStats::dropped`] — one slow consumer
//!   never blocks the group.
//! - **Expiry**: a message not received within `expiry` (default 60 s) is dropped; a group
//!   membership not renewed within `group_expiry` (default 86400 s) lapses. Consumers leave
//!   their groups on disconnect, so lapsing only cleans up after crashed processes.
//! - **Names** follow Channels: ASCII letters, digits, `-`, `_`, `.`, shorter than 100
//!   characters; a channel name may contain one `!` (process-local channels, as returned by
//!   [`new_channel`](ChannelLayer::new_channel)). A bad name is [`LayerError::InvalidName`].
//! - Messages of 1 MiB and more are fine.
//!
//! ## Beyond at most once: history and presence (both backends)
//! - Groups matching a [`LayerConfig::history`] prefix keep their last messages; each message
//!   gets a [`Position`], and [`group_join`](ChannelLayer::group_join) resumes after one (see
//!   [`Since`], [`Catchup`], and the runtime's side in the consumer traits' `since`). Every
//!   process that sends to such a group needs the same history settings: the sender appends.
//! - [`presence_track`](ChannelLayer::presence_track) / [`presence_list`](ChannelLayer::presence_list):
//!   who is in a group, with [`PresenceDiff`] messages to its members (see [`Track`]).

mod history;
mod local;
mod memory;
mod names;
mod presence;
#[cfg(feature = "redis")]
mod redis;
mod resume;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use self::history::{
    Catchup, GROUP_FIELD, HistoryConfig, Lost, NOT_RECOVERED_TYPE, POSITION_FIELD, Position, PositionError, Recovery,
    Since,
};
pub use self::local::LocalChannels;
pub use self::memory::InMemoryChannelLayer;
pub use self::names::{validate_channel_name, validate_group_name};
pub use self::presence::{PRESENCE_DIFF_TYPE, PRESENCE_STATE_TYPE, PresenceDiff, PresenceMeta, PresenceState, Track};
#[cfg(feature = "redis")]
pub use self::redis::{RedisChannelLayer, RedisLayerConfig, Wire};

use crate::BoxFuture;
use crate::event::ChannelMessage;

/// A channel layer shared by the application: `Arc<dyn ChannelLayer>`.
pub type Layer = Arc<dyn ChannelLayer>;

/// A channel layer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A channel or group name breaks a naming rule; the message names the rule.
    #[error("invalid {kind} name {name:?}: {rule}")]
    InvalidName {
        /// `"channel"` or `"group"`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The channel already holds `capacity` messages.
    #[error("channel {channel:?} is full ({capacity} messages)")]
    ChannelFull {
        /// The channel.
        channel: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The message is not a JSON object with a string `"type"`.
    #[error("a channel-layer message is a JSON object with a string \"type\" field")]
    InvalidMessage,
    /// No channel layer is configured where one was needed.
    #[error(
        "no channel layer: serve the app through a ProtocolTypeRouter (routing!), which provides an \
         in-memory layer by default or the one given to `.channel_layer(...)`"
    )]
    NoLayer,
    /// `receive` on a process-specific channel (one with `!`, from
    /// [`new_channel`](ChannelLayer::new_channel)) that another layer instance created: only
    /// that instance receives its messages (channels_redis: "Wrong client prefix").
    #[error(
        "channel {channel:?} is process-specific and belongs to another layer instance: only the \
         instance whose new_channel() made it can receive from it"
    )]
    NotLocal {
        /// The channel.
        channel: String,
    },
    /// The backend failed (e.g. Redis is unreachable); the message says how, and the backend's
    /// own error is its source.
    #[error("channel layer backend error: {0}")]
    Backend(#[source] crate::error::BackendError),
}

/// What a channel layer does: Channels' `send`, `receive`, `new_channel`, `group_add`,
/// `group_discard`, `group_send` and `flush`. Object safe: applications hold a [`Layer`].
pub trait ChannelLayer: Send + Sync + 'static {
    /// Sends `message` to `channel`.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], [`LayerError::InvalidMessage`], [`LayerError::ChannelFull`],
    /// or a backend error.
    fn send<'a>(&'a self, channel: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>>;

    /// Waits for the next message on `channel`. Several receivers may wait on one channel;
    /// each message goes to one of them. Cancel safe: a dropped `receive` loses nothing.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], [`LayerError::NotLocal`] at once for another instance's
    /// process-specific channel, or a backend error.
    fn receive<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelMessage, LayerError>>;

    /// A new, unique, process-local channel name starting with `prefix` (Channels uses
    /// `"specific"`): `"specific.<layer>!<random>"`.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`] for a bad prefix.
    fn new_channel(&self, prefix: &str) -> Result<String, LayerError>;

    /// Adds `channel` to `group` (again: renews the membership's expiry).
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], or a backend error.
    fn group_add<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>>;

    /// Removes `channel` from `group` (no error if it was not a member).
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], or a backend error.
    fn group_discard<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>>;

    /// Sends `message` to every member of `group`. A full member is skipped, logged and
    /// counted in [`LayerStats::dropped`]; the others still get it.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], [`LayerError::InvalidMessage`], or a backend error.
    fn group_send<'a>(&'a self, group: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>>;

    /// Drops every message and group of this layer (tests use it between cases).
    ///
    /// # Errors
    /// A backend error.
    fn flush(&self) -> BoxFuture<'_, Result<(), LayerError>>;

    /// Counters since the layer was created.
    fn stats(&self) -> LayerStats;

    /// The history `group` keeps, if any ([`LayerConfig::history`]). A layer without history
    /// support keeps none (the default).
    fn history_config(&self, group: &str) -> Option<HistoryConfig> {
        let _ = group;
        None
    }

    /// Adds `channel` to `group` and reads the group's history as `since` asks, in one step:
    /// every message sent to the group is then either in the returned
    /// [`Catchup::messages`] or delivered to `channel` afterwards, never both or neither.
    /// For a group without history this is [`group_add`](Self::group_add) (the default).
    ///
    /// # Errors
    /// As [`group_add`](Self::group_add).
    fn group_join<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        let _ = since;
        Box::pin(async move {
            self.group_add(group, channel).await?;
            Ok(Catchup::none())
        })
    }

    /// Tracks `channel` in `group`'s presence under `key` with `meta` (again: replaces its
    /// meta), and sends the group a `"presence.diff"` when it is new. See [`PresenceDiff`] for
    /// how entries of a dead process lapse.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], a backend error, or a layer without presence.
    fn presence_track<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        key: &'a str,
        meta: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), LayerError>> {
        let _ = (group, channel, key, meta);
        Box::pin(std::future::ready(Err(no_presence())))
    }

    /// Stops tracking `channel` in `group` (no error if it was not tracked); the group gets a
    /// leave diff.
    ///
    /// # Errors
    /// As [`presence_track`](Self::presence_track).
    fn presence_untrack<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        let _ = (group, channel);
        Box::pin(std::future::ready(Err(no_presence())))
    }

    /// Who is tracked in `group` now.
    ///
    /// # Errors
    /// As [`presence_track`](Self::presence_track).
    fn presence_list<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceState, LayerError>> {
        let _ = group;
        Box::pin(std::future::ready(Err(no_presence())))
    }

    /// Reads `group`'s history as `since` asks, without joining it (the runtime fills gaps in
    /// a member's messages with it). A group without history has none: [`Catchup::none`].
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], or a backend error.
    fn group_history<'a>(&'a self, group: &'a str, since: &'a Since) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        let _ = (group, since);
        Box::pin(std::future::ready(Ok(Catchup::none())))
    }

    /// How a backend feeds consumers: a [`Subscription`] to `channel` (a name from
    /// [`new_channel`](Self::new_channel)), one per consumer instance, which the runtime polls
    /// beside the connection's events (no task per connection). A backend keeps its process's
    /// channels in [`LocalChannels`], delivers what arrives for them with
    /// [`LocalChannels::deliver`], and returns [`LocalChannels::subscribe`] here;
    /// `tests/custom_layer.rs` is a complete third-party layer in 100 lines.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`], or a channel this process cannot receive.
    fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError>;
}

impl std::fmt::Debug for dyn ChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelLayer").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Counters of a channel layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Messages delivered to a channel's queue (`send`, and once per member for `group_send`).
    pub sent: u64,
    /// Group messages not delivered to a member whose channel was full.
    pub dropped: u64,
    /// Messages that expired before anyone received them.
    pub expired: u64,
}

/// Atomic counters behind [`LayerStats`], and the log of drops.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    expired: AtomicU64,
    drops: std::sync::Mutex<DropSummary>,
}

/// How often dropped messages are logged, as counts per group (or channel).
const DROP_SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Groups named in one summary; the rest are counted together.
const DROP_SUMMARY_NAMES: usize = 32;

/// Drops counted since the last summary line.
#[derive(Debug, Default)]
struct DropSummary {
    since: Option<std::time::Instant>,
    by_name: std::collections::HashMap<Box<str>, u64>,
    others: u64,
}

impl Counters {
    pub(crate) fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        crate::metrics::layer_delivered(n);
    }

    pub(crate) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        crate::metrics::layer_dropped(n);
    }

    /// `n` messages for `name` (a group, or a channel) were dropped because their receivers
    /// were full. A flooding client can cause this for every message it sends, so it is not
    /// logged per message: the first drop after a quiet spell is logged at once, later ones as
    /// one line per group every [`DROP_SUMMARY_EVERY`], with counts.
    pub(crate) fn dropped_for(&self, name: &str, n: u64) {
        self.dropped(n);
        let now = std::time::Instant::now();
        let mut summary = self.drops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(since) = summary.since else {
            summary.since = Some(now);
            tracing::warn!(
                group = name,
                dropped = n,
                "messages dropped: receivers full (further drops are summarised every {DROP_SUMMARY_EVERY:?})"
            );
            return;
        };
        if let Some(count) = summary.by_name.get_mut(name) {
            *count += n;
        } else if summary.by_name.len() < DROP_SUMMARY_NAMES {
            summary.by_name.insert(name.into(), n);
        } else {
            summary.others += n;
        }
        if now.duration_since(since) >= DROP_SUMMARY_EVERY {
            let summary = std::mem::replace(&mut *summary, DropSummary { since: Some(now), ..DropSummary::default() });
            let seconds = now.duration_since(since).as_secs();
            for (group, dropped) in &summary.by_name {
                tracing::warn!(group = &**group, dropped, seconds, "messages dropped: receivers full");
            }
            if summary.others > 0 {
                tracing::warn!(dropped = summary.others, seconds, "messages dropped for other groups: receivers full");
            }
        }
    }

    pub(crate) fn expired(&self, n: u64) {
        self.expired.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            crate::metrics::layer_expired(n);
        }
    }

    pub(crate) fn snapshot(&self) -> LayerStats {
        LayerStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }
}

/// Settings shared by the layers (channels_redis' names and defaults).
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// Messages a channel holds before `send` fails with `ChannelFull` (default 100).
    pub capacity: usize,
    /// How long an unreceived message lives (default 60 s).
    pub expiry: Duration,
    /// How long a group membership lives without being renewed (default 86400 s); also how
    /// long a quiet group's history position is remembered.
    pub group_expiry: Duration,
    /// Groups that keep a history, by name prefix (the longest matching prefix wins; a full
    /// name is a prefix too): see [`HistoryConfig`] and [`with_history`](Self::with_history).
    /// None by default.
    pub history: Vec<(String, HistoryConfig)>,
    /// The in-memory layer keeps the histories of at most this many groups (default 10,000);
    /// past it, it forgets the least recently used one (whose clients then get "not
    /// recovered"), so clients naming ever new groups cannot grow memory without bound.
    pub max_histories: usize,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            capacity: 100,
            expiry: Duration::from_secs(60),
            group_expiry: Duration::from_secs(86_400),
            history: Vec::new(),
            max_histories: 10_000,
        }
    }
}

impl LayerConfig {
    /// Groups whose name starts with `prefix` keep `history`.
    #[must_use]
    pub fn with_history(mut self, prefix: impl Into<String>, history: HistoryConfig) -> Self {
        self.history.push((prefix.into(), history));
        self
    }

    /// The history `group` keeps, if any.
    pub fn history_for(&self, group: &str) -> Option<HistoryConfig> {
        self.history
            .iter()
            .filter(|(prefix, _)| group.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, history)| *history)
    }
}

/// A consumer's receiving end of its channel: the runtime polls it next to the connection's
/// events. Dropping it stops receiving (and frees the channel's queue in this process).
pub struct Subscription {
    inner: Box<dyn SubscriptionSource>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// What feeds a [`Subscription`]. [`LocalChannels::subscribe`] makes one for a channel of this
/// process; a backend of its own kind implements this and returns it from
/// [`ChannelLayer::subscribe`].
pub trait SubscriptionSource: Send + Sync {
    /// The next message, when there is one.
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<ChannelMessage>;

    /// Whether a message for this channel was dropped (the channel was full, or the message
    /// expired) since the last call. The runtime then reads the history of the consumer's
    /// groups that keep one, so nothing is missed. The default: never.
    fn take_lost(&mut self) -> bool {
        false
    }
}

impl Subscription {
    /// A subscription fed by `source`.
    pub fn new(source: impl SubscriptionSource + 'static) -> Self {
        Subscription { inner: Box::new(source) }
    }

    /// Polls for the next message of the channel.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<ChannelMessage> {
        self.inner.poll_recv(cx)
    }

    /// Whether a message for the channel was dropped since the last call (see
    /// [`SubscriptionSource::take_lost`]).
    pub fn take_lost(&mut self) -> bool {
        self.inner.take_lost()
    }

    /// The next message of the channel.
    pub async fn recv(&mut self) -> ChannelMessage {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// The group every connection of one user joins (`"user.<id>"`), so that logout or a password
/// change can reach — and close — all of that user's sockets; see [`close_message`].
///
/// # Errors
/// [`LayerError::InvalidName`] when `user_id` has characters a group name cannot hold.
pub fn user_group(user_id: &str) -> Result<String, LayerError> {
    let group = format!("user.{user_id}");
    validate_group_name(&group)?;
    Ok(group)
}

/// A message that closes every WebSocket consumer receiving it with `code` (the runtime handles
/// the `"websocket.close"` type itself, before the consumer's handlers).
pub fn close_message(code: u16) -> ChannelMessage {
    ChannelMessage::from(serde_json::json!({ "type": CLOSE_TYPE, "code": code }))
}

/// The message type the runtime handles by closing the WebSocket.
pub const CLOSE_TYPE: &str = "websocket.close";

/// A consumer's channel, declared groups and presence: joined (tracked) before `connect`, left
/// (untracked) when the consumer ends — on every path, a panic included (then from `Drop`, in
/// a spawned task).
pub(crate) struct Membership {
    layer: Layer,
    channel: String,
    /// Each group's name once per connection, shared with the history and presence tracking.
    groups: Vec<Arc<str>>,
    /// The group it is tracked in.
    tracked: Option<Arc<str>>,
}

impl Membership {
    /// Joins `groups` (those with history `since` that position; `invalid`: the client gave
    /// a position that is not one, and the consumer gave none instead), tracks `track`, and returns the consumer's subscription
    /// with the catch-up and presence state in front, and whether there is any (then it
    /// waits for `connect`).
    pub(crate) async fn join(
        layer: Layer,
        channel: String,
        groups: Vec<String>,
        (since, invalid): (&Since, bool),
        track: Option<Track>,
        live: Subscription,
    ) -> Result<(Self, (Subscription, bool)), LayerError> {
        let mut membership = Membership { layer, channel, groups: Vec::with_capacity(groups.len()), tracked: None };
        let mut resumed = resume::Resumed::new(live, membership.layer.clone());
        for group in groups {
            let group = Arc::<str>::from(group);
            // On an error, Drop leaves the groups joined so far.
            let catchup = membership.layer.group_join(&group, &membership.channel, since).await?;
            resumed.joined(&group, catchup, invalid);
            membership.groups.push(group);
        }
        if let Some(Track { group, key, meta }) = track {
            membership.layer.presence_track(&group, &membership.channel, &key, meta).await?;
            let group = match membership.groups.iter().find(|joined| joined.as_ref() == group.as_str()) {
                Some(joined) => Arc::clone(joined),
                None => Arc::from(group),
            };
            let tracked = membership.tracked.insert(group);
            let state = membership.layer.presence_list(tracked).await?;
            resumed.presence_state(tracked, &state);
        }
        resumed.joins_done();
        let tracks = resumed.is_needed();
        let subscription = if tracks { Subscription::new(resumed) } else { resumed.into_live() };
        Ok((membership, (subscription, tracks)))
    }

    pub(crate) async fn leave(mut self) {
        let (groups, tracked) = (std::mem::take(&mut self.groups), self.tracked.take());
        leave(&self.layer, &self.channel, &groups, tracked.as_deref()).await;
    }
}

async fn leave(layer: &Layer, channel: &str, groups: &[Arc<str>], tracked: Option<&str>) {
    if let Some(group) = tracked
        && let Err(err) = layer.presence_untrack(group, channel).await
    {
        tracing::warn!(group, channel, %err, "could not untrack presence; the entry will lapse");
    }
    for group in groups {
        if let Err(err) = layer.group_discard(group, channel).await {
            tracing::warn!(group = &**group, channel, %err, "could not leave a group; the membership will expire");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.groups.is_empty() && self.tracked.is_none() {
            return;
        }
        let (layer, channel, groups, tracked) = (
            self.layer.clone(),
            std::mem::take(&mut self.channel),
            std::mem::take(&mut self.groups),
            self.tracked.take(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { leave(&layer, &channel, &groups, tracked.as_deref()).await });
            }
            Err(_) => tracing::warn!(channel, "no runtime to leave groups from; the memberships will expire"),
        }
    }
}

fn no_presence() -> LayerError {
    LayerError::Backend(crate::error::BackendError::msg("this channel layer does not implement presence"))
}

/// FNV-1a: the same value for the same string in every process (std's hasher is seeded).
pub(crate) fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// `message` without the fields only a send to a group with history may set (`"__group__"`,
/// `"__position__"`): a message relayed from a client must not move a member's position.
pub(crate) fn without_reserved(message: ChannelMessage) -> ChannelMessage {
    let value = message.value();
    if value.get(GROUP_FIELD).is_none() && value.get(POSITION_FIELD).is_none() {
        return message;
    }
    let mut value = value.clone();
    if let serde_json::Value::Object(map) = &mut value {
        map.remove(GROUP_FIELD);
        map.remove(POSITION_FIELD);
    }
    ChannelMessage::new(value)
}

/// Checks that a message is a JSON object with a string `"type"`.
pub(crate) fn check_message(message: &ChannelMessage) -> Result<(), LayerError> {
    match message.message_type() {
        Some(_) => Ok(()),
        None => Err(LayerError::InvalidMessage),
    }
}
