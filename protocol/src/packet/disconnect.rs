//! DISCONNECT (§3.14) and AUTH (§3.15): a v5 reason code and properties, both
//! omitted when the code is Success and there are no properties.

use bytes::{BufMut, BytesMut};

use super::ack::{decode_reason_and_props, encode_with_reason};
use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{AuthProperties, DisconnectProperties, PropertySet};
use crate::reason::ReasonCode;
use crate::types::ProtocolVersion;
use crate::wire::{self, Reader};

/// The end of a connection, from either side (from the server in v5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// v5 reason; Normal disconnection (Success) in 3.1.1.
    pub reason_code: ReasonCode,
    /// v5 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let (reason_code, properties) = match v {
            ProtocolVersion::V5 => decode_reason_and_props(r, PacketType::Disconnect)?,
            ProtocolVersion::V311 => Default::default(),
        };
        Ok(Disconnect {
            reason_code,
            properties,
        })
    }

    /// Appends the DISCONNECT encoded for `v`, in its shortest form.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let first = (PacketType::Disconnect as u8) << 4;
        encode_with_reason(first, &[], self.reason_code, &self.properties, v, out)
    }
}

/// A step of v5 extended authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// The method, data and diagnostics.
    pub properties: AuthProperties,
}

impl Auth {
    /// Reads an AUTH: empty (Success), or a reason code and properties —
    /// unlike DISCONNECT, the property length is not optional (§3.15.2.2.1).
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(Auth::default());
        }
        let reason_code = ReasonCode::decode(r.u8("reason code")?, PacketType::Auth)?;
        let properties = AuthProperties::decode(r)?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        Ok(Auth {
            reason_code,
            properties,
        })
    }

    /// Appends the AUTH; it does not exist in 3.1.1.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if v == ProtocolVersion::V311 {
            return Err(EncodeError::NotInV311(PacketType::Auth));
        }
        let first = (PacketType::Auth as u8) << 4;
        if self.reason_code == ReasonCode::Success && self.properties.is_empty() {
            return put_fixed_header(out, first, 0);
        }
        let props_len = self.properties.len();
        put_fixed_header(
            out,
            first,
            1 + wire::varint_len(props_len as u32) + props_len,
        )?;
        out.put_u8(self.reason_code as u8);
        self.properties.encode(props_len, out)
    }
}
