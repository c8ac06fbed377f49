//! PUBLISH (§3.3).

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{PropertySet, PublishProperties};
use crate::types::{PacketId, ProtocolVersion, QoS, TopicName};
use crate::wire::{self, Reader};

static NO_PROPERTIES: PublishProperties = PublishProperties::EMPTY;

pub(crate) const DUP: u8 = 0b1000;
pub(crate) const RETAIN: u8 = 0b0001;
pub(crate) const QOS_SHIFT: u8 = 1;

/// An application message. Topic and payload share the bytes the packet was
/// read from.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Set on a redelivery of a QoS 1/2 message; never on QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// The message's QoS.
    pub qos: QoS,
    /// Whether the message is (or was) retained.
    pub retain: bool,
    /// The topic; empty only in a v5 PUBLISH that carries a Topic Alias.
    pub topic: TopicName,
    /// Present iff `qos` is 1 or 2 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// v5 PUBLISH properties, boxed so that the many messages that carry
    /// none stay small; `None` and an empty box mean the same.
    pub properties: Option<Box<PublishProperties>>,
    /// The application payload.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: None,
            payload: payload.into(),
        }
    }

    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader,
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (qos, dup) = qos_and_dup(flags)?;
        let v5 = v == ProtocolVersion::V5;
        let topic = TopicName::from_bytes(r.binary("topic name")?, v5)?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(PacketId::decode(r.u16("packet identifier")?)?),
        };
        let properties = match v5 {
            true => Some(PublishProperties::decode(r)?).filter(|p| !p.is_empty()),
            false => None,
        };
        let aliased = properties.as_ref().is_some_and(|p| p.topic_alias.is_some());
        if topic.is_empty() && !aliased {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
        Ok(Publish {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            properties: properties.map(Box::new),
            payload: r.rest(),
        })
    }

    /// The v5 properties (empty if there are none).
    pub fn properties(&self) -> &PublishProperties {
        self.properties.as_deref().unwrap_or(&NO_PROPERTIES)
    }

    /// The v5 properties, to change them.
    pub fn properties_mut(&mut self) -> &mut PublishProperties {
        self.properties.get_or_insert_with(Default::default)
    }

    /// The first byte of the fixed header: type and flags.
    pub fn first_byte(&self) -> u8 {
        first_byte(self.qos, self.dup, self.retain)
    }

    /// Appends the PUBLISH encoded for `v`; v5 properties are omitted for 3.1.1.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.packet_id.is_some() != (self.qos != QoS::AtMostOnce) {
            return Err(EncodeError::PacketIdMismatch);
        }
        let topic = self.topic.as_mqtt_str();
        let mut len = 2 + topic.len() + self.payload.len();
        if self.packet_id.is_some() {
            len += 2;
        }
        let props_len = match v {
            ProtocolVersion::V5 => {
                let n = self.properties().len();
                len += wire::varint_len(n as u32) + n;
                Some(n)
            }
            ProtocolVersion::V311 => None,
        };
        put_fixed_header(out, self.first_byte(), len)?;
        wire::put_string(out, topic);
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if let Some(n) = props_len {
            self.properties().encode(n, out)?;
        }
        out.put_slice(&self.payload);
        Ok(())
    }
}

/// QoS and DUP from the fixed-header flags [MQTT-3.3.1-4] [MQTT-3.3.1-2].
pub(crate) fn qos_and_dup(flags: u8) -> Result<(QoS, bool), DecodeError> {
    let qos = QoS::from_bits((flags >> QOS_SHIFT) & 0b11)?;
    let dup = flags & DUP != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    Ok((qos, dup))
}

/// The first byte of a PUBLISH with these flags; DUP only for QoS > 0.
pub(crate) fn first_byte(qos: QoS, dup: bool, retain: bool) -> u8 {
    let mut b = (PacketType::Publish as u8) << 4 | (qos as u8) << QOS_SHIFT;
    if dup && qos != QoS::AtMostOnce {
        b |= DUP;
    }
    if retain {
        b |= RETAIN;
    }
    b
}

impl PartialEq for Publish {
    fn eq(&self, other: &Self) -> bool {
        self.dup == other.dup
            && self.qos == other.qos
            && self.retain == other.retain
            && self.topic == other.topic
            && self.packet_id == other.packet_id
            && self.properties() == other.properties()
            && self.payload == other.payload
    }
}

impl Eq for Publish {}
