//! Errors of the codec.
//!
//! Every decode error names the normative rule it enforces: MQTT 5.0 numbering
//! (`[MQTT-x.y.z-n]`) where one exists, the 3.1.1 number where the rule is
//! 3.1.1-only, and the section (`§x.y.z`) where the spec states the rule without
//! numbering it. [`DecodeError::kind`] says who is at fault and
//! [`DecodeError::reason_code`] gives the MQTT 5.0 reason code a server sends back.

use crate::packet::PacketType;
use crate::reason::ReasonCode;

/// What class of problem a [`DecodeError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bytes break the encoding rules (v5 reason 0x81, Malformed Packet).
    Malformed,
    /// The bytes are well formed but the packet breaks a protocol rule
    /// (v5 reason 0x82, Protocol Error).
    Protocol,
    /// The packet is larger than the receiver accepts (v5 reason 0x95).
    TooLarge,
    /// The peer speaks a protocol version or name this codec does not support.
    Unsupported,
}

/// Why a byte sequence was not accepted as an MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length exceeds the configured `packet_bytes_max`.
    #[error("[MQTT-3.2.2-15] packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// Size of the whole packet (fixed header included), in bytes.
        size: usize,
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// A Variable Byte Integer has a fifth byte.
    #[error("[MQTT §1.5.5] variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer is not encoded in the fewest bytes.
    #[error("[MQTT-1.5.5-1] variable byte integer not encoded in the minimum number of bytes")]
    VarIntNotMinimal,
    /// Packet type 0 is reserved; AUTH (15) does not exist in 3.1.1.
    #[error("[MQTT §2.1.2] reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The flag bits of the fixed header differ from those the spec lists.
    #[error("[MQTT-2.1.3-1] invalid fixed header flags {flags:#06b} for {packet:?}")]
    InvalidHeaderFlags {
        /// The packet whose flags are wrong.
        packet: PacketType,
        /// The low nibble as received.
        flags: u8,
    },
    /// A PUBLISH with both QoS bits set, or a QoS byte outside 0..=2.
    #[error("[MQTT-3.3.1-4] QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// A QoS 0 PUBLISH with the DUP flag set.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of zero.
    #[error("[MQTT-2.2.1-3] packet identifier is zero (3.1.1: MQTT-2.3.1-1)")]
    ZeroPacketId,
    /// A length field points past the end of the packet.
    #[error("[MQTT §1.5] {0} runs past the end of the packet")]
    Truncated(&'static str),
    /// Bytes are left after the last field of a packet.
    #[error("[MQTT §2.1.4] {0} trailing bytes after the last field of {1:?}")]
    TrailingBytes(usize, PacketType),
    /// A string is not well-formed UTF-8.
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8 (3.1.1: MQTT-1.5.3-1)")]
    InvalidUtf8,
    /// A string longer than a two-byte length can say.
    #[error("[MQTT §1.5.4] string of {0} bytes is longer than 65535 bytes")]
    StringTooLong(usize),
    /// A string contains U+0000.
    #[error("[MQTT-1.5.4-2] string contains the null character U+0000 (3.1.1: MQTT-1.5.3-2)")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInTopicName,
    /// A topic name or filter is empty.
    #[error("[MQTT-4.7.3-1] topic name or filter is empty")]
    EmptyTopic,
    /// `#` is not the last level of a filter, or shares its level.
    #[error("[MQTT-4.7.1-1] '#' must be the last character and occupy a whole level")]
    MisplacedMultiLevelWildcard,
    /// `+` shares its level with other characters.
    #[error("[MQTT-4.7.1-2] '+' must occupy a whole level")]
    MisplacedSingleLevelWildcard,
    /// A `$share/` filter without a valid share name or filter.
    #[error("[MQTT-4.8.2-1] shared subscription needs '$share/<ShareName>/<filter>' with a non-empty ShareName free of '/', '+' and '#'")]
    InvalidSharedSubscription,
    /// A SUBSCRIBE with no topic filter.
    #[error("[MQTT-3.8.3-2] SUBSCRIBE carries no topic filter (3.1.1: MQTT-3.8.3-3)")]
    EmptySubscribe,
    /// An UNSUBSCRIBE with no topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE carries no topic filter")]
    EmptyUnsubscribe,
    /// A SUBACK or v5 UNSUBACK with no reason code.
    #[error("[MQTT §3.9.3] {0:?} carries no reason code")]
    EmptyAck(PacketType),
    /// Reserved bits of the subscription options are set.
    #[error(
        "[MQTT-3.8.3-5] reserved bits of the subscription options are set (3.1.1: MQTT-3-8.3-4)"
    )]
    InvalidSubscriptionOptions,
    /// Retain Handling of 3.
    #[error("[MQTT §3.8.3.1] retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// No Local on a shared subscription.
    #[error("[MQTT-3.8.3-4] No Local is set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// The protocol name is not `MQTT`.
    #[error("[MQTT-3.1.2-1] protocol name is not \"MQTT\"")]
    InvalidProtocolName,
    /// The protocol level is neither 4 (3.1.1) nor 5.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The reserved bit of the CONNECT flags is set.
    #[error("[MQTT-3.1.2-3] reserved bit of the CONNECT flags is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag.
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// A password without a user name, which 3.1.1 forbids.
    #[error("[MQTT-3.1.2-22] password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// The same property appears twice where it may appear once.
    #[error("[MQTT §2.2.2.2] property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A property that this packet must not carry, or an unknown identifier.
    #[error("[MQTT §2.2.2.2] property {id:#04x} is not valid in {packet}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u32,
        /// The packet (or `Will`) that carried it.
        packet: &'static str,
    },
    /// A property value outside its allowed range (a boolean other than 0
    /// or 1, a zero Receive Maximum or Maximum Packet Size, ...).
    #[error("[MQTT §2.2.2.2] invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// A Topic Alias of zero.
    #[error("[MQTT-3.3.2-8] topic alias is zero")]
    ZeroTopicAlias,
    /// A v5 PUBLISH with an empty topic and no topic alias.
    #[error("[MQTT §3.3.2.1] empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// A reason code this packet must not carry.
    #[error("[MQTT §2.4] reason code {code:#04x} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// The code as received.
        code: u8,
        /// The packet that carried it.
        packet: PacketType,
    },
    /// Reserved bits of the CONNACK acknowledge flags are set.
    #[error("[MQTT §3.2.2.1] reserved bits of the CONNACK flags are set")]
    ConnAckReservedFlags,
    /// A CONNACK refusing the connection with Session Present set.
    #[error("[MQTT-3.2.2-6] session present set on a refused connection (3.1.1: MQTT-3.2.2-4)")]
    SessionPresentOnRefusal,
    /// A second CONNECT on a connection.
    #[error("[MQTT-3.1.0-2] second CONNECT on one connection")]
    SecondConnect,
    /// Will QoS 3.
    #[error("[MQTT-3.1.2-12] will QoS 3 is not a valid QoS")]
    InvalidWillQoS,
    /// Authentication Data without an Authentication Method.
    #[error("[MQTT §3.1.2.11.10] authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,
    /// A packet other than CONNECT arrived before the protocol version was known.
    #[error("[MQTT-3.1.0-1] first packet is {0:?}, not CONNECT")]
    ExpectedConnect(PacketType),
}

impl DecodeError {
    /// Whether the bytes are malformed, break a protocol rule, are too large or
    /// speak an unsupported version.
    pub fn kind(&self) -> ErrorKind {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ErrorKind::TooLarge,
            UnsupportedProtocolLevel(_) | InvalidProtocolName => ErrorKind::Unsupported,
            DupOnQoS0
            | ZeroPacketId
            | NoLocalOnSharedSubscription
            | DuplicateProperty(_)
            | ZeroTopicAlias
            | EmptyTopicWithoutAlias
            | SessionPresentOnRefusal
            | ExpectedConnect(_)
            | SecondConnect
            | AuthenticationDataWithoutMethod
            | InvalidRetainHandling
            | EmptySubscribe
            | EmptyUnsubscribe
            | PasswordWithoutUsername
            | InvalidPropertyValue(_) => ErrorKind::Protocol,
            _ => ErrorKind::Malformed,
        }
    }

    /// The MQTT 5.0 reason code a server sends (CONNACK or DISCONNECT) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::WildcardInTopicName | DecodeError::EmptyTopicWithoutAlias => {
                ReasonCode::TopicNameInvalid
            }
            DecodeError::ZeroTopicAlias => ReasonCode::TopicAliasInvalid,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            _ => match self.kind() {
                ErrorKind::TooLarge => ReasonCode::PacketTooLarge,
                ErrorKind::Protocol => ReasonCode::ProtocolError,
                _ => ReasonCode::MalformedPacket,
            },
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet would exceed the largest remaining length MQTT can express
    /// (268,435,455 bytes) or the peer's Maximum Packet Size.
    #[error("[MQTT-3.1.2-24] packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// Size the packet would have, in bytes.
        size: usize,
        /// The limit it exceeds, in bytes.
        max: usize,
    },
    /// A QoS 1 or 2 PUBLISH without a packet identifier, or a QoS 0 one with one.
    #[error("[MQTT-2.2.1-2] packet identifier present iff QoS > 0")]
    PacketIdMismatch,
    /// A binary field longer than 65,535 bytes.
    #[error("[MQTT §1.5.6] binary data longer than 65535 bytes")]
    BinaryTooLong,
    /// A packet that MQTT 3.1.1 does not have (AUTH).
    #[error("[MQTT §2.1.2] {0:?} does not exist in MQTT 3.1.1")]
    NotInV311(PacketType),
    /// A SUBSCRIBE, UNSUBSCRIBE, SUBACK or UNSUBACK with an empty list.
    #[error("[MQTT-3.8.3-2] {0:?} needs at least one entry")]
    EmptyList(PacketType),
}
