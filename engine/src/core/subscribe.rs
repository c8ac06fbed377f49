//! SUBSCRIBE and UNSUBSCRIBE. A new filter on this shard is announced to
//! every other shard (the route table); the SUBACK waits until they have
//! all applied it, so that a message published anywhere after the SUBACK
//! reaches the new subscriber.

use std::sync::Arc;
use std::time::Instant;

use ringmq_protocol::properties::AckProperties;
use ringmq_protocol::{
    Packet, PacketId, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    TopicFilter, UnsubAck, Unsubscribe,
};

use super::auth::Principal;
use super::broker::{Broker, ConnId, Flow, Remote};
use super::deliver::{Encoded, Outgoing};
use super::message::Message;
use super::session::Subscription;
use super::Sub;

/// A SUBACK, and the retained messages that follow it, waiting for the
/// other shards to apply this shard's route changes.
#[derive(Debug)]
pub struct PendingSubAck {
    id: ConnId,
    packet_id: PacketId,
    codes: Vec<ReasonCode>,
    /// Filters whose retained messages follow the SUBACK; looked up after
    /// the barrier, so that retained messages other shards sent before it
    /// are seen.
    retained: Vec<(Box<str>, Subscription)>,
}

fn granted(sub: Subscription) -> ReasonCode {
    match sub.options.qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

impl Broker {
    pub(super) fn subscribe(&mut self, id: ConnId, s: Subscribe, now: Instant) -> Flow {
        let sub_id = s.properties.subscription_identifier;
        let mut pending = PendingSubAck {
            id,
            packet_id: s.packet_id,
            codes: Vec::with_capacity(s.filters.len()),
            retained: Vec::new(),
        };
        for (filter, options) in s.filters {
            let sub = Subscription {
                options,
                id: sub_id,
            };
            let code = self.subscribe_one(id, &filter, sub, &mut pending, now);
            pending.codes.push(code);
        }
        if self.shards > 1 {
            return Flow::Barrier(pending);
        }
        self.finish_subscribe(pending, now);
        Flow::Continue
    }

    fn subscribe_one(
        &mut self,
        id: ConnId,
        filter: &TopicFilter,
        sub: Subscription,
        pending: &mut PendingSubAck,
        now: Instant,
    ) -> ReasonCode {
        if !self.topic_within_limits(filter.as_str()) {
            return ReasonCode::TopicFilterInvalid;
        }
        match self.aliyun_subscribe(id, filter.as_str()) {
            Ok(true) => {}
            // A P2P filter: granted, nothing to store.
            Ok(false) => return granted(sub),
            Err(code) => return code,
        }
        let (subs_max, over) = match self.aliyun.as_deref() {
            // The product's only SUBACK failure code is 0x80.
            Some(a) => (
                a.config.subscriptions_per_client_max,
                ReasonCode::UnspecifiedError,
            ),
            None => (
                self.limits.subscriptions_per_client_max,
                ReasonCode::QuotaExceeded,
            ),
        };
        let Some(session) = self.session(id) else {
            return ReasonCode::UnspecifiedError;
        };
        let who = Principal {
            client_id: session.client_id.as_str(),
            username: session.username.as_ref().map(|u| u.as_str()),
        };
        let key: &str = filter.as_str();
        let existed = session.subs.contains_key(key);
        if !existed && session.subs.len() >= subs_max {
            tracing::info!(client = %session.client_id.as_str(), "SUBSCRIBE refused: {subs_max} subscriptions already");
            return over;
        }
        if !self.auth.authorizer.can_subscribe(who, key) {
            self.stats.denied += 1;
            return ReasonCode::NotAuthorized;
        }
        let Some(session) = self.session_mut(id) else {
            return ReasonCode::UnspecifiedError;
        };
        session.subs.insert(key.into(), sub);
        let counts = session.logged && !existed;
        let entry = Sub {
            slot: id.session,
            uid: session.uid,
            sub,
        };
        self.log_subscribe(id.session, key, sub);
        if counts {
            self.durable_sub(key, true);
        }
        if let Some(shared) = filter.shared() {
            // Retained messages are not sent to shared subscriptions [MQTT §4.8.2].
            self.join_group(shared.group, shared.filter, entry);
            return granted(sub);
        }
        let slot = self.trie.entry(key);
        let was_empty = slot.is_empty();
        match slot.iter_mut().find(|s| s.slot == id.session) {
            Some(s) => *s = entry,
            None => slot.push(entry),
        }
        if was_empty {
            self.announce(key, true);
        }
        let send_retained = match sub.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if send_retained {
            pending.retained.push((key.into(), sub));
        }
        let _ = now;
        granted(sub)
    }

    /// Tells every other shard that this one gained or lost its last
    /// subscriber on `filter`.
    pub(super) fn announce(&mut self, filter: &str, add: bool) {
        if let Some(a) = self.aliyun.as_deref_mut() {
            a.filter_routed(filter, self.shard, add);
        }
        self.cluster_interest(filter, add);
        for peer in 0..self.shards {
            if peer != self.shard {
                self.outbox[peer].push(Remote::Route(filter.into(), add));
            }
        }
    }

    /// Writes a SUBACK, then the retained messages of its new subscriptions.
    pub fn finish_subscribe(&mut self, pending: PendingSubAck, now: Instant) {
        let id = pending.id;
        // The connection may have gone (and its slot been reused) meanwhile.
        if self.session(id).is_none() {
            return;
        }
        let ack = SubAck {
            packet_id: pending.packet_id,
            properties: AckProperties::default(),
            reason_codes: pending.codes,
        };
        self.write(id, &Packet::SubAck(ack));
        let retained: Vec<(Arc<Message>, Subscription)> = pending
            .retained
            .iter()
            .flat_map(|(filter, sub)| {
                self.retained
                    .matching(filter, now)
                    .into_iter()
                    .map(move |m| (m, *sub))
            })
            .collect();
        for (message, sub) in retained {
            let copy = Outgoing {
                qos: sub.options.qos.min(message.qos),
                sub_qos: sub.options.qos,
                // Retained messages sent on subscribe keep RETAIN [MQTT-3.3.1-9].
                retain: true,
                sub_ids: sub.id.map(|i| vec![i].into_boxed_slice()),
            };
            self.deliver_to(id.session, &message, copy, &mut Encoded::default(), now);
            self.journal.finish(&message);
        }
    }

    pub(super) fn unsubscribe(&mut self, id: ConnId, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let removed = self.remove_subscription(id.session, filter.as_str());
            codes.push(match removed {
                true => ReasonCode::Success,
                false => ReasonCode::NoSubscriptionExisted,
            });
        }
        let Some(session) = self.session(id) else {
            return;
        };
        let v5 = session
            .link
            .as_ref()
            .is_some_and(|l| l.version == ProtocolVersion::V5);
        let ack = UnsubAck {
            packet_id: u.packet_id,
            properties: AckProperties::default(),
            reason_codes: if v5 { codes } else { Vec::new() },
        };
        self.write(id, &Packet::UnsubAck(ack));
    }

    /// Removes session `slot`'s subscription on `filter` from the session
    /// and the trie; announces the filter's end if it was the shard's last.
    pub(super) fn remove_subscription(&mut self, slot: u32, filter: &str) -> bool {
        let Some(session) = self.slot(slot) else {
            return false;
        };
        if session.subs.remove(filter).is_none() {
            return false;
        }
        if session.logged {
            self.durable_sub(filter, false);
        }
        self.log_unsubscribe(slot, filter);
        if let Some(shared) = ringmq_protocol::topic::parse_shared(filter) {
            self.leave_group(shared.group, shared.filter, slot);
            return true;
        }
        let Some(subs) = self.trie.get_mut(filter) else {
            return true;
        };
        subs.retain(|s| s.slot != slot);
        if subs.is_empty() {
            self.trie.prune(filter);
            self.announce(filter, false);
        }
        true
    }
}
