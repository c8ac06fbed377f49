//! MQTT 5.0 reason codes (§2.4), which packet may carry which, and how they
//! map to the return codes of MQTT 3.1.1 CONNACK and SUBACK.

use crate::error::DecodeError;
use crate::packet::PacketType;

macro_rules! reason_codes {
    ($( $(#[$m:meta])* $name:ident = $code:literal : $($pkt:ident)|* ),* $(,)?) => {
        /// A reason code of MQTT 5.0 (§2.4). Codes that share a value (0x00 is
        /// Success, Normal Disconnection and Granted QoS 0) have one variant
        /// per value, named as in the spec's first use.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$m])* $name = $code, )*
        }

        impl ReasonCode {
            /// The reason code for a byte, if it is one.
            pub const fn from_u8(code: u8) -> Option<Self> {
                match code {
                    $( $code => Some(ReasonCode::$name), )*
                    _ => None,
                }
            }

            /// Whether `packet` may carry this reason code (§2.4 table 2-6).
            pub const fn valid_in(self, packet: PacketType) -> bool {
                match self {
                    $( ReasonCode::$name => matches!(packet, $(PacketType::$pkt)|*), )*
                }
            }
        }
    };
}

reason_codes! {
    /// Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00: ConnAck | PubAck | PubRec | PubRel | PubComp | SubAck | UnsubAck | Disconnect | Auth,
    /// Granted QoS 1.
    GrantedQoS1 = 0x01: SubAck,
    /// Granted QoS 2.
    GrantedQoS2 = 0x02: SubAck,
    /// Disconnect with Will Message.
    DisconnectWithWill = 0x04: Disconnect,
    /// No matching subscribers.
    NoMatchingSubscribers = 0x10: PubAck | PubRec,
    /// No subscription existed.
    NoSubscriptionExisted = 0x11: UnsubAck,
    /// Continue authentication.
    ContinueAuthentication = 0x18: Auth,
    /// Re-authenticate.
    ReAuthenticate = 0x19: Auth,
    /// Unspecified error.
    UnspecifiedError = 0x80: ConnAck | PubAck | PubRec | SubAck | UnsubAck | Disconnect,
    /// Malformed Packet.
    MalformedPacket = 0x81: ConnAck | Disconnect,
    /// Protocol Error.
    ProtocolError = 0x82: ConnAck | Disconnect,
    /// Implementation specific error.
    ImplementationSpecificError = 0x83: ConnAck | PubAck | PubRec | SubAck | UnsubAck | Disconnect,
    /// Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84: ConnAck,
    /// Client Identifier not valid.
    ClientIdentifierNotValid = 0x85: ConnAck,
    /// Bad User Name or Password.
    BadUserNameOrPassword = 0x86: ConnAck,
    /// Not authorized.
    NotAuthorized = 0x87: ConnAck | PubAck | PubRec | SubAck | UnsubAck | Disconnect,
    /// Server unavailable.
    ServerUnavailable = 0x88: ConnAck,
    /// Server busy.
    ServerBusy = 0x89: ConnAck | Disconnect,
    /// Banned.
    Banned = 0x8A: ConnAck,
    /// Server shutting down.
    ServerShuttingDown = 0x8B: Disconnect,
    /// Bad authentication method.
    BadAuthenticationMethod = 0x8C: ConnAck | Disconnect,
    /// Keep Alive timeout.
    KeepAliveTimeout = 0x8D: Disconnect,
    /// Session taken over.
    SessionTakenOver = 0x8E: Disconnect,
    /// Topic Filter invalid.
    TopicFilterInvalid = 0x8F: SubAck | UnsubAck | Disconnect,
    /// Topic Name invalid.
    TopicNameInvalid = 0x90: ConnAck | PubAck | PubRec | Disconnect,
    /// Packet Identifier in use.
    PacketIdentifierInUse = 0x91: PubAck | PubRec | SubAck | UnsubAck,
    /// Packet Identifier not found.
    PacketIdentifierNotFound = 0x92: PubRel | PubComp,
    /// Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93: Disconnect,
    /// Topic Alias invalid.
    TopicAliasInvalid = 0x94: Disconnect,
    /// Packet too large.
    PacketTooLarge = 0x95: ConnAck | Disconnect,
    /// Message rate too high.
    MessageRateTooHigh = 0x96: Disconnect,
    /// Quota exceeded.
    QuotaExceeded = 0x97: ConnAck | PubAck | PubRec | SubAck | Disconnect,
    /// Administrative action.
    AdministrativeAction = 0x98: Disconnect,
    /// Payload format invalid.
    PayloadFormatInvalid = 0x99: ConnAck | PubAck | PubRec | Disconnect,
    /// Retain not supported.
    RetainNotSupported = 0x9A: ConnAck | Disconnect,
    /// QoS not supported.
    QoSNotSupported = 0x9B: ConnAck | Disconnect,
    /// Use another server.
    UseAnotherServer = 0x9C: ConnAck | Disconnect,
    /// Server moved.
    ServerMoved = 0x9D: ConnAck | Disconnect,
    /// Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E: SubAck | Disconnect,
    /// Connection rate exceeded.
    ConnectionRateExceeded = 0x9F: ConnAck | Disconnect,
    /// Maximum connect time.
    MaximumConnectTime = 0xA0: Disconnect,
    /// Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1: SubAck | Disconnect,
    /// Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2: SubAck | Disconnect,
}

impl ReasonCode {
    /// Whether the code reports a failure (0x80 and above).
    pub const fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// Decodes a v5 reason code and checks that `packet` may carry it.
    pub(crate) fn decode(code: u8, packet: PacketType) -> Result<Self, DecodeError> {
        match ReasonCode::from_u8(code) {
            Some(rc) if rc.valid_in(packet) => Ok(rc),
            _ => Err(DecodeError::InvalidReasonCode { code, packet }),
        }
    }

    /// The 3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) closest to this code.
    pub const fn to_v311_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for a 3.1.1 CONNACK return code.
    pub(crate) fn from_v311_connack(code: u8) -> Result<Self, DecodeError> {
        Ok(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => {
                return Err(DecodeError::InvalidReasonCode {
                    code,
                    packet: PacketType::ConnAck,
                })
            }
        })
    }

    /// The 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub const fn to_v311_suback(self) -> u8 {
        match self {
            ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => self as u8,
            _ => 0x80,
        }
    }

    /// The reason code for a 3.1.1 SUBACK return code.
    pub(crate) fn from_v311_suback(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 | 1 | 2 | 0x80 => Ok(ReasonCode::decode(code, PacketType::SubAck)?),
            _ => Err(DecodeError::InvalidReasonCode {
                code,
                packet: PacketType::SubAck,
            }),
        }
    }
}
