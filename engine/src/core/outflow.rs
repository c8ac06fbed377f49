//! What leaves the broker for the bridge (see `crate::bridge`): messages
//! that rules send to NATS subjects. The core only fills the list; the
//! shard layer hands it over after every batch of input.

use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::{QoS, ReasonCode};

use super::broker::{Broker, ConnId};
use super::message::{msg_id_string, Message};

/// One message for a NATS subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outflow {
    /// The subject, e.g. `GID_x_MQTT.connect`.
    pub subject: String,
    /// Headers (name, value), in order.
    pub headers: Vec<(&'static str, String)>,
    /// The message, unchanged.
    pub payload: Bytes,
    /// Published through JetStream, its acknowledgement awaited.
    pub jetstream: bool,
    /// The publisher's PUBACK/PUBREC waits for the stream to store it:
    /// the token the shard layer confirms it by (see
    /// [`Broker::take_confirms`]).
    pub confirm: Option<u64>,
    /// A message for the other nodes of the cluster (the bridge adds the
    /// origin's headers).
    pub cluster: bool,
    /// Held on disk until NATS has it, unless its publisher waits for it
    /// (the bridge's spool): QoS 1/2 rule messages, status notifications.
    pub durable: bool,
}

/// A data outflow rule as the core applies it: messages whose topic
/// matches `filter` go to `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutflowRule {
    /// An MQTT filter (a parent topic `p` is `p/#`).
    pub filter: String,
    /// The NATS subject.
    pub subject: String,
    /// Through JetStream (see [`Outflow::jetstream`]).
    pub jetstream: bool,
    /// A QoS 1/2 publisher's acknowledgement waits for the stream.
    pub confirm: bool,
}

/// The rest of `topic` after its first level, with its leading `/` (the
/// product's `mqttSecondTopic`), as a header value.
pub fn second_topic(topic: &str) -> String {
    header_value(topic.find('/').map_or("", |i| &topic[i..]))
}

/// `text` as a NATS header value: NATS headers are ASCII, so `%`, spaces,
/// control characters and bytes outside ASCII are percent-encoded.
pub fn header_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Broker {
    /// Hands `message`, published on connection `publisher`, to every
    /// outflow rule whose filter matches its topic; returns whether any did,
    /// and whether the publisher's acknowledgement must wait for a stream.
    /// Nothing is allocated for a message no rule takes.
    pub(super) fn outflow_publish(
        &mut self,
        message: &Message,
        publisher: ConnId,
        now: Instant,
    ) -> (bool, bool) {
        let topic = message.topic.as_str();
        let (mut headers, mut wait) = (None, false);
        for i in 0..self.outflow_rules.len() {
            let rule = &self.outflow_rules[i];
            if !ringmq_protocol::topic::matches(&rule.filter, topic) {
                continue;
            }
            let (subject, jetstream) = (rule.subject.clone(), rule.jetstream);
            let confirm = (rule.confirm && message.qos != QoS::AtMostOnce).then(|| {
                self.next_confirm += 1;
                self.journal.confirms.push((publisher, self.next_confirm));
                self.next_confirm
            });
            wait |= confirm.is_some();
            let headers = headers
                .get_or_insert_with(|| self.outflow_headers(message, publisher, now))
                .clone();
            self.outflow.push(Outflow {
                subject,
                headers,
                payload: message.payload.clone(),
                jetstream,
                durable: message.qos != QoS::AtMostOnce,
                confirm,
                cluster: false,
            });
        }
        (headers.is_some(), wait)
    }

    /// Replaces the rules in force: the outflow rules, and the Group IDs
    /// whose online/offline events go to NATS (rules created or deleted
    /// through the OpenAPI).
    pub fn set_rules(
        &mut self,
        outflow: Vec<OutflowRule>,
        status_groups: ahash::AHashSet<Box<str>>,
    ) {
        self.outflow_rules = outflow;
        if let Some(a) = self.aliyun.as_deref_mut() {
            a.status_groups = status_groups;
        }
    }

    /// Takes the tokens of the streams connection `id`'s held
    /// acknowledgements wait for (see [`Outflow::confirm`]).
    pub fn take_confirms(&mut self, id: ConnId) -> Vec<u64> {
        let confirms = &mut self.journal.confirms;
        if !confirms.iter().any(|(c, _)| *c == id) {
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(confirms)
            .into_iter()
            .partition(|(c, _)| *c == id);
        *confirms = rest;
        mine.into_iter().map(|(_, token)| token).collect()
    }

    /// A stream did not confirm a message connection `id` published (the
    /// bridge's queue was full, or the broker is stopping): its held
    /// acknowledgements are not sent and the connection is closed (v5
    /// DISCONNECT 0x80), so that the client publishes again.
    pub fn unconfirmed(&mut self, id: ConnId) {
        self.stats.outflow_unconfirmed += 1;
        let Some(session) = self.session_mut(id) else {
            return;
        };
        tracing::warn!(
            client = %session.client_id.as_str(),
            "disconnecting: a rule's stream or another node of the cluster did not confirm a QoS 1/2 message (not acknowledged: the client publishes it again)"
        );
        if let Some(link) = session.link.as_mut() {
            link.end.get_or_insert(super::trace::Info::ClosedByServer);
            link.close_with(ReasonCode::UnspecifiedError);
        }
    }

    /// The product's bridge headers of `message` from `publisher`.
    fn outflow_headers(
        &self,
        message: &Message,
        publisher: ConnId,
        now: Instant,
    ) -> Vec<(&'static str, String)> {
        let client_id = self.session(publisher).map_or("", |s| s.client_id.as_str());
        let msg_id = msg_id_string(message.id, self.unix_millis(now), self.instance_tag);
        vec![
            ("mqttSecondTopic", second_topic(message.topic.as_str())),
            ("qoslevel", (message.qos as u8).to_string()),
            ("clientId", header_value(client_id)),
            ("mqttMessageId", msg_id.clone()),
            // JetStream drops a second copy with the same id (a retry).
            ("Nats-Msg-Id", msg_id),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::second_topic;

    #[test]
    fn the_second_topic_keeps_its_slash_and_encodes_what_headers_cannot_hold() {
        assert_eq!(second_topic("devices/a/b"), "/a/b");
        assert_eq!(second_topic("devices"), "");
        assert_eq!(second_topic("devices/"), "/");
        assert_eq!(second_topic("p/a b/é/50%"), "/a%20b/%C3%A9/50%25");
    }
}
