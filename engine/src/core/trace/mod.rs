//! The trace store of one shard: device events (connect, close,
//! disconnect), publishes and deliveries, each with the client, the
//! connection and the message id, in time order in a bounded ring
//! (`events_max` per instance, split over the shards; `retention_secs`).
//! Queries scan the shard's ring and answer in the product's shapes; the
//! instance merges the shards' answers and pages them.

pub mod answer;
mod ring;
mod store;
pub mod time;

pub use store::{TraceName, Traces};
pub use time::format_time;

use serde::{Deserialize, Serialize};

/// The `[trace]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Whether events are recorded; by default on in the aliyun profile,
    /// off in the standard one.
    pub enabled: Option<bool>,
    /// Events kept per instance at least (split evenly over the shards);
    /// the oldest go first. The store takes 24 bytes per event, and keeps
    /// more events in that room when they are deliveries of one message
    /// (4 bytes each).
    pub events_max: usize,
    /// Age past which events are dropped, in seconds (3 days).
    pub retention_secs: u64,
    /// Offset from UTC of the `Time` strings in answers, in minutes (the
    /// product answers in China Standard Time, UTC+8).
    pub time_offset_minutes: i32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            enabled: None,
            events_max: 1_000_000,
            retention_secs: 3 * 24 * 3600,
            time_offset_minutes: 480,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// A connection's CONNECT was accepted.
    #[default]
    Connect,
    /// A connection ended.
    Close,
    /// The client sent DISCONNECT.
    Disconnect,
    /// A client published a message.
    PubMqtt,
    /// The broker published a message on behalf of an API or a bridge.
    PubMq,
    /// A message was delivered to a connected client.
    Sub,
    /// A message held for an offline session was delivered on its return.
    PushOffline,
}

impl Action {
    /// The product's `Action`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Close => "close",
            Action::Disconnect => "disconnect",
            Action::PubMqtt => "pub_mqtt",
            Action::PubMq => "pub_mq",
            Action::Sub => "sub",
            Action::PushOffline => "push_offline",
        }
    }

    /// The product's `ActionCode`.
    pub fn code(self) -> &'static str {
        match self {
            Action::Connect => "mqtt.trace.action.connect",
            Action::Close => "mqtt.trace.action.close",
            Action::Disconnect => "mqtt.trace.action.disconnect",
            Action::PubMqtt => "mqtt.trace.action.msg.pub.mqtt",
            Action::PubMq => "mqtt.trace.action.msg.pub.mq",
            Action::Sub => "mqtt.trace.action.msg.sub",
            Action::PushOffline => "mqtt.trace.action.msg.push.offline",
        }
    }

    const ALL: [Action; 7] = [
        Action::Connect,
        Action::Close,
        Action::Disconnect,
        Action::PubMqtt,
        Action::PubMq,
        Action::Sub,
        Action::PushOffline,
    ];

    /// Its index in [`Action::ALL`], for packing.
    pub(crate) fn index(self) -> u8 {
        self as u8
    }

    /// The action of an index; `Connect` for one out of range.
    pub(crate) fn from_index(i: u8) -> Action {
        Action::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Action::Connect)
    }

    pub(crate) fn is_device(self) -> bool {
        matches!(self, Action::Connect | Action::Close | Action::Disconnect)
    }
}

/// Why, for device events (the product's `ActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Info {
    /// CONNECT accepted.
    #[default]
    Accepted,
    /// Sign-in failed.
    NotAuthorized,
    /// A newer connection with the same client id took over.
    ClientIdConflict,
    /// A topic or token check failed.
    ResourceAuthFailed,
    /// Keep-alive timeout.
    NoHeart,
    /// The client closed the connection without DISCONNECT.
    ClosedByClient,
    /// The client sent DISCONNECT.
    DisconnectedByClient,
    /// A malformed packet, a bad name or a limit.
    InvalidParam,
    /// The broker shut down.
    ClosedByServer,
    /// Message events carry their own text.
    Message,
}

impl Info {
    const ALL: [Info; 10] = [
        Info::Accepted,
        Info::NotAuthorized,
        Info::ClientIdConflict,
        Info::ResourceAuthFailed,
        Info::NoHeart,
        Info::ClosedByClient,
        Info::DisconnectedByClient,
        Info::InvalidParam,
        Info::ClosedByServer,
        Info::Message,
    ];

    /// Its index in [`Info::ALL`], for packing.
    pub(crate) fn index(self) -> u8 {
        self as u8
    }

    /// The info of an index; `Message` for one out of range.
    pub(crate) fn from_index(i: u8) -> Info {
        Info::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Info::Message)
    }

    pub(crate) fn text(self, action: Action) -> &'static str {
        match self {
            Info::Accepted => "accepted",
            Info::NotAuthorized => "not authorized",
            Info::ClientIdConflict => "clientId conflict",
            Info::ResourceAuthFailed => "resource auth failed",
            Info::NoHeart => "no heart",
            Info::ClosedByClient => "closed by client",
            Info::DisconnectedByClient => "disconnected by client",
            Info::InvalidParam => "invalid param",
            Info::ClosedByServer => "closed by server",
            Info::Message => match action {
                Action::PubMqtt => "Pub From Mqtt Client",
                Action::PubMq => "Pub From MQ",
                Action::Sub => "Push To Mqtt Client",
                Action::PushOffline => "Push Offline Msg To Mqtt Client",
                _ => "",
            },
        }
    }
}

/// A question to the trace store; times in ms since the Unix epoch,
/// `begin` included, `end` excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceQuery {
    /// A client's connects, closes and disconnects.
    Device {
        /// The client id.
        client_id: String,
        /// From.
        begin_ms: u64,
        /// Until.
        end_ms: u64,
    },
    /// What a client published and received.
    MessageOfClient {
        /// The client id.
        client_id: String,
        /// From.
        begin_ms: u64,
        /// Until.
        end_ms: u64,
    },
    /// Who published a message.
    Publish {
        /// The message id.
        msg_id: u64,
        /// From.
        begin_ms: u64,
        /// Until.
        end_ms: u64,
    },
    /// Who received a message (all clients, or one).
    Subscribe {
        /// The message id.
        msg_id: u64,
        /// Only this receiver, if given.
        client_id: Option<String>,
        /// From.
        begin_ms: u64,
        /// Until.
        end_ms: u64,
    },
}

impl TraceQuery {
    pub(crate) fn range(&self) -> (u64, u64) {
        match self {
            TraceQuery::Device {
                begin_ms, end_ms, ..
            }
            | TraceQuery::MessageOfClient {
                begin_ms, end_ms, ..
            }
            | TraceQuery::Publish {
                begin_ms, end_ms, ..
            }
            | TraceQuery::Subscribe {
                begin_ms, end_ms, ..
            } => (*begin_ms, *end_ms),
        }
    }
}

/// One event as the product shows it. Device events fill `ChannelId`,
/// message events `ClientId` and `MsgId`; the shapes of the answers pick
/// the fields they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceItem {
    /// For ordering: ms since the Unix epoch.
    #[serde(skip)]
    pub time_ms: u64,
    /// `connect`, `close`, `pub_mqtt`, `sub`, …
    #[serde(rename = "Action")]
    pub action: String,
    /// `mqtt.trace.action.connect`, …
    #[serde(rename = "ActionCode")]
    pub action_code: String,
    /// `accepted`, `no heart`, `Push To Mqtt Client`, …
    #[serde(rename = "ActionInfo")]
    pub action_info: String,
    /// The client.
    #[serde(rename = "ClientId")]
    pub client_id: String,
    /// The message (32 hex digits), empty for device events.
    #[serde(rename = "MsgId")]
    pub msg_id: String,
    /// The connection (32 hex digits).
    #[serde(rename = "ChannelId")]
    pub channel_id: String,
    /// `yyyy-MM-dd HH:mm:ss.SSS`.
    #[serde(rename = "Time")]
    pub time: String,
}

/// How one shard names its connections and messages in answers.
#[derive(Debug, Clone, Copy)]
pub struct Naming {
    /// The shard.
    pub shard: usize,
    /// When the shard started (ms since the Unix epoch): with the shard
    /// and the generation, it makes a channel id unique across restarts.
    pub boot_ms: u64,
    /// Identifies the instance in message ids.
    pub instance_tag: u64,
    /// Now, to date message ids.
    pub now_ms: u64,
    /// Offset of `Time` strings from UTC, in minutes.
    pub offset_minutes: i32,
}

impl Naming {
    /// The channel id of connection `generation`: 32 lowercase hex digits.
    pub fn channel_id(&self, generation: u64) -> String {
        format!(
            "{:012x}{:04x}{:016x}",
            self.boot_ms & 0xFFFF_FFFF_FFFF,
            self.shard & 0xFFFF,
            generation
        )
    }
}
