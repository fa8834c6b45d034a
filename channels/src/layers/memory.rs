//! [`InMemoryChannelLayer`]: channels and groups inside one process.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::{
    ChannelLayer, Counters, LayerConfig, LayerError, LayerStats, Subscription, SubscriptionSource, check_message,
    validate_channel_name, validate_group_name,
};
use crate::BoxFuture;
use crate::event::ChannelMessage;

/// Channel map shards: senders to different channels rarely contend.
const SHARDS: usize = 16;

/// The default channel layer: every channel and group lives in this process's memory.
///
/// Lock-light: channels are spread over 16 shards, each channel has its own queue lock, and a
/// group send copies the member list out of the group lock before delivering. Nothing grows
/// without bound: each channel holds at most `capacity` messages, messages and memberships
/// expire, and channels nobody listens to are swept once empty.
///
/// Cloning is cheap and shares the layer.
#[derive(Clone, Debug)]
pub struct InMemoryChannelLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LayerConfig,
    shards: Box<[Mutex<ChannelMap>]>,
    hasher: RandomState,
    /// Group → member channel → membership expiry. Names are shared (`Arc<str>`), so a group
    /// send copies the member list without allocating a string per member.
    groups: Mutex<HashMap<String, HashMap<Arc<str>, Instant>>>,
    counters: Counters,
    /// Distinguishes this layer's channel names from another layer's.
    id: u64,
    next_channel: AtomicU64,
    /// Operations since the last sweep of unused channels.
    ops: AtomicU64,
}

/// One shard's channels.
type ChannelMap = HashMap<String, Arc<Mailbox>>;

/// One channel's queue.
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Debug, Default)]
struct MailboxState {
    queue: VecDeque<(Instant, ChannelMessage)>,
    /// Receivers waiting for a message; all are woken on a push (stale ones wake harmlessly).
    waiters: Vec<Waker>,
    /// A consumer's subscription holds the channel: it is not swept while subscribed.
    subscribed: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (every
    // critical section is a single push, pop or map update), so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mailbox {
    /// Queues `message` unless the channel is full.
    fn push(&self, message: ChannelMessage, config: &LayerConfig, counters: &Counters) -> Result<(), usize> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let expired = state.drop_expired(now);
        counters.expired(expired);
        if state.queue.len() >= config.capacity {
            return Err(config.capacity);
        }
        state.queue.push_back((now + config.expiry, message));
        for waker in state.waiters.drain(..) {
            waker.wake();
        }
        Ok(())
    }

    fn poll_pop(&self, cx: &mut Context<'_>, counters: &Counters) -> Poll<ChannelMessage> {
        let mut state = lock(&self.state);
        let expired = state.drop_expired(Instant::now());
        counters.expired(expired);
        if let Some((_, message)) = state.queue.pop_front() {
            return Poll::Ready(message);
        }
        if !state.waiters.iter().any(|waker| waker.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl MailboxState {
    /// Drops expired messages from the front (expiry times only grow along the queue).
    fn drop_expired(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while self.queue.front().is_some_and(|(expires, _)| *expires <= now) {
            self.queue.pop_front();
            expired += 1;
        }
        expired
    }
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
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        InMemoryChannelLayer {
            inner: Arc::new(Inner {
                config,
                shards,
                hasher: RandomState::new(),
                groups: Mutex::new(HashMap::new()),
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

    /// Delivers to a local channel (the Redis layer's demultiplexer), counting nothing.
    #[cfg(feature = "redis")]
    pub(crate) fn deliver_local(&self, channel: &str, message: ChannelMessage) -> Result<(), LayerError> {
        self.inner
            .mailbox(channel)
            .push(message, &self.inner.config, &self.inner.counters)
            .map_err(|capacity| LayerError::ChannelFull { channel: channel.to_owned(), capacity })
    }

    /// The next message on `channel`, whoever named it (for the Redis layer's local channels).
    pub(crate) async fn receive_local(&self, channel: &str) -> ChannelMessage {
        let mailbox = self.inner.mailbox(channel);
        poll_fn(|cx| mailbox.poll_pop(cx, &self.inner.counters)).await
    }

    /// How many channels currently have a queue (tests check that nothing leaks).
    pub fn channel_count(&self) -> usize {
        self.inner.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// How many channels are members of `group`.
    pub fn group_size(&self, group: &str) -> usize {
        lock(&self.inner.groups).get(group).map_or(0, HashMap::len)
    }

    /// How many groups have members.
    pub fn group_count(&self) -> usize {
        lock(&self.inner.groups).len()
    }
}

impl Inner {
    fn shard(&self, channel: &str) -> &Mutex<ChannelMap> {
        let index = (self.hasher.hash_one(channel) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    fn mailbox(&self, channel: &str) -> Arc<Mailbox> {
        self.maybe_sweep();
        let mut shard = lock(self.shard(channel));
        match shard.get(channel) {
            Some(mailbox) => mailbox.clone(),
            None => shard.entry(channel.to_owned()).or_default().clone(),
        }
    }

    fn deliver(&self, channel: &str, message: ChannelMessage) -> Result<(), LayerError> {
        self.mailbox(channel)
            .push(message, &self.config, &self.counters)
            .map_err(|capacity| LayerError::ChannelFull { channel: channel.to_owned(), capacity })?;
        self.counters.sent(1);
        Ok(())
    }

    /// Every 4096 operations, removes channels that hold nothing and that nobody holds.
    fn maybe_sweep(&self) {
        if self.ops.fetch_add(1, Ordering::Relaxed) % 4096 != 4095 {
            return;
        }
        let now = Instant::now();
        for shard in &self.shards {
            lock(shard).retain(|_, mailbox| {
                if Arc::strong_count(mailbox) > 1 {
                    return true;
                }
                let mut state = lock(&mailbox.state);
                let expired = state.drop_expired(now);
                self.counters.expired(expired);
                state.subscribed || !state.queue.is_empty()
            });
        }
        let mut groups = lock(&self.groups);
        groups.retain(|_, members| {
            members.retain(|_, expires| *expires > now);
            !members.is_empty()
        });
    }

    /// The members of `group`, dropping lapsed memberships.
    fn members(&self, group: &str) -> Vec<Arc<str>> {
        let mut groups = lock(&self.groups);
        let Some(members) = groups.get_mut(group) else { return Vec::new() };
        let now = Instant::now();
        members.retain(|_, expires| *expires > now);
        let list = members.keys().cloned().collect();
        if members.is_empty() {
            groups.remove(group);
        }
        list
    }
}

impl ChannelLayer for InMemoryChannelLayer {
    fn send<'a>(&'a self, channel: &'a str, message: ChannelMessage) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_channel_name(channel)
            .and_then(|()| check_message(&message))
            .and_then(|()| self.inner.deliver(channel, message));
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
            Ok(self.receive_local(channel).await)
        })
    }

    fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let n = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}.inmemory{}!{n}", self.inner.id);
        validate_channel_name(&name)?;
        Ok(name)
    }

    fn group_add<'a>(&'a self, group: &'a str, channel: &'a str) -> BoxFuture<'a, Result<(), LayerError>> {
        let result = validate_group_name(group).and_then(|()| validate_channel_name(channel)).map(|()| {
            self.inner.maybe_sweep();
            let expires = Instant::now() + self.inner.config.group_expiry;
            let mut groups = lock(&self.inner.groups);
            groups.entry(group.to_owned()).or_default().insert(Arc::from(channel), expires);
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
            for channel in self.inner.members(group) {
                if self.inner.deliver(&channel, message.clone()).is_err() {
                    self.inner.counters.dropped_for(group, 1);
                }
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), LayerError>> {
        for shard in &self.inner.shards {
            for mailbox in lock(shard).values() {
                lock(&mailbox.state).queue.clear();
            }
        }
        lock(&self.inner.groups).clear();
        Box::pin(std::future::ready(Ok(())))
    }

    fn stats(&self) -> LayerStats {
        self.inner.counters.snapshot()
    }

    fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError> {
        validate_channel_name(channel)?;
        let mailbox = self.inner.mailbox(channel);
        lock(&mailbox.state).subscribed = true;
        Ok(Subscription::new(MemorySubscription { inner: self.inner.clone(), channel: channel.to_owned(), mailbox }))
    }
}

struct MemorySubscription {
    inner: Arc<Inner>,
    channel: String,
    mailbox: Arc<Mailbox>,
}

impl SubscriptionSource for MemorySubscription {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<ChannelMessage> {
        self.mailbox.poll_pop(cx, &self.inner.counters)
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        // The consumer is gone: its channel and anything still queued for it go too.
        let mut shard = lock(self.inner.shard(&self.channel));
        if shard.get(&self.channel).is_some_and(|mailbox| Arc::ptr_eq(mailbox, &self.mailbox)) {
            shard.remove(&self.channel);
        }
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
    async fn subscriptions_free_their_channel_and_unused_channels_are_swept() {
        let layer = InMemoryChannelLayer::new();
        let channel = layer.new_channel("specific").unwrap();
        let subscription = layer.subscribe(&channel).unwrap();
        assert_eq!(layer.channel_count(), 1);
        drop(subscription);
        assert_eq!(layer.channel_count(), 0);
        // A receive that is dropped leaves an empty, unheld channel; the sweep removes it.
        let _ = tokio::time::timeout(Duration::from_millis(1), layer.receive("c")).await;
        for _ in 0..4096 {
            layer.group_add("g", "c").await.unwrap();
        }
        assert_eq!(layer.channel_count(), 0);
    }
}
