//! What leaves the broker for the bridge (see `crate::bridge`): messages
//! that rules send to NATS subjects. The core only fills the list; the
//! shard layer hands it over after every batch of input.

use bytes::Bytes;

/// One message for a NATS subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outflow {
    /// The subject, e.g. `GID_x_MQTT.connect`.
    pub subject: String,
    /// The message, unchanged.
    pub payload: Bytes,
}
