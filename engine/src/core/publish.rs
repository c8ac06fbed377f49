//! PUBLISH from a client and the acknowledgements of both directions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_protocol::{
    Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    TopicName,
};

use super::aliyun::PublishTo;
use super::auth::Principal;
use super::broker::{Broker, ConnId};
use super::deliver::Routed;
use super::message::Message;
use super::trace::{Action, Info};

/// Whether `topic` is one of the broker's `$SYS` topics.
fn is_system_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Payloads up to this size are copied out of the read buffer.
const COPY_PAYLOAD_BYTES_MAX: usize = 4096;

impl Broker {
    pub(super) fn publish_in(&mut self, id: ConnId, mut p: Publish, now: Instant) {
        self.stats.publishes_in += 1;
        self.stats.received.add(p.qos, p.payload.len());
        let Some(topic) = self.resolve_alias(id, &mut p) else {
            return;
        };
        if !self.topic_within_limits(topic.as_str()) {
            return self.fail(
                id,
                ReasonCode::TopicNameInvalid,
                "topic over topic_bytes_max or topic_levels_max",
            );
        }
        let to = match self.aliyun.is_some() {
            true => match self.aliyun_publish(id, &p, topic.as_str(), now) {
                Some(to) => to,
                None => return,
            },
            false => PublishTo::Subscribers,
        };
        let Some(session) = self.session(id) else {
            return;
        };
        if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
            if session.qos2_in.contains(&pid.get()) {
                // A resent QoS 2 PUBLISH: acknowledged again, never delivered twice.
                return self.send_ack(id, Packet::PubRec(PubRec::new(pid)), false);
            }
            let v5 = session
                .link
                .as_ref()
                .is_some_and(|l| l.version == ProtocolVersion::V5);
            // 3.1.1 has no Receive Maximum; its ids bound the set at 65,535.
            if v5 && session.qos2_in.len() >= usize::from(self.limits.inflight_count_max) {
                return self.fail(
                    id,
                    ReasonCode::ReceiveMaximumExceeded,
                    "[MQTT-3.3.4-9] more QoS 2 PUBLISH in flight than Receive Maximum",
                );
            }
        }
        if p.qos != QoS::AtMostOnce && self.journal.unavailable {
            return self.refuse_unloggable(id, p.qos, p.packet_id);
        }
        let who = Principal {
            client_id: session.client_id.as_str(),
            username: session.username.as_ref().map(|u| u.as_str()),
        };
        // `$SYS/…` is the broker's own status: a client may not forge it
        // (§4.7.2). Topics the broker reads from clients were handled above.
        let system = is_system_topic(topic.as_str());
        let allowed = !system && self.auth.authorizer.can_publish(who, topic.as_str());
        let origin = session.uid;
        let (qos, pid) = (p.qos, p.packet_id);
        let (mut wait, mut matched) = (false, true);
        if system {
            self.stats.denied += 1;
            tracing::info!(topic = %topic.as_str(), "PUBLISH refused: $SYS topics are the broker's [MQTT §4.7.2]");
        } else if !allowed {
            self.stats.denied += 1;
            tracing::info!(topic = %topic.as_str(), "PUBLISH not authorized");
        } else {
            let message = Arc::new(self.message_from(p, topic, origin, now));
            self.trace_publish(id, &message, now);
            let (bridged, confirm) = match self.outflow_rules.is_empty() {
                true => (false, false),
                false => self.outflow_publish(&message, id, now),
            };
            let logged = self.journal.entries.len();
            let sent = self.outflow.len();
            let routed = match to {
                PublishTo::Subscribers => self.route(message, now),
                PublishTo::Client(target) => Routed {
                    wait: self.route_p2p(message, &target, now),
                    matched: true,
                    // In a cluster the target's session may be on another
                    // node: the bridge knows which, and waits for it.
                    remote: self.cluster.is_some(),
                },
            };
            let remote = routed.remote && self.cluster_confirm(id, qos, sent);
            let grew = self.journal.entries.len() > logged;
            let j = &self.journal;
            wait = (j.hold_acks && routed.wait) || (j.sync_acks && grew) || confirm || remote;
            // A message a rule sends to NATS went somewhere.
            matched = routed.matched || bridged;
        }
        let code = match (allowed, matched) {
            (false, _) => ReasonCode::NotAuthorized,
            // v5 tells the publisher nobody wanted it (3.1.1 acks omit the code).
            (true, false) => ReasonCode::NoMatchingSubscribers,
            (true, true) => ReasonCode::Success,
        };
        self.ack_publish(id, qos, pid, code, wait);
    }

    /// A QoS 1/2 PUBLISH while the log cannot be written (disk full): not
    /// accepted. v5 gets PUBACK/PUBREC 0x97; a 3.1.1 client, which has no
    /// negative acknowledgement, is disconnected [MQTT-3.3.5-2].
    fn refuse_unloggable(&mut self, id: ConnId, qos: QoS, pid: Option<PacketId>) {
        self.stats.refused_storage += 1;
        let v5 = self
            .session(id)
            .and_then(|s| s.link.as_ref())
            .is_some_and(|l| l.version == ProtocolVersion::V5);
        if !v5 {
            return self.fail(
                id,
                ReasonCode::QuotaExceeded,
                "[MQTT-3.3.5-2] the log cannot be written (disk full): QoS 1/2 PUBLISH refused",
            );
        }
        tracing::debug!("the log cannot be written (disk full): QoS 1/2 PUBLISH refused with 0x97");
        if let Some(pid) = pid {
            self.negative_ack(id, qos, pid, ReasonCode::QuotaExceeded);
        }
    }

    /// A v5 PUBACK (QoS 1) or PUBREC (QoS 2) refusing a PUBLISH with `code`.
    pub(super) fn negative_ack(&mut self, id: ConnId, qos: QoS, pid: PacketId, code: ReasonCode) {
        let packet = match qos {
            QoS::ExactlyOnce => {
                let mut ack = PubRec::new(pid);
                ack.reason_code = code;
                Packet::PubRec(ack)
            }
            _ => {
                let mut ack = PubAck::new(pid);
                ack.reason_code = code;
                Packet::PubAck(ack)
            }
        };
        self.send_ack(id, packet, false);
    }

    /// Records `message`, published by connection `id`, in the trace store.
    fn trace_publish(&mut self, id: ConnId, message: &Message, now: Instant) {
        if !self.traces.is_on() {
            return;
        }
        let time_ms = self.unix_millis(now);
        let Some(s) = self
            .sessions
            .get(id.session as usize)
            .and_then(Option::as_ref)
        else {
            return;
        };
        let (action, info, name) = (Action::PubMqtt, Info::Message, s.trace_name);
        self.traces.record(time_ms, action, info, name, message.id);
    }

    /// Acknowledges a PUBLISH; with `wait`, only once the storage layer has
    /// made what it caused durable (see [`Journal::held_acks`]).
    ///
    /// [`Journal::held_acks`]: super::journal::Journal::held_acks
    pub(super) fn ack_publish(
        &mut self,
        id: ConnId,
        qos: QoS,
        pid: Option<PacketId>,
        code: ReasonCode,
        wait: bool,
    ) {
        let Some(pid) = pid else {
            return;
        };
        let packet = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => {
                let mut ack = PubAck::new(pid);
                ack.reason_code = code;
                Packet::PubAck(ack)
            }
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    if let Some(s) = self.session_mut(id) {
                        s.qos2_in.insert(pid.get());
                    }
                    self.log_qos2_in(id.session, pid.get(), true);
                }
                let mut ack = PubRec::new(pid);
                ack.reason_code = code;
                Packet::PubRec(ack)
            }
        };
        self.send_ack(id, packet, wait);
    }

    /// Writes a PUBACK/PUBREC, or holds it (see [`Journal::held_acks`])
    /// when it must `wait` or when an earlier one of the same connection is
    /// held: acknowledgements keep the order of their PUBLISHes
    /// [MQTT-4.6.0-2].
    ///
    /// [`Journal::held_acks`]: super::journal::Journal::held_acks
    fn send_ack(&mut self, id: ConnId, packet: Packet, wait: bool) {
        let held = &mut self.journal.held_acks;
        if wait || held.iter().any(|(c, _)| *c == id) {
            held.push((id, packet));
        } else {
            self.metrics.ack_latency.record(Duration::ZERO);
            self.write(id, &packet);
        }
    }

    /// Whether acknowledgements are held for connection `id`.
    pub fn holds_acks(&self, id: ConnId) -> bool {
        self.journal.held_acks.iter().any(|(c, _)| *c == id)
    }

    /// Takes connection `id`'s held acknowledgements, in order.
    pub fn take_held_acks(&mut self, id: ConnId) -> Vec<(ConnId, Packet)> {
        if !self.holds_acks(id) {
            return Vec::new();
        }
        let held = &mut self.journal.held_acks;
        let (mine, rest) = std::mem::take(held)
            .into_iter()
            .partition(|(c, _)| *c == id);
        *held = rest;
        mine
    }

    /// Writes acknowledgements taken from [`Journal::held_acks`] once what
    /// they acknowledge is durable.
    ///
    /// [`Journal::held_acks`]: super::journal::Journal::held_acks
    pub fn release_acks(&mut self, acks: Vec<(ConnId, Packet)>) {
        for (id, packet) in acks {
            self.write(id, &packet);
        }
    }

    /// The topic of `p`, set from or recorded as a v5 Topic Alias.
    fn resolve_alias(&mut self, id: ConnId, p: &mut Publish) -> Option<TopicName> {
        let alias = p
            .properties
            .as_mut()
            .and_then(|props| props.topic_alias.take());
        let max = self.limits.topic_alias_max;
        let Some(alias) = alias else {
            return Some(p.topic.clone());
        };
        let index = usize::from(alias.get()) - 1;
        if alias.get() > max {
            self.fail(
                id,
                ReasonCode::TopicAliasInvalid,
                "[MQTT-3.3.2-9] Topic Alias above Topic Alias Maximum",
            );
            return None;
        }
        let link = self.session_mut(id)?.link.as_mut()?;
        if p.topic.is_empty() {
            match link.aliases_in.get(index).cloned().flatten() {
                Some(topic) => {
                    p.topic = topic.clone();
                    Some(topic)
                }
                None => {
                    self.fail(
                        id,
                        ReasonCode::ProtocolError,
                        "[MQTT-3.3.4-7] unknown Topic Alias",
                    );
                    None
                }
            }
        } else {
            if link.aliases_in.len() <= index {
                link.aliases_in.resize(index + 1, None);
            }
            link.aliases_in[index] = Some(p.topic.clone());
            Some(p.topic.clone())
        }
    }

    fn message_from(&mut self, p: Publish, topic: TopicName, origin: u64, now: Instant) -> Message {
        let mut properties = p.properties;
        if let Some(props) = properties.as_mut() {
            props.subscription_identifiers.clear();
        }
        let expiry = properties.as_ref().and_then(|p| p.message_expiry_interval);
        let properties = properties.filter(|p| !p.is_empty());
        // A small message gets its own copy of topic and payload, so that it
        // does not keep the connection's whole read buffer alive while it
        // waits in queues; a large one shares the buffer (no copy).
        let (topic, payload) = match p.payload.len() <= COPY_PAYLOAD_BYTES_MAX {
            true => topic.detached_with(&p.payload),
            false => (topic, p.payload),
        };
        Message {
            id: self.new_message_id(now),
            topic,
            payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            origin,
            expires_at: expiry.map(|secs| now + Duration::from_secs(u64::from(secs))),
            encoded: Default::default(),
        }
    }

    pub(super) fn puback_in(&mut self, id: ConnId, pid: PacketId, now: Instant) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        if let Some(at) = session.inflight_position(pid) {
            if session.inflight[at].qos == QoS::AtLeastOnce {
                let uid = session.uid;
                if let Some(m) = session.remove_inflight(at) {
                    self.journal.ack(uid, m.lsn);
                }
                self.drain(id, now);
                self.recheck_backlog(id.session);
            }
        }
    }

    pub(super) fn pubrec_in(&mut self, id: ConnId, pid: PacketId, code: ReasonCode, now: Instant) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let at = session
            .inflight_position(pid)
            .filter(|&at| session.inflight[at].qos == QoS::ExactlyOnce);
        let Some(at) = at else {
            let mut rel = PubRel::new(pid);
            if session
                .link
                .as_ref()
                .is_some_and(|l| l.version == ProtocolVersion::V5)
            {
                rel.reason_code = ReasonCode::PacketIdentifierNotFound;
            }
            return self.write(id, &Packet::PubRel(rel));
        };
        if code.is_error() {
            // The client refused the message: the exchange ends here (§4.3.3).
            let uid = session.uid;
            if let Some(m) = session.remove_inflight(at) {
                self.journal.ack(uid, m.lsn);
            }
            return self.drain(id, now);
        }
        session.inflight[at].released = true;
        self.write(id, &Packet::PubRel(PubRel::new(pid)));
    }

    pub(super) fn pubrel_in(&mut self, id: ConnId, pid: PacketId) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let known = session.qos2_in.remove(&pid.get());
        if known {
            self.log_qos2_in(id.session, pid.get(), false);
        }
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let v5 = session
            .link
            .as_ref()
            .is_some_and(|l| l.version == ProtocolVersion::V5);
        let mut comp = PubComp::new(pid);
        if !known && v5 {
            comp.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.write(id, &Packet::PubComp(comp));
    }

    pub(super) fn pubcomp_in(&mut self, id: ConnId, pid: PacketId, now: Instant) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        if let Some(at) = session.inflight_position(pid) {
            if session.inflight[at].released {
                let uid = session.uid;
                if let Some(m) = session.remove_inflight(at) {
                    self.journal.ack(uid, m.lsn);
                }
                self.drain(id, now);
                self.recheck_backlog(id.session);
            }
        }
    }
}
