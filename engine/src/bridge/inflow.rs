//! Data inflow: a task per inflow rule reads the rule's JetStream stream
//! through a durable pull consumer (`ringmq-<name>`), hands the messages
//! that are ready to one shard as a durable job, and acknowledges each to
//! JetStream once the shards report it delivered or stored. A message the
//! broker refuses (bad headers, a topic the profile forbids, too large) is
//! terminated, not redelivered; it is logged and counted. A message not
//! acknowledged (the broker stopped first) is redelivered by JetStream
//! after `ACK_WAIT`: at least once.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures_lite::StreamExt;

use super::header;
use super::Rule;
use crate::core::inflow::Inflow;
use crate::shard::{Controls, DurableJob};

/// How long JetStream waits for an acknowledgement before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Pause before trying the stream again after it failed.
const RETRY_WAIT: Duration = Duration::from_secs(1);

/// Why a rule's reading stopped.
enum Stop {
    /// The shards are gone: the broker is stopping.
    Stopping,
    /// NATS or the stream failed; try again.
    Failed(String),
}

/// An inflow rule created or deleted while the broker runs (through the
/// OpenAPI).
#[derive(Debug)]
pub enum RuleChange {
    /// Start reading the rule's stream.
    Start(Rule),
    /// Stop the rule of that name (its durable consumer stays on the
    /// stream: a rule created again with the name resumes from it).
    Stop(String),
}

/// Starts a task per inflow rule once the shards' control plane is known,
/// then starts and stops rules as `changes` say.
pub(super) async fn run_all(
    js: jetstream::Context,
    rules: Vec<Rule>,
    controls: tokio::sync::oneshot::Receiver<Controls>,
    batch: usize,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<RuleChange>,
) {
    let Ok(controls) = controls.await else { return };
    let mut running = std::collections::HashMap::new();
    let start = |rule: Rule| {
        // One shard per rule: its messages keep the stream's order.
        let shards = controls.shards().max(1) as u64;
        let shard = rule
            .name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let shard = (shard % shards) as usize;
        tokio::spawn(run(js.clone(), rule, controls.clone(), shard, batch))
    };
    for rule in rules {
        running.insert(rule.name.clone(), start(rule));
    }
    while let Some(change) = changes.recv().await {
        match change {
            RuleChange::Start(rule) => {
                tracing::info!(rule = %rule.name, stream = %rule.stream, "inflow: rule created");
                let name = rule.name.clone();
                if let Some(old) = running.insert(name, start(rule)) {
                    old.abort();
                }
            }
            RuleChange::Stop(name) => {
                if let Some(task) = running.remove(&name) {
                    tracing::info!(rule = %name, "inflow: rule deleted");
                    task.abort();
                }
            }
        }
    }
}

/// Reads `rule`'s stream until the broker stops, reconnecting to the
/// stream when it fails (NATS down, the stream not created yet).
async fn run(js: jetstream::Context, rule: Rule, controls: Controls, shard: usize, batch: usize) {
    let mut failing = false;
    loop {
        let stop = match consumer(&js, &rule, batch).await {
            Ok(consumer) => {
                if failing {
                    tracing::info!(rule = %rule.name, stream = %rule.stream, "inflow: reading the stream again");
                }
                failing = false;
                pump(&consumer, &rule, &controls, shard, batch).await
            }
            Err(e) => Stop::Failed(e),
        };
        match stop {
            Stop::Stopping => return,
            Stop::Failed(e) if !failing => {
                failing = true;
                tracing::warn!(rule = %rule.name, stream = %rule.stream, "inflow: cannot read the stream, retrying: {e}");
            }
            Stop::Failed(e) => tracing::debug!(rule = %rule.name, "inflow: {e}"),
        }
        tokio::time::sleep(RETRY_WAIT).await;
    }
}

/// The rule's durable consumer, created if missing.
async fn consumer(
    js: &jetstream::Context,
    rule: &Rule,
    batch: usize,
) -> Result<PullConsumer, String> {
    let stream = js
        .get_stream(&rule.stream)
        .await
        .map_err(|e| e.to_string())?;
    let durable = format!("ringmq-{}", rule.name);
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: rule.subject.clone(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: i64::try_from(batch).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|e| e.to_string())?;
    // An existing consumer keeps its filter: reading it for a rule that
    // says another would take the wrong messages.
    let filter = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .config
        .filter_subject
        .clone();
    if filter != rule.subject {
        return Err(format!(
            "its consumer {durable} on stream {} takes subject {filter:?}, the rule says {:?}: delete the consumer (nats consumer rm {} {durable}) or name the rule otherwise",
            rule.stream, rule.subject, rule.stream
        ));
    }
    Ok(consumer)
}

/// Hands what the consumer delivers to `shard`, as much as is ready at
/// once (at most `batch`), until it fails or the broker stops.
async fn pump(
    consumer: &PullConsumer,
    rule: &Rule,
    controls: &Controls,
    shard: usize,
    batch: usize,
) -> Stop {
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await;
    let mut messages = match messages {
        Ok(m) => m,
        Err(e) => return Stop::Failed(e.to_string()),
    };
    let mut refused = 0u64;
    loop {
        let mut ready = Vec::new();
        while ready.len() < batch {
            // The first waits; the others only if already there.
            let next = match ready.is_empty() {
                true => messages.next().await,
                false => match futures_lite::future::poll_once(messages.next()).await {
                    Some(next) => next,
                    None => break,
                },
            };
            match next {
                Some(Ok(m)) => ready.push(m),
                Some(Err(e)) => tracing::debug!(rule = %rule.name, "inflow: {e}"),
                None => return Stop::Failed("the consumer's message stream ended".into()),
            }
        }
        if let Err(stop) = deliver(ready, rule, controls, shard, &mut refused).await {
            return stop;
        }
    }
}

/// Publishes `ready` through `shard` and acknowledges each message once
/// durable; terminates the ones the broker refused.
async fn deliver(
    ready: Vec<jetstream::Message>,
    rule: &Rule,
    controls: &Controls,
    shard: usize,
    refused: &mut u64,
) -> Result<(), Stop> {
    let inflows: Vec<Result<Inflow, String>> = ready.iter().map(|m| to_inflow(rule, m)).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: DurableJob = Box::new(move |broker, now| {
        let results: Vec<Result<(), String>> = inflows
            .into_iter()
            .map(|msg| match msg {
                Ok(msg) => broker
                    .publish_inflow(msg, now)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(why) => {
                    broker.stats.inflow_refused += 1;
                    Err(why)
                }
            })
            .collect();
        Box::new(move || {
            let _ = tx.send(results);
        })
    });
    if !controls.run_durable(shard, job) {
        return Err(Stop::Stopping);
    }
    let results = rx.await.map_err(|_| Stop::Stopping)?;
    for (m, result) in ready.iter().zip(results) {
        let acked = match result {
            Ok(()) => m.ack().await,
            Err(why) => {
                *refused += 1;
                // Logged at the 1st, 2nd, 4th, 8th… refusal of the rule.
                if refused.is_power_of_two() {
                    tracing::warn!(rule = %rule.name, subject = %m.subject, refused = *refused, "inflow: message refused and terminated: {why}");
                }
                m.ack_with(AckKind::Term).await
            }
        };
        if let Err(e) = acked {
            return Err(Stop::Failed(format!("acknowledgement not sent: {e}")));
        }
    }
    Ok(())
}

/// The MQTT message for JetStream message `m` under `rule`.
fn to_inflow(rule: &Rule, m: &jetstream::Message) -> Result<Inflow, String> {
    Inflow::from_nats(
        &rule.topic,
        header(&m.headers, "mqttSecondTopic"),
        header(&m.headers, "qoslevel"),
        m.payload.clone(),
    )
}
