//! [`InlineDeque`]: a first-in, first-out queue that keeps its oldest item in place.
//!
//! A connection's queues (its outgoing events, its frames waiting for the socket, its
//! channel's messages) mostly hold one item at a time, and most of the time none. A `VecDeque`
//! allocates room for four on the first push and keeps it for the connection's life: an idle
//! connection that was ever sent anything pays for it. Here the oldest item sits in the queue
//! itself, so one at a time needs no allocation, and the room for more is given back whenever
//! the queue drains (a burst costs one allocation, an idle connection none).

use std::collections::VecDeque;

/// A FIFO queue whose oldest item is stored inline; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct InlineDeque<T> {
    /// The oldest item; `None` only when the queue is empty.
    head: Option<T>,
    /// The items after it.
    rest: VecDeque<T>,
}

impl<T> Default for InlineDeque<T> {
    fn default() -> Self {
        InlineDeque::new()
    }
}

impl<T> InlineDeque<T> {
    pub(crate) const fn new() -> Self {
        InlineDeque { head: None, rest: VecDeque::new() }
    }

    pub(crate) fn push_back(&mut self, item: T) {
        if self.head.is_none() {
            self.head = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.rest.is_empty() {
            // The common case, one item or none; `rest` holds no room here (given back below
            // when it drained).
            return self.head.take();
        }
        let item = std::mem::replace(&mut self.head, self.rest.pop_front());
        if self.rest.is_empty() {
            self.rest = VecDeque::new();
        }
        item
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.head.as_ref()
    }

    pub(crate) fn front_mut(&mut self) -> Option<&mut T> {
        self.head.as_mut()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.head.iter().chain(&self.rest)
    }

    /// Empties the queue, giving its items back (to be dropped outside a lock, say).
    pub(crate) fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// The room allocated for items after the first (for tests).
    #[cfg(test)]
    pub(crate) fn spare_capacity(&self) -> usize {
        self.rest.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_a_drained_queue_keeps_no_room() {
        let mut queue = InlineDeque::new();
        queue.push_back(1);
        assert_eq!(queue.spare_capacity(), 0, "one item needs no allocation");
        queue.push_back(2);
        queue.push_back(3);
        assert_eq!((queue.iter().copied().collect::<Vec<_>>(), queue.len()), (vec![1, 2, 3], 3));
        assert_eq!(queue.pop_front(), Some(1));
        queue.push_back(4);
        if let Some(front) = queue.front_mut() {
            *front *= 10;
        }
        assert_eq!(queue.front(), Some(&20));
        let drained: Vec<i32> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(drained, [20, 3, 4]);
        assert!(queue.is_empty());
        assert_eq!(queue.spare_capacity(), 0, "the burst's room is given back");
        queue.push_back(5);
        assert_eq!(queue.take().iter().copied().collect::<Vec<_>>(), [5]);
        assert!(queue.is_empty());
    }
}
