//! The outgoing queue of one connection: bounded, many senders, one receiver.
//!
//! tokio's `mpsc` allocates a block of 32 slots (about 1.8 KB for [`Outbound`](crate::event::Outbound))
//! plus its channel (0.5 KB) up front, for every connection, used or not. This queue lives
//! inside the connection's shared state, in an [`InlineDeque`] (one message at a time, the
//! common case, needs no allocation, and an idle connection's queue costs a few words).
//! The budget is in bytes: an item costs its size, but at least `bytes / capacity` (so at most
//! `capacity` items are queued) and at most `bytes` (so an item larger than the whole budget
//! still goes through, alone). It is counted under the queue's one lock, which a push and a pop
//! take anyway; senders that wait for room wait on a [`Notify`], touched only while some wait.
//! (A semaphore for the budget cost two more lock round trips per message, ~5 % of the
//! server's own work per echoed message, callgrind.)

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::deque::InlineDeque;

/// What an item weighs in the byte budget.
pub(crate) trait Weigh {
    /// The bytes this item keeps alive while queued (its payload).
    fn weight(&self) -> usize;
}

impl Weigh for crate::event::Outbound {
    fn weight(&self) -> usize {
        use crate::event::Outbound;
        match self {
            Outbound::WebsocketSend(message) => message.len(),
            Outbound::HttpResponseBody { body, .. } => body.len(),
            _ => 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// Senders waiting for room; notified when an item is taken (if any wait) and on close.
    room: Notify,
    /// The least an item costs: `budget / capacity`.
    min_cost: u32,
    /// The whole budget: the most an item costs.
    budget: u32,
}

#[derive(Debug)]
struct State<T> {
    /// The items with what they cost, the oldest in place.
    items: InlineDeque<(T, u32)>,
    /// The part of the budget no queued item holds.
    free: u32,
    /// The receiver's waker while it waits for an item.
    waker: Option<Waker>,
    senders: usize,
    /// Senders waiting in [`Queue::push`]: a push that does not wait leaves the room to them.
    waiting: u32,
    /// The receiver is gone.
    closed: bool,
}

/// Why an item could not be queued without waiting; the item comes back.
#[derive(Debug)]
pub(crate) enum TryPushError<T> {
    Full(T),
    Closed(T),
}

/// Counts a sender among the waiting ones for as long as it waits (also when its push is
/// dropped while waiting).
struct Waiting<'a, T> {
    queue: &'a Queue<T>,
    counted: bool,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if self.counted {
            self.queue.lock().waiting -= 1;
        }
    }
}

impl<T> Queue<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing under this lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Weigh> Queue<T> {
    /// A queue for at most `capacity` items (at least 1) and about `bytes` of payload, with one
    /// sender.
    pub(crate) fn new(capacity: usize, bytes: usize) -> Self {
        let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX);
        let budget = u32::try_from(bytes).unwrap_or(u32::MAX).max(capacity);
        Queue {
            state: Mutex::new(State {
                items: InlineDeque::new(),
                free: budget,
                waker: None,
                senders: 1,
                waiting: 0,
                closed: false,
            }),
            room: Notify::new(),
            min_cost: budget / capacity,
            budget,
        }
    }

    fn cost(&self, item: &T) -> u32 {
        u32::try_from(item.weight()).unwrap_or(u32::MAX).clamp(self.min_cost, self.budget)
    }

    /// Queues `item` under the lock and returns the receiver's waker to wake, unless the
    /// receiver waits in the task that is pushing (`current`): that task polls it after this
    /// push, and a wake would only poll the whole task once more for nothing (and queue it
    /// behind every other busy connection).
    fn push_locked(state: &mut State<T>, item: T, cost: u32, current: Option<&Waker>) -> Option<Waker> {
        state.free -= cost;
        state.items.push_back((item, cost));
        match (&state.waker, current) {
            (Some(waiting), Some(current)) if waiting.will_wake(current) => None,
            _ => state.waker.take(),
        }
    }

    /// Queues `item` if there is room now. `current` is the pushing task's waker; pass it only
    /// where the receiver, when it runs in that same task, is polled after the pusher in every
    /// poll of the task (see [`push_locked`](Self::push_locked)).
    pub(crate) fn try_push(&self, item: T, current: Option<&Waker>) -> Result<(), TryPushError<T>> {
        let cost = self.cost(&item);
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(TryPushError::Closed(item));
            }
            if state.waiting > 0 || state.free < cost {
                return Err(TryPushError::Full(item));
            }
            Self::push_locked(&mut state, item, cost, current)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The notify that wakes waiting senders. [`ConnState`](super::ConnState) wakes its own
    /// waiters with it too (one `Notify` less per connection): both kinds look again at what
    /// they wait for after every wake.
    pub(crate) fn notify(&self) -> &Notify {
        &self.room
    }

    /// Queues `item`, waiting for room. Cancel safe: nothing is queued until it returns `Ok`.
    ///
    /// # Errors
    /// The item, when the receiver is gone.
    pub(crate) async fn push(&self, item: T) -> Result<(), T> {
        let cost = self.cost(&item);
        let mut waiting = Waiting { queue: self, counted: false };
        loop {
            // Listening before looking: room made after the look wakes this sender.
            let mut notified = std::pin::pin!(self.room.notified());
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(item);
                }
                if state.free >= cost {
                    if waiting.counted {
                        state.waiting -= 1;
                        waiting.counted = false;
                    }
                    let receiver = Self::push_locked(&mut state, item, cost, None);
                    drop(state);
                    if let Some(receiver) = receiver {
                        receiver.wake();
                    }
                    return Ok(());
                }
                if !waiting.counted {
                    state.waiting += 1;
                    waiting.counted = true;
                }
            }
            notified.await;
        }
    }

    fn taken(&self, state: &mut State<T>) -> Option<T> {
        let (item, cost) = state.items.pop_front()?;
        state.free += cost;
        if state.waiting > 0 {
            self.room.notify_waiters();
        }
        Some(item)
    }

    /// The next item; `None` once it is empty and every sender is gone.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.lock();
        if let Some(item) = self.taken(&mut state) {
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item if one is queued.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.taken(&mut self.lock())
    }

    /// One more sender (a clone of the sending handle).
    pub(crate) fn add_sender(&self) {
        self.lock().senders += 1;
    }

    /// A sender is gone; the last one wakes the receiver so that it sees the end.
    pub(crate) fn drop_sender(&self) {
        let waker = {
            let mut state = self.lock();
            state.senders -= 1;
            if state.senders == 0 { state.waker.take() } else { None }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The receiver is gone: pushes fail from now on, and queued items are dropped.
    pub(crate) fn close(&self) {
        let items = {
            let mut state = self.lock();
            state.closed = true;
            state.free = self.budget;
            state.items.take()
        };
        self.room.notify_waiters();
        drop(items);
    }

    /// True once [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;

    impl Weigh for i32 {
        fn weight(&self) -> usize {
            0
        }
    }

    impl Weigh for &str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    impl Weigh for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    /// Polls `future` once: whether it is done yet, without waiting for anything.
    async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
        poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_capacity_makes_senders_wait() {
        let queue = Arc::new(Queue::new(2, 0));
        queue.try_push(1, None).unwrap();
        queue.push(2).await.unwrap();
        assert!(matches!(queue.try_push(3, None), Err(TryPushError::Full(3))));
        let mut waiting = Box::pin(queue.push(3));
        assert!(poll_once(&mut waiting).await.is_pending(), "a full queue makes the sender wait");
        assert_eq!(poll_fn(|cx| queue.poll_pop(cx)).await, Some(1));
        waiting.await.unwrap();
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(queue.try_pop(), Some(3));
        assert_eq!(queue.try_pop(), None);
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_when_the_last_sender_goes() {
        let queue = Arc::new(Queue::new(4, 0));
        queue.add_sender();
        queue.try_push("queued", None).unwrap();
        let pop = || Box::pin(poll_fn(|cx| queue.poll_pop(cx)));
        assert_eq!(pop().await, Some("queued"));
        queue.drop_sender();
        assert!(poll_once(&mut pop()).await.is_pending(), "one sender is left");
        queue.try_push("last", None).unwrap();
        queue.drop_sender();
        assert_eq!(pop().await, Some("last"));
        assert_eq!(pop().await, None, "the last sender is gone and the queue is empty");
    }

    #[tokio::test]
    async fn closing_fails_waiting_and_later_senders() {
        let queue = Arc::new(Queue::new(1, 0));
        queue.try_push(1, None).unwrap();
        let mut waiting = Box::pin(queue.push(2));
        assert!(poll_once(&mut waiting).await.is_pending());
        queue.close();
        assert_eq!(waiting.await, Err(2));
        assert!(matches!(queue.try_push(3, None), Err(TryPushError::Closed(3))));
        assert!(queue.is_closed());
        assert_eq!(queue.try_pop(), None, "closing drops what was queued");
    }

    #[tokio::test]
    async fn waiting_senders_go_first_and_a_dropped_one_leaves_no_trace() {
        let queue = Arc::new(Queue::new(1, 0));
        queue.try_push(0, None).unwrap();
        let mut first = Box::pin(queue.push(1));
        let mut second = Box::pin(queue.push(2));
        let mut dropped = Box::pin(queue.push(99));
        for waiting in [&mut first, &mut second, &mut dropped] {
            assert!(poll_once(waiting).await.is_pending());
        }
        drop(dropped);
        assert_eq!(queue.try_pop(), Some(0));
        // Room was made, but senders wait for it: one that does not wait must not jump ahead.
        assert!(matches!(queue.try_push(7, None), Err(TryPushError::Full(7))));
        first.await.unwrap();
        assert!(poll_once(&mut second).await.is_pending(), "one item at most");
        assert_eq!(queue.try_pop(), Some(1));
        second.await.unwrap();
        assert_eq!(queue.try_pop(), Some(2));
        // The dropped sender no longer counts as waiting: pushes go straight in again.
        queue.try_push(3, None).unwrap();
        assert_eq!(queue.try_pop(), Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_on_many_tasks_deliver_everything_in_per_sender_order() {
        let queue = Arc::new(Queue::new(4, 0));
        for _ in 1..8 {
            queue.add_sender();
        }
        let senders: Vec<_> = (0..8)
            .map(|sender| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        queue.push(sender * 1000 + i).await.unwrap();
                    }
                    queue.drop_sender();
                })
            })
            .collect();
        let mut next = [0; 8];
        while let Some(item) = poll_fn(|cx| queue.poll_pop(cx)).await {
            let sender = usize::try_from(item / 1000).unwrap();
            assert_eq!(item % 1000, next[sender], "sender {sender}'s items in order");
            next[sender] += 1;
        }
        assert_eq!(next, [500; 8]);
        for sender in senders {
            sender.await.unwrap();
        }
    }

    #[test]
    fn a_drained_queue_gives_its_storage_back() {
        let queue = Queue::new(100, 0);
        for i in 0..100 {
            queue.try_push(i, None).unwrap();
        }
        assert!(queue.lock().items.spare_capacity() >= 99);
        while queue.try_pop().is_some() {}
        assert_eq!(queue.lock().items.spare_capacity(), 0);
    }

    #[test]
    fn bytes_are_bounded_as_well_as_items() {
        // 1,000 bytes for at most 10 items: small items cost 100 each.
        let queue = Queue::new(10, 1000);
        for _ in 0..10 {
            queue.try_push(vec![0u8; 10], None).unwrap();
        }
        assert!(matches!(queue.try_push(vec![], None), Err(TryPushError::Full(_))), "10 items at most");
        while queue.try_pop().is_some() {}
        queue.try_push(vec![0u8; 600], None).unwrap();
        assert!(matches!(queue.try_push(vec![0u8; 600], None), Err(TryPushError::Full(_))), "1,000 bytes at most");
        queue.try_push(vec![0u8; 400], None).unwrap();
        assert_eq!(queue.try_pop().map(|item| item.len()), Some(600));
        assert_eq!(queue.try_pop().map(|item| item.len()), Some(400));
        // Larger than the whole budget: goes through when the queue is empty, alone.
        queue.try_push(vec![0u8; 5000], None).unwrap();
        assert!(matches!(queue.try_push(vec![], None), Err(TryPushError::Full(_))));
        assert_eq!(queue.try_pop().map(|item| item.len()), Some(5000));
        queue.try_push(vec![], None).unwrap();
    }
}
