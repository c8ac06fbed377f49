//! PUBLISH read in place. A broker routes a message on its topic before it
//! decides to keep it; reading it here takes no handle on the read buffer
//! (no reference count, no allocation for a 3.1.1 message or a v5 one
//! without properties). Validation is the same as [`Publish`]'s, rule for
//! rule.

use bytes::{BufMut, Bytes, BytesMut};

use super::publish::{first_byte, qos_and_dup};
use super::put_fixed_header;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{PropertySet, PublishProperties};
use crate::types::{check_topic_name_bytes, PacketId, ProtocolVersion, QoS};
use crate::wire::{self, parse_varint, Reader};

#[cfg(doc)]
use super::Publish;

/// A validated PUBLISH that borrows the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &'a str,
    packet_id: Option<PacketId>,
    properties: &'a [u8],
    payload: &'a [u8],
}

/// Splits `n` bytes off the front of `buf`.
fn take<'a>(buf: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Truncated(what));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u16(buf: &mut &[u8], what: &'static str) -> Result<u16, DecodeError> {
    let b = take(buf, 2, what)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

impl<'a> PublishRef<'a> {
    /// Reads the body (variable header and payload) of a PUBLISH whose
    /// fixed-header flags are `flags`.
    pub(crate) fn parse(
        flags: u8,
        body: &'a [u8],
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (qos, dup) = qos_and_dup(flags)?;
        let v5 = v == ProtocolVersion::V5;
        let mut rest = body;
        let topic_len = take_u16(&mut rest, "topic name")? as usize;
        let topic = take(&mut rest, topic_len, "topic name")?;
        check_topic_name_bytes(topic, v5)?;
        let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::InvalidUtf8)?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(PacketId::decode(take_u16(&mut rest, "packet identifier")?)?),
        };
        let mut aliased = false;
        let mut properties: &[u8] = &[];
        if v5 {
            let (len, n) = parse_varint(rest)?.ok_or(DecodeError::Truncated("property length"))?;
            let with_len = take(&mut rest, n + len as usize, "properties")?;
            properties = &with_len[n..];
            if !properties.is_empty() {
                let owned =
                    PublishProperties::decode(&mut Reader::new(Bytes::copy_from_slice(with_len)))?;
                aliased = owned.topic_alias.is_some();
            }
        }
        if topic.is_empty() && !aliased {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
        Ok(PublishRef {
            dup,
            qos,
            retain: flags & super::publish::RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: rest,
        })
    }

    /// Set on a redelivery.
    pub fn dup(&self) -> bool {
        self.dup
    }

    /// The message's QoS.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// Whether the message is retained.
    pub fn retain(&self) -> bool {
        self.retain
    }

    /// The topic; empty only in a v5 PUBLISH that carries a Topic Alias.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// Present iff the QoS is 1 or 2.
    pub fn packet_id(&self) -> Option<PacketId> {
        self.packet_id
    }

    /// The v5 properties as encoded (validated), without their length.
    pub fn properties_bytes(&self) -> &'a [u8] {
        self.properties
    }

    /// The v5 properties, decoded (allocates when there are any).
    pub fn properties(&self) -> PublishProperties {
        if self.properties.is_empty() {
            return PublishProperties::default();
        }
        let mut encoded = BytesMut::with_capacity(4 + self.properties.len());
        wire::put_varint(&mut encoded, self.properties.len() as u32);
        encoded.put_slice(self.properties);
        // Validated when the packet was read: decoding again cannot fail.
        PublishProperties::decode(&mut Reader::new(encoded.freeze())).unwrap_or_default()
    }

    /// The application payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Appends the PUBLISH encoded for `v`, properties as read (omitted for
    /// 3.1.1). Produces the same bytes as [`Publish::encode`].
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let topic_len = u16::try_from(self.topic.len()).map_err(|_| EncodeError::BinaryTooLong)?;
        let mut len = 2 + self.topic.len() + self.payload.len();
        if self.packet_id.is_some() {
            len += 2;
        }
        let props = (v == ProtocolVersion::V5).then_some(self.properties);
        if let Some(p) = props {
            len += wire::varint_len(wire::check_remaining(p.len())?) + p.len();
        }
        put_fixed_header(out, first_byte(self.qos, self.dup, self.retain), len)?;
        out.put_u16(topic_len);
        out.put_slice(self.topic.as_bytes());
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if let Some(p) = props {
            wire::put_varint(out, p.len() as u32);
            out.put_slice(p);
        }
        out.put_slice(self.payload);
        Ok(())
    }
}
