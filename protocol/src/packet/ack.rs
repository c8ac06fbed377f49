//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–§3.7): a packet identifier and,
//! in v5, a reason code and properties that may be omitted.

use bytes::{BufMut, BytesMut};

use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{AckProperties, PropertySet};
use crate::reason::ReasonCode;
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{self, Reader};

/// Reads what follows the packet identifier in a v5 acknowledgement: the
/// reason code and property length may be omitted (§3.4.2.1).
pub(crate) fn decode_reason_and_props<P: PropertySet>(
    r: &mut Reader,
    t: PacketType,
) -> Result<(ReasonCode, P), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, P::default()));
    }
    let code = ReasonCode::decode(r.u8("reason code")?, t)?;
    if r.is_empty() {
        return Ok((code, P::default()));
    }
    Ok((code, P::decode(r)?))
}

/// Writes a fixed header, `head` and, in v5, the shortest form of the reason
/// code and properties.
pub(crate) fn encode_with_reason<P: PropertySet>(
    first: u8,
    head: &[u8],
    code: ReasonCode,
    props: &P,
    v: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let props_len = props.len();
    let tail = match v {
        ProtocolVersion::V311 => 0,
        ProtocolVersion::V5 if props_len > 0 => 1 + wire::varint_len(props_len as u32) + props_len,
        ProtocolVersion::V5 if code != ReasonCode::Success => 1,
        ProtocolVersion::V5 => 0,
    };
    put_fixed_header(out, first, head.len() + tail)?;
    out.put_slice(head);
    if tail > 0 {
        out.put_u8(code as u8);
    }
    if tail > 1 {
        props.encode(props_len, out)?;
    }
    Ok(())
}

macro_rules! ack_packet {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Identifier of the packet acknowledged.
            pub packet_id: PacketId,
            /// v5 outcome; always Success in 3.1.1.
            pub reason_code: ReasonCode,
            /// v5 properties.
            pub properties: AckProperties,
        }

        impl $name {
            /// A successful acknowledgement without properties.
            pub fn new(packet_id: PacketId) -> Self {
                $name {
                    packet_id,
                    reason_code: ReasonCode::Success,
                    properties: AckProperties::default(),
                }
            }

            pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
                let packet_id = PacketId::decode(r.u16("packet identifier")?)?;
                let (reason_code, properties) = match v {
                    ProtocolVersion::V5 => decode_reason_and_props(r, PacketType::$name)?,
                    ProtocolVersion::V311 => (ReasonCode::Success, AckProperties::default()),
                };
                Ok($name { packet_id, reason_code, properties })
            }

            /// Appends the packet encoded for `v`, in its shortest form.
            pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
                let first = (PacketType::$name as u8) << 4 | PacketType::$name.fixed_flags();
                let head = self.packet_id.get().to_be_bytes();
                encode_with_reason(first, &head, self.reason_code, &self.properties, v, out)
            }
        }
    };
}

ack_packet!(
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck
);
ack_packet!(
    /// First acknowledgement of a QoS 2 PUBLISH.
    PubRec
);
ack_packet!(
    /// Releases a QoS 2 PUBLISH; answers PUBREC.
    PubRel
);
ack_packet!(
    /// Completes a QoS 2 exchange; answers PUBREL.
    PubComp
);
