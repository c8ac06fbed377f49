//! Fan-out encoding: a PUBLISH is encoded once, and each subscriber's copy is
//! produced by writing only what differs — the fixed header (QoS, DUP,
//! RETAIN, remaining length), the packet identifier and, in v5, the property
//! length and any properties only that copy carries. Topic, properties and
//! payload are shared `Bytes`, never re-encoded or copied per subscriber
//! unless the caller asks for one contiguous buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::EncodeError;
use crate::packet::{publish, Publish};
use crate::properties::PropertySet;
use crate::types::{PacketId, ProtocolVersion, QoS};
use crate::wire;

/// A PUBLISH encoded once for one protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPublish {
    version: ProtocolVersion,
    /// The topic, shared with the PUBLISH it came from; its two-byte length
    /// travels in each copy's [`Head`].
    topic: Bytes,
    /// v5: the encoded properties, without their length; empty for 3.1.1.
    properties: Bytes,
    /// The payload, shared with the PUBLISH it came from.
    payload: Bytes,
}

/// What differs in one subscriber's copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery<'a> {
    /// QoS of this copy: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// Present iff `qos` > 0.
    pub packet_id: Option<PacketId>,
    /// Whether this is a redelivery (ignored for QoS 0).
    pub dup: bool,
    /// The RETAIN flag of this copy.
    pub retain: bool,
    /// v5 properties only this copy carries (Subscription Identifiers, Topic
    /// Alias), already encoded with their identifiers. Ignored for 3.1.1.
    pub extra_properties: &'a [u8],
    /// v5: send an empty topic; `extra_properties` then carries a Topic
    /// Alias the client already knows [MQTT-3.3.2-12]. Ignored for 3.1.1.
    pub omit_topic: bool,
}

/// The bytes of one copy that are not shared: the fixed header and topic
/// length, then the packet identifier and v5 property length.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    buf: [u8; 13],
    fixed_len: u8,
    len: u8,
}

impl Head {
    /// The fixed header (1 + 1..=4 bytes) and the topic's two-byte length.
    pub fn fixed(&self) -> &[u8] {
        &self.buf[..self.fixed_len as usize]
    }

    /// Packet identifier and v5 property length (0 to 6 bytes); they follow
    /// the topic.
    pub fn middle(&self) -> &[u8] {
        &self.buf[self.fixed_len as usize..self.len as usize]
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }
}

impl EncodedPublish {
    /// Encodes `publish`'s properties for `version`. Topic and payload are
    /// shared, not copied: a 3.1.1 message, or a v5 one without properties,
    /// allocates nothing. Flags and packet id of `publish` are not used.
    pub fn new(publish: &Publish, version: ProtocolVersion) -> Result<Self, EncodeError> {
        let properties = match version {
            ProtocolVersion::V5 if publish.properties.is_some() => {
                let props = publish.properties();
                let len = props.len();
                let mut buf = BytesMut::with_capacity(wire::varint_len(len as u32) + len);
                props.encode(len, &mut buf)?;
                let mut props = buf.freeze();
                props.advance(wire::varint_len(len as u32));
                props
            }
            _ => Bytes::new(),
        };
        Ok(EncodedPublish {
            version,
            topic: publish.topic.as_mqtt_str().as_bytes().clone(),
            properties,
            payload: publish.payload.clone(),
        })
    }

    /// The protocol version this was encoded for.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The topic, shared by every copy.
    pub fn topic_bytes(&self) -> &Bytes {
        &self.topic
    }

    /// The shared v5 properties (without length); empty for 3.1.1.
    pub fn properties_bytes(&self) -> &Bytes {
        &self.properties
    }

    fn topic(&self, d: &Delivery<'_>) -> &[u8] {
        match (self.version, d.omit_topic) {
            (ProtocolVersion::V5, true) => &[],
            _ => &self.topic,
        }
    }

    fn extra<'a>(&self, d: &Delivery<'a>) -> &'a [u8] {
        match self.version {
            ProtocolVersion::V5 => d.extra_properties,
            ProtocolVersion::V311 => &[],
        }
    }

    /// The per-copy bytes for `d`. A copy is, in order: `head.fixed()`,
    /// [`topic_bytes`](Self::topic_bytes), `head.middle()`,
    /// [`properties_bytes`](Self::properties_bytes), `d.extra_properties`
    /// (v5 only) and [`payload`](Self::payload) — ready for a vectored write.
    pub fn head(&self, d: &Delivery<'_>) -> Result<Head, EncodeError> {
        if d.packet_id.is_some() != (d.qos != QoS::AtMostOnce) {
            return Err(EncodeError::PacketIdMismatch);
        }
        let mut head = Head {
            buf: [0; 13],
            fixed_len: 0,
            len: 0,
        };
        let mut middle = [0u8; 6];
        let mut middle_len = 0;
        if let Some(id) = d.packet_id {
            middle[..2].copy_from_slice(&id.get().to_be_bytes());
            middle_len = 2;
        }
        if self.version == ProtocolVersion::V5 {
            let props_len = self.properties.len() + self.extra(d).len();
            let mut v = [0u8; 4];
            let n = wire::encode_varint(wire::check_remaining(props_len)?, &mut v);
            middle[middle_len..middle_len + n].copy_from_slice(&v[..n]);
            middle_len += n;
        }
        let remaining = 2
            + self.topic(d).len()
            + middle_len
            + self.properties.len()
            + self.extra(d).len()
            + self.payload.len();
        let mut v = [0u8; 4];
        let n = wire::encode_varint(wire::check_remaining(remaining)?, &mut v);
        head.push(&[publish::first_byte(d.qos, d.dup, d.retain)]);
        head.push(&v[..n]);
        head.push(&(self.topic(d).len() as u16).to_be_bytes());
        head.fixed_len = head.len;
        head.push(&middle[..middle_len]);
        Ok(head)
    }

    /// Length of the copy for `d`, in bytes.
    pub fn len(&self, d: &Delivery<'_>) -> Result<usize, EncodeError> {
        let head = self.head(d)?;
        Ok(self.len_with(&head, d))
    }

    /// Length of the copy for `d` whose head is `head`, in bytes.
    pub fn len_with(&self, head: &Head, d: &Delivery<'_>) -> usize {
        head.len as usize
            + self.topic(d).len()
            + self.properties.len()
            + self.extra(d).len()
            + self.payload.len()
    }

    /// Appends the copy for `d` to `out` as one contiguous packet (copies the
    /// payload: meant for small messages gathered into one write).
    pub fn encode(&self, d: &Delivery<'_>, out: &mut BytesMut) -> Result<(), EncodeError> {
        let head = self.head(d)?;
        self.encode_with(&head, d, out);
        Ok(())
    }

    /// Appends the copy for `d` whose head is `head` (from [`Self::head`]).
    pub fn encode_with(&self, head: &Head, d: &Delivery<'_>, out: &mut BytesMut) {
        let extra = self.extra(d);
        out.reserve(self.len_with(head, d));
        out.put_slice(head.fixed());
        out.put_slice(self.topic(d));
        out.put_slice(head.middle());
        out.put_slice(&self.properties);
        out.put_slice(extra);
        out.put_slice(&self.payload);
    }

    /// The six slices of the copy for `d`, in wire order, for a vectored write.
    pub fn slices<'a>(&'a self, head: &'a Head, d: &Delivery<'a>) -> [&'a [u8]; 6] {
        [
            head.fixed(),
            self.topic(d),
            head.middle(),
            &self.properties,
            self.extra(d),
            &self.payload,
        ]
    }
}
