//! The caps on what persistent sessions hold: `offline_messages_max`
//! copies per instance (split over the shards) and `offline_retention_secs`
//! of age. Past either, the oldest queued copies go first; every drop is
//! counted and acknowledged in the log.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::broker::Broker;
use super::spill::message_id;

/// How often queues are scanned for copies past their retention.
pub(super) const RETENTION_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Bits of milliseconds in a message id (see `Broker::new_message_id`).
const ID_MILLIS_MASK: u64 = (1 << 40) - 1;

/// Age of message `id` at `now_millis`, in milliseconds (the id holds its
/// arrival time modulo 2^40 ms, about 34 years).
pub(super) fn age_millis(id: u64, now_millis: u64) -> u64 {
    let arrived = (id >> 16) & ID_MILLIS_MASK;
    (now_millis & ID_MILLIS_MASK).wrapping_sub(arrived) & ID_MILLIS_MASK
}

impl Broker {
    /// How many of this shard's copies must go for the instance to be
    /// within `offline_messages_max`. With the shards' shared counts, the
    /// excess is split in proportion to what each shard holds; without,
    /// each shard keeps its even share.
    fn offline_excess(&self) -> u64 {
        let max = self.limits.offline_messages_max as u64;
        let mine = self.journal.copies;
        let Some(counts) = &self.offline_counts else {
            return mine.saturating_sub(max.div_ceil(self.shards.max(1) as u64));
        };
        counts[self.shard].store(mine, Ordering::Relaxed);
        let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let over = total.saturating_sub(max);
        if over == 0 || total == 0 {
            return 0;
        }
        (u128::from(over) * u128::from(mine)).div_ceil(u128::from(total)) as u64
    }

    /// Bytes of this shard's queued copies past its even share of
    /// `offline_bytes_max`.
    fn offline_bytes_excess(&self) -> u64 {
        let share = self.limits.offline_bytes_max / self.shards.max(1) as u64;
        let held: u64 = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.logged)
            .map(|s| (s.queued_bytes + s.spilled_bytes) as u64)
            .sum();
        held.saturating_sub(share)
    }

    /// Applies the caps; called from the clock.
    pub(super) fn enforce_offline_caps(&mut self, now: Instant) {
        let over = self.offline_excess();
        let bytes_over = self.offline_bytes_excess();
        if over > 0 || bytes_over > 0 {
            let dropped = self.drop_oldest(over, bytes_over);
            self.stats.dropped_offline_cap += dropped;
            if let Some(counts) = &self.offline_counts {
                counts[self.shard].store(self.journal.copies, Ordering::Relaxed);
            }
            tracing::warn!(
                dropped,
                offline_messages_max = self.limits.offline_messages_max,
                offline_bytes_max = self.limits.offline_bytes_max,
                "offline_messages_max or offline_bytes_max reached: oldest messages dropped"
            );
        }
        if now.saturating_duration_since(self.retention_checked_at) >= RETENTION_CHECK_PERIOD {
            self.retention_checked_at = now;
            let dropped = self.drop_retired(now);
            if dropped > 0 {
                self.stats.dropped_offline_retention += dropped;
                tracing::info!(
                    dropped,
                    offline_retention_secs = self.limits.offline_retention_secs,
                    "messages past their retention dropped"
                );
            }
        }
    }

    /// Drops the oldest queued copies of logged sessions, at least `n` of
    /// them and at least `bytes` bytes: a merge of the session queues,
    /// each in log order.
    fn drop_oldest(&mut self, n: u64, bytes: u64) -> u64 {
        let mut heads: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        for (slot, s) in self.sessions.iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| s.logged) else {
                continue;
            };
            if let Some(lsn) = s.oldest_logged() {
                heads.push(Reverse((lsn, slot as u32)));
            }
        }
        let (mut dropped, mut freed) = (0, 0u64);
        while dropped < n || freed < bytes {
            let Some(Reverse((_, slot))) = heads.pop() else {
                break;
            };
            let Some(Some(s)) = self.sessions.get_mut(slot as usize) else {
                continue;
            };
            let Some((lsn, weight)) = s.pop_oldest_logged() else {
                continue;
            };
            freed += weight as u64;
            self.journal.ack(s.uid, lsn);
            dropped += 1;
            if let Some(next) = s.oldest_logged() {
                heads.push(Reverse((next, slot)));
            }
        }
        dropped
    }

    /// Drops queued copies older than `offline_retention_secs`.
    fn drop_retired(&mut self, now: Instant) -> u64 {
        let now_millis = self.unix_millis(now);
        let max = self.limits.offline_retention_secs.saturating_mul(1000);
        let mut dropped = 0;
        let log = self.log.as_deref();
        for s in self.sessions.iter_mut().flatten().filter(|s| s.logged) {
            loop {
                // On disk, the id (which holds the arrival time) is read back.
                let id = match (s.queue.iter().find(|q| q.lsn != 0), s.spilled.front()) {
                    (Some(q), _) => Some(q.message.id),
                    (None, Some(sp)) => message_id(log, &self.journal, sp.lsn),
                    (None, None) => break,
                };
                if id.is_some_and(|id| age_millis(id, now_millis) <= max) {
                    break;
                }
                let Some((lsn, _)) = s.pop_oldest_logged() else {
                    break;
                };
                self.journal.ack(s.uid, lsn);
                // One that cannot be read back can never be delivered.
                match id {
                    Some(_) => dropped += 1,
                    None => self.stats.dropped_unreadable += 1,
                }
            }
        }
        dropped
    }
}
