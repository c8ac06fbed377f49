//! What the broker must keep across a restart, as a stream of entries the
//! storage layer appends to the shard's logs: persistent sessions, their
//! subscriptions, the QoS 1/2 messages they have not acknowledged, and the
//! retained messages whose topic this shard owns. The broker only emits
//! entries; it never touches a file.

use std::sync::Arc;

use ringmq_protocol::{MqttString, Packet, QoS};

use super::broker::ConnId;
use super::message::Message;
use super::session::Subscription;

/// One thing to log.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A persistent session exists (created, resumed, or its expiry changed).
    Session {
        /// Its instance-unique id.
        uid: u64,
        /// Its Client Identifier.
        client_id: MqttString,
        /// The user it was authorized for.
        username: Option<MqttString>,
        /// Session Expiry Interval, in seconds (`u32::MAX`: never).
        expiry_secs: u32,
    },
    /// The session's connection ended at `at_millis` (Unix time): its
    /// expiry runs from there.
    Detached {
        /// The session.
        uid: u64,
        /// When, in milliseconds since the Unix epoch.
        at_millis: u64,
        /// The messages sent and not acknowledged, sent again with DUP
        /// and the same packet id.
        inflight: Vec<InflightRef>,
    },
    /// The session ended; everything logged for it is void.
    SessionEnd {
        /// The session.
        uid: u64,
    },
    /// A subscription of a persistent session (added or replaced).
    Subscribe {
        /// The session.
        uid: u64,
        /// The filter, `$share/…` included.
        filter: Box<str>,
        /// Its options.
        sub: Subscription,
    },
    /// A subscription removed.
    Unsubscribe {
        /// The session.
        uid: u64,
        /// The filter.
        filter: Box<str>,
    },
    /// A QoS 2 PUBLISH from the session's client was received (PUBREC
    /// sent: a resend must not be delivered again), or released (PUBREL).
    Qos2In {
        /// The session.
        uid: u64,
        /// Its packet identifier.
        packet_id: u16,
        /// Received (`true`) or released.
        received: bool,
    },
    /// A retained message stored; an empty payload clears the topic.
    Retain(Arc<Message>),
    /// A message held for persistent sessions, logged once per shard.
    Message {
        /// Log sequence number: orders this shard's messages.
        lsn: u64,
        /// The message.
        message: Arc<Message>,
        /// The sessions that hold a copy.
        targets: Vec<Target>,
    },
    /// A session is done with message `lsn` (acknowledged, expired or
    /// dropped).
    Ack {
        /// The session.
        uid: u64,
        /// The message.
        lsn: u64,
    },
}

/// A logged message in a session's window when its connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflightRef {
    /// The message.
    pub lsn: u64,
    /// The packet identifier it was sent with.
    pub packet_id: u16,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

/// A session's copy of a logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The session.
    pub uid: u64,
    /// QoS of the copy.
    pub qos: QoS,
    /// RETAIN flag of the copy.
    pub retain: bool,
}

/// Entries waiting for the storage layer, and the acknowledgements that
/// wait for them to be durable.
#[derive(Debug, Default)]
pub struct Journal {
    /// Whether anything is logged at all (a broker without storage keeps
    /// this off and pays nothing).
    pub enabled: bool,
    /// Entries in the order they happened.
    pub entries: Vec<Entry>,
    /// Messages a session let go of without an `Ack` entry (its `SessionEnd`
    /// voids them): only for the storage layer's accounting.
    pub released: Vec<u64>,
    /// PUBACK/PUBREC for publishes that must be durable first, in order.
    pub held_acks: Vec<(ConnId, Packet)>,
    /// Outflow tokens held acknowledgements also wait for (a stream's
    /// confirmation), by connection.
    pub confirms: Vec<(ConnId, u64)>,
    /// Logged copies held by sessions.
    pub copies: u64,
    /// The log cannot be written (disk full): QoS 1/2 publishes are refused.
    pub unavailable: bool,
    /// Whether acknowledgements of publishes routed to other shards wait
    /// for them to have logged what they received.
    pub hold_acks: bool,
    /// Whether acknowledgements also wait for the local log to be synced
    /// (`flush = always`).
    pub sync_acks: bool,
    next_lsn: u64,
    fanout: Option<(u64, Vec<Target>)>,
}

impl Journal {
    /// Whether there is anything for the storage layer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.released.is_empty()
    }

    /// The lsn of the message being fanned out, recording `target` as one
    /// of its holders.
    pub(super) fn target(&mut self, target: Target) -> u64 {
        self.copies += 1;
        match &mut self.fanout {
            Some((lsn, targets)) => {
                targets.push(target);
                *lsn
            }
            None => {
                self.next_lsn += 1;
                self.fanout = Some((self.next_lsn, vec![target]));
                self.next_lsn
            }
        }
    }

    /// Ends a fan-out: logs the message if some session holds it.
    pub(super) fn finish(&mut self, message: &Arc<Message>) {
        if let Some((lsn, targets)) = self.fanout.take() {
            self.entries.push(Entry::Message {
                lsn,
                message: Arc::clone(message),
                targets,
            });
        }
    }

    /// Session `uid` is done with `lsn` (0: never logged).
    pub(super) fn ack(&mut self, uid: u64, lsn: u64) {
        if lsn != 0 {
            self.copies = self.copies.saturating_sub(1);
            self.entries.push(Entry::Ack { uid, lsn });
        }
    }

    /// `lsn` no longer counts (its session's end was logged).
    pub(super) fn release(&mut self, lsn: u64) {
        if lsn != 0 {
            self.copies = self.copies.saturating_sub(1);
            self.released.push(lsn);
        }
    }

    /// Continues numbering after what recovery found.
    pub fn set_next_lsn(&mut self, last: u64) {
        self.next_lsn = self.next_lsn.max(last);
    }

    /// Logs `entry` if logging is on.
    pub(super) fn push(&mut self, entry: Entry) {
        if self.enabled {
            self.entries.push(entry);
        }
    }
}
