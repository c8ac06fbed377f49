//! The broker's side of a cluster of nodes on one NATS (see
//! `crate::bridge`): what a client publishes here also goes out to the
//! NATS subject of its topic (see [`subject`](super::subject)); a retained
//! one to the retained subjects, which every node takes. A
//! shard's first subscriber on a filter, or its last one gone, is interest
//! the bridge subscribes to or lets go of. What arrives from another node
//! is delivered here and never sent out again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::properties::PublishProperties;
use ringmq_protocol::{Packet, ProtocolVersion, QoS, ReasonCode, TopicName};

use super::broker::{Broker, ConnId};
use super::message::{Message, Origin};
use super::outflow::Outflow;
use super::subject::topic_subject;
use super::trie::Slot;

/// The origin of a message from another node: no session of this node.
pub const FROM_CLUSTER: Origin = u64::MAX;

/// Longest subject sent: NATS's control line is 4,096 bytes, subject,
/// reply and sizes together.
pub const SUBJECT_BYTES_MAX: usize = 3_900;

/// What a shard tells the cluster's side of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The shard gained (`true`) its first subscriber on a filter, or lost
    /// its last.
    Interest(Box<str>, bool),
    /// A client connected here: another node's earlier connection of the
    /// same client id must close.
    Connected(Connected),
    /// The shard gained (`true`) its first persistent session subscribed
    /// to a filter (not a shared one), or lost its last: the other nodes'
    /// QoS 1/2 publishers wait for this node on it.
    Durable(Box<str>, bool),
    /// The shard gained (`true`) its first member of a shared group
    /// (filter, ShareName), or lost its last: the node joins or leaves the
    /// group's NATS queue group, which hands each message to one node.
    Group(Box<str>, Box<str>, bool),
}

/// A client's connection to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// Its Client Identifier.
    pub client_id: Box<str>,
    /// When, in Unix milliseconds.
    pub at_millis: u64,
    /// It asked for a new session: another node's session of it ends.
    pub clean_start: bool,
    /// Its session outlives the connection: the registry records this
    /// node as its home, so that a later connection elsewhere fetches it.
    pub persistent: bool,
}

/// Where this node's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoute {
    /// `subject_prefix`: every subject of the cluster starts with it.
    pub prefix: String,
    /// This node's `node_id`: breaks ties between connections of one
    /// client id made in the same millisecond on two nodes.
    pub node: String,
    /// Subjects of messages: `<subject_prefix>.m`, then the levels; a node
    /// gets those it has subscribers for.
    pub messages: String,
    /// Subjects of retained messages: `<subject_prefix>.r`, then the
    /// levels; every node gets them all, to keep its retained store.
    pub retained: String,
    /// Subjects of connections: `<subject_prefix>.c.<client id>`, which
    /// every node takes.
    pub clients: String,
    /// Subjects of P2P messages (aliyun profile): `<subject_prefix>.p`,
    /// then the levels; every node takes them and delivers those whose
    /// target has a session there.
    pub p2p: String,
    /// Subjects of session requests: `<subject_prefix>.s.<node id>`, where
    /// a node asks another for the persistent session it holds.
    pub sessions: String,
    /// A QoS 1/2 publisher's acknowledgement waits for the other nodes
    /// with persistent sessions subscribed to its message.
    pub remote_acks: bool,
}

impl ClusterRoute {
    /// The route of a cluster whose subjects start with `subject_prefix`.
    pub fn new(subject_prefix: &str, node: &str) -> ClusterRoute {
        ClusterRoute {
            prefix: subject_prefix.into(),
            node: node.into(),
            messages: format!("{subject_prefix}.m"),
            retained: format!("{subject_prefix}.r"),
            clients: format!("{subject_prefix}.c"),
            p2p: format!("{subject_prefix}.p"),
            sessions: format!("{subject_prefix}.s"),
            remote_acks: true,
        }
    }
}

impl Broker {
    /// Sends `message` to the other nodes, unless it came from one or is
    /// one of the broker's own `$` topics; returns whether it did.
    pub(super) fn cluster_publish(&mut self, message: &Message, now: Instant) -> bool {
        match message.retain {
            true => self.cluster_send(|c| &c.retained, message, now),
            false => self.cluster_send(|c| &c.messages, message, now),
        }
    }

    /// Sends P2P `message` to the other nodes (its target may be there).
    pub(super) fn cluster_p2p(&mut self, message: &Message, now: Instant) {
        self.cluster_send(|c| &c.p2p, message, now);
    }

    /// Publishes `message` on its subject: the payload as it is, or, if
    /// it has v5 properties or an expiry, the whole message as a v5
    /// PUBLISH (header `rmq-v5`), its expiry the time left.
    fn cluster_send(
        &mut self,
        prefix: fn(&ClusterRoute) -> &String,
        message: &Message,
        now: Instant,
    ) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        if message.origin == FROM_CLUSTER {
            return false;
        }
        let topic = message.topic.as_str();
        let Some(subject) = topic_subject(prefix(cluster), topic, SUBJECT_BYTES_MAX) else {
            return false;
        };
        let mut headers = vec![("rmq-q", (message.qos as u8).to_string())];
        let payload = match message.properties.is_some() || message.expires_at.is_some() {
            true => {
                headers.push(("rmq-v5", "1".into()));
                as_publish(message, now)
            }
            false => message.payload.clone(),
        };
        self.outflow.push(Outflow {
            subject,
            headers,
            payload,
            jetstream: false,
            confirm: None,
            cluster: true,
            durable: false,
        });
        true
    }

    /// This shard gained its first subscriber on `filter` (`add`), or lost
    /// its last: the bridge subscribes to its subjects or lets them go.
    pub(super) fn cluster_interest(&mut self, filter: &str, add: bool) {
        if self.cluster.is_some() {
            self.cluster_events
                .push(ClusterEvent::Interest(filter.into(), add));
        }
    }

    /// This shard gained its first member of group `group` on `filter`
    /// (`add`), or lost its last.
    pub(super) fn cluster_group(&mut self, filter: &str, group: &str, add: bool) {
        if self.cluster.is_some() {
            self.cluster_events
                .push(ClusterEvent::Group(filter.into(), group.into(), add));
        }
    }

    /// This shard gained its first persistent session subscribed to
    /// `filter` (`add`), or lost its last.
    pub(super) fn cluster_durable(&mut self, filter: &str, add: bool) {
        if self.cluster.is_some() {
            self.cluster_events
                .push(ClusterEvent::Durable(filter.into(), add));
        }
    }

    /// Another node gained (`add`) its first persistent session subscribed
    /// to `filter`, or lost its last (told by the bridge): a QoS 1/2
    /// message matching it waits for that node before its PUBACK.
    pub fn remote_durable(&mut self, filter: &str, add: bool) {
        let slot = self.routes.entry(filter);
        slot.remote_durable = add;
        if slot.is_empty() {
            self.routes.prune(filter);
        }
    }

    /// The QoS 1/2 message just routed (its cluster outflow pushed at or
    /// after `from`) goes to a node with a persistent subscriber: its
    /// publisher's acknowledgement waits for that node's (a confirm token,
    /// as for `ack_after_stored`). Returns whether it does.
    pub(super) fn cluster_confirm(&mut self, publisher: ConnId, qos: QoS, from: usize) -> bool {
        if qos == QoS::AtMostOnce || !self.cluster.as_ref().is_some_and(|c| c.remote_acks) {
            return false;
        }
        let Some(out) = self.outflow[from..].iter_mut().find(|o| o.cluster) else {
            return false;
        };
        self.next_confirm += 1;
        out.confirm = Some(self.next_confirm);
        self.journal.confirms.push((publisher, self.next_confirm));
        true
    }

    /// Whether shared groups here get `message` from NATS's queue groups
    /// rather than from this node: it went to the other nodes (`sent`), or
    /// came from one. One member cluster-wide then gets it.
    pub(super) fn shared_by_cluster(&self, message: &Message, sent: bool) -> bool {
        self.cluster.is_some() && (sent || message.origin == FROM_CLUSTER)
    }

    /// A client connected here (connection `generation`): the other
    /// nodes are told.
    pub(super) fn cluster_connected(&mut self, connected: Connected, generation: u64) {
        if self.cluster.is_none() {
            return;
        }
        let link = (connected.at_millis, generation);
        self.cluster_links.insert(connected.client_id.clone(), link);
        self.cluster_events.push(ClusterEvent::Connected(connected));
    }

    /// Connection `generation` of `client_id` is gone.
    pub(super) fn cluster_disconnected(&mut self, client_id: &str, generation: u64) {
        if self.cluster_links.get(client_id).map(|l| l.1) == Some(generation) {
            self.cluster_links.remove(client_id);
        }
    }

    /// Node `node` says `client_id` connected there at `at_millis`. If the
    /// client's connection here is older, it is closed as a take-over
    /// would close it (v5 DISCONNECT 0x8E, the Will published); returns
    /// whether it was. A session here ends too if the client asked there
    /// for a new one (`clean_start`).
    pub fn connected_elsewhere(
        &mut self,
        client_id: &str,
        (at_millis, node): (u64, &str),
        clean_start: bool,
        now: Instant,
    ) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let here = self.cluster_links.get(client_id).map(|l| l.0);
        // The later connection stays; on a tie, the larger node id.
        if here.is_some_and(|here| (here, cluster.node.as_str()) > (at_millis, node)) {
            return false;
        }
        let Some(&slot) = self.by_client.get(client_id) else {
            return false;
        };
        let linked = self.slot(slot).is_some_and(|s| s.link.is_some());
        tracing::info!(
            client = client_id,
            node,
            clean_start,
            linked,
            "client connected on another node"
        );
        if clean_start {
            self.take_over(slot, false, now);
            self.end_session(slot, now);
            return linked;
        }
        let Some(link) = self.slot(slot).and_then(|s| s.link.as_mut()) else {
            return false;
        };
        link.end.get_or_insert(super::trace::Info::ClosedByServer);
        link.close_with(ReasonCode::SessionTakenOver);
        self.stats.takeovers += 1;
        true
    }

    /// Delivers a message another node published: to this node's
    /// subscribers (and its retained store), never back to the cluster or
    /// to outflow rules. False if its topic is not a valid topic here.
    pub fn publish_from_cluster(&mut self, arrived: FromCluster, now: Instant) -> bool {
        let Some(message) = self.cluster_message(arrived, now) else {
            return false;
        };
        // A P2P topic (aliyun profile) goes to its target's session, if
        // it has one on this node.
        let _ = self.route_published(message, now);
        true
    }

    /// Delivers a message NATS's queue group of shared group `group` on
    /// `filter` gave this node to one of the group's members here. False
    /// if its topic is not a valid topic here.
    pub fn shared_from_cluster(
        &mut self,
        (filter, group): (&str, &str),
        arrived: FromCluster,
        now: Instant,
    ) -> bool {
        let Some(message) = self.cluster_message(arrived, now) else {
            return false;
        };
        self.route_group(filter, group, &message, now);
        true
    }

    fn cluster_message(&mut self, arrived: FromCluster, now: Instant) -> Option<Arc<Message>> {
        let name = TopicName::new(arrived.topic).ok()?;
        self.stats.cluster_received += 1;
        let properties = arrived.properties.filter(|p| !p.is_empty());
        let expiry = properties.as_ref().and_then(|p| p.message_expiry_interval);
        Some(Arc::new(Message {
            id: self.new_message_id(now),
            topic: name,
            payload: arrived.payload,
            qos: arrived.qos,
            retain: arrived.retain,
            properties,
            origin: FROM_CLUSTER,
            expires_at: expiry.map(|secs| now + Duration::from_secs(u64::from(secs))),
            encoded: Default::default(),
        }))
    }
}

/// A message from another node, as the bridge read it.
#[derive(Debug)]
pub struct FromCluster {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Its RETAIN flag.
    pub retain: bool,
    /// Its v5 properties; the Message Expiry Interval is the time it had
    /// left when it was sent.
    pub properties: Option<Box<PublishProperties>>,
}

/// `message` as a v5 QoS 0 PUBLISH with the expiry it has left at `now`.
fn as_publish(message: &Message, now: Instant) -> Bytes {
    let mut out = BytesMut::with_capacity(message.payload.len() + message.topic.len() + 64);
    let publish = message.to_publish(now);
    let mut publish = publish;
    publish.qos = QoS::AtMostOnce;
    publish.retain = false;
    if Packet::Publish(publish)
        .encode(ProtocolVersion::V5, &mut out)
        .is_err()
    {
        // Properties that decoded always encode; the payload alone then.
        return message.payload.clone();
    }
    out.freeze()
}
