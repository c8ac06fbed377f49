//! The streaming decoder: bytes in, whole packets out.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::{self, Packet, PacketType, PubAck, PubComp, PubRec, PubRel, PublishRef};
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{parse_varint, VARINT_MAX};

/// The largest packet MQTT can express: a 5-byte fixed header and
/// 268,435,455 bytes of body.
pub const PACKET_BYTES_LIMIT: usize = 1 + 4 + VARINT_MAX as usize;

/// Decodes packets from a connection's read buffer.
///
/// A server-side decoder starts without a protocol version and accepts only
/// CONNECT [MQTT-3.1.0-1]; the CONNECT it decodes sets the version for the
/// rest of the connection. A client-side decoder is made with its version.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    /// Server side: CONNECT is accepted once [MQTT-3.1.0-2].
    server: bool,
    packet_bytes_max: usize,
}

/// The fixed header of the packet at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Type and flags.
    pub first: u8,
    /// Length of the fixed header, in bytes (2 to 5).
    pub header_len: usize,
    /// The remaining length, in bytes.
    pub remaining: usize,
}

impl FixedHeader {
    /// Bytes of the whole packet.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parses the fixed header at the start of `buf`; `Ok(None)` if more bytes
/// are needed to know it.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    Ok(parse_varint(rest)?.map(|(remaining, n)| FixedHeader {
        first,
        header_len: 1 + n,
        remaining: remaining as usize,
    }))
}

/// The packet at the front of a buffer, looked at in place by
/// [`Decoder::peek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peeked<'a> {
    /// Bytes of the whole packet: advance the buffer by this much to skip it.
    pub len: usize,
    /// The packet's type.
    pub packet_type: PacketType,
    /// A PUBLISH, validated; `None` for any other packet, which `decode`
    /// validates.
    pub publish: Option<PublishRef<'a>>,
}

impl Decoder {
    /// A server-side decoder: the first packet must be CONNECT.
    /// `packet_bytes_max` bounds a whole packet, fixed header included.
    pub fn new(packet_bytes_max: usize) -> Self {
        Decoder {
            version: None,
            server: true,
            packet_bytes_max: packet_bytes_max.min(PACKET_BYTES_LIMIT),
        }
    }

    /// A decoder for a connection whose version is known (a client's).
    pub fn with_version(version: ProtocolVersion, packet_bytes_max: usize) -> Self {
        Decoder {
            version: Some(version),
            server: false,
            ..Decoder::new(packet_bytes_max)
        }
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Sets the protocol version (a client learns it from its own CONNECT).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    /// The largest packet accepted, in bytes.
    pub fn packet_bytes_max(&self) -> usize {
        self.packet_bytes_max
    }

    /// The fixed header of the packet at the front of `buf` once all of the
    /// packet is there; a packet over `packet_bytes_max` is refused from its
    /// fixed header alone.
    fn whole_packet(&self, buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(h) = parse_fixed_header(buf)? else {
            return Ok(None);
        };
        let size = h.packet_len();
        if size > self.packet_bytes_max {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.packet_bytes_max,
            });
        }
        Ok((buf.len() >= size).then_some(h))
    }

    /// Looks at the packet at the front of `buf` without consuming it or
    /// taking a handle on it: a PUBLISH comes back as a [`PublishRef`],
    /// validated exactly as [`decode`](Self::decode) validates it, so that a
    /// broker can route on its topic and drop or forward it before deciding to
    /// keep it. `Ok(None)`: more bytes are needed.
    pub fn peek<'a>(&self, buf: &'a [u8]) -> Result<Option<Peeked<'a>>, DecodeError> {
        let Some(h) = self.whole_packet(buf)? else {
            return Ok(None);
        };
        let len = h.packet_len();
        let body = &buf[h.header_len..len];
        let packet_type = PacketType::from_nibble(h.first >> 4, self.version)?;
        let publish = match (packet_type, self.version) {
            (PacketType::Publish, Some(v)) => Some(PublishRef::parse(h.first & 0x0F, body, v)?),
            (PacketType::Publish, None) => return Err(DecodeError::ExpectedConnect(packet_type)),
            _ => None,
        };
        Ok(Some(Peeked {
            len,
            packet_type,
            publish,
        }))
    }

    /// Decodes the packet at the front of `buf` and removes its bytes.
    ///
    /// `Ok(None)`: more bytes are needed (nothing was consumed). A packet over
    /// `packet_bytes_max` is refused from its fixed header, before its body
    /// arrives. After an error the connection cannot be resynchronised and
    /// should be closed. Topic, payload and strings of the packet share
    /// `buf`'s memory.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(h) = self.whole_packet(buf)? else {
            return Ok(None);
        };
        if self.server && self.version.is_some() && h.first >> 4 == PacketType::Connect as u8 {
            return Err(DecodeError::SecondConnect);
        }
        if h.remaining == 2 && self.version.is_some() {
            let id = u16::from_be_bytes([buf[h.header_len], buf[h.header_len + 1]]);
            if let Some(packet) = short_ack(h.first, id)? {
                buf.advance(h.header_len + 2);
                return Ok(Some(packet));
            }
        }
        buf.advance(h.header_len);
        let body = buf.split_to(h.remaining).freeze();
        let packet = packet::decode_body(h.first, body, self.version)?;
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.protocol);
        }
        Ok(Some(packet))
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP in their two-byte form (packet id only,
/// Success: what 3.1.1 always sends and v5 sends for success). They are
/// most of what a QoS 1/2 subscriber sends, so they are read without taking
/// a handle on the buffer. Anything else (`None`) takes the general path,
/// which validates it rule for rule.
fn short_ack(first: u8, id: u16) -> Result<Option<Packet>, DecodeError> {
    const PUBACK: u8 = (PacketType::PubAck as u8) << 4;
    const PUBREC: u8 = (PacketType::PubRec as u8) << 4;
    const PUBREL: u8 = (PacketType::PubRel as u8) << 4 | 0b0010;
    const PUBCOMP: u8 = (PacketType::PubComp as u8) << 4;
    if !matches!(first, PUBACK | PUBREC | PUBREL | PUBCOMP) {
        return Ok(None);
    }
    let id = PacketId::decode(id)?;
    Ok(Some(match first {
        PUBACK => Packet::PubAck(PubAck::new(id)),
        PUBREC => Packet::PubRec(PubRec::new(id)),
        PUBREL => Packet::PubRel(PubRel::new(id)),
        _ => Packet::PubComp(PubComp::new(id)),
    }))
}
