//! Retained messages, one per topic. Every shard holds the whole store (a
//! retained message is sent to every shard), so a SUBSCRIBE is answered from
//! the subscriber's own shard without asking another.

use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;
use ringmq_protocol::topic;

use super::message::Message;

/// The retained store of one shard.
#[derive(Debug, Default)]
pub struct Retained {
    by_topic: AHashMap<Box<str>, Arc<Message>>,
}

impl Retained {
    /// Stores `message`, replacing the topic's previous one; an empty
    /// payload clears the topic [MQTT-3.3.1-10].
    /// Returns false (and stores nothing) when `max` topics are already
    /// retained and this is a new one.
    pub fn store(&mut self, message: Arc<Message>, max: usize) -> bool {
        if message.payload.is_empty() {
            self.by_topic.remove(message.topic.as_str());
            return true;
        }
        let topic = message.topic.as_str();
        if self.by_topic.len() >= max && !self.by_topic.contains_key(topic) {
            return false;
        }
        self.by_topic.insert(topic.into(), message);
        true
    }

    /// Drops retained messages whose Message Expiry Interval ran out.
    pub fn purge_expired(&mut self, now: Instant) {
        self.by_topic.retain(|_, m| !m.is_expired(now));
    }

    /// The unexpired retained messages matching `filter`.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        self.by_topic
            .iter()
            .filter(|(t, m)| topic::matches(filter, t) && !m.is_expired(now))
            .map(|(_, m)| Arc::clone(m))
            .collect()
    }

    /// Every retained message.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.by_topic.values()
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

/// A copy of `message` whose payload no longer shares the buffer it was
/// read from, so that keeping it does not pin that buffer.
pub fn compact(message: &Message) -> Message {
    Message {
        id: message.id,
        topic: message.topic.detached(),
        payload: Bytes::copy_from_slice(&message.payload),
        qos: message.qos,
        retain: true,
        properties: message.properties.clone(),
        origin: message.origin,
        expires_at: message.expires_at,
        encoded: Default::default(),
    }
}
