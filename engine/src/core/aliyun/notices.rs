//! What the broker itself publishes in this profile: token notices, sent
//! straight to one connection without a subscription, and online/offline
//! events, published to `<GroupID>_MQTT/<eventType>` for whoever
//! subscribed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringmq_protocol::{Packet, Publish, QoS, TopicName};
use serde_json::json;

use super::names;
use super::token::{Actions, TokenError};
use crate::core::broker::{Broker, ConnId};
use crate::core::message::Message;
use crate::core::outflow::Outflow;

/// Where a client is told its token expires soon.
pub const EXPIRE_NOTICE_TOPIC: &str = "$SYS/tokenExpireNotice";
/// Where a client is told its token is no longer valid.
pub const INVALID_NOTICE_TOPIC: &str = "$SYS/tokenInvalidNotice";

/// A connection change of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// CONNECT accepted.
    Connect,
    /// The client sent DISCONNECT.
    Disconnect,
    /// The connection is gone (always sent, last).
    TcpClean,
}

impl Event {
    /// Its `eventType`, also the last level of its topic.
    pub fn name(self) -> &'static str {
        match self {
            Event::Connect => "connect",
            Event::Disconnect => "disconnect",
            Event::TcpClean => "tcpclean",
        }
    }
}

impl Broker {
    /// Writes a QoS 0 PUBLISH on `topic` to connection `id` only.
    fn send_direct(&mut self, id: ConnId, topic: &'static str, payload: String) {
        let Ok(topic) = TopicName::new(topic) else {
            return;
        };
        let publish = Publish::new(topic, Bytes::from(payload));
        self.stats.notices += 1;
        self.write(id, &Packet::Publish(publish));
    }

    /// `$SYS/tokenExpireNotice {"expireTime":…,"type":…}`.
    pub(in crate::core) fn send_expire_notice(
        &mut self,
        id: ConnId,
        expire_ms: u64,
        kind: Actions,
    ) {
        let body = json!({"expireTime": expire_ms, "type": kind.as_str()});
        self.send_direct(id, EXPIRE_NOTICE_TOPIC, body.to_string());
    }

    /// `$SYS/tokenInvalidNotice {"code":…,"type":…}`.
    pub(in crate::core) fn send_invalid_notice(
        &mut self,
        id: ConnId,
        e: TokenError,
        kind: Actions,
    ) {
        let body = json!({"code": e.code(), "type": kind.as_str()});
        self.send_direct(id, INVALID_NOTICE_TOPIC, body.to_string());
    }

    /// Publishes `event` of `client_id`'s connection `generation` to
    /// `<GroupID>_MQTT/<eventType>` (QoS 1), if the profile is on and
    /// notifications are.
    pub(in crate::core) fn notify(
        &mut self,
        event: Event,
        client_id: &str,
        generation: u64,
        peer: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(aliyun) = self.aliyun.as_deref() else {
            return;
        };
        let Some((group, _)) = client_id.split_once(names::GROUP_SEPARATOR) else {
            return;
        };
        let to_mqtt = aliyun.config.notify_online_offline;
        let to_nats = aliyun.status_groups.contains(group);
        if !to_mqtt && !to_nats {
            return;
        }
        let body = json!({
            "clientId": client_id,
            "channelId": self.naming(now).channel_id(generation),
            "clientIp": peer.map(|p| p.to_string()).unwrap_or_default(),
            "eventType": event.name(),
            "time": self.unix_millis(now),
        });
        let payload = Bytes::from(body.to_string());
        if to_nats {
            // The product's backend topic is `<GroupID>_MQTT` with the
            // event type as its tag: on NATS, the last token.
            let subject = format!("{group}{}.{}", names::NOTICE_SUFFIX, event.name());
            self.outflow.push(Outflow {
                subject,
                headers: Vec::new(),
                payload: payload.clone(),
                jetstream: false,
                confirm: None,
                cluster: false,
                durable: true,
            });
        }
        if !to_mqtt {
            return;
        }
        let topic = format!("{group}{}/{}", names::NOTICE_SUFFIX, event.name());
        let Ok(topic) = TopicName::new(topic) else {
            return;
        };
        let message = Message {
            id: self.new_message_id(now),
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            origin: 0,
            expires_at: None,
            encoded: Default::default(),
        };
        self.stats.events_published += 1;
        let _ = self.route(Arc::new(message), now);
    }
}
