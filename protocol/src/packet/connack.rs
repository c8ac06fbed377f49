//! CONNACK (§3.2).

use bytes::{BufMut, BytesMut};

use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnAckProperties, PropertySet};
use crate::reason::ReasonCode;
use crate::types::ProtocolVersion;
use crate::wire::{self, Reader};

/// The server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// The outcome. In 3.1.1 it travels as the closest return code
    /// ([`ReasonCode::to_v311_connack`]).
    pub reason_code: ReasonCode,
    /// v5 CONNACK properties.
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8("connack flags")?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = r.u8("connect reason code")?;
        let (reason_code, properties) = match v {
            ProtocolVersion::V311 => (ReasonCode::from_v311_connack(code)?, Default::default()),
            ProtocolVersion::V5 => (
                ReasonCode::decode(code, PacketType::ConnAck)?,
                ConnAckProperties::decode(r)?,
            ),
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        let session_present = flags & 1 != 0;
        if session_present && reason_code.is_error() {
            return Err(DecodeError::SessionPresentOnRefusal);
        }
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    /// Appends the CONNACK encoded for `v`.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let first = (PacketType::ConnAck as u8) << 4;
        let flags = u8::from(self.session_present && !self.reason_code.is_error());
        match v {
            ProtocolVersion::V311 => {
                put_fixed_header(out, first, 2)?;
                out.put_u8(flags);
                out.put_u8(self.reason_code.to_v311_connack());
            }
            ProtocolVersion::V5 => {
                let props_len = self.properties.len();
                let len = 2 + wire::varint_len(props_len as u32) + props_len;
                put_fixed_header(out, first, len)?;
                out.put_u8(flags);
                out.put_u8(self.reason_code as u8);
                self.properties.encode(props_len, out)?;
            }
        }
        Ok(())
    }
}
