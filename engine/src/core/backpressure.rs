//! Flow control towards publishers. A connection whose backlog (output not
//! yet written, including what its writer holds, plus queued messages)
//! passes `backlog_pause_bytes` is *congested*: the shard stops reading from
//! the publishers (and from the mesh) whose messages feed it until its
//! backlog falls to a quarter of the limit, so memory stays bounded and
//! nothing is dropped while consumers keep up. A consumer congested for
//! longer than `slow_consumer_millis` in total is *slow*: it no longer holds
//! anyone back until it has drained completely, and its own caps (QoS 0
//! dropped, QoS ≥ 1 queued up to `session_queue_*`) take over — one slow
//! client never slows the others for long.

use std::time::{Duration, Instant};

use super::broker::{Broker, ConnId};
use super::session::Session;

/// Bytes waiting for `session`'s client.
fn backlog(session: &Session) -> usize {
    session.queued_bytes + session.link.as_ref().map_or(0, |l| l.tx.backlog_bytes())
}

impl Broker {
    /// Marks session `slot` congested if its backlog is over the limit.
    pub(super) fn note_backlog(&mut self, slot: u32, now: Instant) {
        let limit = self.limits.backlog_pause_bytes;
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        if session.congested_at.is_some() || session.slow || backlog(session) <= limit {
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

    /// Clears session `slot`'s congestion once its backlog is down to a
    /// quarter of the limit; a slow session stops being slow once empty.
    pub(super) fn recheck_backlog(&mut self, slot: u32) -> bool {
        let limit = self.limits.backlog_pause_bytes;
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return false;
        };
        let left = backlog(session);
        if left == 0 {
            session.slow = false;
        }
        if session.congested_at.is_some() && left <= limit / 4 {
            session.congested_at = None;
            self.drained = true;
            return true;
        }
        false
    }

    /// Whether a reader feeding this shard should wait: some connection
    /// other than `reader` is congested and not yet judged slow. A reader
    /// whose own session has messages waiting for acknowledgement never
    /// waits: its acknowledgements are what drain the backlogs.
    pub fn backpressure(&mut self, now: Instant, reader: Option<ConnId>) -> bool {
        if reader.is_some_and(|id| self.never_waits(id)) {
            return false;
        }
        let grace = Duration::from_millis(self.limits.slow_consumer_millis);
        let mut waiting = false;
        let sessions = &mut self.sessions;
        self.congested.retain(|id| {
            let Some(Some(s)) = sessions.get_mut(id.session as usize) else {
                return false;
            };
            let current = s
                .link
                .as_ref()
                .is_some_and(|l| l.generation == id.generation);
            let Some(at) = s.congested_at.filter(|_| current) else {
                return false;
            };
            if now.saturating_duration_since(at) >= grace {
                // Slow: left to its own caps until it drains completely.
                s.congested_at = None;
                s.slow = true;
                tracing::debug!(client = %s.client_id.as_str(), "slow consumer");
                return false;
            }
            waiting |= Some(*id) != reader;
            true
        });
        waiting
    }

    /// Whether reader `id` reads on whatever is congested: its session has
    /// messages waiting for acknowledgement, and its acknowledgements are
    /// what drain the backlogs.
    pub fn never_waits(&self, id: ConnId) -> bool {
        self.session(id)
            .is_some_and(|s| !s.inflight.is_empty() || !s.queue.is_empty() || !s.spilled.is_empty())
    }

    /// Whether some congestion cleared since the last call; the shard then
    /// wakes the readers it paused.
    pub fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }

    /// Records activity on connection `id` (a reader the broker paused is
    /// not idle).
    pub fn touch(&mut self, id: ConnId, now: Instant) {
        if let Some(link) = self.session_mut(id).and_then(|s| s.link.as_mut()) {
            link.last_rx = now;
        }
    }

    /// Whether connection `id`'s own unwritten output is over
    /// `session_queue_bytes_max`: its reader then stops reading until the
    /// client takes its replies (TCP back-pressure on the client).
    pub fn output_full(&self, id: ConnId) -> bool {
        let max = self.limits.session_queue_bytes_max;
        self.session(id)
            .and_then(|s| s.link.as_ref())
            .is_some_and(|l| l.tx.pending_bytes() > max)
    }

    /// Whether connection `id` is closing or gone (its writer then gives a
    /// blocked write a bounded time).
    pub fn closing(&self, id: ConnId) -> bool {
        self.session(id)
            .and_then(|s| s.link.as_ref())
            .is_none_or(|l| l.tx.is_closing())
    }
}
