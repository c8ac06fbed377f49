//! Logged copies held on disk only. A persistent session's copies past
//! what it keeps in memory for online delivery (`session_queue_*`), and
//! all of them while it has no connection, are kept as log references —
//! an lsn and a few flags — and read back from the offline log, a batch at
//! a time, as the session drains. The storage layer reads the log; this
//! module only asks it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ringmq_protocol::topic::{self, parse_shared};
use ringmq_protocol::{PacketId, QoS, SubscriptionId};

use super::broker::Broker;
use super::journal::{Entry, Journal};
use super::message::Message;
use super::session::{Inflight, Queued, Session, SessionMap, SubIds, Subscription};
use super::stats::Stats;

/// Copies read back from the log at once when a session's memory queue
/// runs dry.
pub const READ_AHEAD: usize = 256;

/// The storage layer's offline log, read back.
pub trait LogReader: std::fmt::Debug {
    /// Logged message `lsn`, if the log holds it; `now`/`now_millis` place
    /// its expiry.
    fn read(&self, lsn: u64, now: Instant, now_millis: u64) -> Option<Arc<Message>>;
    /// The id (and so the arrival time) of logged message `lsn`.
    fn message_id(&self, lsn: u64) -> Option<u64>;
}

/// A logged copy held on disk only.
#[derive(Debug)]
pub struct Spilled {
    /// The message, in the shard's offline log.
    pub lsn: u64,
    /// What it counts for in the byte caps.
    pub weight: u32,
    flags: u8,
    /// Subscription Identifiers of the copy (v5), if any.
    pub sub_ids: SubIds,
}

const DUP: u8 = 0x04;
const RETAIN: u8 = 0x08;
const OFFLINE: u8 = 0x10;
const GONE: u8 = 0x20;
const RESTORED: u8 = 0x40;

impl Spilled {
    /// A copy of `lsn`.
    pub fn new(lsn: u64, weight: usize, qos: QoS, retain: bool, dup: bool, offline: bool) -> Self {
        let flags = qos as u8
            | if dup { DUP } else { 0 }
            | if retain { RETAIN } else { 0 }
            | if offline { OFFLINE } else { 0 };
        Spilled {
            lsn,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            flags,
            sub_ids: None,
        }
    }

    fn qos(&self) -> QoS {
        match self.flags & 3 {
            2 => QoS::ExactlyOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::AtMostOnce,
        }
    }

    /// Read back from the log at start: the log does not keep its
    /// Subscription Identifiers, so they are those of the session's
    /// subscriptions that match its topic when it is delivered.
    pub fn mark_restored(&mut self) {
        self.flags |= RESTORED;
    }

    /// The Subscription Identifiers of the copy of `message` (see
    /// [`Spilled::mark_restored`]).
    fn take_sub_ids(
        &mut self,
        message: &Message,
        subs: &SessionMap<Box<str>, Subscription>,
    ) -> SubIds {
        if self.flags & RESTORED == 0 || self.sub_ids.is_some() {
            return self.sub_ids.take();
        }
        let topic = message.topic.as_str();
        let ids: Vec<SubscriptionId> = subs
            .iter()
            .filter(|(filter, _)| {
                let filter = parse_shared(filter).map_or(&***filter, |s| s.filter);
                topic::matches(filter, topic)
            })
            .filter_map(|(_, s)| s.id)
            .collect();
        (!ids.is_empty()).then(|| ids.into_boxed_slice())
    }

    /// Recovery: the copy was acknowledged.
    pub fn mark_gone(&mut self) {
        self.flags |= GONE;
    }

    /// Whether the copy was acknowledged (recovery).
    pub fn is_gone(&self) -> bool {
        self.flags & GONE != 0
    }

    /// It may have been sent before the broker stopped: DUP is set.
    pub fn mark_dup(&mut self) {
        self.flags |= DUP;
    }

    /// The copy as in flight with `packet_id` (restored from the log) for
    /// a session subscribed to `subs`.
    pub fn into_inflight(
        mut self,
        packet_id: PacketId,
        message: Arc<Message>,
        released: bool,
        subs: &SessionMap<Box<str>, Subscription>,
    ) -> Inflight {
        Inflight {
            packet_id,
            sub_ids: self.take_sub_ids(&message, subs),
            message: Rc::new(message),
            qos: self.qos(),
            retain: self.flags & RETAIN != 0,
            released,
            shared: None,
            lsn: self.lsn,
        }
    }

    /// The copy with its message read back, for a session subscribed to
    /// `subs`.
    fn load(mut self, message: Arc<Message>, subs: &SessionMap<Box<str>, Subscription>) -> Queued {
        Queued {
            sub_ids: self.take_sub_ids(&message, subs),
            message: Rc::new(message),
            dup: self.flags & DUP != 0,
            qos: self.qos(),
            retain: self.flags & RETAIN != 0,
            shared: None,
            lsn: self.lsn,
            offline: self.flags & OFFLINE != 0,
        }
    }
}

/// Logged message `lsn`: from the log, or from the journal if the storage
/// layer has not written it yet.
pub(super) fn load(
    log: Option<&dyn LogReader>,
    journal: &Journal,
    lsn: u64,
    now: Instant,
    now_millis: u64,
) -> Option<Arc<Message>> {
    if let Some(m) = log.and_then(|l| l.read(lsn, now, now_millis)) {
        return Some(m);
    }
    journaled(journal, lsn).map(Arc::clone)
}

/// The id of logged message `lsn` (see [`load`]).
pub(super) fn message_id(log: Option<&dyn LogReader>, journal: &Journal, lsn: u64) -> Option<u64> {
    log.and_then(|l| l.message_id(lsn))
        .or_else(|| journaled(journal, lsn).map(|m| m.id))
}

fn journaled(journal: &Journal, lsn: u64) -> Option<&Arc<Message>> {
    journal.entries.iter().rev().find_map(|e| match e {
        Entry::Message {
            lsn: l, message, ..
        } if *l == lsn => Some(message),
        _ => None,
    })
}

/// What reading spilled copies back needs from the broker.
pub(super) struct Loader<'a> {
    pub log: Option<&'a dyn LogReader>,
    pub journal: &'a mut Journal,
    pub stats: &'a mut Stats,
    pub now: Instant,
    pub now_millis: u64,
}

impl Loader<'_> {
    /// Moves up to `n` spilled copies of `session` into its memory queue.
    /// A copy the log no longer holds is counted and let go of.
    pub(super) fn refill(&mut self, session: &mut Session, n: usize) {
        for _ in 0..n {
            let Some(s) = session.spilled.pop_front() else {
                break;
            };
            session.spilled_bytes -= s.weight as usize;
            match load(self.log, self.journal, s.lsn, self.now, self.now_millis) {
                Some(message) => {
                    session.queued_bytes += message.weight();
                    let copy = s.load(message, &session.subs);
                    session.queue.push_back(copy);
                }
                None => {
                    self.stats.dropped_unreadable += 1;
                    tracing::warn!(lsn = s.lsn, client = %session.client_id.as_str(), "a logged message cannot be read back: dropped");
                    self.journal.ack(session.uid, s.lsn);
                }
            }
        }
    }
}

impl Session {
    /// Keeps a logged copy on disk only.
    pub(super) fn spill(&mut self, s: Spilled) {
        self.spilled_bytes += s.weight as usize;
        self.spilled.push_back(s);
    }

    /// Copies held (in memory and on disk).
    pub fn held(&self) -> usize {
        self.queue.len() + self.spilled.len()
    }

    /// The connection ended: logged copies in the memory queue (not those
    /// of shared subscriptions, which go to other members) go to disk,
    /// ahead of those already there.
    pub(super) fn spill_queue(&mut self) {
        let mut keep = std::collections::VecDeque::new();
        while let Some(q) = self.queue.pop_back() {
            if q.lsn == 0 || q.shared.is_some() {
                keep.push_front(q);
                continue;
            }
            let weight = q.message.weight();
            self.queued_bytes -= weight;
            self.spilled_bytes += weight;
            let mut s = Spilled::new(q.lsn, weight, q.qos, q.retain, q.dup, true);
            s.sub_ids = q.sub_ids;
            self.spilled.push_front(s);
        }
        self.queue = keep;
    }

    /// The lsn of the oldest logged copy waiting (copies not logged, of a
    /// time before the session was, are passed over).
    pub(super) fn oldest_logged(&self) -> Option<u64> {
        match self.queue.iter().find(|q| q.lsn != 0) {
            Some(q) => Some(q.lsn),
            None => self.spilled.front().map(|s| s.lsn),
        }
    }

    /// Takes the oldest logged copy waiting: its lsn and weight.
    pub(super) fn pop_oldest_logged(&mut self) -> Option<(u64, usize)> {
        if let Some(at) = self.queue.iter().position(|q| q.lsn != 0) {
            let q = self.queue.remove(at)?;
            self.queued_bytes -= q.message.weight();
            return Some((q.lsn, q.message.weight()));
        }
        let s = self.spilled.pop_front()?;
        self.spilled_bytes -= s.weight as usize;
        Some((s.lsn, s.weight as usize))
    }
}

impl Broker {
    /// Sets what reads logged messages back.
    pub fn set_log_reader(&mut self, log: Box<dyn LogReader>) {
        self.log = Some(log);
    }
}
