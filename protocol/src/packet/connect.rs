//! CONNECT (§3.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnectProperties, PropertySet, WillProperties};
use crate::types::{MqttString, ProtocolVersion, QoS, TopicName};
use crate::wire::{self, Reader};

const PROTOCOL_NAME: &str = "MQTT";
/// The name MQTT 3.1 (level 3) used; read as 3.1.1, whose wire format it
/// shares.
const PROTOCOL_NAME_V31: &str = "MQIsdp";
/// MQTT 3.1's protocol level.
const LEVEL_V31: u8 = 3;

/// The Will: a message the server publishes when the connection ends
/// without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Where the Will is published.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// v5 Will Properties.
    pub properties: WillProperties,
}

/// A client's request to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks.
    pub protocol: ProtocolVersion,
    /// The client speaks MQTT 3.1 (`MQIsdp`, level 3): `protocol` is 3.1.1,
    /// whose packets are 3.1's; only a few rules differ.
    pub v31: bool,
    /// Clean Session (3.1.1) / Clean Start (v5).
    pub clean_start: bool,
    /// Keep Alive, in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// v5 CONNECT properties.
    pub properties: ConnectProperties,
    /// The Client Identifier; may be empty.
    pub client_id: MqttString,
    /// The Will, if any.
    pub will: Option<LastWill>,
    /// The User Name, if any.
    pub username: Option<MqttString>,
    /// The Password, if any (binary).
    pub password: Option<Bytes>,
}

mod flag {
    pub(super) const RESERVED: u8 = 0b0000_0001;
    pub(super) const CLEAN_START: u8 = 0b0000_0010;
    pub(super) const WILL: u8 = 0b0000_0100;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0b0010_0000;
    pub(super) const PASSWORD: u8 = 0b0100_0000;
    pub(super) const USERNAME: u8 = 0b1000_0000;
}

impl Connect {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let (protocol, v31) = decode_protocol(r)?;
        let v5 = protocol == ProtocolVersion::V5;
        let flags = r.u8("connect flags")?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_qos = QoS::from_bits((flags >> flag::WILL_QOS_SHIFT) & 0b11)
            .map_err(|_| DecodeError::InvalidWillQoS)?;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        let has_will = flags & flag::WILL != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        if !v5 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        let client_id = r.string("client identifier")?;
        let will = match has_will {
            true => Some(LastWill::decode(r, v5, will_qos, will_retain)?),
            false => None,
        };
        let username = has_username.then(|| r.string("user name")).transpose()?;
        let password = has_password.then(|| r.binary("password")).transpose()?;
        Ok(Connect {
            protocol,
            v31,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    /// Appends the CONNECT, encoded for its own protocol version.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol == ProtocolVersion::V5;
        let props_len = self.properties.len();
        let will_props_len = self.will.as_ref().map_or(0, |w| w.properties.len());
        let name_len = match self.v31 {
            true => PROTOCOL_NAME_V31.len(),
            false => PROTOCOL_NAME.len(),
        };
        let mut len = 2 + name_len + 1 + 1 + 2 + 2 + self.client_id.len();
        if v5 {
            len += wire::varint_len(props_len as u32) + props_len;
        }
        if let Some(w) = &self.will {
            len += 2 + w.topic.len() + 2 + w.payload.len();
            if v5 {
                len += wire::varint_len(will_props_len as u32) + will_props_len;
            }
        }
        len += self.username.as_ref().map_or(0, |u| 2 + u.len());
        len += self.password.as_ref().map_or(0, |p| 2 + p.len());
        put_fixed_header(out, (PacketType::Connect as u8) << 4, len)?;
        let (name, level) = match self.v31 {
            true => (PROTOCOL_NAME_V31, LEVEL_V31),
            false => (PROTOCOL_NAME, self.protocol.level()),
        };
        out.put_u16(name.len() as u16);
        out.put_slice(name.as_bytes());
        out.put_u8(level);
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(props_len, out)?;
        }
        wire::put_string(out, &self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(will_props_len, out)?;
            }
            wire::put_string(out, w.topic.as_mqtt_str());
            wire::put_binary(out, &w.payload)?;
        }
        if let Some(u) = &self.username {
            wire::put_string(out, u);
        }
        if let Some(p) = &self.password {
            wire::put_binary(out, p)?;
        }
        Ok(())
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= flag::CLEAN_START;
        }
        if let Some(w) = &self.will {
            f |= flag::WILL | (w.qos as u8) << flag::WILL_QOS_SHIFT;
            if w.retain {
                f |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            f |= flag::USERNAME;
        }
        if self.password.is_some() {
            f |= flag::PASSWORD;
        }
        f
    }
}

/// Reads the protocol name and level [MQTT-3.1.2-1] [MQTT-3.1.2-2]; MQTT
/// 3.1 (`MQIsdp`, level 3) is read as 3.1.1, flagged.
fn decode_protocol(r: &mut Reader) -> Result<(ProtocolVersion, bool), DecodeError> {
    let name = r.string("protocol name")?;
    let level = r.u8("protocol level")?;
    match (name.as_str(), ProtocolVersion::from_level(level)) {
        (PROTOCOL_NAME, Some(v)) => Ok((v, false)),
        (PROTOCOL_NAME_V31, _) if level == LEVEL_V31 => Ok((ProtocolVersion::V311, true)),
        (PROTOCOL_NAME, None) => Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

impl LastWill {
    fn decode(r: &mut Reader, v5: bool, qos: QoS, retain: bool) -> Result<Self, DecodeError> {
        let properties = if v5 {
            WillProperties::decode(r)?
        } else {
            WillProperties::default()
        };
        Ok(LastWill {
            topic: TopicName::from_bytes(r.binary("will topic")?, false)?,
            payload: r.binary("will payload")?,
            qos,
            retain,
            properties,
        })
    }
}
