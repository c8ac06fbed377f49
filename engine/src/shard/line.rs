//! The line of readers waiting for back-pressure to clear: publishers, and
//! the mesh's receivers (which carry the other shards' publishers). While
//! anyone waits, a reader that would read more publishes joins the line
//! behind them, and the line moves one reader at a time, in the order they
//! joined: a publisher that had to wait is never passed, over and over, by
//! readers that happened to be woken first.
//!
//! One exception keeps the shards from waiting on each other: while this
//! shard's outbox to another shard is backed up, publishers cannot read on,
//! but the mesh's receivers can (draining another shard's outbox), so the
//! first of them passes the publishers ahead of it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::timer::Timer;

use super::context::Shard;
use crate::core::ConnId;

impl Shard {
    /// Whether `reader` (a publisher; `None` for a mesh receiver) must wait
    /// in line before it reads on: something holds it back, or others are
    /// already waiting.
    pub(super) fn must_queue(&self, reader: Option<ConnId>) -> bool {
        !self.never_waits(reader) && (!self.line.borrow().is_empty() || self.must_wait(reader))
    }

    /// Waits in line until nothing holds `reader` back (see
    /// `core::backpressure`) and it is its turn, then lets the next one check.
    pub(super) async fn wait_turn(&self, reader: Option<ConnId>) {
        let place = Place::join(&self.line, reader.is_none());
        loop {
            if self.never_waits(reader) || self.may_go(reader, place.ticket) {
                return;
            }
            let mut parked = false;
            // Woken when congestion clears or the one ahead goes on, or
            // re-checked after 5 ms so a congested connection's grace is
            // seen to end.
            futures_lite::future::or(
                poll_fn(|cx| {
                    if parked {
                        return Poll::Ready(());
                    }
                    parked = true;
                    self.line.borrow_mut().park(place.ticket, cx.waker());
                    Poll::Pending
                }),
                async {
                    Timer::new(Duration::from_millis(5)).await;
                },
            )
            .await;
        }
    }

    /// Whether publisher `reader` has messages waiting for acknowledgement
    /// (its acknowledgements drain the backlogs: it never waits).
    fn never_waits(&self, reader: Option<ConnId>) -> bool {
        reader.is_some_and(|id| self.broker.borrow().never_waits(id))
    }

    /// Whether the holder of `ticket` may read on now.
    fn may_go(&self, reader: Option<ConnId>, ticket: u64) -> bool {
        if self.must_wait(reader) {
            return false;
        }
        let mut line = self.line.borrow_mut();
        if line.is_front(ticket) {
            return true;
        }
        // A mesh receiver passes the publishers ahead if they are held
        // back by the mesh.
        if reader.is_none() && line.first_mesh() == Some(ticket) && self.mesh_backed_up() {
            return true;
        }
        if reader.is_some() && self.mesh_backed_up() {
            line.wake_first_mesh();
        }
        false
    }
}

/// A reader's place in line, given up when it reads on or goes away.
struct Place<'a> {
    line: &'a RefCell<Line>,
    ticket: u64,
}

impl<'a> Place<'a> {
    fn join(line: &'a RefCell<Line>, mesh: bool) -> Self {
        let ticket = line.borrow_mut().join(mesh);
        Self { line, ticket }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.line.borrow_mut().leave(self.ticket);
    }
}

/// One reader in line.
#[derive(Debug)]
struct Member {
    /// A mesh receiver, not a publisher.
    mesh: bool,
    waker: Option<Waker>,
}

/// Tickets in joining order, each with the reader holding it.
#[derive(Debug, Default)]
pub(super) struct Line {
    next: u64,
    waiting: BTreeMap<u64, Member>,
}

impl Line {
    /// Whether nobody waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes a ticket at the back of the line.
    fn join(&mut self, mesh: bool) -> u64 {
        self.next += 1;
        let member = Member { mesh, waker: None };
        self.waiting.insert(self.next, member);
        self.next
    }

    /// Whether `ticket` is at the front.
    fn is_front(&self, ticket: u64) -> bool {
        self.waiting.keys().next() == Some(&ticket)
    }

    /// The ticket of the first mesh receiver in line.
    fn first_mesh(&self) -> Option<u64> {
        self.waiting.iter().find(|(_, m)| m.mesh).map(|(&t, _)| t)
    }

    /// Records the waker of the reader holding `ticket`.
    fn park(&mut self, ticket: u64, waker: &Waker) {
        if let Some(m) = self.waiting.get_mut(&ticket) {
            match &m.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => m.waker = Some(waker.clone()),
            }
        }
    }

    /// Gives up `ticket` (its reader reads on, or went away) and wakes the
    /// reader now at the front, so the line keeps moving.
    fn leave(&mut self, ticket: u64) {
        let was_front = self.is_front(ticket);
        self.waiting.remove(&ticket);
        if was_front {
            self.wake_front();
        }
    }

    /// Wakes the reader at the front to check whether it may read on.
    pub(super) fn wake_front(&mut self) {
        if let Some(m) = self.waiting.values().next() {
            wake(m);
        }
    }

    /// Wakes the first mesh receiver in line to check whether it may pass.
    pub(super) fn wake_first_mesh(&mut self) {
        if let Some(m) = self.waiting.values().find(|m| m.mesh) {
            wake(m);
        }
    }
}

fn wake(m: &Member) {
    if let Some(w) = &m.waker {
        w.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Parks a counting waker on each of `tickets`; returns the counters.
    fn park_all(line: &mut Line, tickets: &[u64]) -> Vec<Arc<Count>> {
        tickets
            .iter()
            .map(|&t| {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                line.park(t, &Waker::from(Arc::clone(&count)));
                count
            })
            .collect()
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::Relaxed)
    }

    #[test]
    fn the_line_moves_in_joining_order_and_a_leaving_front_wakes_the_next() {
        let mut line = Line::default();
        let (a, b, c) = (line.join(false), line.join(false), line.join(false));
        let wakes = park_all(&mut line, &[a, b, c]);
        assert!(line.is_front(a) && !line.is_front(b));
        // A reader behind the front going away wakes nobody.
        line.leave(b);
        assert_eq!(woken(&wakes[2]), 0);
        // The front reading on wakes the one now in front.
        line.leave(a);
        assert!(line.is_front(c));
        assert_eq!(woken(&wakes[2]), 1);
        line.leave(c);
        assert!(line.is_empty());
    }

    #[test]
    fn the_first_mesh_receiver_is_found_and_woken_behind_publishers() {
        let mut line = Line::default();
        let (p, m1, m2) = (line.join(false), line.join(true), line.join(true));
        let wakes = park_all(&mut line, &[p, m1, m2]);
        assert_eq!(line.first_mesh(), Some(m1));
        line.wake_first_mesh();
        assert_eq!(
            wakes.iter().map(|w| woken(w)).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        // The mesh receiver that passed leaves without waking the front.
        line.leave(m1);
        assert_eq!(woken(&wakes[0]), 0);
        assert_eq!(line.first_mesh(), Some(m2));
    }
}
