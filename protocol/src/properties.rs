//! MQTT 5.0 properties (§2.2.2): one typed struct per packet, holding exactly
//! the properties that packet may carry. Decoding rejects a property the
//! packet must not carry, a duplicate of a single-valued one, and values out of
//! range.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::types::{MqttString, QoS, TopicName, UserProperty};
use crate::wire::{self, Reader, VARINT_MAX};

/// Property identifiers (§2.2.2.2, table 2-4).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A Subscription Identifier: 1 to 268,435,455 (§3.3.2.3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The identifier, if `v` is in range.
    pub const fn new(v: u32) -> Option<Self> {
        if v > VARINT_MAX {
            return None;
        }
        match NonZeroU32::new(v) {
            Some(v) => Some(SubscriptionId(v)),
            None => None,
        }
    }

    /// The identifier as a number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// Appends this identifier as a PUBLISH property (identifier byte and
    /// Variable Byte Integer), as a server adds it to one subscriber's copy.
    pub fn put_property(self, out: &mut Vec<u8>) {
        let mut v = [0u8; 4];
        let n = wire::encode_varint(self.get(), &mut v);
        out.push(id::SUBSCRIPTION_IDENTIFIER);
        out.extend_from_slice(&v[..n]);
    }
}

/// How one property value is read and written.
pub(crate) trait Value: Sized {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError>;
    fn len(&self) -> usize;
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError>;
}

const WHAT: &str = "property";

impl Value for bool {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8(WHAT)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn len(&self) -> usize {
        1
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(u8::from(*self));
        Ok(())
    }
}

/// Maximum QoS (§3.2.2.3.4): 0 or 1 only; its absence means 2.
impl Value for QoS {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8(WHAT)? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn len(&self) -> usize {
        1
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(*self as u8);
        Ok(())
    }
}

impl Value for u16 {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.u16(WHAT)
    }
    fn len(&self) -> usize {
        2
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(*self);
        Ok(())
    }
}

impl Value for NonZeroU16 {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU16::new(r.u16(WHAT)?).ok_or(if id == id::TOPIC_ALIAS {
            DecodeError::ZeroTopicAlias
        } else {
            DecodeError::InvalidPropertyValue(id)
        })
    }
    fn len(&self) -> usize {
        2
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(self.get());
        Ok(())
    }
}

impl Value for u32 {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.u32(WHAT)
    }
    fn len(&self) -> usize {
        4
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u32(*self);
        Ok(())
    }
}

impl Value for NonZeroU32 {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU32::new(r.u32(WHAT)?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn len(&self) -> usize {
        4
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u32(self.get());
        Ok(())
    }
}

impl Value for SubscriptionId {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        SubscriptionId::new(r.varint(WHAT)?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn len(&self) -> usize {
        wire::varint_len(self.get())
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_varint(out, self.get());
        Ok(())
    }
}

impl Value for MqttString {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.string(WHAT)
    }
    fn len(&self) -> usize {
        2 + MqttString::len(self)
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_string(out, self);
        Ok(())
    }
}

/// Response Topic: a topic name, so no wildcards [MQTT-3.3.2-14].
impl Value for TopicName {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        TopicName::new(r.string(WHAT)?.as_str())
    }
    fn len(&self) -> usize {
        2 + self.as_mqtt_str().len()
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_string(out, self.as_mqtt_str());
        Ok(())
    }
}

impl Value for Bytes {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.binary(WHAT)
    }
    fn len(&self) -> usize {
        2 + <[u8]>::len(self)
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_binary(out, self)
    }
}

impl Value for UserProperty {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        Ok(UserProperty {
            name: r.string(WHAT)?,
            value: r.string(WHAT)?,
        })
    }
    fn len(&self) -> usize {
        4 + self.name.len() + self.value.len()
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_string(out, &self.name);
        wire::put_string(out, &self.value);
        Ok(())
    }
}

/// The properties of one packet type.
pub(crate) trait PropertySet: Default {
    /// Reads the property length and the properties.
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;
    /// Length of the properties, without the property length itself.
    fn len(&self) -> usize;
    /// Writes the property length and the properties; `len` is `self.len()`.
    fn encode(&self, len: usize, out: &mut BytesMut) -> Result<(), EncodeError>;
}

/// Reads one property identifier; all defined ones fit one byte.
fn read_id(r: &mut Reader, packet: &'static str) -> Result<u8, DecodeError> {
    let id = r.varint(WHAT)?;
    u8::try_from(id).map_err(|_| DecodeError::PropertyNotAllowed { id, packet })
}

/// Defines a property struct: single-valued fields are `Option`s, repeated
/// ones `Vec`s (User Property is repeated in every packet).
macro_rules! properties {
    (
        $(#[$m:meta])* $name:ident ($label:literal) {
            $( $(#[$fm:meta])* $field:ident : $ty:ty = $id:ident, )*
        }
        repeated {
            $( $(#[$rm:meta])* $rfield:ident : $rty:ty = $rid:ident, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: Option<$ty>, )*
            $( $(#[$rm])* pub $rfield: Vec<$rty>, )*
        }

        impl $name {
            /// No property set.
            pub const EMPTY: Self = $name {
                $( $field: None, )*
                $( $rfield: Vec::new(), )*
            };

            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )* $( && self.$rfield.is_empty() )*
            }
        }

        impl PropertySet for $name {
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let len = r.varint("property length")? as usize;
                let mut r = r.sub(len, "properties")?;
                let mut props = Self::default();
                while !r.is_empty() {
                    match read_id(&mut r, $label)? {
                        $( id::$id => {
                            if props.$field.is_some() {
                                return Err(DecodeError::DuplicateProperty(id::$id));
                            }
                            props.$field = Some(Value::read(&mut r, id::$id)?);
                        } )*
                        $( id::$rid => props.$rfield.push(Value::read(&mut r, id::$rid)?), )*
                        other => {
                            return Err(DecodeError::PropertyNotAllowed {
                                id: u32::from(other),
                                packet: $label,
                            })
                        }
                    }
                }
                Ok(props)
            }

            fn len(&self) -> usize {
                let mut n = 0;
                $( if let Some(v) = &self.$field { n += 1 + Value::len(v); } )*
                $( n += self.$rfield.iter().map(|v| 1 + Value::len(v)).sum::<usize>(); )*
                n
            }

            fn encode(&self, len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
                wire::put_varint(out, wire::check_remaining(len)?);
                $( if let Some(v) = &self.$field {
                    out.put_u8(id::$id);
                    v.write(out)?;
                } )*
                $( for v in &self.$rfield {
                    out.put_u8(id::$rid);
                    v.write(out)?;
                } )*
                Ok(())
            }
        }
    };
}

properties! {
    /// Properties of CONNECT (§3.1.2.11).
    ConnectProperties ("CONNECT") {
        /// Seconds the session outlives the connection; `u32::MAX` is never.
        session_expiry_interval: u32 = SESSION_EXPIRY_INTERVAL,
        /// How many QoS 1/2 PUBLISHes the client accepts at once.
        receive_maximum: NonZeroU16 = RECEIVE_MAXIMUM,
        /// The largest packet the client accepts, in bytes.
        maximum_packet_size: NonZeroU32 = MAXIMUM_PACKET_SIZE,
        /// The highest Topic Alias the client accepts.
        topic_alias_maximum: u16 = TOPIC_ALIAS_MAXIMUM,
        /// Whether the server may send Response Information in CONNACK.
        request_response_information: bool = REQUEST_RESPONSE_INFORMATION,
        /// Whether the server may send Reason String and User Properties on failures.
        request_problem_information: bool = REQUEST_PROBLEM_INFORMATION,
        /// The extended authentication method.
        authentication_method: MqttString = AUTHENTICATION_METHOD,
        /// Data of the extended authentication.
        authentication_data: Bytes = AUTHENTICATION_DATA,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of the Will in CONNECT (§3.1.3.2).
    WillProperties ("Will") {
        /// Seconds to wait before publishing the Will.
        will_delay_interval: u32 = WILL_DELAY_INTERVAL,
        /// Whether the payload is UTF-8.
        payload_format_indicator: bool = PAYLOAD_FORMAT_INDICATOR,
        /// Lifetime of the Will message, in seconds.
        message_expiry_interval: u32 = MESSAGE_EXPIRY_INTERVAL,
        /// MIME type of the payload.
        content_type: MqttString = CONTENT_TYPE,
        /// Topic for a response.
        response_topic: TopicName = RESPONSE_TOPIC,
        /// Data that correlates a response with its request.
        correlation_data: Bytes = CORRELATION_DATA,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of CONNACK (§3.2.2.3).
    ConnAckProperties ("CONNACK") {
        /// The session expiry the server uses, if not the client's.
        session_expiry_interval: u32 = SESSION_EXPIRY_INTERVAL,
        /// How many QoS 1/2 PUBLISHes the server accepts at once.
        receive_maximum: NonZeroU16 = RECEIVE_MAXIMUM,
        /// The highest QoS the server supports (absent: 2).
        maximum_qos: QoS = MAXIMUM_QOS,
        /// Whether the server supports retained messages.
        retain_available: bool = RETAIN_AVAILABLE,
        /// The largest packet the server accepts, in bytes.
        maximum_packet_size: NonZeroU32 = MAXIMUM_PACKET_SIZE,
        /// The Client Identifier the server assigned.
        assigned_client_identifier: MqttString = ASSIGNED_CLIENT_IDENTIFIER,
        /// The highest Topic Alias the server accepts.
        topic_alias_maximum: u16 = TOPIC_ALIAS_MAXIMUM,
        /// Human-readable diagnostics.
        reason_string: MqttString = REASON_STRING,
        /// Whether the server supports wildcard subscriptions.
        wildcard_subscription_available: bool = WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Whether the server supports Subscription Identifiers.
        subscription_identifiers_available: bool = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Whether the server supports shared subscriptions.
        shared_subscription_available: bool = SHARED_SUBSCRIPTION_AVAILABLE,
        /// The keep-alive the server uses, in seconds.
        server_keep_alive: u16 = SERVER_KEEP_ALIVE,
        /// Basis for response topics.
        response_information: MqttString = RESPONSE_INFORMATION,
        /// Another server to use.
        server_reference: MqttString = SERVER_REFERENCE,
        /// The extended authentication method.
        authentication_method: MqttString = AUTHENTICATION_METHOD,
        /// Data of the extended authentication.
        authentication_data: Bytes = AUTHENTICATION_DATA,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of PUBLISH (§3.3.2.3).
    PublishProperties ("PUBLISH") {
        /// Whether the payload is UTF-8.
        payload_format_indicator: bool = PAYLOAD_FORMAT_INDICATOR,
        /// Lifetime of the message, in seconds.
        message_expiry_interval: u32 = MESSAGE_EXPIRY_INTERVAL,
        /// A number that stands for the topic on this connection.
        topic_alias: NonZeroU16 = TOPIC_ALIAS,
        /// Topic for a response.
        response_topic: TopicName = RESPONSE_TOPIC,
        /// Data that correlates a response with its request.
        correlation_data: Bytes = CORRELATION_DATA,
        /// MIME type of the payload.
        content_type: MqttString = CONTENT_TYPE,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
        /// Identifiers of the subscriptions that matched (server to client).
        subscription_identifiers: SubscriptionId = SUBSCRIPTION_IDENTIFIER,
    }
}

properties! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties ("acknowledgement") {
        /// Human-readable diagnostics.
        reason_string: MqttString = REASON_STRING,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of SUBSCRIBE (§3.8.2.1).
    SubscribeProperties ("SUBSCRIBE") {
        /// Identifier sent back with every message these subscriptions match.
        subscription_identifier: SubscriptionId = SUBSCRIPTION_IDENTIFIER,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of UNSUBSCRIBE (§3.10.2.1).
    UnsubscribeProperties ("UNSUBSCRIBE") {
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of DISCONNECT (§3.14.2.2).
    DisconnectProperties ("DISCONNECT") {
        /// A new session expiry, sent by the client.
        session_expiry_interval: u32 = SESSION_EXPIRY_INTERVAL,
        /// Human-readable diagnostics.
        reason_string: MqttString = REASON_STRING,
        /// Another server to use.
        server_reference: MqttString = SERVER_REFERENCE,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}

properties! {
    /// Properties of AUTH (§3.15.2.2).
    AuthProperties ("AUTH") {
        /// The extended authentication method.
        authentication_method: MqttString = AUTHENTICATION_METHOD,
        /// Data of the extended authentication.
        authentication_data: Bytes = AUTHENTICATION_DATA,
        /// Human-readable diagnostics.
        reason_string: MqttString = REASON_STRING,
    }
    repeated {
        /// User Properties, in order.
        user_properties: UserProperty = USER_PROPERTY,
    }
}
