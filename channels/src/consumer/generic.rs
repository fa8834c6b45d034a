//! [`GenericConsumer`]: raw events, for custom protocols.

use std::future::Future;

use super::{ConsumerApp, ConsumerError, FromScope, settle};
use crate::application::{Inbox, Outbox};
use crate::error::AppError;
use crate::event::{ChannelMessage, Inbound};
use crate::layers::{Since, Track};

/// What a [`GenericConsumer`] wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the consumer running.
    Continue,
    /// Stop the consumer (Channels' `StopConsumer`).
    Stop,
}

/// A consumer that sees every [`Inbound`] event and answers with [`Outbound`](crate::event::Outbound)
/// events (Channels' `AsyncConsumer`). Use it for custom protocols (`Inbound::Custom` in,
/// `Outbound::Custom` out), or anything the typed consumers do not cover.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `GenericConsumer`",
    note = "with the macros, a `#[consumer(protocol = \"...\")]` struct needs a `#[consumer]` impl block with \
            `async fn handle(&mut self, outbox: &Outbox, event: Inbound) -> Result<Flow, ConsumerError>`"
)]
pub trait GenericConsumer: Send + 'static {
    /// Whether each instance gets a channel on the layer and receives its messages through
    /// `handle_message`. `#[consumer]` sets it to whether the impl block has handlers or groups.
    const RECEIVES_CHANNEL_MESSAGES: bool = true;

    /// The groups to join before `connect` (and leave at the end), e.g. a room from the URL.
    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where this connection starts in the history of the groups it joins that keep one
    /// ([`HistoryConfig`](crate::layers::HistoryConfig)). `requested` is what the client asked
    /// for with the `since` query-string parameter (`?since=<position>`: every message after
    /// it); the default takes it as is. Return e.g. `Since { last: 50, ..requested }` to also
    /// replay a room's last 50 messages on a fresh join or when resuming fails, or a position
    /// the client sent another way.
    fn since(&self, requested: Since) -> Since {
        requested
    }

    /// What to track in a group's presence while this connection lives (e.g. the user, in the
    /// room's group): tracked after the groups are joined, untracked when the consumer ends.
    /// The consumer then gets the group's state first (`"presence.state"`) and its changes
    /// (`"presence.diff"`). `None` (the default): nothing.
    fn presence(&self) -> Option<Track> {
        None
    }

    /// Handles one event; return [`Flow::Stop`] to end the consumer.
    fn handle(&mut self, outbox: &Outbox, event: Inbound) -> impl Future<Output = Result<Flow, ConsumerError>> + Send;

    /// A channel-layer message; the default hands it to [`handle`](Self::handle) as
    /// [`Inbound::Channel`]. `#[consumer]` generates a dispatch by message type here.
    fn handle_message(
        &mut self,
        outbox: &Outbox,
        message: ChannelMessage,
    ) -> impl Future<Output = Result<Flow, ConsumerError>> + Send {
        self.handle(outbox, Inbound::Channel(message))
    }

    /// This consumer as an application, built per connection with [`FromScope`].
    fn as_app() -> ConsumerApp<Self>
    where
        Self: FromScope,
    {
        ConsumerApp::generic(Self::from_scope)
    }
}

pub(super) async fn drive<C: GenericConsumer>(
    mut consumer: Box<C>,
    mut inbox: Inbox,
    outbox: Outbox,
) -> Result<(), AppError> {
    while let Some(event) = inbox.recv().await {
        let flow = match event {
            Inbound::Channel(message) => consumer.handle_message(&outbox, message).await,
            event => consumer.handle(&outbox, event).await,
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return Ok(()),
            Err(err) => settle(Err(err))?,
        }
    }
    Ok(())
}
