//! Groups that keep a history: positions, catch-up after a reconnect, "not recovered".
//!
//! A group matching a [`LayerConfig::history`](super::LayerConfig::history) rule keeps its last
//! messages (a count and/or an age, [`HistoryConfig`]). Every message sent to it gets a
//! [`Position`]: an offset that grows by one per message, and an **epoch** that names this run
//! of the history and changes when the history is lost or may have lost its last messages (the
//! in-memory layer restarted, Redis restarted (even with persistence, which may lose the last
//! writes too) or failed over to a replica, the group was quiet longer than its history lives). The
//! message reaches members with two extra fields: `"__group__"` (the group) and `"__position__"`
//! (the position as a string, e.g. `"3f2a9c01d4e5b6a7-42"`): handlers forward it to the client,
//! which gives it back when it reconnects.
//!
//! A consumer joins such a group "since" a position ([`Since`]): the runtime then delivers every
//! message after it, in order, without a gap or a duplicate, before live ones; or, when that
//! cannot be done (the position is older than the history, from another epoch, from the future,
//! or not a position at all), tells the consumer with `not_recovered` so the app can reload its
//! state. A live message that arrives after a gap (its member's queue was full, or messages
//! crossed between Redis shards) is completed from the history before it is delivered.
//!
//! ```
//! use std::time::Duration;
//! use channels::layers::{ChannelLayer, HistoryConfig, InMemoryChannelLayer, LayerConfig, Position, Since};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels::layers::LayerError> {
//! let config = LayerConfig::default().with_history("room.", HistoryConfig::last(100).max_age(Duration::from_secs(600)));
//! let layer = InMemoryChannelLayer::with_config(config);
//! for n in 0..3 {
//!     layer.group_send("room.lobby", json!({"type": "chat.message", "n": n}).into()).await?;
//! }
//! // A client that saw message 0 comes back: it gets 1 and 2.
//! let alice = layer.new_channel("specific")?;
//! let seen = layer.group_history("room.lobby", &Since::last(3)).await?.messages[0].clone();
//! let since = Since::after(Position::of(&seen).expect("a positioned message"));
//! let caught_up = layer.group_join("room.lobby", &alice, &since).await?;
//! assert!(caught_up.recovery.is_recovered());
//! let ns: Vec<_> = caught_up.messages.iter().map(|m| m.value()["n"].as_i64()).collect();
//! assert_eq!(ns, [Some(1), Some(2)]);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::ChannelMessage;

/// The field naming the group of a message sent to a group that keeps a history.
pub const GROUP_FIELD: &str = "__group__";
/// The field holding a message's [`Position`] (as its string form).
pub const POSITION_FIELD: &str = "__position__";
/// The type of the message the runtime hands a consumer when a group could not be resumed
/// (WebSocket consumers get `not_recovered` called instead).
pub const NOT_RECOVERED_TYPE: &str = "group.not_recovered";

/// How much history a group keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The most messages kept (older ones are dropped first).
    pub max_messages: usize,
    /// How long a message is kept; `None`: until `max_messages` pushes it out (or the group's
    /// history lapses after [`group_expiry`](super::LayerConfig::group_expiry) of silence).
    pub max_age: Option<Duration>,
}

impl HistoryConfig {
    /// Keep the last `max_messages` messages.
    pub fn last(max_messages: usize) -> Self {
        HistoryConfig { max_messages: max_messages.max(1), max_age: None }
    }

    /// Also drop messages older than `max_age`.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
}

/// Where a message stands in its group's history: the epoch (which history) and the offset
/// (1 for the first message, then one more per message). Its string form is
/// `"<epoch, hex>-<offset>"`; [`FromStr`] reads it back and refuses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Names one run of the history; never 0.
    pub epoch: u64,
    /// Messages sent to the group in this epoch, up to and including this one.
    pub offset: u64,
}

impl Position {
    /// The position of a message delivered from a group that keeps a history.
    pub fn of(message: &ChannelMessage) -> Option<Position> {
        message.value().get(POSITION_FIELD)?.as_str()?.parse().ok()
    }

    /// A new random epoch (never 0).
    pub(crate) fn new_epoch() -> u64 {
        let mut bytes = [0u8; 8];
        // Without an OS random source, a clock- and counter-seeded value still differs per run.
        if getrandom::fill(&mut bytes).is_err() {
            use std::hash::BuildHasher;
            bytes = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()).to_le_bytes();
        }
        u64::from_le_bytes(bytes).max(1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.offset)
    }
}

/// A string that is not a [`Position`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a group position (expected \"<16 hex digits>-<offset>\")")]
pub struct PositionError;

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(text: &str) -> Result<Self, PositionError> {
        let (epoch, offset) = text.split_once('-').ok_or(PositionError)?;
        if epoch.len() != 16 || offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PositionError);
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| PositionError)?;
        let offset = offset.parse().map_err(|_| PositionError)?;
        if epoch == 0 {
            return Err(PositionError);
        }
        Ok(Position { epoch, offset })
    }
}

/// Where a consumer starts in a group's history when it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since {
    /// Resume after this position (the last one the client saw): every later message, or
    /// "not recovered".
    pub after: Option<Position>,
    /// Without `after`, or when resuming fails: replay the last `last` messages (e.g. a chat
    /// room's recent history); 0 (the default) replays nothing.
    pub last: usize,
}

impl Since {
    /// Only live messages.
    pub fn now() -> Self {
        Since::default()
    }

    /// Every message after `position`.
    pub fn after(position: Position) -> Self {
        Since { after: Some(position), last: 0 }
    }

    /// The last `n` messages, then live ones.
    pub fn last(n: usize) -> Self {
        Since { after: None, last: n }
    }
}

/// Whether a join (or a history read) could resume from [`Since::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No position was given: a fresh join.
    Fresh,
    /// Every message after the position follows, none missing.
    Recovered,
    /// Messages after the position are gone: the app must reload its state.
    NotRecovered(Lost),
}

impl Recovery {
    /// True for [`Recovery::Recovered`].
    pub fn is_recovered(self) -> bool {
        self == Recovery::Recovered
    }
}

/// Why a position could not be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lost {
    /// The position is from another epoch: the history it belongs to is gone.
    OtherEpoch,
    /// Messages after the position have already left the history (count or age).
    TooOld,
    /// The position is ahead of the history (a client from the future, or a forged one).
    Future,
    /// The client's position is not a position at all.
    Invalid,
}

impl Lost {
    /// A short name, as logged and sent in [`NOT_RECOVERED_TYPE`] messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Lost::OtherEpoch => "other_epoch",
            Lost::TooOld => "too_old",
            Lost::Future => "future",
            Lost::Invalid => "invalid",
        }
    }
}

/// What a join or history read gives: where the history stands, whether the requested position
/// was resumed, and the messages to deliver before live ones (oldest first).
#[derive(Debug, Clone)]
pub struct Catchup {
    /// The group's latest position (offset 0: nothing sent in this epoch yet; epoch 0: the
    /// group has no history yet); `None` when the group keeps no history.
    pub position: Option<Position>,
    /// The outcome of [`Since::after`].
    pub recovery: Recovery,
    /// Messages after [`Since::after`] (recovered), or the last [`Since::last`] ones.
    pub messages: Vec<ChannelMessage>,
}

impl Catchup {
    /// The answer for a group without history.
    pub fn none() -> Self {
        Catchup { position: None, recovery: Recovery::Fresh, messages: Vec::new() }
    }
}

/// `message` as members of a group with history receive it: with its group and position.
pub(crate) fn stamp(message: &ChannelMessage, group: &str, position: Position) -> ChannelMessage {
    let mut value = message.value().clone(); // (a sender's own fields of these names are replaced)
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(GROUP_FIELD.to_owned(), group.into());
        map.insert(POSITION_FIELD.to_owned(), position.to_string().into());
    }
    ChannelMessage::new(value)
}

/// The message the runtime delivers when `group` could not be resumed.
pub(crate) fn not_recovered_message(group: &str, lost: Lost) -> ChannelMessage {
    ChannelMessage::new(serde_json::json!({ "type": NOT_RECOVERED_TYPE, "group": group, "reason": lost.as_str() }))
}

/// One group's history in memory.
#[derive(Debug)]
pub(crate) struct GroupHistory {
    epoch: u64,
    last: u64,
    entries: VecDeque<(u64, Instant, ChannelMessage)>,
    /// Last send or read, for evicting the least recently used history.
    pub(crate) used: Instant,
}

impl GroupHistory {
    pub(crate) fn new(now: Instant) -> Self {
        GroupHistory { epoch: Position::new_epoch(), last: 0, entries: VecDeque::new(), used: now }
    }

    fn trim(&mut self, config: &HistoryConfig, now: Instant) {
        while self.entries.len() > config.max_messages {
            self.entries.pop_front();
        }
        if let Some(max_age) = config.max_age {
            while self.entries.front().is_some_and(|(_, at, _)| now.saturating_duration_since(*at) >= max_age) {
                self.entries.pop_front();
            }
        }
    }

    /// Appends `message` and returns it stamped with its position.
    pub(crate) fn push(
        &mut self,
        group: &str,
        message: &ChannelMessage,
        config: &HistoryConfig,
        now: Instant,
    ) -> ChannelMessage {
        self.last += 1;
        self.used = now;
        let stamped = stamp(message, group, Position { epoch: self.epoch, offset: self.last });
        self.entries.push_back((self.last, now, stamped.clone()));
        self.trim(config, now);
        stamped
    }

    /// Whether the history still holds anything worth keeping at `now`.
    pub(crate) fn is_stale(&self, config: &HistoryConfig, now: Instant) -> bool {
        match (self.entries.back(), config.max_age) {
            (None, _) => true,
            (Some((_, at, _)), Some(max_age)) => now.saturating_duration_since(*at) >= max_age,
            (Some(_), None) => false,
        }
    }

    /// The messages `since` asks for.
    pub(crate) fn catchup(&mut self, since: &Since, config: &HistoryConfig, now: Instant) -> Catchup {
        self.trim(config, now);
        self.used = now;
        let position = Some(Position { epoch: self.epoch, offset: self.last });
        let last = |entries: &VecDeque<(u64, Instant, ChannelMessage)>| {
            entries.iter().skip(entries.len().saturating_sub(since.last)).map(|(_, _, m)| m.clone()).collect()
        };
        let lost = |lost| Catchup { position, recovery: Recovery::NotRecovered(lost), messages: last(&self.entries) };
        let Some(after) = since.after else {
            return Catchup { position, recovery: Recovery::Fresh, messages: last(&self.entries) };
        };
        if after.epoch != self.epoch {
            return lost(Lost::OtherEpoch);
        }
        if after.offset > self.last {
            return lost(Lost::Future);
        }
        let first = self.entries.front().map_or(self.last + 1, |(offset, _, _)| *offset);
        if after.offset + 1 < first {
            return lost(Lost::TooOld);
        }
        let messages =
            self.entries.iter().filter(|(offset, _, _)| *offset > after.offset).map(|(_, _, m)| m.clone()).collect();
        Catchup { position, recovery: Recovery::Recovered, messages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_refused() {
        let position = Position { epoch: 0x3f2a_9c01_d4e5_b6a7, offset: 42 };
        assert_eq!(position.to_string(), "3f2a9c01d4e5b6a7-42");
        assert_eq!("3f2a9c01d4e5b6a7-42".parse(), Ok(position));
        for garbage in [
            "",
            "-",
            "42",
            "3f2a9c01d4e5b6a7",
            "3f2a9c01d4e5b6a7-",
            "zz2a9c01d4e5b6a7-1",
            "0000000000000000-1",
            "3f2a9c01d4e5b6a7-+1",
            "3f2a9c01d4e5b6a7-1-2",
            "3f2a9c01d4e5b6a7-99999999999999999999999",
        ] {
            assert_eq!(garbage.parse::<Position>(), Err(PositionError), "{garbage:?}");
        }
    }
}
