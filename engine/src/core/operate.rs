//! What an operator does to a shard from outside (the admin endpoint, the
//! `$SYS` publisher), always through a control-plane job: ask whether a
//! client is online, close its connection, publish a message as the
//! broker itself.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::{QoS, ReasonCode, TopicName};

use super::broker::Broker;
use super::message::Message;
use super::trace::Info;

/// Who has the broker publish a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// The broker's own figures (`$SYS/…`), retained.
    System,
    /// An operator (the OpenAPI's SendMessage): a topic clients may use.
    Operator,
    /// A data inflow rule of the NATS bridge, as an operator.
    Bridge,
}

/// Why the broker refused to publish a message of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The topic is not a valid topic name [MQTT-4.7.3-1], is over the
    /// limits, or breaks the profile's topic rules.
    #[error("invalid topic: {0}")]
    Topic(String),
    /// The payload is over `payload_bytes_max` (aliyun profile) or
    /// `packet_bytes_max`.
    #[error("payload over {0} bytes")]
    Payload(usize),
}

impl Broker {
    /// Whether `client_id` has a session on this shard with a connection.
    pub fn is_online(&self, client_id: &str) -> bool {
        self.by_client
            .get(client_id)
            .and_then(|&slot| self.sessions.get(slot as usize))
            .and_then(Option::as_ref)
            .is_some_and(|s| s.link.is_some())
    }

    /// Closes `client_id`'s connection on this shard, as the product's
    /// CloseConnection does: a v5 client gets DISCONNECT 0x98
    /// (Administrative action); the Will is published; a persistent
    /// session stays. Returns whether it was connected.
    pub fn close_client(&mut self, client_id: &str) -> bool {
        let Some(&slot) = self.by_client.get(client_id) else {
            return false;
        };
        let Some(link) = self.slot(slot).and_then(|s| s.link.as_mut()) else {
            return false;
        };
        link.end.get_or_insert(Info::ClosedByServer);
        link.close_with(ReasonCode::AdministrativeAction);
        tracing::info!(client = client_id, "connection closed by the operator");
        true
    }

    /// Publishes `payload` on `topic` as the broker itself (origin 0):
    /// checked like a client's PUBLISH (topic form, limits, the profile's
    /// parent topics), then routed like a Will (a P2P topic of the aliyun
    /// profile goes to its client alone). Only [`Publisher::System`]
    /// publishes to `$` topics, retained; an operator's message is not
    /// retained. Returns the message id.
    pub fn inject(
        &mut self,
        by: Publisher,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        now: Instant,
    ) -> Result<u64, InjectError> {
        let name = TopicName::new(topic).map_err(|e| InjectError::Topic(e.to_string()))?;
        if !self.topic_within_limits(topic) {
            return Err(InjectError::Topic(
                "over topic_bytes_max or topic_levels_max".into(),
            ));
        }
        let system = by == Publisher::System;
        if topic.starts_with('$') != system {
            let why = match system {
                true => "the broker's own figures go to $ topics only",
                false => "$ topics are the broker's own [MQTT-4.7.2-1]",
            };
            return Err(InjectError::Topic(why.into()));
        }
        if let (Some(a), false) = (self.aliyun.as_deref(), system) {
            a.check_topic(topic).map_err(InjectError::Topic)?;
        }
        let max = match self.aliyun.as_deref() {
            Some(a) => a.config.payload_bytes_max,
            None => self.limits.packet_bytes_max as usize,
        };
        if payload.len() > max {
            return Err(InjectError::Payload(max));
        }
        let message = Message {
            id: self.new_message_id(now),
            topic: name,
            payload,
            qos,
            retain: system,
            properties: None,
            origin: 0,
            expires_at: None,
            encoded: Default::default(),
        };
        let id = message.id;
        let _ = self.route_published(Arc::new(message), now);
        Ok(id)
    }
}
