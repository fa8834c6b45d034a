//! Presence: who is in a group right now, with join/leave diffs (Phoenix's `Presence`).
//!
//! A connection is **tracked** in a group under a key (usually the user) with a JSON meta
//! (device, status, joined-at...): [`ChannelLayer::presence_track`](super::ChannelLayer::presence_track).
//! One key may have several entries (one user, several tabs or devices), each with its own
//! opaque `id`. [`presence_list`](super::ChannelLayer::presence_list) gives the current
//! [`PresenceState`]; every change reaches the group's members as a `"presence.diff"` message
//! ([`PresenceDiff`]), never stored in the group's history.
//!
//! A consumer that ends, however it ends, is untracked (consumers track with `fn presence`,
//! see [`Track`]). With Redis, each process renews its entries every third of
//! `RedisLayerConfig::presence_ttl` (feature `redis`); the entries of
//! a process that died lapse after that time, and the next process to renew its own entries in
//! the group (or to list it) removes them and sends their leave diff.
//!
//! ```
//! use channels::layers::{ChannelLayer, InMemoryChannelLayer, PresenceDiff};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels::layers::LayerError> {
//! let layer = InMemoryChannelLayer::new();
//! let (tab1, tab2) = (layer.new_channel("specific")?, layer.new_channel("specific")?);
//! layer.group_add("room.lobby", &tab1).await?;
//! layer.presence_track("room.lobby", &tab1, "alice", json!({"device": "laptop"})).await?;
//! layer.presence_track("room.lobby", &tab2, "alice", json!({"device": "phone"})).await?;
//! assert_eq!(layer.presence_list("room.lobby").await?["alice"].len(), 2);
//! // tab1 is a member: it got both joins.
//! let diff: PresenceDiff = layer.receive(&tab1).await?.deserialize().expect("a diff");
//! assert_eq!(diff.joins["alice"][0].meta, json!({"device": "laptop"}));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::ChannelMessage;

/// The type of presence diff messages.
pub const PRESENCE_DIFF_TYPE: &str = "presence.diff";
/// The type of the message a tracking consumer gets first: the group's whole state.
pub const PRESENCE_STATE_TYPE: &str = "presence.state";

/// One tracked connection of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceMeta {
    /// Opaque, one per tracked connection: what a client matches a leave against.
    pub id: String,
    /// What the app tracked with it.
    pub meta: serde_json::Value,
}

/// Who is in a group: key → its tracked connections.
pub type PresenceState = BTreeMap<String, Vec<PresenceMeta>>;

/// A change in a group's presence, as its members receive it (`"type": "presence.diff"`).
///
/// A consumer that ends, however it ends, is untracked (a leave). With Redis, each process
/// renews its entries every third of
/// `RedisLayerConfig::presence_ttl` (feature `redis`); the entries of a
/// process that died lapse after that time, and the next process to renew its own entries in
/// the group (or to list it) removes them and sends their leave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The group.
    #[serde(default)]
    pub group: String,
    /// Entries that joined.
    #[serde(default)]
    pub joins: PresenceState,
    /// Entries that left.
    #[serde(default)]
    pub leaves: PresenceState,
}

impl PresenceDiff {
    /// This diff as the message members receive.
    pub fn to_message(&self) -> ChannelMessage {
        ChannelMessage::new(serde_json::json!({
            "type": PRESENCE_DIFF_TYPE,
            "group": self.group,
            "joins": self.joins,
            "leaves": self.leaves,
        }))
    }
}

/// What a consumer tracks in a group while it is connected (its `fn presence(&self) ->
/// Option<Track>`): tracked after joining its groups, untracked when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// The group (usually one the consumer joins, so that it receives the diffs).
    pub group: String,
    /// Who: usually the user's name or id.
    pub key: String,
    /// Anything the app shows with it.
    pub meta: serde_json::Value,
}

impl Track {
    /// Tracks `key` with `meta` in `group`.
    pub fn new(group: impl Into<String>, key: impl Into<String>, meta: serde_json::Value) -> Self {
        Track { group: group.into(), key: key.into(), meta }
    }
}

/// The entry id of `channel`: stable, short, and not the channel's name.
pub(crate) fn entry_id(channel: &str) -> String {
    format!("{:016x}", super::stable_hash(channel))
}

/// `entries` (key, meta) as a state.
pub(crate) fn state_of<K: Into<String>>(entries: impl IntoIterator<Item = (K, PresenceMeta)>) -> PresenceState {
    let mut state = PresenceState::new();
    for (key, meta) in entries {
        state.entry(key.into()).or_default().push(meta);
    }
    state
}

/// The message a tracking consumer gets first.
pub(crate) fn state_message(group: &str, state: &PresenceState) -> ChannelMessage {
    ChannelMessage::new(serde_json::json!({ "type": PRESENCE_STATE_TYPE, "group": group, "state": state }))
}
