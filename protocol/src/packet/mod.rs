//! The fifteen MQTT control packets in typed form, and the dispatch between
//! them. Each packet type is version-agnostic: its v5-only fields (reason
//! codes, properties) are left at their defaults by a 3.1.1 peer, and fields
//! that 3.1.1 cannot carry are omitted when encoding for it.

mod ack;
mod connack;
mod connect;
mod disconnect;
pub(crate) mod publish;
mod publish_ref;
mod subscribe;

use bytes::{BufMut, Bytes, BytesMut};

pub use ack::{PubAck, PubComp, PubRec, PubRel};
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::{Auth, Disconnect};
pub use publish::Publish;
pub use publish_ref::PublishRef;
pub use subscribe::{SubAck, Subscribe, UnsubAck, Unsubscribe};

use crate::error::{DecodeError, EncodeError};
use crate::types::ProtocolVersion;
use crate::wire::{self, Reader};

/// The type of a control packet: the high nibble of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub(crate) fn from_nibble(
        n: u8,
        version: Option<ProtocolVersion>,
    ) -> Result<Self, DecodeError> {
        use PacketType::*;
        Ok(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 if version != Some(ProtocolVersion::V311) => Auth,
            _ => return Err(DecodeError::ReservedPacketType(n)),
        })
    }

    /// The flags every packet but PUBLISH must carry [MQTT-2.1.3-1].
    const fn fixed_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(Box<ConnAck>),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Box<Auth>),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Appends the packet, encoded for `version`, to `out`. CONNECT encodes
    /// for its own protocol version whatever `version` says.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(p) => p.encode(out),
            Packet::ConnAck(p) => p.encode(version, out),
            Packet::Publish(p) => p.encode(version, out),
            Packet::PubAck(p) => p.encode(version, out),
            Packet::PubRec(p) => p.encode(version, out),
            Packet::PubRel(p) => p.encode(version, out),
            Packet::PubComp(p) => p.encode(version, out),
            Packet::Subscribe(p) => p.encode(version, out),
            Packet::SubAck(p) => p.encode(version, out),
            Packet::Unsubscribe(p) => p.encode(version, out),
            Packet::UnsubAck(p) => p.encode(version, out),
            Packet::PingReq => encode_empty(PacketType::PingReq, out),
            Packet::PingResp => encode_empty(PacketType::PingResp, out),
            Packet::Disconnect(p) => p.encode(version, out),
            Packet::Auth(p) => p.encode(version, out),
        }
    }
}

impl Packet {
    /// Removes the Reason String and User Properties a sender may leave out
    /// to fit the receiver's Maximum Packet Size [MQTT-3.1.2-25] (CONNACK,
    /// acknowledgements, DISCONNECT, AUTH). Returns whether any was there.
    pub fn drop_diagnostics(&mut self) -> bool {
        fn strip<T>(reason: &mut Option<T>, users: &mut Vec<impl Sized>) -> bool {
            let had = reason.is_some() || !users.is_empty();
            *reason = None;
            users.clear();
            had
        }
        match self {
            Packet::ConnAck(p) => {
                let q = &mut p.properties;
                strip(&mut q.reason_string, &mut q.user_properties)
            }
            Packet::PubAck(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::PubRec(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::PubRel(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::PubComp(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::SubAck(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::UnsubAck(p) => strip(
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Packet::Disconnect(p) => {
                let q = &mut p.properties;
                strip(&mut q.reason_string, &mut q.user_properties)
            }
            Packet::Auth(p) => {
                let q = &mut p.properties;
                strip(&mut q.reason_string, &mut q.user_properties)
            }
            _ => false,
        }
    }
}

fn encode_empty(t: PacketType, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_slice(&[(t as u8) << 4, 0]);
    Ok(())
}

/// Writes a fixed header for `remaining` bytes of body, reserving room for
/// the body.
pub(crate) fn put_fixed_header(
    out: &mut BytesMut,
    first: u8,
    remaining: usize,
) -> Result<(), EncodeError> {
    let len = wire::check_remaining(remaining)?;
    out.reserve(1 + wire::varint_len(len) + remaining);
    out.put_u8(first);
    wire::put_varint(out, len);
    Ok(())
}

/// Decodes the body of one packet whose fixed header has been read.
pub(crate) fn decode_body(
    first: u8,
    body: Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let packet_type = PacketType::from_nibble(first >> 4, version)?;
    let flags = first & 0x0F;
    if packet_type != PacketType::Publish && flags != packet_type.fixed_flags() {
        return Err(DecodeError::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    let mut r = Reader::new(body);
    let packet = match (packet_type, version) {
        (PacketType::Connect, _) => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        (t, Some(v)) => decode_versioned(t, flags, &mut r, v)?,
        (t, None) => return Err(DecodeError::ExpectedConnect(t)),
    };
    finish(&r, packet_type)?;
    Ok(packet)
}

fn decode_versioned(
    t: PacketType,
    flags: u8,
    r: &mut Reader,
    v: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match t {
        PacketType::Publish => Packet::Publish(Publish::decode(flags, r, v)?),
        PacketType::ConnAck => Packet::ConnAck(Box::new(ConnAck::decode(r, v)?)),
        PacketType::PubAck => Packet::PubAck(PubAck::decode(r, v)?),
        PacketType::PubRec => Packet::PubRec(PubRec::decode(r, v)?),
        PacketType::PubRel => Packet::PubRel(PubRel::decode(r, v)?),
        PacketType::PubComp => Packet::PubComp(PubComp::decode(r, v)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, v)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(r, v)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(r, v)?),
        PacketType::Auth => Packet::Auth(Box::new(Auth::decode(r)?)),
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(r)?)),
    })
}

/// Rejects bytes left after the last field.
fn finish(r: &Reader, t: PacketType) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(DecodeError::TrailingBytes(n, t)),
    }
}
