//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (§3.8–§3.11).

use bytes::{BufMut, BytesMut};

use super::ack::encode_with_reason;
use super::{put_fixed_header, PacketType};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{AckProperties, PropertySet, SubscribeProperties, UnsubscribeProperties};
use crate::reason::ReasonCode;
use crate::types::{PacketId, ProtocolVersion, SubscriptionOptions, TopicFilter};
use crate::wire::{self, Reader};

/// A request to subscribe to one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifier echoed by the SUBACK.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: SubscribeProperties,
    /// The filters and their options, in order; never empty.
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let v5 = v == ProtocolVersion::V5;
        let packet_id = PacketId::decode(r.u16("packet identifier")?)?;
        let properties = match v5 {
            true => SubscribeProperties::decode(r)?,
            false => SubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = TopicFilter::from_string(r.string("topic filter")?)?;
            let options = SubscriptionOptions::from_byte(r.u8("subscription options")?, v5)?;
            if options.no_local && filter.shared().is_some() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    /// Appends the SUBSCRIBE encoded for `v`; v5 options are omitted for 3.1.1.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList(PacketType::Subscribe));
        }
        let list: usize = self.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum();
        let props_len = self.properties.len();
        let props_wire = props_wire_len(v, props_len);
        let first = (PacketType::Subscribe as u8) << 4 | PacketType::Subscribe.fixed_flags();
        put_fixed_header(out, first, 2 + props_wire + list)?;
        out.put_u16(self.packet_id.get());
        if props_wire > 0 {
            self.properties.encode(props_len, out)?;
        }
        for (filter, options) in &self.filters {
            wire::put_string(out, filter.as_mqtt_str());
            out.put_u8(match v {
                ProtocolVersion::V5 => options.to_byte(),
                ProtocolVersion::V311 => options.qos as u8,
            });
        }
        Ok(())
    }
}

/// Length of a property block that only v5 carries.
fn props_wire_len(v: ProtocolVersion, props_len: usize) -> usize {
    match v {
        ProtocolVersion::V5 => wire::varint_len(props_len as u32) + props_len,
        ProtocolVersion::V311 => 0,
    }
}

/// A request to remove one or more subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifier echoed by the UNSUBACK.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: UnsubscribeProperties,
    /// The filters, in order; never empty.
    pub filters: Vec<TopicFilter>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16("packet identifier")?)?;
        let properties = match v {
            ProtocolVersion::V5 => UnsubscribeProperties::decode(r)?,
            ProtocolVersion::V311 => UnsubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(TopicFilter::from_string(r.string("topic filter")?)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    /// Appends the UNSUBSCRIBE encoded for `v`.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList(PacketType::Unsubscribe));
        }
        let list: usize = self.filters.iter().map(|f| 2 + f.len()).sum();
        let props_len = self.properties.len();
        let props_wire = props_wire_len(v, props_len);
        let first = (PacketType::Unsubscribe as u8) << 4 | PacketType::Unsubscribe.fixed_flags();
        put_fixed_header(out, first, 2 + props_wire + list)?;
        out.put_u16(self.packet_id.get());
        if props_wire > 0 {
            self.properties.encode(props_len, out)?;
        }
        for filter in &self.filters {
            wire::put_string(out, filter.as_mqtt_str());
        }
        Ok(())
    }
}

/// The answer to SUBSCRIBE: one code per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: AckProperties,
    /// Granted QoS (Success, GrantedQoS1, GrantedQoS2) or a failure per filter.
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let (packet_id, properties, reason_codes) = decode_ack_list(r, v, PacketType::SubAck)?;
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    /// Appends the SUBACK encoded for `v`; failures become 0x80 in 3.1.1.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let codes = self.reason_codes.iter().map(|&c| match v {
            ProtocolVersion::V5 => c as u8,
            ProtocolVersion::V311 => c.to_v311_suback(),
        });
        encode_ack_list(
            PacketType::SubAck,
            self.packet_id,
            &self.properties,
            codes,
            self.reason_codes.len(),
            v,
            out,
        )
    }
}

/// The answer to UNSUBSCRIBE; in v5 one code per filter, in 3.1.1 none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: AckProperties,
    /// v5 outcome per filter; empty in 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        if v == ProtocolVersion::V311 {
            let packet_id = PacketId::decode(r.u16("packet identifier")?)?;
            return Ok(UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes: Vec::new(),
            });
        }
        let (packet_id, properties, reason_codes) = decode_ack_list(r, v, PacketType::UnsubAck)?;
        Ok(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    /// Appends the UNSUBACK encoded for `v`; 3.1.1 carries no codes.
    pub fn encode(&self, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let first = (PacketType::UnsubAck as u8) << 4;
        if v == ProtocolVersion::V311 {
            let head = self.packet_id.get().to_be_bytes();
            return encode_with_reason(first, &head, ReasonCode::Success, &self.properties, v, out);
        }
        let codes = self.reason_codes.iter().map(|&c| c as u8);
        encode_ack_list(
            PacketType::UnsubAck,
            self.packet_id,
            &self.properties,
            codes,
            self.reason_codes.len(),
            v,
            out,
        )
    }
}

fn decode_ack_list(
    r: &mut Reader,
    v: ProtocolVersion,
    t: PacketType,
) -> Result<(PacketId, AckProperties, Vec<ReasonCode>), DecodeError> {
    let packet_id = PacketId::decode(r.u16("packet identifier")?)?;
    let properties = match v {
        ProtocolVersion::V5 => AckProperties::decode(r)?,
        ProtocolVersion::V311 => AckProperties::default(),
    };
    let mut codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("reason code")?;
        codes.push(match v {
            ProtocolVersion::V5 => ReasonCode::decode(code, t)?,
            ProtocolVersion::V311 => ReasonCode::from_v311_suback(code)?,
        });
    }
    if codes.is_empty() {
        return Err(DecodeError::EmptyAck(t));
    }
    Ok((packet_id, properties, codes))
}

fn encode_ack_list(
    t: PacketType,
    packet_id: PacketId,
    props: &AckProperties,
    codes: impl Iterator<Item = u8>,
    count: usize,
    v: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if count == 0 {
        return Err(EncodeError::EmptyList(t));
    }
    let props_len = props.len();
    let props_wire = props_wire_len(v, props_len);
    put_fixed_header(out, (t as u8) << 4, 2 + props_wire + count)?;
    out.put_u16(packet_id.get());
    if props_wire > 0 {
        props.encode(props_len, out)?;
    }
    for c in codes {
        out.put_u8(c);
    }
    Ok(())
}
