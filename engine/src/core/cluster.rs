//! The broker's side of a cluster of nodes on one NATS (see
//! `crate::bridge`): what a client publishes here also goes out to the
//! NATS subject of its topic (see [`subject`](super::subject)); a retained
//! one to the retained subjects, which every node takes. A
//! shard's first subscriber on a filter, or its last one gone, is interest
//! the bridge subscribes to or lets go of. What arrives from another node
//! is delivered here and never sent out again.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::{QoS, TopicName};

use super::broker::Broker;
use super::message::{Message, Origin};
use super::outflow::Outflow;
use super::subject::topic_subject;

/// The origin of a message from another node: no session of this node.
pub const FROM_CLUSTER: Origin = u64::MAX;

/// Longest subject sent: NATS's control line is 4,096 bytes, subject,
/// reply and sizes together.
pub const SUBJECT_BYTES_MAX: usize = 3_900;

/// Where this node's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoute {
    /// Subjects of messages: `<subject_prefix>.m`, then the levels; a node
    /// gets those it has subscribers for.
    pub messages: String,
    /// Subjects of retained messages: `<subject_prefix>.r`, then the
    /// levels; every node gets them all, to keep its retained store.
    pub retained: String,
}

impl ClusterRoute {
    /// The route of a cluster whose subjects start with `subject_prefix`.
    pub fn new(subject_prefix: &str) -> ClusterRoute {
        ClusterRoute {
            messages: format!("{subject_prefix}.m"),
            retained: format!("{subject_prefix}.r"),
        }
    }
}

impl Broker {
    /// Sends `message` to the other nodes, unless it came from one or is
    /// one of the broker's own `$` topics; returns whether it did.
    pub(super) fn cluster_publish(&mut self, message: &Message) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        if message.origin == FROM_CLUSTER {
            return false;
        }
        let topic = message.topic.as_str();
        let prefix = match message.retain {
            true => &cluster.retained,
            false => &cluster.messages,
        };
        let Some(subject) = topic_subject(prefix, topic, SUBJECT_BYTES_MAX) else {
            return false;
        };
        let headers = vec![("rmq-q", (message.qos as u8).to_string())];
        self.outflow.push(Outflow {
            subject,
            headers,
            payload: message.payload.clone(),
            jetstream: false,
            confirm: None,
            cluster: true,
        });
        true
    }

    /// This shard gained its first subscriber on `filter` (`add`), or lost
    /// its last: the bridge subscribes to its subjects or lets them go.
    pub(super) fn cluster_interest(&mut self, filter: &str, add: bool) {
        if self.cluster.is_some() {
            self.interest.push((filter.into(), add));
        }
    }

    /// Delivers a message another node published: to this node's
    /// subscribers (and its retained store), never back to the cluster or
    /// to outflow rules. False if `topic` is not a valid topic here.
    pub fn publish_from_cluster(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        now: Instant,
    ) -> bool {
        let Ok(name) = TopicName::new(topic) else {
            return false;
        };
        let message = Message {
            id: self.new_message_id(now),
            topic: name,
            payload,
            qos,
            retain,
            properties: None,
            origin: FROM_CLUSTER,
            expires_at: None,
            encoded: Default::default(),
        };
        self.stats.cluster_received += 1;
        let _ = self.route(Arc::new(message), now);
        true
    }
}
