//! A consumer's subscription with groups that keep a history: catch-up first, then live
//! messages in offset order, without duplicates, gaps filled from the history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use super::history::not_recovered_message;
use super::{
    Catchup, GROUP_FIELD, Layer, LayerError, Lost, Position, Recovery, Since, Subscription, SubscriptionSource,
};
use crate::BoxFuture;
use crate::event::ChannelMessage;

/// A group with history this consumer joined, and the last position it was given.
#[derive(Debug)]
pub(crate) struct Tracked {
    group: String,
    position: Position,
}

/// A gap being filled: which group, the history read, and the live message that revealed it
/// (none when the channel reported a loss).
struct Fill {
    group: usize,
    // In a Mutex only to make the source `Sync`; polled through `get_mut`, never locked.
    read: Mutex<BoxFuture<'static, Result<Catchup, LayerError>>>,
    waiting: Option<ChannelMessage>,
}

/// Wraps a consumer's [`Subscription`]: hands out each group's catch-up (or "not recovered")
/// first, then live messages; for groups with history, drops a message already handed out
/// and, before a message that skips offsets, reads the skipped ones from the history.
pub(crate) struct Resumed {
    live: Subscription,
    layer: Layer,
    groups: Vec<Tracked>,
    ready: VecDeque<ChannelMessage>,
    fill: Option<Fill>,
    /// Groups whose history to read because the channel lost messages.
    to_check: VecDeque<usize>,
}

impl Resumed {
    pub(crate) fn new(live: Subscription, layer: Layer) -> Self {
        Resumed { live, layer, groups: Vec::new(), ready: VecDeque::new(), fill: None, to_check: VecDeque::new() }
    }

    /// Records a join's catch-up: its messages come first, after a "not recovered" message
    /// when it did not resume.
    pub(crate) fn joined(&mut self, group: &str, catchup: Catchup) {
        let Some(position) = catchup.position else { return };
        if let Recovery::NotRecovered(lost) = catchup.recovery {
            tracing::debug!(group, reason = lost.as_str(), "group history not recovered");
            self.ready.push_back(not_recovered_message(group, lost));
        }
        self.ready.extend(catchup.messages);
        self.groups.push(Tracked { group: group.to_owned(), position });
    }

    /// The group's presence state, handed out before live diffs.
    pub(crate) fn presence_state(&mut self, group: &str, state: &super::PresenceState) {
        self.ready.push_back(super::presence::state_message(group, state));
    }

    /// The client's position was not a position: the consumer hears "not recovered" first.
    pub(crate) fn invalid_position(&mut self, group: &str) {
        self.ready.push_back(not_recovered_message(group, Lost::Invalid));
    }

    /// The plain subscription (when no group keeps a history).
    pub(crate) fn into_live(self) -> Subscription {
        self.live
    }

    /// Whether any joined group keeps a history (otherwise the plain subscription will do).
    pub(crate) fn tracks_history(&self) -> bool {
        !self.groups.is_empty() || !self.ready.is_empty()
    }

    /// Takes a live message: ready it, drop it as a duplicate, or start filling the gap
    /// before it.
    fn take(&mut self, message: ChannelMessage) {
        let tracked = message
            .value()
            .get(GROUP_FIELD)
            .and_then(serde_json::Value::as_str)
            .and_then(|group| self.groups.iter().position(|tracked| tracked.group == group));
        let (Some(index), Some(position)) = (tracked, Position::of(&message)) else {
            self.ready.push_back(message);
            return;
        };
        let tracked = &mut self.groups[index];
        if position.epoch != tracked.position.epoch {
            // The history restarted (e.g. Redis lost it): what came before is gone.
            tracing::debug!(group = tracked.group, "group history changed epoch; not recovered");
            self.ready.push_back(not_recovered_message(&tracked.group, Lost::OtherEpoch));
            tracked.position = Position { epoch: position.epoch, offset: 0 };
        }
        if position.offset <= tracked.position.offset {
            return;
        }
        if position.offset == tracked.position.offset + 1 {
            tracked.position = position;
            self.ready.push_back(message);
            return;
        }
        self.start_fill(index, Some(message));
    }

    /// Reads group `index`'s history after the last position handed out.
    fn start_fill(&mut self, index: usize, waiting: Option<ChannelMessage>) {
        let tracked = &self.groups[index];
        let (layer, group, since) = (self.layer.clone(), tracked.group.clone(), Since::after(tracked.position));
        let read: BoxFuture<'static, _> = Box::pin(async move { layer.group_history(&group, &since).await });
        self.fill = Some(Fill { group: index, read: Mutex::new(read), waiting });
    }

    /// A gap's messages arrived (or could not be read): hand them out, then the message
    /// that was waiting for them.
    fn filled(&mut self, index: usize, result: Result<Catchup, LayerError>, waiting: Option<ChannelMessage>) {
        let tracked = &mut self.groups[index];
        match result {
            Ok(catchup) if catchup.recovery.is_recovered() => {
                for message in catchup.messages {
                    if let Some(position) = Position::of(&message)
                        && position.epoch == tracked.position.epoch
                        && position.offset == tracked.position.offset + 1
                    {
                        tracked.position = position;
                        self.ready.push_back(message);
                    }
                }
            }
            Ok(catchup) => {
                let lost = match catchup.recovery {
                    Recovery::NotRecovered(lost) => lost,
                    _ => Lost::TooOld,
                };
                tracing::debug!(
                    group = tracked.group,
                    reason = lost.as_str(),
                    "gap in a group's messages not recovered"
                );
                self.ready.push_back(not_recovered_message(&tracked.group, lost));
            }
            Err(err) => {
                tracing::warn!(group = tracked.group, %err, "could not read a group's history to fill a gap");
                self.ready.push_back(not_recovered_message(&tracked.group, Lost::TooOld));
            }
        }
        if let Some(waiting) = waiting
            && let Some(position) = Position::of(&waiting)
            && position.offset > tracked.position.offset
        {
            // Still ahead after the fill only if the history could not give the gap.
            tracked.position = position;
            self.ready.push_back(waiting);
        }
    }
}

impl SubscriptionSource for Resumed {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<ChannelMessage> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Poll::Ready(message);
            }
            if let Some(fill) = &mut self.fill {
                let read = fill.read.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
                let result = ready!(read.as_mut().poll(cx));
                if let Some(Fill { group, waiting, .. }) = self.fill.take() {
                    self.filled(group, result, waiting);
                }
                continue;
            }
            if let Some(index) = self.to_check.pop_front() {
                self.start_fill(index, None);
                continue;
            }
            match self.live.poll_recv(cx) {
                Poll::Ready(message) => self.take(message),
                // Drained: if the channel dropped messages meanwhile, the histories have them.
                Poll::Pending if self.live.take_lost() => self.to_check.extend(0..self.groups.len()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
