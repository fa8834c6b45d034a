//! The outgoing queue of one connection: bounded, many senders, one receiver.
//!
//! tokio's `mpsc` allocates a block of 32 slots (about 1.8 KB for [`Outbound`](crate::event::Outbound))
//! plus its channel (0.5 KB) up front, for every connection, used or not. This queue lives
//! inside the connection's shared state and holds its items in a `VecDeque` that grows with use
//! and is given back whenever it drains, so an idle connection's queue costs a few words.
//! The capacity is enforced by a semaphore (fair: waiting senders go in arrival order).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Semaphore, TryAcquireError};

#[derive(Debug)]
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// One permit per free slot; closed when the receiver is gone.
    space: Semaphore,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// The receiver's waker while it waits for an item.
    waker: Option<Waker>,
    senders: usize,
}

/// Why an item could not be queued without waiting; the item comes back.
#[derive(Debug)]
pub(crate) enum TryPushError<T> {
    Full(T),
    Closed(T),
}

impl<T> Queue<T> {
    /// A queue for `capacity` items (at least 1) with one sender.
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(State { items: VecDeque::new(), waker: None, senders: 1 }),
            space: Semaphore::new(capacity.max(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing under this lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` and wakes the receiver, unless the receiver waits in the task that is
    /// pushing (`current`): that task polls it after this push, and a wake would only poll the
    /// whole task once more for nothing (and queue it behind every other busy connection).
    fn push_unchecked(&self, item: T, current: Option<&Waker>) {
        let waker = {
            let mut state = self.lock();
            state.items.push_back(item);
            match (&state.waker, current) {
                (Some(waiting), Some(current)) if waiting.will_wake(current) => None,
                _ => state.waker.take(),
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues `item` if there is room now. `current` is the pushing task's waker; pass it only
    /// where the receiver, when it runs in that same task, is polled after the pusher in every
    /// poll of the task (see [`push_unchecked`](Self::push_unchecked)).
    pub(crate) fn try_push(&self, item: T, current: Option<&Waker>) -> Result<(), TryPushError<T>> {
        match self.space.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.push_unchecked(item, current);
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(TryPushError::Full(item)),
            Err(TryAcquireError::Closed) => Err(TryPushError::Closed(item)),
        }
    }

    /// Queues `item`, waiting for room. Cancel safe: nothing is queued until it returns `Ok`.
    ///
    /// # Errors
    /// The item, when the receiver is gone.
    pub(crate) async fn push(&self, item: T) -> Result<(), T> {
        match self.space.acquire().await {
            Ok(permit) => {
                permit.forget();
                self.push_unchecked(item, None);
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    fn taken(&self, state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        if state.items.is_empty() {
            // An idle connection keeps no storage. (Reallocating on the next send costs one
            // small allocation; an idle connection is the common case.)
            state.items = VecDeque::new();
        }
        self.space.add_permits(1);
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
        self.space.close();
        let items = std::mem::take(&mut self.lock().items);
        drop(items);
    }

    /// True once [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.space.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_order_and_capacity_makes_senders_wait() {
        let queue = Arc::new(Queue::new(2));
        queue.try_push(1, None).unwrap();
        queue.push(2).await.unwrap();
        assert!(matches!(queue.try_push(3, None), Err(TryPushError::Full(3))));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(3).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full queue makes the sender wait");
        assert_eq!(poll_fn(|cx| queue.poll_pop(cx)).await, Some(1));
        waiting.await.unwrap().unwrap();
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(queue.try_pop(), Some(3));
        assert_eq!(queue.try_pop(), None);
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_when_the_last_sender_goes() {
        let queue = Arc::new(Queue::new(4));
        queue.add_sender();
        queue.try_push("queued", None).unwrap();
        let receiver = tokio::spawn({
            let queue = queue.clone();
            async move {
                let mut got = Vec::new();
                while let Some(item) = poll_fn(|cx| queue.poll_pop(cx)).await {
                    got.push(item);
                }
                got
            }
        });
        queue.drop_sender();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!receiver.is_finished(), "one sender is left");
        queue.try_push("last", None).unwrap();
        queue.drop_sender();
        assert_eq!(receiver.await.unwrap(), ["queued", "last"]);
    }

    #[tokio::test]
    async fn closing_fails_waiting_and_later_senders() {
        let queue = Arc::new(Queue::new(1));
        queue.try_push(1, None).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(2).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.close();
        assert_eq!(waiting.await.unwrap(), Err(2));
        assert!(matches!(queue.try_push(3, None), Err(TryPushError::Closed(3))));
        assert!(queue.is_closed());
        assert_eq!(queue.try_pop(), None, "closing drops what was queued");
    }

    #[test]
    fn a_drained_queue_gives_its_storage_back() {
        let queue = Queue::new(100);
        for i in 0..100 {
            queue.try_push(i, None).unwrap();
        }
        assert!(queue.lock().items.capacity() >= 100);
        while queue.try_pop().is_some() {}
        assert_eq!(queue.lock().items.capacity(), 0);
    }
}
