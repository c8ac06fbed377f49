//! Every limit the broker enforces, named with its unit last. Values come
//! from the `[limits]` table of the config file; the defaults are what a
//! broker on a small server should hold without tuning.

use serde::{Deserialize, Serialize};

/// The limits of one broker; every shard holds a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest packet accepted from a client, in bytes (v5 Maximum Packet
    /// Size in CONNACK). Checked from the fixed header, before buffering.
    pub packet_bytes_max: u32,
    /// Longest client identifier accepted, in bytes.
    pub client_id_bytes_max: usize,
    /// Longest topic name or filter accepted, in bytes.
    pub topic_bytes_max: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub topic_levels_max: usize,
    /// Highest keep-alive granted, in seconds; a client asking for more (or
    /// for none) gets this one (v5: Server Keep Alive). 0 means no cap.
    pub keep_alive_secs_max: u16,
    /// QoS 1/2 messages in flight per direction and connection: the server's
    /// Receive Maximum, and a cap on the client's.
    pub inflight_count_max: u16,
    /// Messages a session may hold waiting for its window or its client;
    /// beyond it new messages are dropped and counted.
    pub session_queue_messages_max: usize,
    /// Bytes a session may hold waiting (queued messages and unsent socket
    /// output together); beyond it new messages are dropped and counted.
    pub session_queue_bytes_max: usize,
    /// Backlog of one connection (unwritten output plus queued messages),
    /// in bytes, past which publishers feeding it are paused.
    pub backlog_pause_bytes: usize,
    /// How long a congested connection may pause publishers before it is
    /// treated as a slow consumer and left to its own caps, in milliseconds.
    pub slow_consumer_millis: u64,
    /// Subscriptions one client may hold; more get SUBACK 0x97/0x80.
    pub subscriptions_per_client_max: usize,
    /// Highest Session Expiry Interval granted, in seconds.
    pub session_expiry_secs_max: u32,
    /// Highest Topic Alias a v5 client may use towards the server.
    pub topic_alias_max: u16,
    /// Highest Topic Alias the server uses towards a v5 client (also capped
    /// by the client's Topic Alias Maximum); 0: none. Off by default because
    /// some clients (paho-mqtt for Python 2.x) announce a Topic Alias
    /// Maximum but do not resolve the aliases they receive.
    pub topic_alias_out_max: u16,
    /// Sessions (connected or persistent) per instance, split evenly over
    /// the shards; a CONNECT that would start one more gets CONNACK 0x97
    /// (3.1.1: 3, server unavailable).
    pub sessions_max: usize,
    /// Topics with a retained message, per instance (every shard holds the
    /// whole store); a new one beyond it is not retained, and counted.
    pub retained_topics_max: usize,
    /// Time a new connection has to send CONNECT, in seconds.
    pub connect_timeout_secs: u16,
    /// Message copies held for persistent sessions (queued or in flight,
    /// and logged), per instance, split evenly over the shards; beyond it
    /// the oldest queued copies are dropped, and counted.
    pub offline_messages_max: usize,
    /// Age past which a message held for a persistent session is dropped,
    /// in seconds (default 3 days).
    pub offline_retention_secs: u64,
    /// Bytes (payload and topic) of the copies held for persistent
    /// sessions, per instance, split evenly over the shards; beyond it the
    /// oldest queued copies are dropped, and counted.
    pub offline_bytes_max: u64,
    /// Copies one persistent session may hold; 0: no cap below the
    /// instance's (`offline_messages_max`, `offline_bytes_max`). With
    /// storage on, `session_queue_messages_max` and
    /// `session_queue_bytes_max` only bound what a persistent session
    /// keeps in memory while connected; the rest waits on disk.
    pub offline_session_messages_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            packet_bytes_max: 1 << 20,
            client_id_bytes_max: 256,
            topic_bytes_max: 65_535,
            topic_levels_max: 128,
            keep_alive_secs_max: 3_600,
            inflight_count_max: 128,
            session_queue_messages_max: 10_000,
            session_queue_bytes_max: 8 << 20,
            backlog_pause_bytes: 256 << 10,
            slow_consumer_millis: 2_000,
            subscriptions_per_client_max: 1_000,
            session_expiry_secs_max: u32::MAX,
            topic_alias_max: 64,
            topic_alias_out_max: 0,
            retained_topics_max: 100_000,
            sessions_max: 1_000_000,
            connect_timeout_secs: 10,
            offline_messages_max: 1_000_000,
            offline_retention_secs: 3 * 24 * 3600,
            offline_bytes_max: 1 << 30,
            offline_session_messages_max: 0,
        }
    }
}
