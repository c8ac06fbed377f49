//! Routing and delivery: a PUBLISH is matched against the route table (for
//! other shards) and this shard's trie, then each matching session gets one
//! copy. The message is encoded once per protocol version per fan-out; a
//! copy writes only its own header, and a QoS 0 copy is the same `Bytes`
//! for every subscriber.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_protocol::properties::id as prop_id;
use ringmq_protocol::{Delivery, PacketId, ProtocolVersion, QoS, SubscriptionId};

use super::broker::{Broker, ConnId, Remote};
use super::journal::{Journal, Target};
use super::message::{Held, Message};
use super::retained;
use super::session::{Inflight, Link, Queued, Session, SubIds};
use super::shared::SharedRouted;
use super::spill::{Loader, Spilled, READ_AHEAD};
use super::stats::Stats;
use super::trace::{Action, TraceName, Traces};
use super::trie::Slot;
use super::Sub;

/// Copies up to this size are encoded whole into the connection's buffer;
/// above it the payload is written from the shared `Bytes`.
const COPY_BYTES_MAX: usize = 1024;

/// Whole QoS 0 copies of one message, built on first use during one fan-out.
#[derive(Default)]
pub(super) struct Encoded {
    /// Whole QoS 0 copies, by version and RETAIN flag.
    qos0: [[Option<Bytes>; 2]; 2],
    /// The wall-clock time traced for this fan-out's deliveries, once read.
    trace_ms: Option<u64>,
    /// This shard's handle on the message, once a copy is held.
    held: Option<Held>,
}

impl Encoded {
    /// This shard's handle on `message`, made for its first held copy: the
    /// others count on it, not on the message's shared count.
    fn held(&mut self, message: &Arc<Message>) -> Held {
        Rc::clone(
            self.held
                .get_or_insert_with(|| Rc::new(Arc::clone(message))),
        )
    }
}

/// What one session's copy of a message looks like.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) qos: QoS,
    /// The highest QoS of the subscriptions it came through (the
    /// message's own for P2P).
    pub(super) sub_qos: QoS,
    pub(super) retain: bool,
    pub(super) sub_ids: SubIds,
}

fn vi(v: ProtocolVersion) -> usize {
    usize::from(v == ProtocolVersion::V5)
}

/// Where [`Broker::route`] sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Routed {
    /// Another shard it went to logs it (a persistent session there, a
    /// shared group, the retained store of a topic it owns): the
    /// publisher's acknowledgement waits for it.
    pub(super) wait: bool,
    /// A subscription matched it, here or on another shard.
    pub(super) matched: bool,
    /// It went to the other nodes of the cluster, and one of them has a
    /// persistent session subscribed to it.
    pub(super) remote: bool,
}

impl Broker {
    /// Sends `message` wherever it is subscribed: other shards through the
    /// outbox, this shard's sessions directly. A retained message is also
    /// stored on every shard.
    pub(super) fn route(&mut self, message: Arc<Message>, now: Instant) -> Routed {
        // Other nodes may have subscribers: it went somewhere.
        let clustered = self.cluster_publish(&message, now);
        if message.retain {
            let stored = Arc::new(retained::compact(&message));
            for peer in self.peers() {
                self.outbox[peer].push(Remote::Retain(Arc::clone(&stored)));
            }
            if self
                .retained
                .store(Arc::clone(&stored), self.limits.retained_topics_max)
            {
                self.log_retained(&stored);
            } else {
                self.stats.dropped_retained += 1;
                tracing::debug!(topic = %message.topic.as_str(), "retained_topics_max reached: not retained");
            }
        }
        let (mut mask, mut durable, mut remote) = (0u64, 0u64, false);
        self.routes.for_each_match(message.topic.as_str(), |r| {
            mask |= r.shards;
            durable |= r.durable;
            remote |= r.remote_durable;
        });
        mask &= !(1 << self.shard);
        for peer in self.peers() {
            if mask & (1 << peer) != 0 {
                self.outbox_bytes[peer] += message.weight();
                self.outbox[peer].push(Remote::Publish(Arc::clone(&message)));
            }
        }
        let local = self.deliver_local(&message, now);
        let shared = match self.shared_by_cluster(&message, clustered) {
            true => SharedRouted::none(),
            false => self.route_shared(&message, now),
        };
        let retained_elsewhere = message.retain && !self.owns_topic(message.topic.as_str());
        Routed {
            wait: durable & mask != 0 || shared.remote || retained_elsewhere,
            matched: mask != 0 || local > 0 || shared.picked || clustered,
            remote: remote && clustered,
        }
    }

    fn peers(&self) -> impl Iterator<Item = usize> {
        let me = self.shard;
        (0..self.shards).filter(move |&p| p != me)
    }

    /// Applies what shard `from` sent.
    pub fn apply_remote(&mut self, from: usize, remote: Remote, now: Instant) {
        match remote {
            Remote::Publish(m) => {
                self.deliver_local(&m, now);
            }
            Remote::Retain(m) => {
                if self
                    .retained
                    .store(Arc::clone(&m), self.limits.retained_topics_max)
                {
                    self.log_retained(&m);
                } else {
                    self.stats.dropped_retained += 1;
                }
            }
            Remote::P2p(m, target) => self.deliver_p2p(&m, &target, now),
            Remote::Route(filter, add) => {
                if let Some(a) = self.aliyun.as_deref_mut() {
                    a.filter_routed(&filter, from, add);
                }
                let bit = 1u64 << from;
                let slot = self.routes.entry(&filter);
                if add {
                    slot.shards |= bit;
                } else {
                    slot.shards &= !bit;
                    if slot.is_empty() {
                        self.routes.prune(&filter);
                    }
                }
            }
            Remote::Shared(m, key) => self.deliver_shared(&key, &m, now),
            Remote::Durable(filter, add) => self.apply_durable_route(from, &filter, add),
            Remote::Group(filter, group, add) => self.apply_group_route(from, &filter, &group, add),
            Remote::Barrier(_) | Remote::BarrierAck(_) => {}
        }
    }

    /// Delivers `message` to this shard's matching sessions, once per
    /// session: at the highest QoS of its matching subscriptions
    /// [MQTT-3.3.5-1], with all their Subscription Identifiers.
    /// Returns how many sessions it matched.
    pub(super) fn deliver_local(&mut self, message: &Arc<Message>, now: Instant) -> usize {
        if message.is_expired(now) {
            self.stats.dropped_expired += 1;
            return 0;
        }
        let mut matches = std::mem::take(&mut self.matches);
        let origin = message.origin;
        self.trie.for_each_match(message.topic.as_str(), |subs| {
            let mine = subs
                .iter()
                .filter(|s| !(s.sub.options.no_local && s.uid == origin));
            matches.extend(mine.copied());
        });
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|s| s.slot);
        }
        let mut enc = Encoded::default();
        for group in matches.chunk_by(|a, b| a.slot == b.slot) {
            let copy = copy_for(message, group);
            self.deliver_to(group[0].slot, message, copy, &mut enc, now);
        }
        self.journal.finish(message);
        let matched = matches.len();
        matches.clear();
        self.matches = matches;
        matched
    }

    /// Hands one copy to session `slot`: written, queued or dropped; then
    /// checks whether the session's backlog should pause publishers.
    pub(super) fn deliver_to(
        &mut self,
        slot: u32,
        message: &Arc<Message>,
        copy: Outgoing,
        enc: &mut Encoded,
        now: Instant,
    ) {
        self.hand_over(slot, message, copy, enc, now);
        self.note_backlog(slot, now);
    }

    fn hand_over(
        &mut self,
        slot: u32,
        message: &Arc<Message>,
        copy: Outgoing,
        enc: &mut Encoded,
        now: Instant,
    ) {
        let cap = self.limits.inflight_count_max;
        let (msgs_max, bytes_max) = (
            self.limits.session_queue_messages_max,
            self.limits.session_queue_bytes_max,
        );
        let aliyun = self.aliyun.is_some();
        let time_ms = match (self.traces.is_on(), enc.trace_ms) {
            (false, _) => None,
            (true, Some(ms)) => Some(ms),
            (true, None) => {
                enc.trace_ms = Some(self.unix_millis(now));
                enc.trace_ms
            }
        };
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        let (stats, journal) = (&mut self.stats, &mut self.journal);
        // A logged (persistent) session answers to the offline caps, the
        // instance's above all: it exists to get what it missed. It keeps
        // `session_queue_*` in memory and the rest on disk only; a shared
        // subscription's copies stay in memory, to go to another member.
        let held_max = match self.limits.offline_session_messages_max {
            0 => usize::MAX,
            n => n,
        };
        let q = match (session.logged, self.sharing) {
            (true, false) => Queue {
                msgs_max,
                bytes_max,
                held_max,
                spill: true,
            },
            (true, true) => Queue {
                msgs_max: held_max,
                bytes_max: usize::MAX,
                held_max,
                spill: false,
            },
            (false, _) => Queue {
                msgs_max,
                bytes_max,
                held_max: msgs_max,
                spill: false,
            },
        };
        let Some(link) = session.link.as_mut() else {
            if keeps_offline(aliyun, copy.qos, copy.sub_qos) {
                enqueue(session, stats, journal, enc.held(message), copy, q);
            } else if copy.qos != QoS::AtMostOnce {
                stats.dropped_offline_rule += 1;
            }
            return;
        };
        let traces = &mut self.traces;
        let trace = |traces: &mut Traces, name: TraceName| {
            if let Some(time_ms) = time_ms {
                traces.deliver(time_ms, Action::Sub, name, message.id);
            }
        };
        if copy.qos == QoS::AtMostOnce {
            if link.tx.pending_bytes() > bytes_max {
                stats.dropped_qos0 += 1;
                return;
            }
            if write_copy(link, stats, message, &copy, None, false, enc, now) {
                trace(traces, session.trace_name);
            }
            return;
        }
        if !session.queue.is_empty() || !session.spilled.is_empty() || !session.window_open(cap) {
            return enqueue(session, stats, journal, enc.held(message), copy, q);
        }
        let packet_id = session.next_packet_id();
        let Some(link) = session.link.as_mut() else {
            return;
        };
        if write_copy(
            link,
            stats,
            message,
            &copy,
            Some(packet_id),
            false,
            enc,
            now,
        ) {
            trace(traces, session.trace_name);
            let lsn = log_copy(journal, session, &copy);
            session.push_inflight(inflight(packet_id, enc.held(message), copy, lsn));
        }
    }

    /// Moves queued messages into the window of connection `id`.
    pub(super) fn drain(&mut self, id: ConnId, now: Instant) {
        let cap = self.limits.inflight_count_max;
        let now_millis = self.unix_millis(now);
        let time_ms = self.traces.is_on().then_some(now_millis);
        let (stats, journal, traces) = (&mut self.stats, &mut self.journal, &mut self.traces);
        let Some(Some(session)) = self.sessions.get_mut(id.session as usize) else {
            return;
        };
        while session.window_open(cap) {
            // A batch may all be unreadable (dropped): read on.
            while session.queue.is_empty() && !session.spilled.is_empty() {
                let mut loader = Loader {
                    log: self.log.as_deref(),
                    journal: &mut *journal,
                    stats: &mut *stats,
                    now,
                    now_millis,
                };
                loader.refill(session, READ_AHEAD);
            }
            let Some(q) = session.queue.pop_front() else {
                break;
            };
            session.queued_bytes -= q.message.weight();
            if q.message.is_expired(now) {
                stats.dropped_expired += 1;
                journal.ack(session.uid, q.lsn);
                continue;
            }
            let packet_id = session.next_packet_id();
            let Some(link) = session.link.as_mut() else {
                break;
            };
            let copy = Outgoing {
                qos: q.qos,
                sub_qos: q.qos,
                retain: q.retain,
                sub_ids: q.sub_ids,
            };
            let mut enc = Encoded::default();
            if write_copy(
                link,
                stats,
                &q.message,
                &copy,
                Some(packet_id),
                q.dup,
                &mut enc,
                now,
            ) {
                if let Some(time_ms) = time_ms {
                    let action = match q.offline {
                        true => Action::PushOffline,
                        false => Action::Sub,
                    };
                    traces.deliver(time_ms, action, session.trace_name, q.message.id);
                }
                session.push_inflight(inflight(packet_id, q.message, copy, q.lsn));
            } else {
                journal.ack(session.uid, q.lsn);
            }
        }
    }

    /// Writes in-flight message `packet_id` again, with DUP set.
    pub(super) fn resend_publish(&mut self, id: ConnId, packet_id: PacketId, now: Instant) {
        let (stats, journal) = (&mut self.stats, &mut self.journal);
        let Some(Some(session)) = self.sessions.get_mut(id.session as usize) else {
            return;
        };
        let Some(at) = session.inflight_position(packet_id) else {
            return;
        };
        let m = &session.inflight[at];
        let (message, copy) = (
            Arc::clone(&m.message),
            Outgoing {
                qos: m.qos,
                sub_qos: m.qos,
                retain: m.retain,
                sub_ids: m.sub_ids.clone(),
            },
        );
        let Some(link) = session.link.as_mut() else {
            return;
        };
        let sent = write_copy(
            link,
            stats,
            &message,
            &copy,
            Some(packet_id),
            true,
            &mut Encoded::default(),
            now,
        );
        if !sent {
            // Too large for the client now: discarded as if sent
            // [MQTT-3.1.2-25], so it does not hold a place in the window.
            if let Some(m) = session.remove_inflight(at) {
                journal.ack(session.uid, m.lsn);
            }
        }
    }
}

fn copy_for(message: &Message, group: &[Sub]) -> Outgoing {
    let mut qos = QoS::AtMostOnce;
    let mut retain_as_published = false;
    for s in group {
        qos = qos.max(s.sub.options.qos);
        retain_as_published |= s.sub.options.retain_as_published;
    }
    let ids: Vec<SubscriptionId> = group.iter().filter_map(|s| s.sub.id).collect();
    Outgoing {
        qos: qos.min(message.qos),
        sub_qos: qos,
        // Live messages lose RETAIN unless Retain As Published [MQTT-3.3.1-12].
        retain: retain_as_published && message.retain,
        sub_ids: (!ids.is_empty()).then(|| ids.into_boxed_slice()),
    }
}

fn inflight(packet_id: PacketId, message: Held, copy: Outgoing, lsn: u64) -> Inflight {
    Inflight {
        packet_id,
        message,
        qos: copy.qos,
        retain: copy.retain,
        sub_ids: copy.sub_ids,
        released: false,
        shared: None,
        lsn,
    }
}

/// The lsn of a copy handed to `session`: logged if the session is.
fn log_copy(journal: &mut Journal, session: &Session, copy: &Outgoing) -> u64 {
    if !session.logged || copy.qos == QoS::AtMostOnce {
        return 0;
    }
    journal.target(Target {
        uid: session.uid,
        qos: copy.qos,
        retain: copy.retain,
    })
}

/// Whether a copy for an offline session is held for it: QoS 1/2 copies;
/// in the aliyun profile, only QoS 1 copies of QoS 1 subscriptions (QoS 2
/// with a persistent session "does not take effect" in the product).
fn keeps_offline(aliyun: bool, copy_qos: QoS, sub_qos: QoS) -> bool {
    match aliyun {
        true => copy_qos == QoS::AtLeastOnce && sub_qos != QoS::ExactlyOnce,
        false => copy_qos != QoS::AtMostOnce,
    }
}

/// A session queue's caps.
struct Queue {
    /// Copies and bytes held in memory.
    msgs_max: usize,
    bytes_max: usize,
    /// Copies held in memory and on disk.
    held_max: usize,
    /// Whether logged copies past the memory caps go to disk.
    spill: bool,
}

fn enqueue(
    session: &mut Session,
    stats: &mut Stats,
    journal: &mut Journal,
    message: Held,
    copy: Outgoing,
    cap: Queue,
) {
    let weight = message.weight();
    let logged = session.logged && copy.qos != QoS::AtMostOnce;
    if logged {
        // A persistent session keeps the newest: the oldest make room.
        while session.held() >= cap.held_max {
            let Some((lsn, _)) = session.pop_oldest_logged() else {
                break;
            };
            journal.ack(session.uid, lsn);
            stats.dropped_queue_full += 1;
        }
    }
    let to_disk = session.link.is_none()
        || !session.spilled.is_empty()
        || session.queue.len() >= cap.msgs_max
        || session.queued_bytes + weight > cap.bytes_max;
    if logged && cap.spill && to_disk {
        let offline = session.link.is_none();
        let lsn = log_copy(journal, session, &copy);
        let mut s = Spilled::new(lsn, weight, copy.qos, copy.retain, false, offline);
        s.sub_ids = copy.sub_ids;
        return session.spill(s);
    }
    if logged && !cap.spill {
        while !session.queue.is_empty()
            && (session.queue.len() >= cap.msgs_max
                || session.queued_bytes + weight > cap.bytes_max)
        {
            if let Some(old) = session.queue.pop_front() {
                session.queued_bytes -= old.message.weight();
                journal.ack(session.uid, old.lsn);
                stats.dropped_queue_full += 1;
            }
        }
    }
    if session.queue.len() >= cap.msgs_max || session.queued_bytes + weight > cap.bytes_max {
        stats.dropped_queue_full += 1;
        tracing::debug!(client = %session.client_id.as_str(), "session queue full, message dropped");
        return;
    }
    session.queued_bytes += weight;
    let lsn = log_copy(journal, session, &copy);
    let offline = session.link.is_none();
    session.queue.push_back(Queued {
        message,
        dup: false,
        qos: copy.qos,
        retain: copy.retain,
        sub_ids: copy.sub_ids,
        shared: None,
        lsn,
        offline,
    });
}

/// Encodes one copy into `link`'s output. Returns false if the copy was
/// dropped (over the client's Maximum Packet Size [MQTT-3.1.2-25]).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_copy(
    link: &mut Link,
    stats: &mut Stats,
    message: &Message,
    copy: &Outgoing,
    packet_id: Option<PacketId>,
    dup: bool,
    enc: &mut Encoded,
    now: Instant,
) -> bool {
    let v = link.version;
    if v == ProtocolVersion::V5 && message.expires_at.is_some() {
        return write_with_expiry(link, stats, message, copy, packet_id, dup, now);
    }
    let mut extra = match (v, &copy.sub_ids) {
        (ProtocolVersion::V5, Some(ids)) => sub_id_properties(ids),
        _ => Vec::new(),
    };
    let alias = link.alias_out(message.topic.as_str());
    let omit_topic = match alias {
        Some((alias, known)) => {
            extra.push(prop_id::TOPIC_ALIAS);
            extra.extend_from_slice(&alias.to_be_bytes());
            known
        }
        None => false,
    };
    let e = message.encoded(v);
    let d = Delivery {
        qos: copy.qos,
        packet_id,
        dup,
        retain: copy.retain,
        extra_properties: &extra,
        omit_topic,
    };
    let Ok(head) = e.head(&d) else {
        return false;
    };
    let len = e.len_with(&head, &d);
    if len > link.packet_bytes_max as usize {
        stats.dropped_too_large += 1;
        if let Some((_, false)) = alias {
            // The client never saw this alias: it must not be used later.
            link.aliases_out.remove(message.topic.as_str());
        }
        return false;
    }
    stats.deliveries += 1;
    stats.sent.add(copy.qos, message.payload.len());
    if copy.qos == QoS::AtMostOnce && extra.is_empty() {
        let cached = &mut enc.qos0[vi(v)][usize::from(copy.retain)];
        let frame = cached.get_or_insert_with(|| {
            let mut buf = BytesMut::with_capacity(len);
            e.encode_with(&head, &d, &mut buf);
            buf.freeze()
        });
        if len <= 64 {
            let _ = link.tx.encode(|b| -> Result<(), ()> {
                b.put_slice(frame);
                Ok(())
            });
        } else {
            link.tx.push_shared(frame.clone());
        }
        return true;
    }
    if len <= COPY_BYTES_MAX {
        let _ = link.tx.encode(|b| -> Result<(), ()> {
            e.encode_with(&head, &d, b);
            Ok(())
        });
        return true;
    }
    let slices = e.slices(&head, &d);
    let _ = link.tx.encode(|b| -> Result<(), ()> {
        for s in &slices[..5] {
            b.put_slice(s);
        }
        Ok(())
    });
    link.tx.push_shared(e.payload().clone());
    true
}

/// The rare path: a v5 copy whose Message Expiry Interval is rewritten to
/// the time left [MQTT-3.3.2-6], so the properties are encoded per copy.
fn write_with_expiry(
    link: &mut Link,
    stats: &mut Stats,
    message: &Message,
    copy: &Outgoing,
    packet_id: Option<PacketId>,
    dup: bool,
    now: Instant,
) -> bool {
    let mut p = message.to_publish(now);
    p.qos = copy.qos;
    p.packet_id = packet_id;
    p.dup = dup;
    p.retain = copy.retain;
    if let Some(ids) = &copy.sub_ids {
        p.properties_mut().subscription_identifiers = ids.to_vec();
    }
    let mut buf = BytesMut::new();
    if p.encode(ProtocolVersion::V5, &mut buf).is_err() {
        return false;
    }
    if buf.len() > link.packet_bytes_max as usize {
        stats.dropped_too_large += 1;
        return false;
    }
    stats.deliveries += 1;
    stats.sent.add(copy.qos, message.payload.len());
    link.tx.push_shared(buf.freeze());
    true
}

fn sub_id_properties(ids: &[SubscriptionId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 5 + 3);
    for id in ids {
        id.put_property(&mut out);
    }
    out
}
