//! An application message as it travels inside the broker: decoded once on
//! the publisher's shard, shared (`Arc`) with every shard and session that
//! delivers it. Topic and payload are `Bytes` — never copied per subscriber.

use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::properties::PublishProperties;
use std::sync::OnceLock;

use ringmq_protocol::{EncodedPublish, ProtocolVersion, Publish, QoS, TopicName};

/// Who published a message: the session's instance-unique id, for No Local.
pub type Origin = u64;

/// A shard's handle on a message: its session queues and in-flight windows
/// share one count per shard, which no other core touches, instead of
/// each copy counting on the message's own (shared by every shard).
pub type Held = std::rc::Rc<std::sync::Arc<Message>>;

/// One published message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Instance-unique, time-ordered: shard (8 bits) | millis (40) | seq (16).
    pub id: u64,
    /// Where it was published.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// v5 properties that travel with it (Topic Alias and Subscription
    /// Identifiers removed).
    pub properties: Option<Box<PublishProperties>>,
    /// The publishing session, for No Local; 0 for the broker itself.
    pub origin: Origin,
    /// When a v5 Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// The message encoded once per protocol version, on first delivery,
    /// for every copy on every shard.
    pub encoded: Encodings,
}

/// Lazily built encodings of one message, boxed: a message waiting in a
/// queue, never encoded yet, carries two pointers instead of two encodings.
#[derive(Debug, Clone, Default)]
pub struct Encodings([OnceLock<Box<EncodedPublish>>; 2]);

impl Message {
    /// Seconds of life left at `now`, rounded up; `None` without expiry,
    /// `Some(0)` once expired.
    pub fn remaining_secs(&self, now: Instant) -> Option<u32> {
        let at = self.expires_at?;
        let left = at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// Whether the message has outlived its Message Expiry Interval.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The PUBLISH a subscriber receives, before per-copy flags: properties
    /// carry the remaining expiry.
    pub fn to_publish(&self, now: Instant) -> Publish {
        let mut publish = Publish::new(self.topic.clone(), self.payload.clone());
        publish.qos = self.qos;
        publish.retain = self.retain;
        publish.properties = self.properties.clone();
        if let Some(left) = self.remaining_secs(now) {
            publish.properties_mut().message_expiry_interval = Some(left.max(1));
        }
        publish
    }

    /// The message encoded for `v` (flags and packet id are per copy).
    /// Expiry is not in it: copies of an expiring message are encoded one
    /// by one with the time left.
    pub fn encoded(&self, v: ProtocolVersion) -> &EncodedPublish {
        self.encoded.0[usize::from(v == ProtocolVersion::V5)].get_or_init(|| {
            let mut publish = Publish::new(self.topic.clone(), self.payload.clone());
            publish.properties = self.properties.clone();
            Box::new(EncodedPublish::new(&publish, v).unwrap_or_else(|_| {
                // Properties that decoded always encode; keep the message deliverable.
                let bare = Publish::new(self.topic.clone(), self.payload.clone());
                EncodedPublish::new(&bare, ProtocolVersion::V311)
                    .unwrap_or_else(|_| unreachable!("a bare PUBLISH encodes"))
            }))
        })
    }

    /// Approximate bytes held for this message, for queue caps.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// Bits of milliseconds in a message id.
const ID_MILLIS_MASK: u64 = (1 << 40) - 1;

/// The product's MsgId of message `id`: 32 uppercase hex digits, time
/// first (so they sort by time): milliseconds since the Unix epoch (12),
/// shard (4), sequence (4), and `instance_tag` (12). The id holds its
/// time modulo 2^40 ms (about 34 years); `now_ms` places it.
pub fn msg_id_string(id: u64, now_ms: u64, instance_tag: u64) -> String {
    let millis = full_millis((id >> 16) & ID_MILLIS_MASK, now_ms);
    let (shard, seq) = (id >> 56, id & 0xFFFF);
    let tag = instance_tag & 0xFFFF_FFFF_FFFF;
    format!("{millis:012X}{shard:04X}{seq:04X}{tag:012X}")
}

/// The message id of a MsgId string (see [`msg_id_string`]); `None` if it
/// is not one.
pub fn parse_msg_id(text: &str) -> Option<u64> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let field = |r: std::ops::Range<usize>| u64::from_str_radix(&text[r], 16).ok();
    let (millis, shard, seq) = (field(0..12)?, field(12..16)?, field(16..20)?);
    if shard > 0xFF {
        return None;
    }
    Some(shard << 56 | (millis & ID_MILLIS_MASK) << 16 | seq)
}

/// The time in ms since the Unix epoch whose low 40 bits are `low`, at or
/// before `now_ms` (plus a day of clock skew).
fn full_millis(low: u64, now_ms: u64) -> u64 {
    let ahead = now_ms + 86_400_000;
    let candidate = (ahead & !ID_MILLIS_MASK) | low;
    match candidate > ahead {
        true => candidate.saturating_sub(1 << 40),
        false => candidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_round_trip_and_sort_by_time() {
        let now = 1_700_000_000_000u64;
        let id =
            |shard: u64, millis: u64, seq: u64| shard << 56 | (millis & ID_MILLIS_MASK) << 16 | seq;
        let a = msg_id_string(id(1, now - 5, 9), now, 0xABC);
        let b = msg_id_string(id(0, now - 4, 1), now, 0xABC);
        assert_eq!(a.len(), 32);
        assert!(a < b, "{a} sorts before {b}");
        assert!(a.starts_with(&format!("{:012X}", now - 5)));
        assert_eq!(parse_msg_id(&a), Some(id(1, now - 5, 9)));
        assert_eq!(parse_msg_id("xyz"), None);
    }
}
