//! [`LocalChannels`]: the channels of this process — a mailbox per channel, bounded and
//! expiring, and the subscriptions consumers receive through. The in-memory layer is these plus
//! groups; the Redis layer feeds its process's channels into them; a backend of your own can do
//! the same (see [`ChannelLayer::subscribe`](super::ChannelLayer::subscribe)).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::{Counters, LayerConfig, LayerError, Subscription, SubscriptionSource, validate_channel_name};
use crate::deque::InlineDeque;
use crate::event::ChannelMessage;

/// Channel map shards: senders to different channels rarely contend.
const SHARDS: usize = 16;

/// The channels of this process: each a bounded queue (`capacity` messages, each living
/// `expiry`) that `receive`s and [`Subscription`]s take from. Lock-light (16 shards, a lock per
/// channel); a channel nobody holds is removed once empty. Cloning is cheap and shares them.
#[derive(Clone, Debug)]
pub struct LocalChannels {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LayerConfig,
    shards: Box<[Mutex<ChannelMap>]>,
    counters: Counters,
    /// Operations since the last sweep of unused channels.
    ops: AtomicU64,
}

/// The shard of `channel`: its length and last eight bytes (where a generated name's counter
/// is), mixed. Not keyed, and it need not be: it only spreads channels over the shards' locks,
/// and each shard's map hashes with a keyed hasher (names chosen to collide only share a
/// lock). A delivery hashes the name once, not twice.
fn shard_of(channel: &str) -> usize {
    const { assert!(SHARDS.is_power_of_two()) };
    let bytes = channel.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    let mixed = (u64::from_le_bytes(word) ^ bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - SHARDS.trailing_zeros())) as usize
}

/// One shard's channels. A name is stored once (`Arc<str>`) and shared with the channel's
/// subscription and its group memberships ([`LocalChannels::intern`]).
type ChannelMap = HashMap<Arc<str>, Arc<Mailbox>>;

/// One channel's queue.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Debug, Default)]
struct MailboxState {
    /// Messages with their expiry (a consumer's channel mostly holds one or none).
    queue: InlineDeque<(Instant, ChannelMessage)>,
    /// Receivers waiting for a message; all are woken on a push (stale ones wake harmlessly).
    waiters: Waiters,
    /// A consumer's subscription holds the channel: it is not swept while subscribed.
    subscribed: bool,
    /// A message was refused (full) or expired since the subscriber last asked.
    lost: bool,
    /// No longer the channel's mailbox (swept, or its subscription dropped): a [`Route`] to it
    /// finds the channel by name again.
    removed: bool,
}

/// The way to a channel's mailbox, kept by what delivers to it often (a group membership):
/// no lookup by name while the mailbox is the channel's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Route(Weak<Mailbox>);

impl Route {
    /// The mailbox, while it exists ([`LocalChannels::deliver_routed`] checks that it is still
    /// the channel's).
    pub(crate) fn mailbox(&self) -> Option<Arc<Mailbox>> {
        self.0.upgrade()
    }
}

/// Why a message was not queued through a [`Route`].
enum Refused {
    /// The channel holds `capacity` messages.
    Full(usize),
    /// The mailbox is no longer the channel's: the message comes back.
    Removed(ChannelMessage),
}

/// A channel's waiting receivers: nearly always one (its consumer), kept without an allocation
/// of its own (a `Vec` of wakers took 64 B per channel as soon as anyone waited).
#[derive(Debug, Default)]
struct Waiters {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Waiters {
    fn register(&mut self, waker: &Waker) {
        let mut known = self.first.iter().chain(&self.more);
        if known.any(|known| known.will_wake(waker)) {
            return;
        }
        match &mut self.first {
            None => self.first = Some(waker.clone()),
            Some(_) => self.more.push(waker.clone()),
        }
    }

    fn wake_all(&mut self) {
        self.first.take().into_iter().chain(self.more.drain(..)).for_each(Waker::wake);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (every
    // critical section is a single push, pop or map update), so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mailbox {
    /// Queues `message`, sent at `now`, unless the channel is full (its capacity).
    fn push(&self, message: ChannelMessage, now: Instant, inner: &Inner) -> Result<(), usize> {
        lock(&self.state).push(message, now, inner)
    }

    /// [`push`](Self::push) through a [`Route`]: not if this is no longer the channel's mailbox.
    fn push_routed(&self, message: ChannelMessage, now: Instant, inner: &Inner) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        if state.removed {
            return Err(Refused::Removed(message));
        }
        state.push(message, now, inner).map_err(Refused::Full)
    }

    fn poll_pop(&self, cx: &mut Context<'_>, counters: &Counters) -> Poll<ChannelMessage> {
        let mut state = lock(&self.state);
        if !state.queue.is_empty() {
            // (Not read for an empty queue: a consumer's wait for its next message.)
            let expired = state.drop_expired(Instant::now());
            counters.expired(expired);
        }
        if let Some((_, message)) = state.queue.pop_front() {
            return Poll::Ready(message);
        }
        state.waiters.register(cx.waker());
        Poll::Pending
    }
}

impl MailboxState {
    fn push(&mut self, message: ChannelMessage, now: Instant, inner: &Inner) -> Result<(), usize> {
        let config = &inner.config;
        let expired = self.drop_expired(now);
        inner.counters.expired(expired);
        if self.queue.len() >= config.capacity {
            self.lost = true;
            return Err(config.capacity);
        }
        self.queue.push_back((now + config.expiry, message));
        self.waiters.wake_all();
        Ok(())
    }

    /// Drops expired messages from the front (expiry times only grow along the queue).
    fn drop_expired(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while self.queue.front().is_some_and(|(expires, _)| *expires <= now) {
            self.queue.pop_front();
            expired += 1;
        }
        self.lost |= expired > 0;
        expired
    }
}

impl LocalChannels {
    /// Channels with `config`'s capacity and expiry (its group expiry is not used here).
    pub fn new(config: LayerConfig) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        LocalChannels {
            inner: Arc::new(Inner { config, shards, counters: Counters::default(), ops: AtomicU64::new(0) }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LayerConfig {
        &self.inner.config
    }

    /// Queues `message` for `channel` (whoever receives it: a `receive` or a subscription).
    ///
    /// # Errors
    /// [`LayerError::ChannelFull`] when the channel holds `capacity` messages.
    pub fn deliver(&self, channel: &str, message: ChannelMessage) -> Result<(), LayerError> {
        self.deliver_routed(channel, None, message, Instant::now())
    }

    /// Queues `message`, sent at `now`, for `channel`, through `route` while it leads to the
    /// channel's mailbox (a group send reads the clock once, not per member).
    pub(crate) fn deliver_routed(
        &self,
        channel: &str,
        route: Option<Arc<Mailbox>>,
        message: ChannelMessage,
        now: Instant,
    ) -> Result<(), LayerError> {
        let full = |capacity| LayerError::ChannelFull { channel: channel.to_owned(), capacity };
        let message = match route {
            None => message,
            Some(mailbox) => match mailbox.push_routed(message, now, &self.inner) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(capacity)) => return Err(full(capacity)),
                Err(Refused::Removed(message)) => message,
            },
        };
        self.inner.mailbox(channel).push(message, now, &self.inner).map_err(full)
    }

    /// The next message on `channel` (cancel safe: a dropped call loses nothing).
    pub async fn receive(&self, channel: &str) -> ChannelMessage {
        let mailbox = self.inner.mailbox(channel);
        poll_fn(|cx| mailbox.poll_pop(cx, &self.inner.counters)).await
    }

    /// A consumer's subscription to `channel`: the channel lives while it does, and dropping it
    /// drops the channel and what is still queued for it.
    ///
    /// # Errors
    /// [`LayerError::InvalidName`].
    pub fn subscribe(&self, channel: &str) -> Result<Subscription, LayerError> {
        validate_channel_name(channel)?;
        let mailbox = self.inner.mailbox(channel);
        // Held by the subscription, the mailbox stays in the map: the name is found there.
        let channel = self.intern(channel);
        lock(&mailbox.state).subscribed = true;
        Ok(Subscription::new(LocalSubscription { inner: self.inner.clone(), channel, mailbox }))
    }

    /// `channel`'s name as this process stores it, shared (a new one if it has no queue here):
    /// what keeps a name for as long as a channel lives (a group membership) takes this, not
    /// a copy of its own.
    pub(crate) fn intern(&self, channel: &str) -> Arc<str> {
        self.intern_route(channel).0
    }

    /// [`intern`](Self::intern), and the route to the channel's mailbox (none if it has no
    /// queue here yet: deliveries then find it by name).
    pub(crate) fn intern_route(&self, channel: &str) -> (Arc<str>, Route) {
        lock(self.inner.shard(channel)).get_key_value(channel).map_or_else(
            || (Arc::from(channel), Route::default()),
            |(name, mailbox)| (name.clone(), Route(Arc::downgrade(mailbox))),
        )
    }

    /// Drops every queued message.
    pub fn clear(&self) {
        for shard in &self.inner.shards {
            for mailbox in lock(shard).values() {
                drop(lock(&mailbox.state).queue.take());
            }
        }
    }

    /// Marks every channel as having lost messages (e.g. they may have expired in Redis during
    /// an outage), and wakes its receivers: consumers of groups with history then read what they
    /// missed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn mark_all_lost(&self) {
        for shard in &self.inner.shards {
            for mailbox in lock(shard).values() {
                let mut state = lock(&mailbox.state);
                state.lost = true;
                state.waiters.wake_all();
            }
        }
    }

    /// How many channels currently have a queue (tests check that nothing leaks).
    pub fn channel_count(&self) -> usize {
        self.inner.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Messages that expired unreceived, since these channels were made.
    pub fn expired(&self) -> u64 {
        self.inner.counters.snapshot().expired
    }
}

impl Inner {
    fn shard(&self, channel: &str) -> &Mutex<ChannelMap> {
        &self.shards[shard_of(channel)]
    }

    fn mailbox(&self, channel: &str) -> Arc<Mailbox> {
        self.maybe_sweep();
        let mut shard = lock(self.shard(channel));
        match shard.get(channel) {
            Some(mailbox) => mailbox.clone(),
            None => shard.entry(Arc::from(channel)).or_default().clone(),
        }
    }

    /// Every 4096 operations, removes channels that hold nothing and that nobody holds, and
    /// reports how many messages wait in all of them (`channels_layer_queued_messages`).
    fn maybe_sweep(&self) {
        if self.ops.fetch_add(1, Ordering::Relaxed) % 4096 != 4095 {
            return;
        }
        let now = Instant::now();
        let mut queued = 0;
        for shard in &self.shards {
            lock(shard).retain(|_, mailbox| {
                let mut state = lock(&mailbox.state);
                let expired = state.drop_expired(now);
                self.counters.expired(expired);
                queued += state.queue.len();
                let kept = Arc::strong_count(mailbox) > 1 || state.subscribed || !state.queue.is_empty();
                state.removed = !kept;
                kept
            });
        }
        crate::metrics::layer_queued(queued);
    }
}

struct LocalSubscription {
    inner: Arc<Inner>,
    channel: Arc<str>,
    mailbox: Arc<Mailbox>,
}

impl SubscriptionSource for LocalSubscription {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<ChannelMessage> {
        self.mailbox.poll_pop(cx, &self.inner.counters)
    }

    fn take_lost(&mut self) -> bool {
        std::mem::take(&mut lock(&self.mailbox.state).lost)
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        // The consumer is gone: its channel and anything still queued for it go too.
        let mut shard = lock(self.inner.shard(&self.channel));
        if shard.get(&self.channel).is_some_and(|mailbox| Arc::ptr_eq(mailbox, &self.mailbox)) {
            shard.remove(&self.channel);
            lock(&self.mailbox.state).removed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::WakeCount as Count;

    #[test]
    fn generated_channel_names_spread_over_every_shard() {
        let mut counts = [0usize; SHARDS];
        for n in 0..1600 {
            counts[shard_of(&format!("specific.inmemory3f9a!{n}"))] += 1;
        }
        // 100 a shard if even; none empty, none with more than twice its share.
        assert!(counts.iter().all(|count| (1..=200).contains(count)), "{counts:?}");
        assert!(shard_of("") < SHARDS && shard_of("x") < SHARDS);
    }

    #[test]
    fn every_waiting_receiver_is_woken_once_per_push() {
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::new(Count::default())).collect();
        let wakers: Vec<Waker> = counts.iter().map(|count| Waker::from(count.clone())).collect();
        let mut waiters = Waiters::default();
        for waker in wakers.iter().chain(&wakers) {
            waiters.register(waker);
        }
        assert_eq!(waiters.more.len(), 2, "each waker once");
        waiters.wake_all();
        waiters.wake_all();
        assert!(counts.iter().all(|count| count.get() == 1));
        assert!(waiters.first.is_none() && waiters.more.is_empty());
    }

    #[test]
    fn a_subscribed_channel_s_name_is_stored_once() {
        let channels = LocalChannels::new(LayerConfig::default());
        let _subscription = channels.subscribe("specific.abc!def").expect("a valid name");
        let (first, second) = (channels.intern("specific.abc!def"), channels.intern("specific.abc!def"));
        assert!(Arc::ptr_eq(&first, &second), "memberships share the name");
        // A channel of another process: a name of its own.
        assert_eq!(&*channels.intern("specific.elsewhere!x"), "specific.elsewhere!x");
    }
}
