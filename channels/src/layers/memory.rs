//! [`InMemoryChannelLayer`]: channels and groups inside one process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::history::GroupHistory;
use super::local::{LocalChannels, Mailbox, Route};
use super::presence::{PresenceDiff, PresenceMeta, PresenceState, entry_id, state_of};
use super::{
    Catchup, ChannelLayer, Counters, HistoryConfig, LayerConfig, LayerError, LayerStats, Since, Subscription,
    check_message, validate_channel_name, validate_group_name, without_reserved,
};
use crate::BoxFuture;
use crate::event::ChannelMessage;

/// The default channel layer: every channel and group lives in this process's memory.
///
/// The channels are [`LocalChannels`] (lock-light, bounded, expiring); a group send copies the
/// member list out of the group lock before delivering. Nothing grows without bound: each
/// channel holds at most `capacity` messages, messages and memberships expire, and channels
/// nobody listens to are swept once empty.
///
/// Cloning is cheap and shares the layer.
#[derive(Clone, Debug)]
pub struct InMemoryChannelLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: LocalChannels,
    /// Group → member channel → membership. Names are shared (`Arc<str>`), so a group send
    /// copies the member list without allocating a string per member.
    groups: Mutex<HashMap<String, HashMap<Arc<str>, Member>>>,
    /// Histories of the groups that keep one. A send to such a group appends and delivers
    /// under its history's lock, so members receive its messages in offset order, and a join
    /// under the same lock sees each message either in the history or live.
    histories: Mutex<HashMap<String, Arc<Mutex<GroupHistory>>>>,
    /// Group → tracked channel → (key, meta). Diffs are delivered under this lock, so members
    /// see them in the order the changes happened.
    presence: Mutex<HashMap<String, Tracked>>,
    counters: Counters,
    /// Distinguishes this layer's channel names from another layer's.
    id: u64,
    next_channel: AtomicU64,
    /// Group operations since the last sweep of lapsed memberships.
    ops: AtomicU64,
}

/// A channel's membership of a group.
#[derive(Debug)]
struct Member {
    expires: Instant,
    /// To the channel's mailbox, so that a group send does not look each member up by name.
    route: Route,
}

/// A member to deliver to: its channel's name, and its mailbox while the route leads there.
type Target = (Arc<str>, Option<Arc<Mailbox>>);

/// A group's tracked channels: channel (its shared name) → (key, meta).
type Tracked = HashMap<Arc<str>, (String, serde_json::Value)>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map update: a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for InMemoryChannelLayer {
    fn default() -> Self {
        InMemoryChannelLayer::new()
    }
}

impl InMemoryChannelLayer {
    /// A layer with the default [`LayerConfig`] (capacity 100, expiry 60 s, group expiry 1 day).
    pub fn new() -> Self {
        InMemoryChannelLayer::with_config(LayerConfig::default())
    }

    /// A layer with `config`.
    pub fn with_config(config: LayerConfig) -> Self {
        static NEXT_LAYER: AtomicU64 = AtomicU64::new(1);
        InMemoryChannelLayer {
            inner: Arc::new(Inner {
                channels: LocalChannels::new(config),
                groups: Mutex::new(HashMap::new()),
                histories: Mutex::new(HashMap::new()),
                presence: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                id: NEXT_LAYER.fetch_add(1, Ordering::Relaxed),
                next_channel: AtomicU64::new(1),
                ops: AtomicU64::new(0),
            }),
        }
    }

    /// This layer as the shared [`Layer`](super::Layer) applications hold.
    pub fn into_layer(self) -> super::Layer {
        Arc::new(self)
    }

    /// How many channels currently have a queue (tests check that nothing leaks).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.channel_count()
    }

    /// How many channels are members of `group`.
    pub fn group_size(&self, group: &str) -> usize {
        lock(&self.inner.groups).get(group).map_or(0, HashMap::len)
    }

    /// How many groups' histories this layer keeps.
    pub fn history_count(&self) -> usize {
        lock(&self.inner.histories).len()
    }

    /// How many groups have members.
    pub fn group_count(&self) -> usize {
        lock(&self.inner.groups).len()
    }
}

impl Inner {
    fn deliver(&self, channel: &str, message: ChannelMessage) -> Result<(), LayerError> {
        self.channels.deliver(channel, message)?;
        self.counters.sent(1);
        Ok(())
    }

    /// Every 4096 group operations, drops lapsed memberships and empty groups.
    fn maybe_sweep(&self) {
        if self.ops.fetch_add(1, Ordering::Relaxed) % 4096 != 4095 {
            return;
        }
        let now = Instant::now();
        lock(&self.groups).retain(|_, members| {
            members.retain(|_, member| member.expires > now);
            !members.is_empty()
        });
    }

    /// `group`'s history, created (with a new epoch) if it has none; at the
    /// [`max_histories`](LayerConfig::max_histories) bound, stale histories go first, then the
    /// least recently used one.
    fn history(&self, group: &str) -> Arc<Mutex<GroupHistory>> {
        let mut histories = lock(&self.histories);
        if let Some(history) = histories.get(group) {
            return history.clone();
        }
        let now = Instant::now();
        let config = self.channels.config();
        let max = config.max_histories.max(1);
        if histories.len() >= max {
            histories.retain(|name, history| {
                let stale = config.history_for(name).is_none_or(|kept| lock(history).is_stale(&kept, now));
                Arc::strong_count(history) > 1 || !stale
            });
        }
        if histories.len() >= max
            && let Some(oldest) = histories
                .iter()
                .filter(|(_, history)| Arc::strong_count(history) == 1)
                .min_by_key(|(_, history)| lock(history).used)
                .map(|(group, _)| group.clone())
        {
            histories.remove(&oldest);
        }
        let history = Arc::new(Mutex::new(GroupHistory::new(now)));
        histories.insert(group.to_owned(), history.clone());
        history
    }

    fn add(&self, group: &str, channel: &str) {
        self.maybe_sweep();
        let expires = Instant::now() + self.channels.config().group_expiry;
        let (channel, route) = self.channels.intern_route(channel);
        let mut groups = lock(&self.groups);
        groups.entry(group.to_owned()).or_default().insert(channel, Member { expires, route });
    }

    /// Delivers `message` to every member of `group`.
    fn deliver_to_group(&self, group: &str, message: &ChannelMessage) {
        let (members, now) = self.members(group);
        crate::metrics::layer_group_send(members.len());
        let mut sent = 0;
        for (channel, mailbox) in members {
            match self.channels.deliver_routed(&channel, mailbox, message.clone(), now) {
                Ok(()) => sent += 1,
                Err(_) => self.counters.dropped_for(group, 1),
            }
        }
        self.counters.sent(sent);
    }

    /// The members of `group` with their mailboxes, dropping lapsed memberships; and the time.
    fn members(&self, group: &str) -> (Vec<Target>, Instant) {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let Some(members) = groups.get_mut(group) else { return (Vec::new(), now) };
        members.retain(|_, member| member.expires > now);
        let list = members.iter().map(|(channel, member)| (channel.clone(), member.route.mailbox())).collect();
        if members.is_empty() {
            groups.remove(group);
        }
        (list, now)
    }
}

impl ChannelLayer for InMemoryChannelLayer {
    fn send<'a>(&'a self, channel: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        crate::metrics::layer_send();
        let result = validate_channel_name(channel)
            .and_then(|()| check_message(&message))
            .and_then(|()| self.inner.deliver(channel, without_reserved(message)));
        Box::pin(std::future::ready(result))
    }

    fn receive<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelMessage, LayerError>> {
        Box::pin(async move {
            validate_channel_name(channel)?;
            if let Some((head, _)) = channel.split_once('!')
                && head.rsplit('.').next() != Some(&format!("inmemory{}", self.inner.id))
            {
                return Err(LayerError::NotLocal { channel: channel.to_owned() });
            }
            Ok(self.inner.channels.receive(channel).await)
        })
    }

    fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let n = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}.inmemory{}!{n}", self.inner.id);
        validate_channel_name(&name)?;
        Ok(name)
    }

    fn group_add<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group)
            .and_then(|()| validate_channel_name(channel))
            .map(|()| self.inner.add(group, channel));
        Box::pin(std::future::ready(result))
    }

    fn history_config(&self, group: &str) -> Option<HistoryConfig> {
        self.inner.channels.config().history_for(group)
    }

    fn group_join<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        let result = validate_group_name(group).and_then(|()| validate_channel_name(channel)).map(|()| {
            let Some(config) = self.history_config(group) else {
                self.inner.add(group, channel);
                return Catchup::none();
            };
            let history = self.inner.history(group);
            let mut history = lock(&history);
            self.inner.add(group, channel);
            history.catchup(since, &config, Instant::now())
        });
        Box::pin(std::future::ready(result))
    }

    fn presence_track<'a>(
        &'a self,
        group: &'a str,
        channel: &'a str,
        key: &'a str,
        meta: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group).and_then(|()| validate_channel_name(channel)).map(|()| {
            let name = self.inner.channels.intern(channel);
            let mut presence = lock(&self.inner.presence);
            let entry = (key.to_owned(), meta.clone());
            let previous = presence.entry(group.to_owned()).or_default().insert(name, entry);
            if previous.as_ref().is_some_and(|(old_key, old_meta)| old_key == key && *old_meta == meta) {
                return;
            }
            let id = entry_id(channel);
            let leaves = previous.map(|(old_key, old_meta)| (old_key, PresenceMeta { id: id.clone(), meta: old_meta }));
            let diff = PresenceDiff {
                group: group.to_owned(),
                joins: state_of([(key, PresenceMeta { id, meta })]),
                leaves: state_of(leaves),
            };
            self.inner.deliver_to_group(group, &diff.to_message());
        });
        Box::pin(std::future::ready(result))
    }

    fn presence_untrack<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group).and_then(|()| validate_channel_name(channel)).map(|()| {
            let mut presence = lock(&self.inner.presence);
            let Some(entries) = presence.get_mut(group) else { return };
            let Some((key, meta)) = entries.remove(channel) else { return };
            if entries.is_empty() {
                presence.remove(group);
            }
            let diff = PresenceDiff {
                group: group.to_owned(),
                leaves: state_of([(key, PresenceMeta { id: entry_id(channel), meta })]),
                ..PresenceDiff::default()
            };
            self.inner.deliver_to_group(group, &diff.to_message());
        });
        Box::pin(std::future::ready(result))
    }

    fn presence_list<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceState, LayerError>> {
        let result = validate_group_name(group).map(|()| {
            let presence = lock(&self.inner.presence);
            let entries = presence.get(group).into_iter().flatten();
            state_of(entries.map(|(channel, (key, meta))| {
                (key.as_str(), PresenceMeta { id: entry_id(channel), meta: meta.clone() })
            }))
        });
        Box::pin(std::future::ready(result))
    }

    fn group_history<'a>(&'a self, group: &'a str, since: &'a Since) -> BoxFuture<'a, Result<Catchup, LayerError>> {
        let result = validate_group_name(group).map(|()| match self.history_config(group) {
            Some(config) => lock(&self.inner.history(group)).catchup(since, &config, Instant::now()),
            None => Catchup::none(),
        });
        Box::pin(std::future::ready(result))
    }

    fn group_discard<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group).and_then(|()| validate_channel_name(channel)).map(|()| {
            let mut groups = lock(&self.inner.groups);
            if let Some(members) = groups.get_mut(group) {
                members.remove(channel);
                if members.is_empty() {
                    groups.remove(group);
                }
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn group_send<'a>(&'a self, group: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group).and_then(|()| check_message(&message)).map(|()| {
            match self.history_config(group) {
                None => self.inner.deliver_to_group(group, &without_reserved(message)),
                Some(config) => {
                    let history = self.inner.history(group);
                    let mut history = lock(&history);
                    let stamped = history.push(group, &message, &config, Instant::now());
                    self.inner.deliver_to_group(group, &stamped);
                }
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), LayerError>> {
        self.inner.channels.clear();
        lock(&self.inner.groups).clear();
        lock(&self.inner.histories).clear();
        lock(&self.inner.presence).clear();
        Box::pin(std::future::ready(Ok(())))
    }

    fn stats(&self) -> LayerStats {
        let own = self.inner.counters.snapshot();
        LayerStats { expired: own.expired + self.inner.channels.expired(), ..own }
    }

    fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError> {
        self.inner.channels.subscribe(channel)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message() -> ChannelMessage {
        serde_json::json!({ "type": "t" }).into()
    }

    #[tokio::test(start_paused = true)]
    async fn expired_messages_are_counted_and_skipped() {
        let layer = InMemoryChannelLayer::with_config(LayerConfig {
            expiry: Duration::from_secs(60),
            ..LayerConfig::default()
        });
        layer.send("c", message()).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        layer.send("c", serde_json::json!({ "type": "fresh" }).into()).await.unwrap();
        assert_eq!(layer.receive("c").await.unwrap().message_type(), Some("fresh"));
        assert_eq!(layer.stats().expired, 1);
    }

    #[tokio::test]
    async fn a_group_send_reaches_a_channel_subscribed_again_not_its_old_mailbox() {
        let layer = InMemoryChannelLayer::new();
        let old = layer.subscribe("worker.jobs").unwrap();
        layer.group_add("g", "worker.jobs").await.unwrap();
        // A receive still holds the channel's first mailbox after its subscription is gone.
        let mut waiting = Box::pin(layer.receive("worker.jobs"));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(old);
        let mut new = layer.subscribe("worker.jobs").unwrap();
        layer.group_send("g", message()).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(1), new.recv()).await;
        assert_eq!(received.expect("delivered to the channel's mailbox").message_type(), Some("t"));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending(), "not to the old one");
        assert_eq!(layer.stats().sent, 1);
    }

    #[tokio::test]
    async fn subscriptions_free_their_channel_and_unused_channels_are_swept() {
        let layer = InMemoryChannelLayer::new();
        let channel = layer.new_channel("specific").unwrap();
        let subscription = layer.subscribe(&channel).unwrap();
        assert_eq!(layer.channel_count(), 1);
        drop(subscription);
        assert_eq!(layer.channel_count(), 0);
        // A receive that is dropped leaves an empty, unheld channel; the sweep (every 4096
        // channel operations) removes it.
        // (The subscription above was operation 1; the send below is operation 4096.)
        for _ in 0..4094 {
            let _ = tokio::time::timeout(Duration::ZERO, layer.receive("c")).await;
        }
        assert_eq!(layer.channel_count(), 1);
        layer.send("d", message()).await.unwrap();
        assert_eq!(layer.channel_count(), 1, "`c` was swept; `d` holds a message");
    }
}
