//! A consumer's subscription with groups that keep a history: catch-up first, then live
//! messages in offset order, without duplicates, gaps filled from the history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use super::history::not_recovered_message;
use super::presence::state_message;
use super::{
    Catchup, GROUP_FIELD, Layer, LayerError, Lost, Position, PresenceState, Recovery, Since, Subscription,
    SubscriptionSource,
};
use crate::BoxFuture;
use crate::event::ChannelMessage;

/// Epochs a group left behind that are still recognised (a late message from one is dropped).
const OLD_EPOCHS: usize = 4;

/// A group with history this consumer joined, and the last position it was given. Epoch 0:
/// the group had no history yet when the consumer joined (everything in its first epoch is new).
#[derive(Debug)]
struct Tracked {
    /// Shared with the consumer's membership (one copy of a group's name per connection).
    group: Arc<str>,
    position: Position,
    /// Epochs this group moved away from, newest last.
    old_epochs: Vec<u64>,
}

impl Tracked {
    /// Moves to `epoch` (the history was lost and restarted), remembering the old one.
    fn change_epoch(&mut self, epoch: u64) {
        if self.position.epoch != 0 {
            if self.old_epochs.len() == OLD_EPOCHS {
                self.old_epochs.remove(0);
            }
            self.old_epochs.push(self.position.epoch);
        }
        self.position = Position { epoch, offset: 0 };
    }
}

/// What a fill reads.
enum Read {
    /// A group's history after its last position; the live message that revealed the gap
    /// (none when the channel reported a loss).
    History { group: usize, waiting: Option<ChannelMessage> },
    /// The presence state again (diffs were lost).
    Presence,
}

enum Answer {
    History(Result<Catchup, LayerError>),
    Presence(Result<PresenceState, LayerError>),
}

struct Fill {
    read: Read,
    // In a Mutex only to make the source `Sync`; polled through `get_mut`, never locked.
    answer: Mutex<BoxFuture<'static, Answer>>,
}

/// Wraps a consumer's [`Subscription`]: hands out each group's catch-up (or "not recovered")
/// and the presence state first, then live messages; for groups with history, drops a message
/// already handed out and, before a message that skips offsets, reads the skipped ones from
/// the history. When the channel lost messages (full, expired, a Redis outage), it reads the
/// histories and the presence state again.
pub(crate) struct Resumed {
    live: Subscription,
    layer: Layer,
    groups: Vec<Tracked>,
    /// The group this consumer is tracked in, if any.
    presence: Option<Arc<str>>,
    /// Messages and reads waiting their turn, in a box of their own that exists only while
    /// there are some (at the start, and after a gap or a loss): this wrapper lives as long as
    /// its connection.
    pending: Option<Box<Pending>>,
}

#[derive(Default)]
struct Pending {
    ready: VecDeque<ChannelMessage>,
    fill: Option<Fill>,
    /// Reads to make because the channel lost messages.
    to_check: VecDeque<Read>,
}

impl Pending {
    fn is_done(&self) -> bool {
        self.ready.is_empty() && self.fill.is_none() && self.to_check.is_empty()
    }
}

/// What waits in `slot` (made when something starts waiting).
fn pending(slot: &mut Option<Box<Pending>>) -> &mut Pending {
    slot.get_or_insert_with(Box::default)
}

impl Resumed {
    pub(crate) fn new(live: Subscription, layer: Layer) -> Self {
        Resumed { live, layer, groups: Vec::new(), presence: None, pending: None }
    }

    /// Records a join's catch-up: its messages come first, after a "not recovered" message
    /// when it did not resume (or when the client's position was not one: `invalid`).
    pub(crate) fn joined(&mut self, group: &Arc<str>, catchup: Catchup, invalid: bool) {
        let Some(position) = catchup.position else { return };
        let lost = match catchup.recovery {
            Recovery::NotRecovered(lost) => Some(lost),
            _ if invalid => Some(Lost::Invalid),
            _ => None,
        };
        if let Some(lost) = lost {
            tracing::debug!(group = &**group, reason = lost.as_str(), "group history not recovered");
            pending(&mut self.pending).ready.push_back(not_recovered_message(group, lost));
        }
        pending(&mut self.pending).ready.extend(catchup.messages);
        self.groups.push(Tracked { group: Arc::clone(group), position, old_epochs: Vec::new() });
    }

    /// The group's presence state, handed out before live diffs.
    pub(crate) fn presence_state(&mut self, group: &Arc<str>, state: &PresenceState) {
        pending(&mut self.pending).ready.push_back(state_message(group, state));
        self.presence = Some(Arc::clone(group));
    }

    /// The plain subscription (when no group keeps a history and nothing is tracked).
    pub(crate) fn into_live(self) -> Subscription {
        self.live
    }

    /// Done joining: the per-group state takes only the room it needs (it lives as long as
    /// the connection).
    pub(crate) fn joins_done(&mut self) {
        self.groups.shrink_to_fit();
    }

    /// Whether this wrapper has anything to do (otherwise the plain subscription will do).
    pub(crate) fn is_needed(&self) -> bool {
        !self.groups.is_empty() || self.presence.is_some() || self.pending.is_some()
    }

    /// Takes a live message: deliver it (returned, when nothing is ready before it), ready
    /// it, drop it as a duplicate, or start filling the gap before it.
    fn take(&mut self, message: ChannelMessage) -> Option<ChannelMessage> {
        let tracked = message
            .value()
            .get(GROUP_FIELD)
            .and_then(serde_json::Value::as_str)
            .and_then(|group| self.groups.iter().position(|tracked| *tracked.group == *group));
        let (Some(index), Some(position)) = (tracked, Position::of(&message)) else {
            return self.deliver(message);
        };
        let tracked = &mut self.groups[index];
        if position.epoch != tracked.position.epoch {
            if tracked.old_epochs.contains(&position.epoch) {
                return None; // late, from a history already given up on
            }
            if tracked.position.epoch != 0 {
                // The history restarted (e.g. Redis lost it): what came before is gone.
                tracing::debug!(group = &*tracked.group, "group history changed epoch; not recovered");
                pending(&mut self.pending).ready.push_back(not_recovered_message(&tracked.group, Lost::OtherEpoch));
            }
            tracked.change_epoch(position.epoch);
        }
        if position.offset <= tracked.position.offset {
            return None;
        }
        if position.offset == tracked.position.offset + 1 {
            tracked.position = position;
            return self.deliver(message);
        }
        self.start(Read::History { group: index, waiting: Some(message) });
        None
    }

    /// A message to deliver in order: now, when nothing is ready before it, or after what is.
    fn deliver(&mut self, message: ChannelMessage) -> Option<ChannelMessage> {
        if self.pending.as_ref().is_none_or(|pending| pending.ready.is_empty()) {
            return Some(message);
        }
        pending(&mut self.pending).ready.push_back(message);
        None
    }

    /// Starts `read`.
    fn start(&mut self, read: Read) {
        let layer = self.layer.clone();
        let answer: BoxFuture<'static, Answer> = match &read {
            Read::History { group, .. } => {
                let tracked = &self.groups[*group];
                let (group, since) = (tracked.group.clone(), Since::after(tracked.position));
                Box::pin(async move { Answer::History(layer.group_history(&group, &since).await) })
            }
            Read::Presence => {
                let group = self.presence.clone().unwrap_or_else(|| Arc::from(""));
                Box::pin(async move { Answer::Presence(layer.presence_list(&group).await) })
            }
        };
        pending(&mut self.pending).fill = Some(Fill { read, answer: Mutex::new(answer) });
    }

    /// A read's answer arrived: hand out what it brings.
    fn filled(&mut self, read: Read, answer: Answer) {
        match (read, answer) {
            (Read::History { group, waiting }, Answer::History(result)) => self.history_filled(group, result, waiting),
            (_, Answer::Presence(Ok(state))) => {
                if let Some(group) = &self.presence {
                    pending(&mut self.pending).ready.push_back(state_message(group, &state));
                }
            }
            (_, Answer::Presence(Err(err))) => tracing::warn!(%err, "could not read the presence state again"),
            (Read::Presence, Answer::History(_)) => {}
        }
    }

    /// A gap's messages arrived (or could not be read): hand them out, then the message that
    /// was waiting for them. When they are gone, say so once and go on from the waiting
    /// message (or the history's newest position), so the same loss is not reported again.
    fn history_filled(&mut self, index: usize, result: Result<Catchup, LayerError>, waiting: Option<ChannelMessage>) {
        let tracked = &mut self.groups[index];
        let (lost, newest) = match result {
            Ok(catchup) if catchup.recovery.is_recovered() => {
                for message in catchup.messages {
                    if let Some(position) = Position::of(&message)
                        && position.epoch == tracked.position.epoch
                        && position.offset == tracked.position.offset + 1
                    {
                        tracked.position = position;
                        pending(&mut self.pending).ready.push_back(message);
                    }
                }
                (None, None)
            }
            Ok(catchup) => {
                let lost = match catchup.recovery {
                    Recovery::NotRecovered(lost) => lost,
                    _ => Lost::TooOld,
                };
                (Some(lost), catchup.position.filter(|newest| newest.epoch != 0))
            }
            Err(err) => {
                tracing::warn!(group = &*tracked.group, %err, "could not read a group's history to fill a gap");
                (Some(Lost::TooOld), None)
            }
        };
        let waiting = waiting.and_then(|message| Some((Position::of(&message)?, message)));
        let Some(lost) = lost else {
            // Recovered: the waiting message goes out unless the fill already covered it.
            if let Some((position, message)) = waiting
                && position.epoch == tracked.position.epoch
                && position.offset > tracked.position.offset
            {
                if position.offset > tracked.position.offset + 1 {
                    // The history no longer had all of the gap: say so rather than skip.
                    pending(&mut self.pending).ready.push_back(not_recovered_message(&tracked.group, Lost::TooOld));
                }
                tracked.position = position;
                pending(&mut self.pending).ready.push_back(message);
            }
            return;
        };
        tracing::debug!(group = &*tracked.group, reason = lost.as_str(), "gap in a group's messages not recovered");
        pending(&mut self.pending).ready.push_back(not_recovered_message(&tracked.group, lost));
        // The history started over (a promoted replica) while this channel was losing messages:
        // what came before is gone (reported), but what the new history holds was written after
        // and is read from its start, as a live message of a new epoch is (`take`). Skipping to
        // its newest position would lose writes acknowledged after the failover.
        if let (None, Some(newest)) = (&waiting, newest)
            && lost == Lost::OtherEpoch
            && newest.epoch != tracked.position.epoch
        {
            tracked.change_epoch(newest.epoch);
            self.start(Read::History { group: index, waiting: None });
            return;
        }
        let resume_at = waiting.as_ref().map(|(position, _)| *position).or(newest);
        if let Some(resume_at) = resume_at {
            if resume_at.epoch != tracked.position.epoch {
                tracked.change_epoch(resume_at.epoch);
            }
            tracked.position.offset = tracked.position.offset.max(resume_at.offset);
        }
        if let Some((_, message)) = waiting {
            pending(&mut self.pending).ready.push_back(message);
        }
    }
}

impl SubscriptionSource for Resumed {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<ChannelMessage> {
        loop {
            if let Some(waiting) = self.pending.as_deref_mut() {
                if let Some(message) = waiting.ready.pop_front() {
                    if waiting.is_done() {
                        self.pending = None;
                    }
                    return Poll::Ready(message);
                }
                if let Some(fill) = &mut waiting.fill {
                    let answer = fill.answer.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let answer = ready!(answer.as_mut().poll(cx));
                    if let Some(fill) = waiting.fill.take() {
                        self.filled(fill.read, answer);
                    }
                    continue;
                }
                if let Some(read) = waiting.to_check.pop_front() {
                    self.start(read);
                    continue;
                }
                self.pending = None;
            }
            match self.live.poll_recv(cx) {
                Poll::Ready(message) => {
                    if let Some(message) = self.take(message) {
                        return Poll::Ready(message);
                    }
                }
                // Drained: if the channel dropped messages meanwhile, the histories have them,
                // and the presence state is read again.
                Poll::Pending if self.live.take_lost() => {
                    // (A group whose epoch is not known yet gave this consumer nothing so far: its
                    // next message shows the gap.)
                    let known = self.groups.iter().enumerate().filter(|(_, tracked)| tracked.position.epoch != 0);
                    let to_check = &mut pending(&mut self.pending).to_check;
                    to_check.extend(known.map(|(group, _)| Read::History { group, waiting: None }));
                    if self.presence.is_some() {
                        to_check.push_back(Read::Presence);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;
    use crate::layers::{HistoryConfig, InMemoryChannelLayer, LayerConfig};

    fn say(n: u64) -> ChannelMessage {
        serde_json::json!({ "type": "room.say", "n": n }).into()
    }

    /// The next message from `resumed`: its `n`, or `None` for a "not recovered" report.
    async fn next(resumed: &mut Resumed) -> Option<u64> {
        let message =
            tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| resumed.poll_recv(cx))).await.expect("a message");
        message.value().get("n").and_then(serde_json::Value::as_u64)
    }

    /// A consumer's channel lost messages while its group's history started over (a promoted
    /// replica, a Redis restarted without persistence): it is told once, and gets what the new
    /// history holds from its start, not only what comes after its newest message.
    #[tokio::test]
    async fn a_history_that_started_over_during_a_loss_is_read_from_its_start() {
        let config =
            LayerConfig { capacity: 2, ..LayerConfig::default() }.with_history("room.", HistoryConfig::last(100));
        let layer = InMemoryChannelLayer::with_config(config).into_layer();
        let channel = layer.new_channel("specific").unwrap();
        let catchup = layer.group_join("room.r", &channel, &Since::now()).await.unwrap();
        let mut resumed = Resumed::new(layer.subscribe(&channel).unwrap(), layer.clone());
        resumed.joined(&Arc::from("room.r"), catchup, false);
        resumed.joins_done();
        layer.group_send("room.r", say(0)).await.unwrap();
        assert_eq!(next(&mut resumed).await, Some(0));
        // A burst the channel cannot hold (2 of 5 kept): the channel is marked lost.
        for n in 1..6 {
            let _ = layer.group_send("room.r", say(n)).await;
        }
        // The history starts over, and holds 10..13 before the consumer is a member again.
        layer.flush().await.unwrap();
        for n in 10..13 {
            layer.group_send("room.r", say(n)).await.unwrap();
        }
        layer.group_add("room.r", &channel).await.unwrap();
        let mut got = Vec::new();
        while got.last() != Some(&Some(12)) {
            got.push(next(&mut resumed).await);
        }
        assert_eq!(got, [None, Some(10), Some(11), Some(12)], "one report, then the new history from its start");
        layer.group_send("room.r", say(13)).await.unwrap();
        assert_eq!(next(&mut resumed).await, Some(13));
    }
}
