//! MQTT 3.1.1 and 5.0 packets and their codec: bytes in, typed packets out,
//! and back. No I/O, no runtime, no broker types.
//!
//! - [`Decoder`] splits a connection's read buffer into [`Packet`]s; topic,
//!   payload and strings share the buffer's memory (no copy).
//! - [`Decoder::peek`] reads a PUBLISH in place ([`PublishRef`]): the
//!   broker's fast path, routing on the topic before taking any handle.
//! - [`Packet::encode`] appends a packet to a `BytesMut`.
//! - [`EncodedPublish`] encodes a message once and writes each subscriber's
//!   copy by changing only what differs (QoS, packet id, DUP, RETAIN).
//! - [`topic`] matches topic names against filters.
//!
//! Every rejection is a [`DecodeError`] that names the rule it enforces.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod fanout;
pub mod fuzzing;
pub mod packet;
pub mod properties;
mod reason;
pub mod topic;
mod types;
mod wire;

pub use codec::{parse_fixed_header, Decoder, FixedHeader, Peeked, PACKET_BYTES_LIMIT};
pub use error::{DecodeError, EncodeError, ErrorKind};
pub use fanout::{Delivery, EncodedPublish};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketType, PubAck, PubComp, PubRec,
    PubRel, Publish, PublishRef, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
pub use properties::SubscriptionId;
pub use reason::ReasonCode;
pub use types::{
    MqttString, PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, TopicFilter,
    TopicName, UserProperty, STRING_BYTES_MAX,
};
pub use wire::VARINT_MAX;
