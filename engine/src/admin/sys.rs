//! The `$SYS/broker/…` topics, as mosquitto names them, published retained
//! at QoS 0 every `sys_interval_secs` by shard 0 (a control-plane job), so
//! that dashboards and loadgen read them with a plain subscription.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringmq_protocol::QoS;

use super::app::App;
use crate::core::metrics::Observed;
use crate::core::operate::Publisher;

/// How long a publication waits for shard 0.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes the topics until the runtime stops.
pub(crate) async fn publish(app: Arc<App>) {
    let secs = app.config.admin.sys_interval_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let app = Arc::clone(&app);
        let done = tokio::task::spawn_blocking(move || publish_once(&app)).await;
        if let Ok(Err(e)) = done {
            tracing::debug!("$SYS topics not published: {e}");
        }
    }
}

/// The topics and their values now.
pub(crate) fn topics(uptime_secs: u64, total: &Observed) -> Vec<(&'static str, String)> {
    let s = &total.stats;
    vec![
        (
            "$SYS/broker/version",
            format!("ringmq {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime_secs} seconds")),
        (
            "$SYS/broker/clients/connected",
            total.connections.to_string(),
        ),
        ("$SYS/broker/clients/total", total.sessions.to_string()),
        (
            "$SYS/broker/messages/received",
            s.received.total_messages().to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            s.sent.total_messages().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            s.received.total_messages().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            s.sent.total_messages().to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            s.received.total_bytes().to_string(),
        ),
        ("$SYS/broker/bytes/sent", s.sent.total_bytes().to_string()),
        (
            "$SYS/broker/retained messages/count",
            total.retained.to_string(),
        ),
        (
            "$SYS/broker/store/messages/count",
            total.offline_messages.to_string(),
        ),
    ]
}

fn publish_once(app: &App) -> Result<(), crate::shard::NoAnswer> {
    let total = Observed::total(&app.observe()?.shards);
    let topics = topics(app.started.elapsed().as_secs(), &total);
    let job = move |b: &mut crate::core::Broker, now| {
        for (topic, value) in topics {
            let payload = Bytes::from(value);
            if let Err(e) = b.inject(Publisher::System, topic, payload, QoS::AtMostOnce, now) {
                tracing::warn!(topic, "$SYS topic not published: {e}");
            }
        }
    };
    app.handle.controls().call(0, job, PUBLISH_TIMEOUT)
}
