//! `GET /metrics`: the shards' figures in Prometheus's text exposition
//! format (version 0.0.4), names per its conventions: `ringmq_` prefix,
//! base units (seconds, bytes), `_total` on counters.

use std::fmt::Write as _;
use std::sync::Arc;

use hyper::StatusCode;

use super::app::App;
use super::server::{answer, Answer};
use crate::core::metrics::{Histogram, Observed, PerQos, BUCKETS};
use crate::core::stats::Stats;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers a scrape.
pub(crate) async fn serve(app: Arc<App>) -> Answer {
    let probe = Arc::clone(&app);
    let shards = tokio::task::spawn_blocking(move || probe.observe()).await;
    match shards {
        Ok(Ok(o)) => answer(StatusCode::OK, TEXT_FORMAT, render(&app, &o.shards)),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "the shards did not answer\n",
        ),
    }
}

/// The exposition of `shards`.
pub(crate) fn render(app: &App, shards: &[Observed]) -> String {
    let mut w = Writer(String::with_capacity(16 << 10));
    let total = Observed::total(shards);
    let version = env!("CARGO_PKG_VERSION");
    let profile = format!("{:?}", app.config.profile).to_ascii_lowercase();
    w.family("ringmq_info", "gauge", "The broker's version and profile.");
    w.line(
        "ringmq_info",
        &format!("version=\"{version}\",profile=\"{profile}\""),
        1.0,
    );
    w.single(
        "ringmq_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        app.started.elapsed().as_secs_f64(),
    );
    w.single(
        "ringmq_shards",
        "gauge",
        "Shards (one per core).",
        shards.len() as f64,
    );
    per_shard(&mut w, shards);
    w.single(
        "ringmq_retained_messages",
        "gauge",
        "Topics with a retained message.",
        total.retained as f64,
    );
    per_qos(
        &mut w,
        "ringmq_messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        &total.stats.received,
        false,
    );
    per_qos(
        &mut w,
        "ringmq_received_payload_bytes_total",
        "Payload bytes of PUBLISH packets received, by QoS.",
        &total.stats.received,
        true,
    );
    per_qos(
        &mut w,
        "ringmq_messages_sent_total",
        "Message copies written to clients, by QoS of the copy.",
        &total.stats.sent,
        false,
    );
    per_qos(
        &mut w,
        "ringmq_sent_payload_bytes_total",
        "Payload bytes of message copies written, by QoS.",
        &total.stats.sent,
        true,
    );
    counters(&mut w, &total.stats);
    drops(&mut w, &total.stats);
    refusals(&mut w, &total.stats);
    w.single(
        "ringmq_offline_messages",
        "gauge",
        "Message copies held for persistent sessions.",
        total.offline_messages as f64,
    );
    w.single(
        "ringmq_log_bytes",
        "gauge",
        "Bytes of the shards' logs on disk.",
        total.metrics.log_bytes as f64,
    );
    w.single(
        "ringmq_log_errors_total",
        "counter",
        "Failed writes and syncs of the logs.",
        total.metrics.log_errors as f64,
    );
    w.single(
        "ringmq_mesh_backlog_messages",
        "gauge",
        "Messages waiting to go to other shards.",
        total.mesh_backlog_messages as f64,
    );
    w.single(
        "ringmq_mesh_backlog_bytes",
        "gauge",
        "Bytes of messages waiting to go to other shards.",
        total.mesh_backlog_bytes as f64,
    );
    spool(&mut w, app);
    api(&mut w, app);
    histogram(&mut w, "ringmq_publish_ack_seconds", "From handling a QoS 1/2 PUBLISH to writing its PUBACK/PUBREC (waits for other shards and syncs).", &total.metrics.ack_latency);
    histogram(
        &mut w,
        "ringmq_log_sync_seconds",
        "Duration of each sync of the logs to disk.",
        &total.metrics.sync_latency,
    );
    w.0
}

/// One figure of a shard.
type ShardGauge = fn(&Observed) -> u64;

fn per_shard(w: &mut Writer, shards: &[Observed]) {
    let gauges: [(&str, &str, ShardGauge); 2] = [
        ("ringmq_connections", "Connected clients, by shard.", |o| {
            o.connections
        }),
        (
            "ringmq_sessions",
            "Sessions, connected or not, by shard.",
            |o| o.sessions,
        ),
    ];
    for (name, help, value) in gauges {
        w.family(name, "gauge", help);
        for o in shards {
            w.line(name, &format!("shard=\"{}\"", o.shard), value(o) as f64);
        }
    }
}

fn per_qos(w: &mut Writer, name: &str, help: &str, q: &PerQos, bytes: bool) {
    w.family(name, "counter", help);
    for qos in 0..3 {
        let v = if bytes { q.bytes[qos] } else { q.messages[qos] };
        w.line(name, &format!("qos=\"{qos}\""), v as f64);
    }
}

/// The NATS bridge's spool, if the bridge runs.
fn spool(w: &mut Writer, app: &App) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(f) = app.handle.spool() else { return };
    let rows = [
        (
            "ringmq_nats_spooled_total",
            "counter",
            "QoS 1/2 rule messages and status notifications written to the NATS bridge's spool.",
            f.spooled.load(Relaxed),
        ),
        (
            "ringmq_nats_spool_sent_total",
            "counter",
            "Messages of the spool NATS has taken (JetStream acknowledged, or flushed).",
            f.sent.load(Relaxed),
        ),
        (
            "ringmq_nats_spool_dropped_total",
            "counter",
            "Messages the spool dropped: it was full (nats.spool_bytes_max), or NATS refused one 8 times while connected.",
            f.dropped.load(Relaxed),
        ),
        (
            "ringmq_nats_bridge_dropped_total",
            "counter",
            "Messages not spooled (QoS 0 rule messages, the cluster's traffic) that NATS could not take yet and the bridge had no room for (nats.client_messages_max full, or nats.outbox_messages_max JetStream publishes waiting).",
            f.bridge_dropped.load(Relaxed),
        ),
        (
            "ringmq_nats_spool_bytes",
            "gauge",
            "Bytes in the spool NATS has not taken yet.",
            f.held_bytes.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in rows {
        w.single(name, kind, help, value as f64);
    }
}

fn counters(w: &mut Writer, s: &Stats) {
    let rows: [(&str, &str, u64); 25] = [
        (
            "ringmq_transport_errors_total",
            "Connections closed for their transport: a failed TLS handshake or WebSocket upgrade, a bad record or frame.",
            s.transport_errors,
        ),
        ("ringmq_connects_total", "CONNECTs accepted.", s.connects),
        (
            "ringmq_connects_malformed_total",
            "Connections closed before a valid CONNECT.",
            s.connects_malformed,
        ),
        (
            "ringmq_auth_failures_total",
            "CONNECTs refused because the sign-in failed.",
            s.signins_refused,
        ),
        (
            "ringmq_protocol_errors_total",
            "Connections ended by the broker for a protocol violation or a limit.",
            s.protocol_errors,
        ),
        (
            "ringmq_deliveries_total",
            "Message copies handed to connections.",
            s.deliveries,
        ),
        ("ringmq_wills_total", "Will messages published.", s.wills),
        (
            "ringmq_sessions_expired_total",
            "Sessions that expired.",
            s.sessions_expired,
        ),
        (
            "ringmq_keep_alive_timeouts_total",
            "Connections closed for silence past 1.5 x keep-alive.",
            s.keep_alive_timeouts,
        ),
        (
            "ringmq_takeovers_total",
            "Sessions taken over by a new connection with the same client id.",
            s.takeovers,
        ),
        (
            "ringmq_tokens_invalidated_total",
            "Connections closed because their token expired or was revoked.",
            s.tokens_invalidated,
        ),
        (
            "ringmq_notices_total",
            "$SYS token notices sent.",
            s.notices,
        ),
        (
            "ringmq_events_published_total",
            "Online/offline events published.",
            s.events_published,
        ),
        (
            "ringmq_p2p_delivered_total",
            "P2P messages handed to their target's session.",
            s.p2p_delivered,
        ),
        (
            "ringmq_p2p_no_target_total",
            "P2P messages whose target has no session.",
            s.p2p_no_target,
        ),
        (
            "ringmq_route_waits_total",
            "Times a connection let route changes from another shard be applied before it handled what it read.",
            s.route_waits,
        ),
        (
            "ringmq_route_waits_expired_total",
            "Route waits that ended after runtime.route_catch_up_micros, the changes not yet applied.",
            s.route_waits_expired,
        ),
        (
            "ringmq_outflow_sent_total",
            "Messages rules handed to the NATS bridge.",
            s.outflow_sent,
        ),
        (
            "ringmq_outflow_dropped_total",
            "Messages for the NATS bridge dropped because its queue (nats.outbox_messages_max) was full.",
            s.outflow_dropped,
        ),
        (
            "ringmq_outflow_unconfirmed_total",
            "QoS 1/2 messages a rule's stream or another node of the cluster did not confirm; their publisher's connection was closed unacknowledged.",
            s.outflow_unconfirmed,
        ),
        (
            "ringmq_inflow_published_total",
            "Messages inflow rules read from JetStream and published.",
            s.inflow_published,
        ),
        (
            "ringmq_cluster_received_total",
            "Messages other nodes of the cluster published, delivered here.",
            s.cluster_received,
        ),
        (
            "ringmq_inflow_refused_total",
            "Messages inflow rules read that the broker refused (topic, size); terminated in JetStream.",
            s.inflow_refused,
        ),
        (
            "ringmq_sessions_moved_out_total",
            "Persistent sessions given up to another node of the cluster, their client having connected there.",
            s.sessions_moved_out,
        ),
        (
            "ringmq_sessions_moved_in_total",
            "Persistent sessions taken in from another node of the cluster.",
            s.sessions_moved_in,
        ),
    ];
    for (name, help, v) in rows {
        w.single(name, "counter", help, v as f64);
    }
}

fn drops(w: &mut Writer, s: &Stats) {
    let name = "ringmq_dropped_messages_total";
    w.family(name, "counter", "Message copies not delivered, by reason.");
    let rows = [
        ("qos0_backpressure", s.dropped_qos0),
        ("queue_full", s.dropped_queue_full),
        ("too_large", s.dropped_too_large),
        ("expired", s.dropped_expired),
        ("no_member", s.dropped_no_member),
        ("offline_cap", s.dropped_offline_cap),
        ("unreadable", s.dropped_unreadable),
        ("offline_retention", s.dropped_offline_retention),
        ("offline_rule", s.dropped_offline_rule),
        ("retained_cap", s.dropped_retained),
    ];
    w.labeled(name, "reason", &rows);
}

fn refusals(w: &mut Writer, s: &Stats) {
    let name = "ringmq_connects_refused_total";
    w.family(
        name,
        "counter",
        "CONNECTs refused, by CONNACK reason code (MQTT 5 numbering).",
    );
    for &(code, n) in &s.refused_by_code.0 {
        w.line(name, &format!("code=\"0x{code:02x}\""), n as f64);
    }
    let name = "ringmq_publishes_refused_total";
    w.family(name, "counter", "PUBLISH packets refused, by reason.");
    let rows = [
        ("storage", s.refused_storage),
        ("not_authorized", s.denied),
        ("profile_rules", s.publishes_refused),
    ];
    w.labeled(name, "reason", &rows);
}

fn api(w: &mut Writer, app: &App) {
    let counts = app.counts();
    let name = "ringmq_openapi_requests_total";
    w.family(
        name,
        "counter",
        "OpenAPI requests answered, by result (an error code, or OK).",
    );
    w.line(name, "code=\"OK\"", counts.ok as f64);
    for (code, n) in &counts.errors {
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        w.line(name, &format!("code=\"{code}\""), *n as f64);
    }
}

fn histogram(w: &mut Writer, name: &str, help: &str, h: &Histogram) {
    w.family(name, "histogram", help);
    let mut cumulative = 0;
    for i in 0..BUCKETS {
        cumulative += h.counts[i];
        let le = format!("le=\"{}\"", Histogram::bound_secs(i));
        w.line(&format!("{name}_bucket"), &le, cumulative as f64);
    }
    let count = h.count();
    w.line(&format!("{name}_bucket"), "le=\"+Inf\"", count as f64);
    w.line(&format!("{name}_sum"), "", h.sum_micros as f64 / 1e6);
    w.line(&format!("{name}_count"), "", count as f64);
}

/// The exposition being written.
struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &str, value: f64) {
        let _ = match labels.is_empty() {
            true => writeln!(self.0, "{name} {value}"),
            false => writeln!(self.0, "{name}{{{labels}}} {value}"),
        };
    }

    /// One sample per row, `label` set to the row's name.
    fn labeled(&mut self, name: &str, label: &str, rows: &[(&str, u64)]) {
        for (value, n) in rows {
            self.line(name, &format!("{label}=\"{value}\""), *n as f64);
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.line(name, "", value);
    }
}
