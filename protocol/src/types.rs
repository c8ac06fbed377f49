//! Value types whose constructors enforce what the spec restricts, so that an
//! invalid value cannot be represented.

use std::fmt;
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::DecodeError;
use crate::topic;

/// The largest string or binary field MQTT can carry, in bytes [MQTT-1.5.4].
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

/// The protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version for a protocol level byte, if supported.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once (fire and forget).
    #[default]
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; 3 is invalid [MQTT-3.3.1-4].
    pub const fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// A packet identifier: never zero [MQTT-2.2.1-3].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The identifier for `id`, or `None` for zero.
    pub const fn new(id: u16) -> Option<Self> {
        match NonZeroU16::new(id) {
            Some(id) => Some(PacketId(id)),
            None => None,
        }
    }

    /// The identifier as a number.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    pub(crate) fn decode(id: u16) -> Result<Self, DecodeError> {
        PacketId::new(id).ok_or(DecodeError::ZeroPacketId)
    }
}

impl From<NonZeroU16> for PacketId {
    fn from(id: NonZeroU16) -> Self {
        PacketId(id)
    }
}

/// A UTF-8 string as MQTT defines it: well-formed, without U+0000, at most
/// 65,535 bytes [MQTT-1.5.4-1] [MQTT-1.5.4-2]. Cloning shares the bytes.
/// It hashes as its `str`, so maps keyed by it are searched with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MqttString(ByteString);

impl std::hash::Hash for MqttString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl MqttString {
    /// Validates `s`.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, DecodeError> {
        let s = s.into();
        check_string(s.as_bytes())?;
        Ok(MqttString(s))
    }

    /// Validates bytes taken from a packet; the string shares them.
    pub(crate) fn from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        let s = ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.as_bytes().contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        Ok(MqttString(s))
    }

    /// A copy in its own allocation, sharing nothing with the buffer this
    /// one was read from (so keeping it does not keep that buffer alive).
    pub fn detached(&self) -> Self {
        MqttString(ByteString::from(self.as_str()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying shared bytes.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The checks of a topic name read from a packet, but for UTF-8: not empty
/// (unless `allow_empty`), no U+0000, no wildcard.
pub(crate) fn check_topic_name_bytes(bytes: &[u8], allow_empty: bool) -> Result<(), DecodeError> {
    if bytes.is_empty() && !allow_empty {
        return Err(DecodeError::EmptyTopic);
    }
    if has_topic_name_forbidden(bytes) {
        return Err(match bytes.contains(&0) {
            true => DecodeError::NullCharacter,
            false => DecodeError::WildcardInTopicName,
        });
    }
    Ok(())
}

/// Whether `bytes` holds U+0000, `+` or `#` (SIMD search: this runs on every
/// PUBLISH topic).
#[inline]
fn has_topic_name_forbidden(bytes: &[u8]) -> bool {
    memchr::memchr3(0, b'+', b'#', bytes).is_some()
}

fn check_string(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > STRING_BYTES_MAX {
        return Err(DecodeError::StringTooLong(bytes.len()));
    }
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

impl std::ops::Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for MqttString {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        MqttString::new(s)
    }
}

/// A topic name, as published to: no wildcards [MQTT-3.3.2-2], not empty
/// [MQTT-4.7.3-1] — except in a v5 PUBLISH that carries a Topic Alias, where
/// the decoder accepts an empty one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttString);

impl TopicName {
    /// Validates a topic name.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, DecodeError> {
        let s = MqttString::new(s)?;
        check_topic_name_bytes(s.as_bytes(), false)?;
        Ok(TopicName(s))
    }

    /// A copy in its own allocation (see [`MqttString::detached`]).
    pub fn detached(&self) -> Self {
        TopicName(self.0.detached())
    }

    /// Copies of this topic and of `payload` in one new allocation, sharing
    /// nothing with the buffer they were read from.
    pub fn detached_with(&self, payload: &[u8]) -> (Self, Bytes) {
        let topic = self.0.as_bytes();
        let mut buf = BytesMut::with_capacity(topic.len() + payload.len());
        buf.extend_from_slice(topic);
        buf.extend_from_slice(payload);
        let mut payload = buf.freeze();
        let topic = payload.split_to(topic.len());
        match ByteString::try_from(topic) {
            Ok(s) => (TopicName(MqttString(s)), payload),
            // The bytes were copied from a valid string.
            Err(_) => (self.detached(), payload),
        }
    }

    /// Validates a topic name held in shared bytes (no copy).
    pub fn from_shared(bytes: Bytes) -> Result<Self, DecodeError> {
        TopicName::from_bytes(bytes, false)
    }

    /// The empty name of a v5 PUBLISH whose topic travels as a Topic Alias.
    pub fn empty_for_alias() -> Self {
        TopicName(MqttString::default())
    }

    /// Validates a topic name taken from a packet; `allow_empty` for a v5
    /// PUBLISH, which may carry a Topic Alias instead.
    pub(crate) fn from_bytes(bytes: Bytes, allow_empty: bool) -> Result<Self, DecodeError> {
        check_topic_name_bytes(&bytes, allow_empty)?;
        let s = ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(TopicName(MqttString(s)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The validated string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// Whether this is the empty name of an aliased v5 PUBLISH.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A topic filter, as subscribed to: `+` and `#` only where they occupy a whole
/// level, `#` only last [MQTT-4.7.1-1] [MQTT-4.7.1-2], not empty
/// [MQTT-4.7.3-1]; a `$share/` filter has a valid share name and filter
/// [MQTT-4.8.2-1] [MQTT-4.8.2-2].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

impl TopicFilter {
    /// Validates a topic filter.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, DecodeError> {
        Self::from_string(MqttString::new(s)?)
    }

    pub(crate) fn from_string(s: MqttString) -> Result<Self, DecodeError> {
        topic::validate_filter(s.as_str())?;
        Ok(TopicFilter(s))
    }

    /// The filter as written, `$share/` prefix included.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The validated string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// For `$share/<group>/<filter>`, the group and the filter to match.
    pub fn shared(&self) -> Option<topic::SharedFilter<'_>> {
        topic::parse_shared(self.as_str())
    }

    /// The filter to match topic names against (the part after the share
    /// name for a shared subscription).
    pub fn match_filter(&self) -> &str {
        self.shared().map_or(self.as_str(), |s| s.filter)
    }

    /// Whether `name` matches this filter, `$`-topic rule included [MQTT-4.7.2-1].
    pub fn matches(&self, name: &str) -> bool {
        topic::matches(self.match_filter(), name)
    }
}

macro_rules! debug_display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
    )*};
}
debug_display_as_str!(TopicName, TopicFilter);

/// How retained messages are sent when a subscription is made (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist.
    SendIfNew = 1,
    /// Do not send them.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry. In 3.1.1 only `qos` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS of the messages sent for this subscription.
    pub qos: QoS,
    /// v5: do not send the subscriber its own publications.
    pub no_local: bool,
    /// v5: keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// v5: when to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and the defaults of 3.1.1 for everything else.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        self.qos as u8
            | (self.no_local as u8) << 2
            | (self.retain_as_published as u8) << 3
            | (self.retain_handling as u8) << 4
    }

    pub(crate) fn from_byte(b: u8, v5: bool) -> Result<Self, DecodeError> {
        let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
        if b & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos: QoS::from_bits(b & 0b11).map_err(|_| DecodeError::InvalidSubscriptionOptions)?,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }
}

/// A v5 User Property: a name and a value, both UTF-8 strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The name.
    pub name: MqttString,
    /// The value.
    pub value: MqttString,
}
