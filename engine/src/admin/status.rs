//! The status page (`GET /`, one self-contained HTML file: no build step,
//! nothing fetched from elsewhere), the JSON it polls every second
//! (`GET /api/status`) and the health check (`GET /healthz`).

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use super::app::App;
use super::server::{answer, Answer};
use crate::core::metrics::{Histogram, Observed};

const PAGE: &str = include_str!("status.html");
const JSON: &str = "application/json";

/// `GET /`.
pub(crate) fn page() -> Answer {
    answer(StatusCode::OK, "text/html; charset=utf-8", PAGE)
}

/// `GET /healthz`: 200 once every shard answers its control channel
/// (a shard does so only after it has restored its state and listens),
/// within the last quarter second.
pub(crate) async fn health(app: Arc<App>) -> Answer {
    let shards = app.handle.controls().shards();
    let probe = Arc::clone(&app);
    match tokio::task::spawn_blocking(move || probe.observe()).await {
        Ok(Ok(_)) => answer(
            StatusCode::OK,
            JSON,
            json!({"status": "ok", "shards": shards}).to_string(),
        ),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            json!({"status": "unavailable", "shards": shards}).to_string(),
        ),
    }
}

/// `GET /api/status`: totals (the page derives rates), connections and
/// sessions per shard, and the acknowledgement latency over about the
/// last second.
pub(crate) async fn json(app: Arc<App>) -> Answer {
    let probe = Arc::clone(&app);
    let Ok(Ok(o)) = tokio::task::spawn_blocking(move || probe.observe()).await else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            json!({"error": "the shards did not answer"}).to_string(),
        );
    };
    let shards = &o.shards;
    let total = Observed::total(shards);
    let ack = app.ack_last_second(o.at, &total.metrics.ack_latency);
    let s = &total.stats;
    let dropped = s.dropped_qos0
        + s.dropped_queue_full
        + s.dropped_too_large
        + s.dropped_expired
        + s.dropped_no_member
        + s.dropped_offline_cap
        + s.dropped_unreadable
        + s.dropped_offline_retention
        + s.dropped_offline_rule;
    let per_shard: Vec<_> = shards
        .iter()
        .map(|o| json!({"shard": o.shard, "connections": o.connections, "sessions": o.sessions}))
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "profile": format!("{:?}", app.config.profile).to_ascii_lowercase(),
        "uptime_secs": app.started.elapsed().as_secs(),
        "shards": shards.len(),
        "time_ms": o.time_ms,
        "connections": total.connections,
        "sessions": total.sessions,
        "messages_received": s.received.total_messages(),
        "messages_sent": s.sent.total_messages(),
        "bytes_received": s.received.total_bytes(),
        "bytes_sent": s.sent.total_bytes(),
        "deliveries": s.deliveries,
        "dropped": dropped,
        "connects_refused": s.connects_refused,
        "offline_messages": total.offline_messages,
        "log_bytes": total.metrics.log_bytes,
        "ack_latency": latency(&ack),
        "per_shard": per_shard,
    });
    answer(StatusCode::OK, JSON, body.to_string())
}

fn latency(h: &Histogram) -> serde_json::Value {
    json!({
        "count": h.count(),
        "p50_secs": h.quantile_secs(0.5),
        "p90_secs": h.quantile_secs(0.9),
        "p99_secs": h.quantile_secs(0.99),
        "max_secs": h.quantile_secs(1.0),
    })
}
