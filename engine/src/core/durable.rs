//! Which shards hold persistent sessions on a filter. A publisher's
//! acknowledgement waits for the shards its message went to only when one
//! of them logs it (see `Journal::hold_acks`); so each shard counts the
//! plain subscriptions of its logged sessions per filter and tells the
//! others when a filter gains its first or loses its last.

use super::broker::{Broker, Remote};

impl Broker {
    /// A logged session's subscription on `filter` was added or removed.
    /// Shared subscriptions are not counted: a shared message always waits.
    pub(super) fn durable_sub(&mut self, filter: &str, add: bool) {
        if ringmq_protocol::topic::parse_shared(filter).is_some() {
            return;
        }
        let announce = match add {
            true => {
                let n = self.durable_counts.entry(filter.into()).or_insert(0);
                *n += 1;
                *n == 1
            }
            false => match self.durable_counts.get_mut(filter) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.durable_counts.remove(filter);
                    true
                }
                None => false,
            },
        };
        if announce {
            self.cluster_durable(filter, add);
            for peer in (0..self.shards).filter(|&p| p != self.shard) {
                self.outbox[peer].push(Remote::Durable(filter.into(), add));
            }
        }
    }

    /// Session `slot` entered (`add`) or left the log: its subscriptions
    /// count or stop counting.
    pub(super) fn durable_session(&mut self, slot: u32, add: bool) {
        let Some(Some(session)) = self.sessions.get(slot as usize) else {
            return;
        };
        let filters: Vec<Box<str>> = session.subs.keys().cloned().collect();
        for filter in filters {
            self.durable_sub(&filter, add);
        }
    }

    /// Shard `from` gained (`add`) or lost its last persistent subscriber
    /// on `filter`.
    pub(super) fn apply_durable_route(&mut self, from: usize, filter: &str, add: bool) {
        let bit = 1u64 << from;
        let slot = self.routes.entry(filter);
        if add {
            slot.durable |= bit;
        } else {
            slot.durable &= !bit;
            if super::trie::Slot::is_empty(slot) {
                self.routes.prune(filter);
            }
        }
    }
}
