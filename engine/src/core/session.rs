//! A session and the connection attached to it. The session outlives its
//! connections (persistent sessions); everything in it is plain data, so it
//! can be logged to disk by the storage layer.

use std::collections::VecDeque;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_protocol::{
    Disconnect, MqttString, Packet, PacketId, ProtocolVersion, QoS, ReasonCode, SubscriptionId,
    SubscriptionOptions, TopicName,
};

use super::aliyun::LinkAliyun;
use super::message::{Held, Message};
use super::shared::SharedKey;
use super::spill::Spilled;
use super::trace::{Info, TraceName};
use super::tx::Tx;

/// One subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Options as granted.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<SubscriptionId>,
}

/// The Subscription Identifiers a copy carries (v5); usually none.
pub type SubIds = Option<Box<[SubscriptionId]>>;

/// A QoS 1/2 message sent to the client and not yet acknowledged.
#[derive(Debug)]
pub struct Inflight {
    /// Its packet identifier on this session.
    pub packet_id: PacketId,
    /// The message.
    pub message: Held,
    /// QoS of this copy.
    pub qos: QoS,
    /// RETAIN flag of this copy.
    pub retain: bool,
    /// Subscription Identifiers of this copy.
    pub sub_ids: SubIds,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
    /// The shared subscription it came through, if any.
    pub shared: Option<Arc<SharedKey>>,
    /// Its log sequence number if the copy is logged, else 0.
    pub lsn: u64,
}

/// A message waiting for the session's window or for its client.
#[derive(Debug)]
pub struct Queued {
    /// The message.
    pub message: Held,
    /// It may have been sent before (restored from the log): DUP is set.
    pub dup: bool,
    /// QoS of this copy.
    pub qos: QoS,
    /// RETAIN flag of this copy.
    pub retain: bool,
    /// Subscription Identifiers of this copy.
    pub sub_ids: SubIds,
    /// The shared subscription it came through, if any.
    pub shared: Option<Arc<SharedKey>>,
    /// Its log sequence number if the copy is logged, else 0.
    pub lsn: u64,
    /// It arrived while the session had no connection (traced as
    /// `push_offline` when delivered).
    pub offline: bool,
}

/// The Will of a connection.
#[derive(Debug, Clone)]
pub struct Will {
    /// The message to publish.
    pub message: Message,
    /// v5 Will Delay Interval, in seconds.
    pub delay_secs: u32,
}

/// A map held by every session or connection: hashed with ahash's
/// process-wide seed instead of a random seed of its own per map
/// (`AHashMap`'s `RandomState`, 32 bytes in every session for each map).
/// Each is bounded by a per-client limit (subscriptions, receive maximum,
/// topic aliases), so one seed for the process is enough.
pub type SessionMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<ahash::AHasher>>;

/// A set held by every session, as [`SessionMap`].
pub type SessionSet<K> = std::collections::HashSet<K, BuildHasherDefault<ahash::AHasher>>;

/// The connection a session is attached to.
#[derive(Debug)]
pub struct Link {
    /// Distinguishes this connection from earlier ones of the session.
    pub generation: u64,
    /// Protocol version of the connection.
    pub version: ProtocolVersion,
    /// 1.5 × the keep-alive: silence longer than this ends the connection.
    pub idle_max: Option<Duration>,
    /// When the last packet arrived.
    pub last_rx: Instant,
    /// How many QoS 1/2 messages the client accepts at once.
    pub receive_max: u16,
    /// Largest packet the client accepts, in bytes.
    pub packet_bytes_max: u32,
    /// v5 topic aliases the client set, index = alias - 1.
    pub aliases_in: Vec<Option<TopicName>>,
    /// v5 topic aliases the server set towards the client.
    pub aliases_out: SessionMap<Box<str>, u16>,
    /// Highest alias the server may use towards the client: the client's
    /// Topic Alias Maximum, capped by `topic_alias_out_max`.
    pub alias_out_max: u16,
    /// The Will, published if the connection ends without DISCONNECT.
    pub will: Option<Box<Will>>,
    /// Whether the client ended the connection with DISCONNECT.
    pub graceful: bool,
    /// Whether the client asked for reason strings (v5).
    pub problem_info: bool,
    /// Why the connection ends, once known (for the trace).
    pub end: Option<Info>,
    /// The Alibaba Cloud profile's state of the connection (tokens, the
    /// client's address); `None` in the standard profile.
    pub aliyun: Option<Box<LinkAliyun>>,
    /// Output waiting to be written.
    pub tx: Tx,
}

impl Link {
    /// The Topic Alias to send `topic` with, and whether the client already
    /// knows it (then the topic itself is left out). New topics get the
    /// next alias until the client's maximum is reached; after that they
    /// travel without one.
    pub fn alias_out(&mut self, topic: &str) -> Option<(u16, bool)> {
        if self.alias_out_max == 0 {
            return None;
        }
        if let Some(&alias) = self.aliases_out.get(topic) {
            return Some((alias, true));
        }
        let next = u16::try_from(self.aliases_out.len() + 1).ok()?;
        if next > self.alias_out_max {
            return None;
        }
        self.aliases_out.insert(topic.into(), next);
        Some((next, false))
    }

    /// Ends the connection from the server's side: a v5 client gets
    /// DISCONNECT with `code` first; the output closes once written.
    pub fn close_with(&mut self, code: ReasonCode) {
        if self.version == ProtocolVersion::V5 {
            self.send(&Packet::Disconnect(Disconnect::new(code)));
        }
        self.tx.close();
    }

    /// Encodes `packet` into the output within the client's Maximum Packet
    /// Size [MQTT-3.1.2-24]: too large, it goes without its Reason String
    /// and User Properties [MQTT-3.1.2-25]; still too large, it is not sent
    /// and the connection closes. Returns whether it was sent.
    pub fn send(&mut self, packet: &Packet) -> bool {
        if self.encode_within(packet) {
            return true;
        }
        let mut lean = packet.clone();
        if lean.drop_diagnostics() && self.encode_within(&lean) {
            return true;
        }
        tracing::info!(
            packet = ?packet.packet_type(),
            client_limit = self.packet_bytes_max,
            "closing: a packet for the client does not fit its Maximum Packet Size [MQTT-3.1.2-24]"
        );
        self.tx.close();
        false
    }

    fn encode_within(&mut self, packet: &Packet) -> bool {
        let (version, max) = (self.version, self.packet_bytes_max as usize);
        let encoded = self.tx.encode(|buf| {
            let before = buf.len();
            packet.encode(version, buf).map_err(|_| ())?;
            match buf.len() - before <= max {
                true => Ok(()),
                false => Err(()),
            }
        });
        encoded.is_ok()
    }
}

/// The state of one client, connected or not.
#[derive(Debug)]
pub struct Session {
    /// Instance-unique id: shard (8 bits) | counter.
    pub uid: u64,
    /// The Client Identifier.
    pub client_id: MqttString,
    /// User name given at CONNECT, for authorization.
    pub username: Option<MqttString>,
    /// The connection, while there is one.
    pub link: Option<Link>,
    /// Session Expiry Interval in seconds: 0 ends the session with the
    /// connection, `u32::MAX` never.
    pub expiry_secs: u32,
    /// When a detached session ends.
    pub expires_at: Option<Instant>,
    /// Subscriptions by filter.
    pub subs: SessionMap<Box<str>, Subscription>,
    /// QoS 1/2 messages sent and not yet acknowledged, oldest first.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting, oldest first.
    pub queue: VecDeque<Queued>,
    /// Weight of `queue`, in bytes.
    pub queued_bytes: usize,
    /// Logged copies held on disk only, oldest first; newer than every
    /// logged copy in `queue`.
    pub spilled: VecDeque<Spilled>,
    /// Weight of `spilled`, in bytes.
    pub spilled_bytes: usize,
    /// QoS 2 packet ids received (PUBREC sent), waiting for PUBREL.
    pub qos2_in: SessionSet<u16>,
    /// Since when the backlog is over `backlog_pause_bytes`.
    pub congested_at: Option<Instant>,
    /// Judged a slow consumer: holds no one back until it has drained.
    pub slow: bool,
    /// A Will waiting for its delay to pass.
    pub will_due: Option<Box<(Instant, Message)>>,
    /// Whether the session is in the log (persistent, storage on): its
    /// QoS 1/2 copies are logged until acknowledged.
    pub logged: bool,
    /// Its client id in the shard's trace store.
    pub trace_name: TraceName,
    next_packet_id: u16,
    /// Packet ids of `inflight`, one bit each; kept only once the id
    /// counter has wrapped (before that, no id can be in use twice).
    ids_in_use: Option<Box<[u64; 1024]>>,
}

impl Session {
    /// A new session with no subscriptions.
    pub fn new(uid: u64, client_id: MqttString) -> Self {
        Session {
            uid,
            client_id,
            username: None,
            link: None,
            expiry_secs: 0,
            expires_at: None,
            subs: SessionMap::default(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            spilled: VecDeque::new(),
            spilled_bytes: 0,
            qos2_in: SessionSet::default(),
            will_due: None,
            logged: false,
            trace_name: TraceName::NONE,
            congested_at: None,
            slow: false,
            next_packet_id: 0,
            ids_in_use: None,
        }
    }

    /// The next free packet identifier for a message to the client.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = match self.next_packet_id.checked_add(1) {
                Some(id) => id,
                None => {
                    if self.ids_in_use.is_none() {
                        self.rebuild_ids_in_use_from_scratch();
                    }
                    1
                }
            };
            let id = self.next_packet_id;
            let taken = self.ids_in_use.as_ref().is_some_and(|bits| bit(bits, id));
            if !taken {
                if let Some(id) = PacketId::new(id) {
                    return id;
                }
            }
        }
    }

    /// Adds a message to the window.
    pub fn push_inflight(&mut self, m: Inflight) {
        if let Some(bits) = self.ids_in_use.as_mut() {
            set_bit(bits, m.packet_id.get(), true);
        }
        self.inflight.push_back(m);
    }

    /// Takes the message at `at` out of the window.
    pub fn remove_inflight(&mut self, at: usize) -> Option<Inflight> {
        let m = self.inflight.remove(at)?;
        if let Some(bits) = self.ids_in_use.as_mut() {
            set_bit(bits, m.packet_id.get(), false);
        }
        Some(m)
    }

    /// Keeps the id bitmap from now on (the window holds ids that were
    /// not assigned by this session's counter: restored from the log).
    pub fn track_packet_ids(&mut self) {
        if !self.inflight.is_empty() {
            self.rebuild_ids_in_use_from_scratch();
        }
    }

    /// Recomputes the id bitmap after `inflight` was changed wholesale.
    pub fn rebuild_ids_in_use(&mut self) {
        if self.ids_in_use.is_some() {
            self.rebuild_ids_in_use_from_scratch();
        }
    }

    fn rebuild_ids_in_use_from_scratch(&mut self) {
        let mut bits = Box::new([0u64; 1024]);
        for m in &self.inflight {
            set_bit(&mut bits, m.packet_id.get(), true);
        }
        self.ids_in_use = Some(bits);
    }

    /// Whether the client's window has room for one more QoS 1/2 message.
    pub fn window_open(&self, cap: u16) -> bool {
        let window = self.link.as_ref().map_or(0, |l| l.receive_max.min(cap));
        self.inflight.len() < usize::from(window)
    }

    /// The log sequence numbers of every copy the session holds.
    pub fn lsns(&self) -> impl Iterator<Item = u64> + '_ {
        let held = self.inflight.iter().map(|m| m.lsn);
        held.chain(self.queue.iter().map(|q| q.lsn))
            .chain(self.spilled.iter().map(|s| s.lsn))
            .filter(|&l| l != 0)
    }

    /// Position of the in-flight message with `id`.
    pub fn inflight_position(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|m| m.packet_id == id)
    }
}

fn bit(bits: &[u64; 1024], id: u16) -> bool {
    bits[usize::from(id >> 6)] & (1 << (id & 63)) != 0
}

fn set_bit(bits: &mut [u64; 1024], id: u16, on: bool) {
    let word = &mut bits[usize::from(id >> 6)];
    if on {
        *word |= 1 << (id & 63);
    } else {
        *word &= !(1 << (id & 63));
    }
}
