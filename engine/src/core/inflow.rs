//! What enters the broker from the bridge (see `crate::bridge`): messages
//! an inflow rule read from a JetStream stream, published as the product
//! publishes its backend's `MQ2MQTT` messages. The bridge turns a NATS
//! message into an [`Inflow`] with [`Inflow::from_nats`]; a shard job
//! publishes it with [`Broker::publish_inflow`].

use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::QoS;

use super::broker::Broker;
use super::operate::{InjectError, Publisher};

/// One message for MQTT clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflow {
    /// The topic: the rule's topic and the message's `mqttSecondTopic`.
    pub topic: String,
    /// The message, unchanged.
    pub payload: Bytes,
    /// From its `qoslevel` header; QoS 1 without one.
    pub qos: QoS,
}

impl Inflow {
    /// The MQTT message for a NATS message with headers `second_topic`
    /// (`mqttSecondTopic`, percent-encoded as the outflow writes it) and
    /// `qos_level` (`qoslevel`), read by a rule publishing on `topic`.
    pub fn from_nats(
        topic: &str,
        second_topic: Option<&str>,
        qos_level: Option<&str>,
        payload: Bytes,
    ) -> Result<Inflow, String> {
        let qos = match qos_level.map(str::trim) {
            None | Some("") => QoS::AtLeastOnce,
            Some(level) => level
                .parse::<u8>()
                .ok()
                .and_then(|b| QoS::from_bits(b).ok())
                .ok_or_else(|| format!("qoslevel {level:?}: 0, 1 or 2"))?,
        };
        let second = match second_topic {
            Some(s) => percent_decoded(s)?,
            None => String::new(),
        };
        if !second.is_empty() && !second.starts_with('/') {
            return Err(format!(
                "mqttSecondTopic {second:?}: the rest of a topic starts with '/'"
            ));
        }
        Ok(Inflow {
            topic: format!("{topic}{second}"),
            payload,
            qos,
        })
    }
}

/// `text` with its `%XX` escapes decoded; the result must be UTF-8.
fn percent_decoded(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("mqttSecondTopic {text:?}: not UTF-8 once decoded"))
}

impl Broker {
    /// Publishes `msg` as the broker (checked like an operator's message:
    /// topic form, limits, the profile's parent topics; a P2P topic goes to
    /// its client alone), counted as inflow. Returns the message id.
    pub fn publish_inflow(&mut self, msg: Inflow, now: Instant) -> Result<u64, InjectError> {
        let published = self.inject(Publisher::Bridge, &msg.topic, msg.payload, msg.qos, now);
        match published {
            Ok(_) => self.stats.inflow_published += 1,
            Err(_) => self.stats.inflow_refused += 1,
        }
        published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflow(second: Option<&str>, qos: Option<&str>) -> Result<Inflow, String> {
        Inflow::from_nats("devices", second, qos, Bytes::from_static(b"x"))
    }

    #[test]
    fn the_topic_is_the_rules_topic_and_the_decoded_second_topic() {
        assert_eq!(
            inflow(Some("/a/b"), None).map(|m| m.topic),
            Ok("devices/a/b".into())
        );
        assert_eq!(inflow(None, None).map(|m| m.topic), Ok("devices".into()));
        assert_eq!(
            inflow(Some("/a%20b/%C3%A9/50%25"), None).map(|m| m.topic),
            Ok("devices/a b/é/50%".into())
        );
        assert_eq!(
            inflow(Some("/50%"), None).map(|m| m.topic),
            Ok("devices/50%".into())
        );
        assert!(inflow(Some("a"), None).is_err());
        assert!(inflow(Some("/%FF"), None).is_err());
    }

    #[test]
    fn the_qos_is_the_qoslevel_header_and_1_without_one() {
        let qos = |h| inflow(None, h).map(|m| m.qos);
        assert_eq!(qos(None), Ok(QoS::AtLeastOnce));
        assert_eq!(qos(Some("0")), Ok(QoS::AtMostOnce));
        assert_eq!(qos(Some("2")), Ok(QoS::ExactlyOnce));
        assert!(qos(Some("3")).is_err());
        assert!(qos(Some("one")).is_err());
    }
}
