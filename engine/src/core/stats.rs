//! Counters of one shard. Each is a plain integer owned by the shard; the
//! admin endpoint sums them across shards.

use super::metrics::{CodeCounts, PerQos};

/// What happened on one shard since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted (CONNACK 0x00).
    pub connects: u64,
    /// CONNECTs refused.
    pub connects_refused: u64,
    /// CONNECTs refused because the sign-in failed (bad credentials,
    /// token, instance).
    pub signins_refused: u64,
    /// Connections closed before a valid CONNECT (malformed, wrong first
    /// packet, unsupported protocol level, timeout).
    pub connects_malformed: u64,
    /// Connections closed for their transport: a failed TLS handshake or
    /// WebSocket upgrade, a bad TLS record or WebSocket frame (counted by
    /// the shard layer).
    pub transport_errors: u64,
    /// Connections ended by the server for a protocol violation or limit.
    pub protocol_errors: u64,
    /// PUBLISH packets received from clients.
    pub publishes_in: u64,
    /// PUBLISH packets received from clients, per QoS, with payload bytes.
    pub received: PerQos,
    /// Copies written to connections, per QoS of the copy, with payload
    /// bytes.
    pub sent: PerQos,
    /// CONNECTs refused, by (v5) reason code of the CONNACK.
    pub refused_by_code: CodeCounts,
    /// Message copies handed to connections.
    pub deliveries: u64,
    /// QoS 0 copies dropped because a connection's output was full.
    pub dropped_qos0: u64,
    /// Copies dropped because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Copies dropped because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Copies dropped because their Message Expiry Interval ran out.
    pub dropped_expired: u64,
    /// Shared-subscription copies whose group had no member left here.
    pub dropped_no_member: u64,
    /// Copies for persistent sessions dropped, oldest first, because
    /// `offline_messages_max` was reached.
    pub dropped_offline_cap: u64,
    /// Copies for persistent sessions dropped after `offline_retention_secs`.
    pub dropped_offline_retention: u64,
    /// QoS 1/2 PUBLISH refused because the log could not be written.
    pub refused_storage: u64,
    /// Retained messages not stored because `retained_topics_max` was reached.
    pub dropped_retained: u64,
    /// PUBLISH or SUBSCRIBE refused by the authorizer.
    pub denied: u64,
    /// Will messages published.
    pub wills: u64,
    /// Sessions that expired.
    pub sessions_expired: u64,
    /// Connections closed for silence past 1.5 × keep-alive.
    pub keep_alive_timeouts: u64,
    /// Sessions taken over by a new connection with the same client id.
    pub takeovers: u64,
    /// PUBLISH refused by the Alibaba Cloud profile's rules (topic,
    /// payload size, token scope).
    pub publishes_refused: u64,
    /// Connections closed because a token expired, was revoked or did
    /// not verify on upload.
    pub tokens_invalidated: u64,
    /// `$SYS/token*Notice` messages sent.
    pub notices: u64,
    /// Online/offline events published.
    pub events_published: u64,
    /// P2P messages handed to their target's session.
    pub p2p_delivered: u64,
    /// P2P messages whose target has no session.
    pub p2p_no_target: u64,
    /// QoS 1/2 copies for offline sessions that the aliyun profile does
    /// not keep (QoS 2 copies, and copies of QoS 2 subscriptions).
    pub dropped_offline_rule: u64,
    /// Logged copies that could not be read back from the offline log
    /// (a segment damaged or deleted underneath the broker).
    pub dropped_unreadable: u64,
    /// Times a connection let the mesh apply route changes another shard
    /// had sent before it handled what it read (counted by the shard layer).
    pub route_waits: u64,
    /// Those of `route_waits` that ended after `route_catch_up_micros`,
    /// the changes still not applied.
    pub route_waits_expired: u64,
    /// Messages handed to the NATS bridge (counted by the shard layer).
    pub outflow_sent: u64,
    /// Messages for the NATS bridge dropped because its queue was full.
    pub outflow_dropped: u64,
    /// QoS 1/2 messages a rule's stream did not confirm (see
    /// `Broker::unconfirmed`): their publisher's connection was closed.
    pub outflow_unconfirmed: u64,
    /// Messages inflow rules published.
    pub inflow_published: u64,
    /// Messages other nodes of the cluster published, delivered here.
    pub cluster_received: u64,
    /// Messages inflow rules read that the broker refused (topic, size).
    pub inflow_refused: u64,
    /// Persistent sessions given up to another node of the cluster.
    pub sessions_moved_out: u64,
    /// Persistent sessions taken in from another node of the cluster.
    pub sessions_moved_in: u64,
}

impl Stats {
    /// Adds `other`'s counts (the sum over shards). Every field is named,
    /// so a new counter cannot be left out.
    pub fn merge(&mut self, other: &Stats) {
        let Stats {
            connects,
            connects_refused,
            signins_refused,
            connects_malformed,
            transport_errors,
            protocol_errors,
            publishes_in,
            received,
            sent,
            refused_by_code,
            deliveries,
            dropped_qos0,
            dropped_queue_full,
            dropped_too_large,
            dropped_expired,
            dropped_no_member,
            dropped_offline_cap,
            dropped_offline_retention,
            refused_storage,
            dropped_retained,
            denied,
            wills,
            sessions_expired,
            keep_alive_timeouts,
            takeovers,
            publishes_refused,
            tokens_invalidated,
            notices,
            events_published,
            p2p_delivered,
            p2p_no_target,
            dropped_offline_rule,
            dropped_unreadable,
            route_waits,
            route_waits_expired,
            outflow_sent,
            outflow_dropped,
            outflow_unconfirmed,
            inflow_published,
            cluster_received,
            inflow_refused,
            sessions_moved_out,
            sessions_moved_in,
        } = other;
        self.connects += connects;
        self.connects_refused += connects_refused;
        self.signins_refused += signins_refused;
        self.connects_malformed += connects_malformed;
        self.transport_errors += transport_errors;
        self.protocol_errors += protocol_errors;
        self.publishes_in += publishes_in;
        self.received.merge(received);
        self.sent.merge(sent);
        self.refused_by_code.merge(refused_by_code);
        self.deliveries += deliveries;
        self.dropped_qos0 += dropped_qos0;
        self.dropped_queue_full += dropped_queue_full;
        self.dropped_too_large += dropped_too_large;
        self.dropped_expired += dropped_expired;
        self.dropped_no_member += dropped_no_member;
        self.dropped_offline_cap += dropped_offline_cap;
        self.dropped_offline_retention += dropped_offline_retention;
        self.refused_storage += refused_storage;
        self.dropped_retained += dropped_retained;
        self.denied += denied;
        self.wills += wills;
        self.sessions_expired += sessions_expired;
        self.keep_alive_timeouts += keep_alive_timeouts;
        self.takeovers += takeovers;
        self.publishes_refused += publishes_refused;
        self.tokens_invalidated += tokens_invalidated;
        self.notices += notices;
        self.events_published += events_published;
        self.p2p_delivered += p2p_delivered;
        self.p2p_no_target += p2p_no_target;
        self.dropped_offline_rule += dropped_offline_rule;
        self.dropped_unreadable += dropped_unreadable;
        self.route_waits += route_waits;
        self.route_waits_expired += route_waits_expired;
        self.outflow_sent += outflow_sent;
        self.outflow_dropped += outflow_dropped;
        self.outflow_unconfirmed += outflow_unconfirmed;
        self.inflow_published += inflow_published;
        self.cluster_received += cluster_received;
        self.inflow_refused += inflow_refused;
        self.sessions_moved_out += sessions_moved_out;
        self.sessions_moved_in += sessions_moved_in;
    }
}
