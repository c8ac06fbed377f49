//! The trace store of one shard: device events (connect, close,
//! disconnect), publishes and deliveries, each with the client, the
//! connection and the message id, in time order in a bounded ring
//! (`events_max` per instance, split over the shards; `retention_secs`).
//! Queries scan the shard's ring and answer in the product's shapes; the
//! instance merges the shards' answers and pages them.

pub mod answer;

use std::collections::VecDeque;

use ringmq_protocol::MqttString;
use serde::{Deserialize, Serialize};

/// The `[trace]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Whether events are recorded; by default on in the aliyun profile,
    /// off in the standard one.
    pub enabled: Option<bool>,
    /// Events kept per instance (split evenly over the shards), about 64
    /// bytes each; the oldest go first.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A connection's CONNECT was accepted.
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

    fn is_device(self) -> bool {
        matches!(self, Action::Connect | Action::Close | Action::Disconnect)
    }
}

/// Why, for device events (the product's `ActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    /// CONNECT accepted.
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
    fn text(self, action: Action) -> &'static str {
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

/// One recorded event: 32 bytes, no pointer (the client is a name in the
/// store's table), so the ring costs one cache line per two events.
#[derive(Debug, Clone, Copy)]
struct Event {
    time_ms: u64,
    /// The message, for message events; 0 for device events.
    msg_id: u64,
    /// The connection's generation on its shard (its channel).
    channel: u64,
    /// The client, in the store's name table.
    name: TraceName,
    action: Action,
    info: Info,
}

/// A client id in a shard's trace store: sessions hold one for as long as
/// they live, events refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceName(u32);

impl TraceName {
    /// No name (the store is off).
    pub const NONE: TraceName = TraceName(u32::MAX);
}

/// One entry of the name table.
#[derive(Debug)]
struct Name {
    client: MqttString,
    /// Sequence number of the last event naming it.
    last_seq: u64,
    /// A session holds it.
    held: bool,
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
    fn range(&self) -> (u64, u64) {
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

    fn wants(&self, e: &Event, client: &str) -> bool {
        match self {
            TraceQuery::Device { client_id, .. } => e.action.is_device() && client == client_id,
            TraceQuery::MessageOfClient { client_id, .. } => {
                let message = matches!(
                    e.action,
                    Action::PubMqtt | Action::Sub | Action::PushOffline
                );
                message && client == client_id
            }
            TraceQuery::Publish { msg_id, .. } => {
                matches!(e.action, Action::PubMqtt | Action::PubMq) && e.msg_id == *msg_id
            }
            TraceQuery::Subscribe {
                msg_id, client_id, ..
            } => {
                matches!(e.action, Action::Sub | Action::PushOffline)
                    && e.msg_id == *msg_id
                    && client_id.as_deref().is_none_or(|c| c == client)
            }
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

/// One shard's trace store.
#[derive(Debug, Default)]
pub struct Traces {
    events: VecDeque<Event>,
    /// Client ids events refer to, by [`TraceName`].
    names: Vec<Name>,
    /// Entries of `names` free for reuse.
    free: Vec<u32>,
    /// Sequence number of the next event.
    seq: u64,
    /// Events kept at most.
    cap: usize,
    /// Age past which events go, in ms.
    retention_ms: u64,
}

impl Traces {
    /// A store of `cap` events (0: records nothing), kept `retention_ms`.
    pub fn new(cap: usize, retention_ms: u64) -> Self {
        Traces {
            cap,
            retention_ms,
            ..Traces::default()
        }
    }

    /// Whether events are recorded at all.
    pub fn is_on(&self) -> bool {
        self.cap > 0
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Entries in the name table (held by sessions, or named by events).
    pub fn names(&self) -> usize {
        self.names.len() - self.free.len()
    }

    /// A name for `client`, held until [`Traces::release`].
    pub fn intern(&mut self, client: &MqttString) -> TraceName {
        if self.cap == 0 {
            return TraceName::NONE;
        }
        let name = Name {
            client: client.clone(),
            last_seq: self.seq,
            held: true,
        };
        match self.free.pop() {
            Some(i) => {
                self.names[i as usize] = name;
                TraceName(i)
            }
            None => {
                self.names.push(name);
                TraceName(self.names.len() as u32 - 1)
            }
        }
    }

    /// The session of `name` ended: its entry goes once no event names it.
    pub fn release(&mut self, name: TraceName) {
        if let Some(n) = self.names.get_mut(name.0 as usize) {
            n.held = false;
        }
    }

    /// Records one event of client `name`; the oldest goes when the store
    /// is full.
    pub fn record(
        &mut self,
        time_ms: u64,
        action: Action,
        info: Info,
        name: TraceName,
        channel: u64,
        msg_id: u64,
    ) {
        let Some(n) = self.names.get_mut(name.0 as usize) else {
            return;
        };
        n.last_seq = self.seq;
        self.seq += 1;
        if self.events.len() >= self.cap {
            self.events.pop_front();
        }
        // Clocks may step back: keep the ring sorted for the range search.
        let time_ms = self
            .events
            .back()
            .map_or(time_ms, |e| e.time_ms.max(time_ms));
        self.events.push_back(Event {
            time_ms,
            msg_id,
            channel,
            name,
            action,
            info,
        });
    }

    /// Drops events older than the retention at `now_ms`, and the names
    /// no session holds and no event names any more.
    pub fn purge(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.retention_ms);
        while self.events.front().is_some_and(|e| e.time_ms < oldest) {
            self.events.pop_front();
        }
        let first_seq = self.seq - self.events.len() as u64;
        for (i, n) in self.names.iter_mut().enumerate() {
            if !n.held && n.last_seq < first_seq && !n.client.is_empty() {
                n.client = MqttString::default();
                self.free.push(i as u32);
            }
        }
    }

    /// The events `q` asks for, oldest first, named by `naming`.
    pub fn query(&self, q: &TraceQuery, naming: &Naming) -> Vec<TraceItem> {
        let (begin, end) = q.range();
        let from = self.events.partition_point(|e| e.time_ms < begin);
        let to = self.events.partition_point(|e| e.time_ms < end);
        let client = |e: &Event| {
            self.names
                .get(e.name.0 as usize)
                .map_or("", |n| n.client.as_str())
        };
        self.events
            .range(from..to.max(from))
            .filter(|e| q.wants(e, client(e)))
            .map(|e| item(e, client(e), naming))
            .collect()
    }
}

fn item(e: &Event, client: &str, n: &Naming) -> TraceItem {
    TraceItem {
        time_ms: e.time_ms,
        action: e.action.name().into(),
        action_code: e.action.code().into(),
        action_info: e.info.text(e.action).into(),
        client_id: client.into(),
        msg_id: match e.msg_id {
            0 => String::new(),
            id => super::message::msg_id_string(id, n.now_ms, n.instance_tag),
        },
        channel_id: n.channel_id(e.channel),
        time: format_time(e.time_ms, n.offset_minutes),
    }
}

/// `yyyy-MM-dd HH:mm:ss.SSS` of `ms` since the Unix epoch, shifted by
/// `offset_minutes`.
pub fn format_time(ms: u64, offset_minutes: i32) -> String {
    let shifted = ms as i64 + i64::from(offset_minutes) * 60_000;
    let (days, rest) = (
        shifted.div_euclid(86_400_000),
        shifted.rem_euclid(86_400_000),
    );
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}.{milli:03}")
}

/// Year, month, day of a day number since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_like_the_product() {
        // 2021-05-21 07:51:54.867 UTC is 15:51:54.867 in China.
        assert_eq!(
            format_time(1_621_583_514_867, 480),
            "2021-05-21 15:51:54.867"
        );
        assert_eq!(format_time(0, 0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(951_782_400_000, 0), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn an_event_takes_32_bytes() {
        assert!(std::mem::size_of::<Event>() <= 32);
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_by_range() {
        let mut t = Traces::new(3, 1_000);
        let c = t.intern(&MqttString::new("GID_a@@@1".to_owned()).unwrap_or_default());
        for (i, a) in [Action::Connect, Action::Sub, Action::Close, Action::Connect]
            .iter()
            .enumerate()
        {
            t.record(100 + i as u64, *a, Info::Accepted, c, 7, 9);
        }
        assert_eq!(t.len(), 3);
        let naming = Naming {
            shard: 1,
            boot_ms: 5,
            instance_tag: 0,
            now_ms: 200,
            offset_minutes: 0,
        };
        let q = TraceQuery::Device {
            client_id: "GID_a@@@1".into(),
            begin_ms: 0,
            end_ms: 1_000,
        };
        let got: Vec<_> = t.query(&q, &naming).into_iter().map(|i| i.action).collect();
        assert_eq!(got, vec!["close", "connect"]);
        let q = TraceQuery::Device {
            client_id: "GID_a@@@1".into(),
            begin_ms: 103,
            end_ms: 104,
        };
        assert_eq!(t.query(&q, &naming).len(), 1);
        assert_eq!(naming.channel_id(7), "00000000000500010000000000000007");
        t.purge(1_102);
        assert_eq!(t.len(), 2);
        t.release(c);
        t.purge(1_102);
        assert_eq!(t.names(), 1, "events still name it");
        t.purge(5_000);
        assert_eq!((t.len(), t.names()), (0, 0));
        let again = t.intern(&MqttString::new("GID_b@@@2".to_owned()).unwrap_or_default());
        assert_eq!(again, c, "a free entry is reused");
    }
}
