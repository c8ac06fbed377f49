//! One shard's broker: its sessions, its slice of the subscription trie, the
//! replicated route table and retained store. It owns no socket and reads no
//! clock: every call takes `now`, output goes to each connection's [`Tx`]
//! and, for other shards, to [`Broker::outbox`].
//!
//! [`Tx`]: super::tx::Tx

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use ringmq_protocol::properties::DisconnectProperties;
use ringmq_protocol::{Disconnect, MqttString, Packet, ProtocolVersion, ReasonCode};

use super::aliyun::Aliyun;
use super::auth::Auth;
use super::journal::Journal;
use super::limits::Limits;
use super::message::Message;
use super::retained::Retained;
use super::session::Session;
use super::shared::{LocalGroup, RouteSlot, SharedKey};
use super::stats::Stats;
use super::trace::{Naming, Traces};
use super::trie::Trie;
use super::Sub;

/// What one shard sends another.
#[derive(Debug)]
pub enum Remote {
    /// Deliver to your subscribers.
    Publish(Arc<Message>),
    /// Store (or, with an empty payload, clear) a retained message.
    Retain(Arc<Message>),
    /// The sender now has (`true`) or no longer has subscribers on a filter.
    Route(Box<str>, bool),
    /// The sender now has (`true`) or no longer has a persistent session
    /// subscribed to a filter.
    Durable(Box<str>, bool),
    /// Deliver to one local member of this shared group.
    Shared(Arc<Message>, Arc<SharedKey>),
    /// Deliver to the session of this client id (P2P), whose home is the
    /// receiving shard.
    P2p(Arc<Message>, Box<str>),
    /// The sender now has (`true`) or no longer has members of the group
    /// (filter, group).
    Group(Box<str>, Box<str>, bool),
    /// Answer with `BarrierAck`: everything sent before is applied. (The
    /// shard layer handles both; they travel here to keep their order.)
    Barrier(u64),
    /// Everything sent before barrier `token` is applied.
    BarrierAck(u64),
}

/// Names a connection: its session's slot and the link's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Slot of the session.
    pub session: u32,
    /// Generation of the link.
    pub generation: u64,
}

/// What the shard does after a packet.
#[derive(Debug)]
pub enum Flow {
    /// Read on.
    Continue,
    /// Wait until every shard has applied the route changes sent so far,
    /// then call [`Broker::finish_subscribe`].
    Barrier(super::subscribe::PendingSubAck),
}

/// The state of one shard.
#[derive(Debug)]
pub struct Broker {
    pub(super) shard: usize,
    pub(super) shards: usize,
    pub(super) limits: Limits,
    pub(super) auth: Auth,
    pub(super) sessions: Vec<Option<Session>>,
    pub(super) free_slots: Vec<u32>,
    pub(super) by_client: AHashMap<MqttString, u32>,
    pub(super) trie: Trie<Vec<Sub>>,
    pub(super) routes: Trie<RouteSlot>,
    pub(super) shared: Trie<Vec<LocalGroup>>,
    pub(super) retained: Retained,
    /// Messages for other shards, per shard, in order; the shard layer
    /// drains it after every batch of input.
    pub outbox: Vec<Vec<Remote>>,
    /// Messages for the NATS bridge, in order; drained like `outbox`.
    pub outflow: Vec<super::outflow::Outflow>,
    /// Data outflow rules (`[[rules]]` of kind "outflow").
    pub outflow_rules: Vec<super::outflow::OutflowRule>,
    /// The last outflow confirmation token (see `Outflow::confirm`).
    pub(super) next_confirm: u64,
    /// This node's cluster, if it is in one.
    pub cluster: Option<super::cluster::ClusterRoute>,
    /// What the cluster's side of the bridge is told (interest,
    /// connections); drained like `outflow`.
    pub cluster_events: Vec<super::cluster::ClusterEvent>,
    /// In a cluster: when each client connected here (Unix milliseconds)
    /// and its connection's generation, to tell which of two nodes'
    /// connections is the later.
    pub(super) cluster_links: AHashMap<Box<str>, (u64, u64)>,
    /// Counters.
    pub stats: Stats,
    /// Latencies and storage gauges.
    pub metrics: super::metrics::Metrics,
    /// The trace store.
    pub traces: Traces,
    /// The Alibaba Cloud profile, when it is on.
    pub aliyun: Option<Box<Aliyun>>,
    /// Identifies the instance in message ids.
    pub instance_tag: u64,
    /// Offset of trace `Time` strings from UTC, in minutes.
    pub trace_offset_minutes: i32,
    /// What the storage layer must log, drained after every batch.
    pub journal: Journal,
    /// Logged copies held on each shard, shared by all shards (each writes
    /// its own, on the clock) so that `offline_messages_max` holds for the
    /// instance.
    pub offline_counts: Option<Arc<[AtomicU64]>>,
    /// Plain subscriptions of logged sessions, per filter.
    pub(super) durable_counts: AHashMap<Box<str>, u32>,
    /// Output of connections taken over, until their writer flushes it.
    pub(super) detached: AHashMap<ConnId, super::tx::Tx>,
    /// Connections whose backlog pauses publishers.
    pub(super) congested: Vec<ConnId>,
    /// Some congestion cleared since the shard last asked.
    pub(super) drained: bool,
    /// When expired retained messages were last purged.
    pub(super) retained_purged_at: Instant,
    /// When persistent sessions' queues were last checked for retention.
    pub(super) retention_checked_at: Instant,
    /// Bytes of messages in each peer's outbox, for mesh flow control.
    pub outbox_bytes: Vec<usize>,
    /// Reads logged messages back (storage on).
    pub(super) log: Option<Box<dyn super::spill::LogReader>>,
    /// A shared subscription's copy is being handed over: it stays in
    /// memory, to go to another member if this one leaves.
    pub(super) sharing: bool,
    /// Scratch for matching, kept to reuse its allocation.
    pub(super) matches: Vec<Sub>,
    pub(super) next_generation: u64,
    pub(super) next_uid: u64,
    pub(super) start: Instant,
    pub(super) start_millis: u64,
    /// When the broker started (ms since the Unix epoch); never moved.
    boot_millis: u64,
    msg_seq: u16,
    last_millis: u64,
}

impl Broker {
    /// The broker of shard `shard` of `shards`, at `now`.
    pub fn new(shard: usize, shards: usize, limits: Limits, auth: Auth, now: Instant) -> Self {
        let start_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Broker {
            shard,
            shards,
            limits,
            auth,
            sessions: Vec::new(),
            free_slots: Vec::new(),
            by_client: AHashMap::new(),
            trie: Trie::default(),
            routes: Trie::default(),
            shared: Trie::default(),
            retained: Retained::default(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            outflow: Vec::new(),
            outflow_rules: Vec::new(),
            next_confirm: 0,
            cluster: None,
            cluster_events: Vec::new(),
            cluster_links: AHashMap::new(),
            stats: Stats::default(),
            metrics: Default::default(),
            traces: Traces::default(),
            aliyun: None,
            instance_tag: 0,
            trace_offset_minutes: 0,
            journal: Journal::default(),
            offline_counts: None,
            durable_counts: AHashMap::new(),
            detached: AHashMap::new(),
            congested: Vec::new(),
            drained: false,
            retained_purged_at: now,
            retention_checked_at: now,
            outbox_bytes: vec![0; shards],
            matches: Vec::new(),
            log: None,
            sharing: false,
            next_generation: 1,
            next_uid: 1,
            start: now,
            start_millis,
            boot_millis: start_millis,
            msg_seq: 0,
            last_millis: 0,
        }
    }

    /// Number of sessions on this shard, connected or not.
    pub fn session_count(&self) -> usize {
        self.by_client.len()
    }

    /// Number of topics with a retained message on this shard.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Number of connected clients on this shard.
    pub fn connection_count(&self) -> usize {
        self.sessions
            .iter()
            .flatten()
            .filter(|s| s.link.is_some())
            .count()
    }

    /// The connected session of `id`, if the link is still current.
    pub fn session(&self, id: ConnId) -> Option<&Session> {
        let s = self.sessions.get(id.session as usize)?.as_ref()?;
        (s.link.as_ref()?.generation == id.generation).then_some(s)
    }

    /// The connected session of `id`, if the link is still current.
    pub fn session_mut(&mut self, id: ConnId) -> Option<&mut Session> {
        let s = self.sessions.get_mut(id.session as usize)?.as_mut()?;
        let current = s
            .link
            .as_ref()
            .is_some_and(|l| l.generation == id.generation);
        current.then_some(s)
    }

    /// The output of connection `id`, if still current.
    pub fn tx_mut(&mut self, id: ConnId) -> Option<&mut super::tx::Tx> {
        Some(&mut self.session_mut(id)?.link.as_mut()?.tx)
    }

    pub(super) fn slot(&mut self, slot: u32) -> Option<&mut Session> {
        self.sessions.get_mut(slot as usize)?.as_mut()
    }

    /// Puts `session` in a free slot (or a new one) and indexes it by its
    /// client id; returns the slot.
    pub(super) fn place_session(&mut self, session: Session) -> u32 {
        let key = session.client_id.clone();
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.sessions.push(None);
                (self.sessions.len() - 1) as u32
            }
        };
        self.sessions[slot as usize] = Some(session);
        self.by_client.insert(key, slot);
        slot
    }

    pub(super) fn new_uid(&mut self) -> u64 {
        self.next_uid += 1;
        (self.shard as u64) << 56 | self.next_uid
    }

    /// A new instance-unique, time-ordered message id:
    /// shard (8 bits) | milliseconds since the epoch (40) | sequence (16).
    pub(super) fn new_message_id(&mut self, now: Instant) -> u64 {
        let millis =
            self.start_millis + now.saturating_duration_since(self.start).as_millis() as u64;
        if millis > self.last_millis {
            self.last_millis = millis;
            self.msg_seq = 0;
        }
        // Past 65,535 ids in one millisecond (or a clock stepping back),
        // the next millisecond is borrowed: ids stay unique and ordered.
        self.msg_seq = match self.msg_seq.checked_add(1) {
            Some(seq) => seq,
            None => {
                self.last_millis += 1;
                1
            }
        };
        (self.shard as u64 & 0xFF) << 56
            | (self.last_millis & ((1 << 40) - 1)) << 16
            | u64::from(self.msg_seq)
    }

    /// How this shard names connections and messages in traces and
    /// events, at `now`.
    pub fn naming(&self, now: Instant) -> Naming {
        Naming {
            shard: self.shard,
            boot_ms: self.boot_millis,
            instance_tag: self.instance_tag,
            now_ms: self.unix_millis(now),
            offset_minutes: self.trace_offset_minutes,
        }
    }

    /// The shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Handles one packet from connection `id`.
    pub fn handle(&mut self, id: ConnId, packet: Packet, now: Instant) -> Flow {
        let Some(session) = self.session_mut(id) else {
            return Flow::Continue;
        };
        if let Some(link) = session.link.as_mut() {
            link.last_rx = now;
            if link.tx.is_closing() {
                return Flow::Continue;
            }
        }
        match packet {
            Packet::Publish(p) => self.publish_in(id, p, now),
            Packet::PubAck(a) => self.puback_in(id, a.packet_id, now),
            Packet::PubRec(a) => self.pubrec_in(id, a.packet_id, a.reason_code, now),
            Packet::PubRel(a) => self.pubrel_in(id, a.packet_id),
            Packet::PubComp(a) => self.pubcomp_in(id, a.packet_id, now),
            Packet::Subscribe(s) => return self.subscribe(id, s, now),
            Packet::Unsubscribe(u) => self.unsubscribe(id, u),
            Packet::PingReq => self.write(id, &Packet::PingResp),
            Packet::Disconnect(d) => self.disconnect_in(id, d, now),
            Packet::Auth(_) => self.fail(
                id,
                ReasonCode::ProtocolError,
                "[MQTT-4.12.0-1] AUTH without an authentication method in CONNECT",
            ),
            other => {
                let why = format!(
                    "[MQTT §2.1.2] a client must not send {:?}",
                    other.packet_type()
                );
                self.fail(id, ReasonCode::ProtocolError, &why)
            }
        }
        Flow::Continue
    }

    /// Encodes `packet` into connection `id`'s output.
    pub(super) fn write(&mut self, id: ConnId, packet: &Packet) {
        let Some(link) = self.session_mut(id).and_then(|s| s.link.as_mut()) else {
            return;
        };
        if !link.send(packet) {
            self.stats.dropped_too_large += 1;
        }
    }

    /// Ends connection `id` because of a protocol violation or a limit: a v5
    /// client gets DISCONNECT with `code` and `why` (which cites the rule),
    /// then the connection closes. The Will is published.
    pub fn fail(&mut self, id: ConnId, code: ReasonCode, why: &str) {
        self.stats.protocol_errors += 1;
        let Some(session) = self.session_mut(id) else {
            return;
        };
        tracing::info!(client = %session.client_id.as_str(), code = ?code, "disconnecting: {why}");
        let Some(link) = session.link.as_mut() else {
            return;
        };
        link.end.get_or_insert(super::trace::Info::InvalidParam);
        if link.version == ProtocolVersion::V5 {
            let mut packet = Disconnect::new(code);
            if link.problem_info {
                packet.properties = DisconnectProperties {
                    reason_string: MqttString::new(why.to_owned()).ok(),
                    ..Default::default()
                };
            }
            link.send(&Packet::Disconnect(packet));
        }
        link.tx.close();
    }

    /// Ends every connection (v5: DISCONNECT 0x8B, server shutting down).
    pub fn shutdown(&mut self) {
        for session in self.sessions.iter_mut().flatten() {
            if let Some(link) = session.link.as_mut() {
                link.end.get_or_insert(super::trace::Info::ClosedByServer);
                link.close_with(ReasonCode::ServerShuttingDown);
            }
        }
    }
}
