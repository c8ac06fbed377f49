//! Route changes before sockets. A SUBSCRIBE read on one shard changes the
//! routes of every other shard, over the mesh; a PUBLISH read on another
//! shard a moment later must find the new subscriber. A woken shard may run
//! the connection that read the PUBLISH before the mesh task that holds the
//! route, so each shard counts the batches carrying route changes that it
//! has sent to each peer (one counter per pair, written by the sender
//! alone) and those it has applied from each peer; a connection that finds
//! one sent but not yet applied lets the mesh go first, for at most
//! `runtime.route_catch_up_micros`, before it handles what it read.

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::timer::Timer;

use super::context::Shard;
use crate::core::Remote;

/// One shard's view of the route changes in flight to and from it.
#[derive(Debug)]
pub(super) struct Routes {
    index: usize,
    shards: usize,
    /// Batches with route changes sent, at `from * shards + to`; each is
    /// written by shard `from` alone.
    sent: Arc<[AtomicU64]>,
    /// Per peer, its batches with route changes applied here.
    applied: RefCell<Vec<u64>>,
    /// Connections waiting for the mesh to apply them.
    waiters: RefCell<Vec<Waker>>,
}

/// How a wait for route changes ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CaughtUp {
    /// Nothing was pending.
    Already,
    /// The pending changes were applied.
    Applied,
    /// `route_catch_up_micros` passed first.
    Expired,
}

impl Routes {
    /// The counters of `shards` shards, shared by all of them.
    pub(super) fn counters(shards: usize) -> Arc<[AtomicU64]> {
        (0..shards * shards).map(|_| AtomicU64::new(0)).collect()
    }

    pub(super) fn new(index: usize, shards: usize, sent: Arc<[AtomicU64]>) -> Self {
        Routes {
            index,
            shards,
            sent,
            applied: RefCell::new(vec![0; shards]),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Whether `batch` changes the receiver's routes (subscriptions,
    /// persistent subscriptions, shared groups).
    pub(super) fn carried_by(batch: &[Remote]) -> bool {
        batch.iter().any(|r| {
            matches!(
                r,
                Remote::Route(..) | Remote::Durable(..) | Remote::Group(..)
            )
        })
    }

    /// Counts a batch with route changes about to be sent to `peer`.
    pub(super) fn sending(&self, peer: usize) {
        self.sent[self.index * self.shards + peer].fetch_add(1, Ordering::Release);
    }

    /// Counts a batch with route changes from `from`, now applied, and
    /// lets the connections waiting for it go on.
    pub(super) fn applied(&self, from: usize) {
        self.applied.borrow_mut()[from] += 1;
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Per peer, the batches with route changes it has sent here.
    fn sent_here(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.shards)
            .filter(move |&p| p != self.index)
            .map(move |p| {
                (
                    p,
                    self.sent[p * self.shards + self.index].load(Ordering::Acquire),
                )
            })
    }

    /// Whether a peer has sent route changes not yet applied here.
    pub(super) fn behind(&self) -> bool {
        let applied = self.applied.borrow();
        self.sent_here().any(|(p, sent)| sent > applied[p])
    }

    /// Waits until every route change sent here so far is applied, or
    /// `max` has passed.
    pub(super) async fn catch_up(&self, max: Duration) -> CaughtUp {
        if !self.behind() {
            return CaughtUp::Already;
        }
        let target: Vec<(usize, u64)> = self.sent_here().collect();
        let applied = poll_fn(|cx| {
            let applied = self.applied.borrow();
            if target.iter().all(|&(p, sent)| applied[p] >= sent) {
                return Poll::Ready(CaughtUp::Applied);
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        });
        futures_lite::future::or(applied, async {
            Timer::new(max).await;
            CaughtUp::Expired
        })
        .await
    }
}

impl Shard {
    /// Lets the mesh apply the route changes other shards have already sent
    /// before a connection handles what it read; counts the waits.
    pub(super) async fn catch_up_routes(&self) {
        let max = Duration::from_micros(self.config.runtime.route_catch_up_micros);
        if max.is_zero() {
            return;
        }
        let outcome = self.routes.catch_up(max).await;
        let stats = &mut self.broker.borrow_mut().stats;
        match outcome {
            CaughtUp::Already => {}
            CaughtUp::Applied => stats.route_waits += 1,
            CaughtUp::Expired => {
                stats.route_waits += 1;
                stats.route_waits_expired += 1;
                tracing::debug!(
                    shard = self.index,
                    ?max,
                    "route changes not applied in time"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_behind_only_while_a_peer_has_sent_more_than_it_applied() {
        let sent = Routes::counters(3);
        let zero = Routes::new(0, 3, Arc::clone(&sent));
        let one = Routes::new(1, 3, Arc::clone(&sent));
        assert!(!one.behind());
        zero.sending(1);
        assert!(one.behind(), "shard 0 sent routes to shard 1");
        assert!(!zero.behind(), "nothing was sent to shard 0");
        one.applied(0);
        assert!(!one.behind());
        zero.sending(2);
        assert!(!one.behind(), "routes for shard 2 do not hold shard 1");
    }

    #[test]
    fn only_route_changes_count() {
        let route = Remote::Route("a/+".into(), true);
        let barrier = Remote::Barrier(1);
        assert!(Routes::carried_by(&[barrier, route]));
        assert!(!Routes::carried_by(&[Remote::BarrierAck(1)]));
        assert!(!Routes::carried_by(&[]));
    }
}
