//! Shared subscriptions (`$share/<group>/<filter>`, MQTT 5 §4.8.2, also
//! accepted from 3.1.1 clients): each message goes to one member of each
//! matching group. Members may sit on several shards, so the publishing
//! shard picks the shard (round robin over the shards that have members,
//! from the replicated route table) and that shard picks the member (round
//! robin over its connected members). When a member's connection ends, its
//! unacknowledged messages go to another member.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use ringmq_protocol::QoS;

use super::broker::{Broker, Remote};
use super::deliver::{Encoded, Outgoing};
use super::message::Message;
use super::trie::Slot;
use super::Sub;

/// Names one shared subscription: its filter and group.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SharedKey {
    /// The filter the group subscribes to (without `$share/<group>/`).
    pub filter: Box<str>,
    /// The ShareName.
    pub group: Box<str>,
}

/// One group in the route table: which shards have members.
#[derive(Debug)]
pub struct GroupRoute {
    key: Arc<SharedKey>,
    shards: u64,
    next: Cell<u32>,
}

/// A route-table node: shards with plain subscribers, and shared groups.
#[derive(Debug, Default)]
pub struct RouteSlot {
    /// Other shards with at least one plain subscription on this filter.
    pub shards: u64,
    /// Other shards with a persistent (logged) session subscribed to it.
    pub durable: u64,
    /// Shared groups on this filter, with the shards (this one included)
    /// that have members.
    pub groups: Vec<GroupRoute>,
    /// Another node of the cluster has a persistent session subscribed
    /// to it: a QoS 1/2 publisher's acknowledgement waits for that node.
    pub remote_durable: bool,
}

impl Slot for RouteSlot {
    fn is_empty(&self) -> bool {
        self.shards == 0 && self.durable == 0 && self.groups.is_empty() && !self.remote_durable
    }
}

/// A group's members on this shard.
#[derive(Debug)]
pub struct LocalGroup {
    name: Box<str>,
    members: Vec<Sub>,
    next: usize,
}

impl GroupRoute {
    /// The next shard, round robin over those with members.
    fn pick(&self) -> Option<usize> {
        let count = self.shards.count_ones();
        if count == 0 {
            return None;
        }
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let mut skip = n % count;
        (0..64).find(|&s| {
            if self.shards & (1 << s) == 0 {
                return false;
            }
            if skip == 0 {
                return true;
            }
            skip -= 1;
            false
        })
    }
}

/// Where [`Broker::route_shared`] sent a message.
pub(super) struct SharedRouted {
    /// One of the groups' picks is another shard.
    pub(super) remote: bool,
    /// A group matched it.
    pub(super) picked: bool,
}

impl SharedRouted {
    /// Sent nowhere.
    pub(super) fn none() -> SharedRouted {
        SharedRouted {
            remote: false,
            picked: false,
        }
    }
}

impl Broker {
    /// For each shared group matching `message`, sends it to one shard.
    pub(super) fn route_shared(&mut self, message: &Arc<Message>, now: Instant) -> SharedRouted {
        let mut picks: Vec<(usize, Arc<SharedKey>)> = Vec::new();
        self.routes.for_each_match(message.topic.as_str(), |slot| {
            for g in &slot.groups {
                if let Some(shard) = g.pick() {
                    picks.push((shard, Arc::clone(&g.key)));
                }
            }
        });
        let routed = SharedRouted {
            remote: picks.iter().any(|(shard, _)| *shard != self.shard),
            picked: !picks.is_empty(),
        };
        for (shard, key) in picks {
            self.send_shared(shard, key, message, now);
        }
        routed
    }

    fn send_shared(
        &mut self,
        shard: usize,
        key: Arc<SharedKey>,
        message: &Arc<Message>,
        now: Instant,
    ) {
        if shard == self.shard {
            self.deliver_shared(&key, message, now);
        } else {
            self.outbox[shard].push(Remote::Shared(Arc::clone(message), key));
        }
    }

    /// Delivers `message` to one local member of `key`'s group.
    pub(super) fn deliver_shared(
        &mut self,
        key: &Arc<SharedKey>,
        message: &Arc<Message>,
        now: Instant,
    ) {
        if message.is_expired(now) {
            self.stats.dropped_expired += 1;
            return;
        }
        let Some(member) = self.pick_member(key) else {
            self.stats.dropped_no_member += 1;
            return;
        };
        let copy = Outgoing {
            qos: member.sub.options.qos.min(message.qos),
            sub_qos: member.sub.options.qos,
            retain: member.sub.options.retain_as_published && message.retain,
            sub_ids: member.sub.id.map(|i| vec![i].into_boxed_slice()),
        };
        self.sharing = true;
        self.deliver_to(member.slot, message, copy, &mut Encoded::default(), now);
        self.sharing = false;
        self.journal.finish(message);
        if let Some(session) = self.slot(member.slot) {
            mark_shared(session, message, key);
        }
    }

    /// The next member, round robin, preferring connected ones.
    fn pick_member(&mut self, key: &SharedKey) -> Option<Sub> {
        let groups = self.shared.get_mut(&key.filter)?;
        let group = groups.iter_mut().find(|g| *g.name == *key.group)?;
        let n = group.members.len();
        for i in 0..n {
            let at = (group.next + i) % n;
            let m = group.members[at];
            let connected = self
                .sessions
                .get(m.slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.link.is_some());
            if connected {
                group.next = at + 1;
                return Some(m);
            }
        }
        let m = *group.members.get(group.next % n.max(1))?;
        group.next += 1;
        Some(m)
    }

    /// Adds session `sub.slot` to a group; announces the group if it is new
    /// on this shard.
    pub(super) fn join_group(&mut self, group: &str, filter: &str, sub: Sub) {
        let groups = self.shared.entry(filter);
        let g = match groups.iter().position(|g| *g.name == *group) {
            Some(at) => &mut groups[at],
            None => {
                groups.push(LocalGroup {
                    name: group.into(),
                    members: Vec::new(),
                    next: 0,
                });
                let at = groups.len() - 1;
                &mut groups[at]
            }
        };
        let first = g.members.is_empty();
        match g.members.iter_mut().find(|m| m.slot == sub.slot) {
            Some(m) => *m = sub,
            None => g.members.push(sub),
        }
        if first {
            self.announce_group(filter, group, true);
        }
    }

    /// Removes session `slot` from a group; announces the group's end on
    /// this shard if it was the last member.
    pub(super) fn leave_group(&mut self, group: &str, filter: &str, slot: u32) {
        let Some(groups) = self.shared.get_mut(filter) else {
            return;
        };
        let Some(at) = groups.iter().position(|g| *g.name == *group) else {
            return;
        };
        groups[at].members.retain(|m| m.slot != slot);
        if !groups[at].members.is_empty() {
            return;
        }
        groups.remove(at);
        if groups.is_empty() {
            self.shared.prune(filter);
        }
        self.announce_group(filter, group, false);
    }

    fn announce_group(&mut self, filter: &str, group: &str, add: bool) {
        self.cluster_group(filter, group, add);
        let me = self.shard;
        self.apply_group_route(me, filter, group, add);
        for peer in (0..self.shards).filter(|&p| p != me) {
            self.outbox[peer].push(Remote::Group(filter.into(), group.into(), add));
        }
    }

    /// Records that `shard` has (or no longer has) members of a group.
    pub(super) fn apply_group_route(&mut self, shard: usize, filter: &str, group: &str, add: bool) {
        let slot = self.routes.entry(filter);
        let bit = 1u64 << shard;
        match slot.groups.iter().position(|g| *g.key.group == *group) {
            Some(at) if add => slot.groups[at].shards |= bit,
            Some(at) => {
                slot.groups[at].shards &= !bit;
                if slot.groups[at].shards == 0 {
                    slot.groups.remove(at);
                }
            }
            None if add => slot.groups.push(GroupRoute {
                key: Arc::new(SharedKey {
                    filter: filter.into(),
                    group: group.into(),
                }),
                shards: bit,
                next: Cell::new(0),
            }),
            None => {}
        }
        if slot.is_empty() {
            self.routes.prune(filter);
        }
    }

    /// Takes the shared messages session `slot` holds (in flight or
    /// queued) out of it: its connection ended, and they go to other
    /// members [MQTT §4.8.2] once it has left its groups.
    pub(super) fn take_shared(&mut self, slot: u32) -> Vec<(Arc<SharedKey>, Arc<Message>)> {
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return Vec::new();
        };
        let (journal, uid) = (&mut self.journal, session.uid);
        let mut orphans = Vec::new();
        // QoS 2 stays with the member: the exchange it started must finish
        // with it [MQTT-4.4.0-1], and it must not be delivered twice.
        session.inflight.retain(|m| match &m.shared {
            Some(key) if m.qos == QoS::AtLeastOnce => {
                orphans.push((Arc::clone(key), Arc::clone(&m.message)));
                journal.ack(uid, m.lsn);
                false
            }
            _ => true,
        });
        let mut freed = 0;
        session.queue.retain(|q| match &q.shared {
            Some(key) => {
                freed += q.message.weight();
                orphans.push((Arc::clone(key), Arc::clone(&q.message)));
                journal.ack(uid, q.lsn);
                false
            }
            None => true,
        });
        session.queued_bytes -= freed;
        session.rebuild_ids_in_use();
        orphans
    }

    /// Sends messages taken with [`Broker::take_shared`] to other members.
    pub(super) fn redistribute(
        &mut self,
        orphans: Vec<(Arc<SharedKey>, Arc<Message>)>,
        now: Instant,
    ) {
        for (key, message) in orphans {
            match self.route_for(&key) {
                Some(shard) => self.send_shared(shard, key, &message, now),
                None => self.stats.dropped_no_member += 1,
            }
        }
    }

    /// Sends `message` to one member of group `group` on `filter` on this
    /// node; counted as dropped if the group has none left here.
    pub(super) fn route_group(
        &mut self,
        filter: &str,
        group: &str,
        message: &Arc<Message>,
        now: Instant,
    ) {
        let picked = self.routes.get(filter).and_then(|slot| {
            let g = slot.groups.iter().find(|g| *g.key.group == *group)?;
            Some((g.pick()?, Arc::clone(&g.key)))
        });
        match picked {
            Some((shard, key)) => self.send_shared(shard, key, message, now),
            None => self.stats.dropped_no_member += 1,
        }
    }

    /// The next shard for a group, from the route table.
    fn route_for(&self, key: &SharedKey) -> Option<usize> {
        let slot = self.routes.get(&key.filter)?;
        slot.groups
            .iter()
            .find(|g| *g.key.group == *key.group)?
            .pick()
    }
}

/// Tags the copy of `message` just handed to `session` as shared, so that
/// it can be redistributed if the member leaves.
fn mark_shared(
    session: &mut super::session::Session,
    message: &Arc<Message>,
    key: &Arc<SharedKey>,
) {
    let tag = |m: &Arc<Message>| Arc::ptr_eq(m, message);
    let key = Arc::clone(key);
    if let Some(m) = session.inflight.iter_mut().rev().find(|m| tag(&m.message)) {
        m.shared = Some(key);
    } else if let Some(q) = session.queue.iter_mut().rev().find(|q| tag(&q.message)) {
        q.shared = Some(key);
    }
}
