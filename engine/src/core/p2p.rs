//! P2P messages (the Alibaba Cloud profile): a PUBLISH to
//! `<parent>/p2p/<clientId>` goes to that client alone, subscribed or not,
//! with the topic as published and the message's QoS. It travels to the
//! client's home shard, never through the trie: no subscriber of
//! `<parent>/#` sees it.

use std::sync::Arc;
use std::time::Instant;

use super::aliyun::names;
use super::broker::{Broker, Remote};
use super::connect::home_shard;
use super::deliver::{Encoded, Outgoing, Routed};
use super::message::Message;

impl Broker {
    /// Routes a message the broker publishes itself (a Will): to one
    /// client if its topic is a P2P topic of the aliyun profile, else to
    /// its subscribers.
    pub(super) fn route_published(&mut self, message: Arc<Message>, now: Instant) -> Routed {
        let target =
            self.aliyun
                .as_deref()
                .and_then(|a| match a.check_topic(message.topic.as_str()) {
                    Ok(names::Topic::P2p { target, .. }) => Some(Box::<str>::from(target)),
                    _ => None,
                });
        match target {
            Some(target) => Routed {
                wait: self.route_p2p(message, &target, now),
                matched: true,
                remote: false,
            },
            None => self.route(message, now),
        }
    }

    /// Sends `message` to `target`'s home shard, or delivers it here.
    /// Returns whether the publisher's acknowledgement waits for that
    /// shard (a QoS 1/2 message it may log for an offline session).
    pub(super) fn route_p2p(&mut self, message: Arc<Message>, target: &str, now: Instant) -> bool {
        // The target may be connected to another node.
        self.cluster_p2p(&message, now);
        let home = home_shard(target.as_bytes(), self.shards);
        if home == self.shard {
            self.deliver_p2p(&message, target, now);
            return false;
        }
        let logged = message.qos != ringmq_protocol::QoS::AtMostOnce;
        self.outbox_bytes[home] += message.weight();
        self.outbox[home].push(Remote::P2p(message, target.into()));
        logged
    }

    /// Hands `message` to `target`'s session on this shard: written if it
    /// is connected, held if it is offline and persistent (per the
    /// profile's offline rule), else dropped and counted.
    pub(super) fn deliver_p2p(&mut self, message: &Arc<Message>, target: &str, now: Instant) {
        if message.is_expired(now) {
            self.stats.dropped_expired += 1;
            return;
        }
        let Some(&slot) = self.by_client.get(target) else {
            if self.cluster.is_some() {
                // Its session may be on another node, which has it too.
                return;
            }
            self.stats.p2p_no_target += 1;
            tracing::debug!(
                target,
                "P2P message for a client without a session: dropped"
            );
            return;
        };
        let copy = Outgoing {
            qos: message.qos,
            sub_qos: message.qos,
            retain: false,
            sub_ids: None,
        };
        self.stats.p2p_delivered += 1;
        self.deliver_to(slot, message, copy, &mut Encoded::default(), now);
        self.journal.finish(message);
    }
}
