//! Flow control towards publishers. A connection whose backlog (output not
//! yet taken by its writer, plus queued messages) passes
//! `backlog_pause_bytes` is *congested*: the shard stops reading from the
//! publishers (and from the mesh) whose messages feed it until it drains, so
//! memory stays bounded and nothing is dropped while consumers keep up.
//! A consumer congested for longer than `slow_consumer_millis` is *slow*: it
//! no longer holds anyone back, and its own caps (QoS 0 dropped, QoS ≥ 1
//! queued up to `session_queue_*`) take over — one slow client never slows
//! the others for long.

use std::time::{Duration, Instant};

use super::broker::{Broker, ConnId};
use super::session::Session;

/// Bytes waiting for `session`'s client.
fn backlog(session: &Session) -> usize {
    session.queued_bytes + session.link.as_ref().map_or(0, |l| l.tx.pending_bytes())
}

impl Broker {
    /// Marks session `slot` congested if its backlog is over the limit.
    pub(super) fn note_backlog(&mut self, slot: u32, now: Instant) {
        let limit = self.limits.backlog_pause_bytes;
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        if session.congested_at.is_some() || backlog(session) <= limit {
            return;
        }
        let Some(link) = &session.link else {
            return;
        };
        session.congested_at = Some(now);
        self.congested.push(ConnId {
            session: slot,
            generation: link.generation,
        });
    }

    /// Clears session `slot`'s congestion once its backlog is under the
    /// limit again; returns whether it did.
    pub(super) fn recheck_backlog(&mut self, slot: u32) -> bool {
        let limit = self.limits.backlog_pause_bytes;
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return false;
        };
        if session.congested_at.is_some() && backlog(session) <= limit {
            session.congested_at = None;
            self.drained = true;
            return true;
        }
        false
    }

    /// Whether a reader feeding this shard should wait: some connection
    /// other than `reader` itself is congested and not yet judged slow. (A
    /// reader never waits for its own backlog: its acknowledgements are what
    /// drain it.)
    pub fn backpressure(&mut self, now: Instant, reader: Option<ConnId>) -> bool {
        let grace = Duration::from_millis(self.limits.slow_consumer_millis);
        let sessions = &self.sessions;
        self.congested.retain(|id| {
            sessions
                .get(id.session as usize)
                .and_then(Option::as_ref)
                .filter(|s| {
                    s.link
                        .as_ref()
                        .is_some_and(|l| l.generation == id.generation)
                })
                .and_then(|s| s.congested_at)
                .is_some()
        });
        self.congested
            .iter()
            .filter(|&&id| Some(id) != reader)
            .any(|id| {
                let at = self.sessions[id.session as usize]
                    .as_ref()
                    .and_then(|s| s.congested_at);
                at.is_some_and(|at| now.saturating_duration_since(at) < grace)
            })
    }

    /// Whether some congestion cleared since the last call; the shard then
    /// wakes the readers it paused.
    pub fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }
}
