//! The bytes of one logged entry. A frame is
//!
//! ```text
//! length u32 LE | crc32c(body) u32 LE | body (length bytes)
//! ```
//!
//! and a body is a kind byte followed by the entry's fields, integers
//! little-endian, strings and byte strings prefixed by their u32 length. A
//! message is kept as a v5 QoS 0 PUBLISH (topic, properties, payload: what
//! the protocol crate already encodes and validates) after its id, origin,
//! arrival and expiry times, QoS and RETAIN flag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_protocol::{
    Decoder, Delivery, MqttString, Packet, ProtocolVersion, QoS, RetainHandling, SubscriptionId,
    SubscriptionOptions, TopicName,
};

use crate::core::journal::{Entry, InflightRef, Target};
use crate::core::message::Message;
use crate::core::session::Subscription;

/// Bytes before a frame's body.
pub const FRAME_HEAD_BYTES: usize = 8;

const SESSION: u8 = 1;
const DETACHED: u8 = 2;
const SESSION_END: u8 = 3;
const SUBSCRIBE: u8 = 4;
const UNSUBSCRIBE: u8 = 5;
const RETAIN: u8 = 6;
const MESSAGE: u8 = 7;
const ACK: u8 = 8;
const QOS2_IN: u8 = 9;

/// Why a body could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The body ends inside a field.
    #[error("record truncated")]
    Truncated,
    /// An unknown kind byte or an invalid field.
    #[error("invalid record: {0}")]
    Invalid(&'static str),
}

/// Maps `Instant`s to Unix milliseconds and back, around one moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The moment.
    pub now: Instant,
    /// The same moment in milliseconds since the Unix epoch.
    pub now_millis: u64,
}

impl Clock {
    fn to_millis(self, at: Instant) -> u64 {
        match at.checked_duration_since(self.now) {
            Some(ahead) => self.now_millis + ahead.as_millis() as u64,
            None => self
                .now_millis
                .saturating_sub(self.now.duration_since(at).as_millis() as u64),
        }
    }

    fn to_instant(self, millis: u64) -> Instant {
        if millis >= self.now_millis {
            self.now + Duration::from_millis(millis - self.now_millis)
        } else {
            let back = Duration::from_millis(self.now_millis - millis);
            self.now.checked_sub(back).unwrap_or(self.now)
        }
    }
}

/// Appends the frame of `entry` to `out`; `scratch` is reused for the
/// encoding of messages.
pub fn encode(entry: &Entry, clock: Clock, scratch: &mut BytesMut, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
    encode_body(entry, clock, scratch, out);
    let body = &out[start + FRAME_HEAD_BYTES..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_body(entry: &Entry, clock: Clock, scratch: &mut BytesMut, out: &mut Vec<u8>) {
    match entry {
        Entry::Session {
            uid,
            client_id,
            username,
            expiry_secs,
        } => {
            out.push(SESSION);
            out.put_u64_le(*uid);
            out.put_u32_le(*expiry_secs);
            put_str(out, client_id.as_str());
            out.push(u8::from(username.is_some()));
            put_str(out, username.as_ref().map_or("", |u| u.as_str()));
        }
        Entry::Detached {
            uid,
            at_millis,
            inflight,
        } => {
            out.push(DETACHED);
            out.put_u64_le(*uid);
            out.put_u64_le(*at_millis);
            out.put_u32_le(inflight.len() as u32);
            for i in inflight {
                out.put_u64_le(i.lsn);
                out.put_u16_le(i.packet_id);
                out.push(u8::from(i.released));
            }
        }
        Entry::Qos2In {
            uid,
            packet_id,
            received,
        } => {
            out.push(QOS2_IN);
            out.put_u64_le(*uid);
            out.put_u16_le(*packet_id);
            out.push(u8::from(*received));
        }
        Entry::SessionEnd { uid } => {
            out.push(SESSION_END);
            out.put_u64_le(*uid);
        }
        Entry::Subscribe { uid, filter, sub } => {
            out.push(SUBSCRIBE);
            out.put_u64_le(*uid);
            put_str(out, filter);
            out.push(options_byte(sub.options));
            out.put_u32_le(sub.id.map_or(0, |i| i.get()));
        }
        Entry::Unsubscribe { uid, filter } => {
            out.push(UNSUBSCRIBE);
            out.put_u64_le(*uid);
            put_str(out, filter);
        }
        Entry::Retain(m) => {
            out.push(RETAIN);
            put_message(out, m, clock, scratch);
        }
        Entry::Message {
            lsn,
            message,
            targets,
        } => {
            out.push(MESSAGE);
            out.put_u64_le(*lsn);
            out.put_u32_le(targets.len() as u32);
            for t in targets {
                out.put_u64_le(t.uid);
                out.push(t.qos as u8 | u8::from(t.retain) << 4);
            }
            put_message(out, message, clock, scratch);
        }
        Entry::Ack { uid, lsn } => {
            out.push(ACK);
            out.put_u64_le(*uid);
            out.put_u64_le(*lsn);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.put_u32_le(s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn options_byte(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

fn put_message(out: &mut Vec<u8>, m: &Message, clock: Clock, scratch: &mut BytesMut) {
    out.put_u64_le(m.id);
    out.put_u64_le(m.origin);
    out.put_u64_le(clock.now_millis);
    out.put_u64_le(m.expires_at.map_or(0, |at| clock.to_millis(at)));
    out.push(m.qos as u8 | u8::from(m.retain) << 4);
    let e = m.encoded(ProtocolVersion::V5);
    let d = Delivery::default();
    scratch.clear();
    if let Ok(head) = e.head(&d) {
        e.encode_with(&head, &d, scratch);
    }
    out.put_u32_le(scratch.len() as u32);
    out.extend_from_slice(scratch);
}

/// A logged message read back, with the time it was logged.
#[derive(Debug)]
pub struct Logged {
    /// The message.
    pub message: Arc<Message>,
    /// When it was logged, in Unix milliseconds.
    pub arrival_millis: u64,
}

/// Reads one body back. `clock` turns expiry times into `Instant`s.
pub fn decode(body: &[u8], clock: Clock) -> Result<Entry, RecordError> {
    decode_logged(body, clock).map(|(e, _)| e)
}

/// Reads one body back, with the arrival time of the message it holds
/// (0 if none).
pub fn decode_logged(body: &[u8], clock: Clock) -> Result<(Entry, u64), RecordError> {
    let mut r = Reader(body);
    let entry = match r.u8()? {
        SESSION => {
            let uid = r.u64()?;
            let expiry_secs = r.u32()?;
            let client_id = r.mqtt_str()?;
            let has_user = r.u8()? != 0;
            let user = r.mqtt_str()?;
            Entry::Session {
                uid,
                client_id,
                username: has_user.then_some(user),
                expiry_secs,
            }
        }
        DETACHED => {
            let (uid, at_millis) = (r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            let mut inflight = Vec::with_capacity(n.min(r.0.len() / 11));
            for _ in 0..n {
                inflight.push(InflightRef {
                    lsn: r.u64()?,
                    packet_id: r.u16()?,
                    released: r.u8()? != 0,
                });
            }
            Entry::Detached {
                uid,
                at_millis,
                inflight,
            }
        }
        SESSION_END => Entry::SessionEnd { uid: r.u64()? },
        SUBSCRIBE => {
            let uid = r.u64()?;
            let filter = r.str()?.into();
            let options = options_from(r.u8()?)?;
            let id = SubscriptionId::new(r.u32()?);
            Entry::Subscribe {
                uid,
                filter,
                sub: Subscription { options, id },
            }
        }
        UNSUBSCRIBE => Entry::Unsubscribe {
            uid: r.u64()?,
            filter: r.str()?.into(),
        },
        RETAIN => {
            let (m, arrival) = r.message(clock)?;
            return Ok((Entry::Retain(m), arrival));
        }
        MESSAGE => {
            let mut targets = Vec::new();
            let lsn = r.targets(&mut targets)?;
            let (message, arrival) = r.message(clock)?;
            let entry = Entry::Message {
                lsn,
                message,
                targets,
            };
            return Ok((entry, arrival));
        }
        ACK => Entry::Ack {
            uid: r.u64()?,
            lsn: r.u64()?,
        },
        QOS2_IN => Entry::Qos2In {
            uid: r.u64()?,
            packet_id: r.u16()?,
            received: r.u8()? != 0,
        },
        _ => return Err(RecordError::Invalid("unknown record kind")),
    };
    Ok((entry, 0))
}

/// What recovery keeps of a logged message: its lsn, the weight it
/// counts for in the caps, and the sessions holding it (pushed to
/// `targets`). `None` for any other kind of body.
pub fn peek_message(
    body: &[u8],
    targets: &mut Vec<Target>,
) -> Option<Result<(u64, u32), RecordError>> {
    let mut r = Reader(body);
    if r.u8().ok()? != MESSAGE {
        return None;
    }
    Some(r.targets(targets).and_then(|lsn| {
        r.take(MESSAGE_HEAD_BYTES)?;
        let n = r.u32()?;
        Ok((lsn, n.saturating_add(WEIGHT_EXTRA_BYTES)))
    }))
}

/// The message of a message body, without its targets.
pub fn decode_message(body: &[u8], clock: Clock) -> Result<Arc<Message>, RecordError> {
    Ok(past_targets(body)?.message(clock)?.0)
}

/// The lsn of a message body; `None` for any other body.
pub fn message_lsn(body: &[u8]) -> Option<u64> {
    let mut r = Reader(body);
    (r.u8().ok()? == MESSAGE).then(|| r.u64().ok()).flatten()
}

/// The message id in a message body (its arrival time is in it).
pub fn message_id(body: &[u8]) -> Result<u64, RecordError> {
    past_targets(body)?.u64()
}

/// A reader of a message body, past its lsn and targets.
fn past_targets(body: &[u8]) -> Result<Reader<'_>, RecordError> {
    let mut r = Reader(body);
    if r.u8()? != MESSAGE {
        return Err(RecordError::Invalid("not a message"));
    }
    let _lsn = r.u64()?;
    let n = r.u32()? as usize;
    r.take(n.checked_mul(TARGET_BYTES).ok_or(RecordError::Truncated)?)?;
    Ok(r)
}

/// Bytes of a logged target: uid and flags.
const TARGET_BYTES: usize = 9;
/// Bytes of a logged message before its PUBLISH: id, origin, arrival,
/// expiry, flags.
const MESSAGE_HEAD_BYTES: usize = 33;
/// What a message weighs beyond its encoded PUBLISH, roughly what
/// `Message::weight` adds to topic and payload.
const WEIGHT_EXTRA_BYTES: u32 = 64;

fn qos_from(b: u8) -> Result<QoS, RecordError> {
    match b {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(RecordError::Invalid("QoS")),
    }
}

fn options_from(b: u8) -> Result<SubscriptionOptions, RecordError> {
    let retain_handling = match b >> 4 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(RecordError::Invalid("retain handling")),
    };
    let mut options = SubscriptionOptions::qos(qos_from(b & 3)?);
    options.no_local = b & 4 != 0;
    options.retain_as_published = b & 8 != 0;
    options.retain_handling = retain_handling;
    Ok(options)
}

/// The topic and payload of a logged PUBLISH without properties (most
/// messages), read without the protocol decoder; `None` for any other.
fn bare_publish(packet: &[u8]) -> Option<(&[u8], &[u8])> {
    // v5 PUBLISH, QoS 0: type byte, remaining length, topic, a zero
    // property length, payload.
    if packet.first()? >> 4 != 3 || packet[0] & 0x06 != 0 {
        return None;
    }
    let mut at = 1;
    let mut remaining = 0usize;
    for shift in [0, 7, 14, 21] {
        let b = *packet.get(at)?;
        at += 1;
        remaining |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    if packet.len() != at + remaining {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]));
    let topic = packet.get(at + 2..at + 2 + len)?;
    let rest = packet.get(at + 2 + len..)?;
    match rest.split_first()? {
        (0, payload) => Some((topic, payload)),
        _ => None,
    }
}

/// A validated topic and its payload, sharing one allocation.
fn shared_pair(topic: &[u8], payload: &[u8]) -> Result<(TopicName, Bytes), RecordError> {
    let mut buf = BytesMut::with_capacity(topic.len() + payload.len());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(payload);
    let mut payload = buf.freeze();
    let topic = payload.split_to(topic.len());
    let topic = TopicName::from_shared(topic).map_err(|_| RecordError::Invalid("topic"))?;
    Ok((topic, payload))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::Invalid("UTF-8"))
    }

    fn mqtt_str(&mut self) -> Result<MqttString, RecordError> {
        MqttString::new(self.str()?.to_owned()).map_err(|_| RecordError::Invalid("string"))
    }

    /// A message's lsn, its targets pushed to `out`.
    fn targets(&mut self, out: &mut Vec<Target>) -> Result<u64, RecordError> {
        let lsn = self.u64()?;
        let n = self.u32()? as usize;
        out.reserve(n.min(self.0.len() / TARGET_BYTES));
        for _ in 0..n {
            let uid = self.u64()?;
            let flags = self.u8()?;
            out.push(Target {
                uid,
                qos: qos_from(flags & 3)?,
                retain: flags & 0x10 != 0,
            });
        }
        Ok(lsn)
    }

    fn message(&mut self, clock: Clock) -> Result<(Arc<Message>, u64), RecordError> {
        let id = self.u64()?;
        let origin = self.u64()?;
        let arrival = self.u64()?;
        let expires = self.u64()?;
        let flags = self.u8()?;
        let n = self.u32()? as usize;
        let packet = self.take(n)?;
        let (topic, payload, properties) = match bare_publish(packet) {
            Some((topic, payload)) => {
                let (topic, payload) = shared_pair(topic, payload)?;
                (topic, payload, None)
            }
            None => {
                let mut buf = BytesMut::from(packet);
                let mut decoder = Decoder::with_version(ProtocolVersion::V5, n.max(16));
                match decoder.decode(&mut buf) {
                    Ok(Some(Packet::Publish(p))) => (p.topic, p.payload, p.properties),
                    _ => return Err(RecordError::Invalid("message")),
                }
            }
        };
        let message = Message {
            id,
            topic,
            payload,
            qos: qos_from(flags & 3)?,
            retain: flags & 0x10 != 0,
            properties: properties.filter(|p| !p.is_empty()),
            origin,
            expires_at: (expires != 0).then(|| clock.to_instant(expires)),
            encoded: Default::default(),
        };
        Ok((Arc::new(message), arrival))
    }
}
