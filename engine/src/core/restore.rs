//! Rebuilding a shard's persistent state from its logged entries: the
//! state log (sessions, subscriptions, retained messages) and the offline
//! log (messages and acknowledgements) replay independently, since session
//! ids are never reused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use ringmq_protocol::MqttString;
use ringmq_protocol::PacketId;

use super::broker::{Broker, Remote};
use super::journal::{Entry, InflightRef, Target};
use super::message::Message;
use super::session::{Session, SessionSet, Subscription};
use super::spill::{load, Spilled};

/// Everything replayed so far.
#[derive(Debug, Default)]
pub struct Replay {
    sessions: AHashMap<u64, Restored>,
    ended: u64,
    /// Each session's copies of logged messages, in lsn order (the order
    /// of the log); an acknowledged one is marked gone until it reaches
    /// the front.
    queues: AHashMap<u64, VecDeque<Spilled>>,
    retained: AHashMap<Box<str>, Arc<Message>>,
    last_lsn: u64,
    last_uid: u64,
}

#[derive(Debug)]
struct Restored {
    client_id: MqttString,
    username: Option<MqttString>,
    expiry_secs: u32,
    detached_at_millis: Option<u64>,
    /// Messages in flight when it detached: sent once already.
    inflight: Vec<InflightRef>,
    /// QoS 2 packet ids received from its client and not yet released.
    qos2_in: SessionSet<u16>,
    subs: Vec<(Box<str>, Subscription)>,
}

/// What a restore found, for the log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreCounts {
    /// Sessions restored.
    pub sessions: usize,
    /// Sessions that had expired while the broker was down.
    pub expired: usize,
    /// Message copies restored to session queues.
    pub messages: usize,
    /// Retained messages restored.
    pub retained: usize,
}

impl Replay {
    /// Applies one entry, in log order.
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Session {
                uid,
                client_id,
                username,
                expiry_secs,
            } => {
                self.see_uid(uid);
                let s = self.sessions.entry(uid).or_insert(Restored {
                    client_id: client_id.clone(),
                    username: None,
                    expiry_secs,
                    detached_at_millis: None,
                    inflight: Vec::new(),
                    qos2_in: SessionSet::default(),
                    subs: Vec::new(),
                });
                s.client_id = client_id;
                s.username = username;
                s.expiry_secs = expiry_secs;
                s.detached_at_millis = None;
                s.inflight.clear();
            }
            Entry::Detached {
                uid,
                at_millis,
                inflight,
            } => {
                if let Some(s) = self.sessions.get_mut(&uid) {
                    s.detached_at_millis = Some(at_millis);
                    s.inflight = inflight;
                }
            }
            Entry::SessionEnd { uid } => {
                self.see_uid(uid);
                self.ended += u64::from(self.sessions.remove(&uid).is_some());
            }
            Entry::Qos2In {
                uid,
                packet_id,
                received,
            } => {
                if let Some(s) = self.sessions.get_mut(&uid) {
                    match received {
                        true => s.qos2_in.insert(packet_id),
                        false => s.qos2_in.remove(&packet_id),
                    };
                }
            }
            Entry::Subscribe { uid, filter, sub } => {
                if let Some(s) = self.sessions.get_mut(&uid) {
                    s.subs.retain(|(f, _)| *f != filter);
                    s.subs.push((filter, sub));
                }
            }
            Entry::Unsubscribe { uid, filter } => {
                if let Some(s) = self.sessions.get_mut(&uid) {
                    s.subs.retain(|(f, _)| *f != filter);
                }
            }
            Entry::Retain(m) => {
                if m.payload.is_empty() {
                    self.retained.remove(m.topic.as_str());
                } else {
                    self.retained.insert(m.topic.as_str().into(), m);
                }
            }
            Entry::Message {
                lsn,
                message,
                targets,
            } => {
                let weight = u32::try_from(message.weight()).unwrap_or(u32::MAX);
                self.message(lsn, weight, &targets);
            }
            Entry::Ack { uid, lsn } => {
                let Some(q) = self.queues.get_mut(&uid) else {
                    return;
                };
                if let Ok(at) = q.binary_search_by_key(&lsn, |s| s.lsn) {
                    q[at].mark_gone();
                }
                // Acknowledgements come mostly in order: the front goes.
                while q.front().is_some_and(Spilled::is_gone) {
                    q.pop_front();
                }
            }
        }
    }

    /// A logged message: only its lsn, weight and holders are kept (it is
    /// read back from the log when delivered).
    pub fn message(&mut self, lsn: u64, weight: u32, targets: &[Target]) {
        for t in targets {
            self.see_uid(t.uid);
        }
        if lsn > self.last_lsn {
            self.last_lsn = lsn;
            for t in targets {
                let mut copy = Spilled::new(lsn, weight as usize, t.qos, t.retain, false, true);
                copy.mark_restored();
                self.queues.entry(t.uid).or_default().push_back(copy);
            }
        }
    }

    fn see_uid(&mut self, uid: u64) {
        self.last_uid = self.last_uid.max(uid & ((1 << 56) - 1));
    }

    /// The highest lsn seen.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }
}

impl Broker {
    /// Installs what `replay` rebuilt: detached persistent sessions with
    /// their subscriptions and unacknowledged messages (in log order), and
    /// the retained messages this shard owns (sent to every shard). A
    /// session that expired while the broker was down is ended.
    pub fn restore(&mut self, replay: Replay, now: Instant) -> RestoreCounts {
        let mut counts = RestoreCounts::default();
        self.next_uid = self.next_uid.max(replay.last_uid);
        self.journal.set_next_lsn(replay.last_lsn);
        let now_millis = self.unix_millis(now);
        let mut queues = replay.queues;
        for (uid, r) in replay.sessions {
            let left = remaining(&r, now_millis);
            if left == Some(Duration::ZERO) {
                counts.expired += 1;
                self.journal.push(Entry::SessionEnd { uid });
                continue;
            }
            let mut queue = queues.remove(&uid).unwrap_or_default();
            queue.retain(|s| !s.is_gone());
            counts.messages += queue.len();
            self.journal.copies += queue.len() as u64;
            counts.sessions += 1;
            self.install(uid, r, queue, left.map(|d| now + d), now);
        }
        counts.retained = replay.retained.len();
        for (_, m) in replay.retained {
            if self
                .retained
                .store(Arc::clone(&m), self.limits.retained_topics_max)
            {
                for peer in (0..self.shards).filter(|&p| p != self.shard) {
                    self.outbox[peer].push(Remote::Retain(Arc::clone(&m)));
                }
            }
        }
        counts
    }

    fn install(
        &mut self,
        uid: u64,
        r: Restored,
        mut queue: VecDeque<Spilled>,
        expires_at: Option<Instant>,
        now: Instant,
    ) {
        let mut session = Session::new(uid, r.client_id);
        session.trace_name = self.traces.intern(&session.client_id);
        session.username = r.username;
        session.expiry_secs = r.expiry_secs;
        session.expires_at = expires_at;
        session.logged = true;
        session.qos2_in = r.qos2_in;
        // Detached: its window comes back as it was (same packet ids, sent
        // again with DUP). Connected when the broker stopped: its first
        // window of messages may have been sent, so they carry DUP.
        let window = usize::from(self.limits.inflight_count_max);
        let crashed = r.detached_at_millis.is_none();
        for (filter, sub) in &r.subs {
            session.subs.insert(filter.clone(), *sub);
        }
        for i in &r.inflight {
            let Some(at) = queue.iter().position(|s| s.lsn == i.lsn) else {
                continue;
            };
            let Some(packet_id) = PacketId::new(i.packet_id) else {
                continue;
            };
            let Some(copy) = queue.remove(at) else {
                continue;
            };
            let now_millis = self.unix_millis(now);
            let log = self.log.as_deref();
            let Some(message) = load(log, &self.journal, i.lsn, now, now_millis) else {
                self.stats.dropped_unreadable += 1;
                self.journal.ack(uid, i.lsn);
                continue;
            };
            let copy = copy.into_inflight(packet_id, message, i.released, &session.subs);
            session.push_inflight(copy);
        }
        if crashed {
            queue.iter_mut().take(window).for_each(Spilled::mark_dup);
        }
        session.spilled_bytes = queue.iter().map(|s| s.weight as usize).sum();
        session.spilled = queue;
        session.track_packet_ids();
        let slot = self.place_session(session);
        for (filter, sub) in r.subs {
            self.add_subscription(slot, uid, &filter, sub);
            self.durable_sub(&filter, true);
        }
    }
}

/// Time left before a detached session expires; `None`: never.
fn remaining(r: &Restored, now_millis: u64) -> Option<Duration> {
    if r.expiry_secs == u32::MAX {
        return None;
    }
    let from = r.detached_at_millis.unwrap_or(now_millis);
    let end = from.saturating_add(u64::from(r.expiry_secs) * 1000);
    Some(Duration::from_millis(end.saturating_sub(now_millis)))
}
