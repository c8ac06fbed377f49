//! The aliyun profile's registry (Group IDs, parent topics, access keys,
//! device credentials, tokens issued and revoked, custom auth) shared by
//! the nodes of a cluster. A change made through any node's OpenAPI is
//! proposed to a JetStream stream, `<subject_prefix>-registry` (subject
//! `<subject_prefix>.a`), and every node — the proposing one too — reads
//! the stream through its own durable consumer and applies the changes in
//! the stream's order: all nodes go through the same changes in the same
//! order, so they enforce the same rules. The proposer's caller hears the
//! outcome of its change as applied there (a change that lost a race, such
//! as a Group ID created twice at once, is refused the same way on every
//! node). A node that was down reads what it missed when it is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures_lite::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::header;
use crate::core::aliyun::registry::{Change, RegistryError};

/// Applies a change read from the stream to this node's registry.
pub trait ApplyChange: Send + Sync + std::fmt::Debug {
    /// Checks `change` against this node's registry and, if it passes,
    /// makes it durable and has every shard apply it.
    fn apply_change(&self, change: Change) -> Result<(), RegistryError>;
}

/// A change proposed by this node, and who waits for its outcome.
#[derive(Debug)]
pub(super) struct Proposal {
    change: Change,
    reply: std::sync::mpsc::Sender<Result<(), RegistryError>>,
}

/// The registry owner's way to propose changes to the cluster.
#[derive(Debug, Clone)]
pub struct Proposals {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Proposals {
    /// Proposes `change` and waits (at most `wait`) until this node has
    /// applied it in the stream's order; its outcome there.
    pub fn propose(&self, change: Change, wait: Duration) -> Result<(), RegistryError> {
        let (reply, outcome) = std::sync::mpsc::channel();
        let unavailable = |why: &str| RegistryError::Unavailable(why.into());
        self.tx
            .send(Proposal { change, reply })
            .map_err(|_| unavailable("the NATS bridge stopped"))?;
        outcome
            .recv_timeout(wait)
            .map_err(|_| unavailable("the cluster's registry stream did not answer in time"))?
    }
}

/// How long a JetStream request of the replica waits for an answer.
const SETUP_WAIT: Duration = Duration::from_secs(2);
/// Pause before trying the stream again after it failed.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// Changes kept in the stream (a node down for longer than it takes to
/// make this many changes misses the oldest ones).
const STREAM_MESSAGES_MAX: i64 = 100_000;

/// The replica's settings.
pub(super) struct ReplicaConfig {
    pub(super) node: String,
    pub(super) subject_prefix: String,
    pub(super) replicas: usize,
}

/// The channel the registry's owner proposes on, and the bridge's end.
pub(super) fn channel() -> (Proposals, mpsc::UnboundedReceiver<Proposal>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Proposals { tx }, rx)
}

/// Reads the stream and applies what it holds, and publishes what this
/// node proposes, until the bridge stops; starts once the registry's owner
/// is known (never outside the aliyun profile).
pub(super) async fn run(
    js: jetstream::Context,
    config: ReplicaConfig,
    mut proposals: mpsc::UnboundedReceiver<Proposal>,
    owner: oneshot::Receiver<Arc<dyn ApplyChange>>,
) {
    let Ok(owner) = owner.await else { return };
    let mut replica = Replica {
        js,
        config,
        owner,
        pending: HashMap::new(),
        next: 0,
    };
    let mut failing = false;
    loop {
        // Right after a NATS cluster starts, JetStream may not answer a
        // first request at all: give up on it soon and ask again.
        let consumer = tokio::time::timeout(SETUP_WAIT, replica.consumer()).await;
        match consumer.unwrap_or_else(|_| Err("JetStream did not answer".into())) {
            Ok(consumer) => {
                if failing {
                    tracing::info!("cluster: reading the registry stream again");
                }
                failing = false;
                match replica.pump(&consumer, &mut proposals).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!("cluster: the registry stream failed: {e}"),
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cluster: cannot read the registry stream, retrying: {e}");
            }
            Err(e) => tracing::debug!("cluster: registry stream: {e}"),
        }
        replica.refuse_pending();
        tokio::time::sleep(RETRY_WAIT).await;
    }
}

struct Replica {
    js: jetstream::Context,
    config: ReplicaConfig,
    owner: Arc<dyn ApplyChange>,
    /// Proposals published and not yet read back, by number.
    pending: HashMap<u64, std::sync::mpsc::Sender<Result<(), RegistryError>>>,
    next: u64,
}

impl Replica {
    fn subject(&self) -> String {
        format!("{}.a", self.config.subject_prefix)
    }

    /// The node's durable consumer, the stream created if missing.
    async fn consumer(&self) -> Result<PullConsumer, String> {
        let prefix = &self.config.subject_prefix;
        let name = prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let config = stream::Config {
            name: format!("{name}-registry"),
            description: Some("ringmq: changes of the aliyun registry, in order".into()),
            subjects: vec![self.subject()],
            max_messages: STREAM_MESSAGES_MAX,
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        let stream = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| e.to_string())?;
        let durable = format!("ringmq-registry-{}", self.config.node);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 1,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| e.to_string())
    }

    /// Applies what the stream delivers and publishes proposals, until the
    /// consumer fails (`Err`) or the bridge stops (`Ok`).
    async fn pump(
        &mut self,
        consumer: &PullConsumer,
        proposals: &mut mpsc::UnboundedReceiver<Proposal>,
    ) -> Result<(), String> {
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                proposal = proposals.recv() => match proposal {
                    Some(p) => self.publish(p).await,
                    None => return Ok(()),
                },
                m = messages.next() => match m {
                    Some(Ok(m)) => self.apply(m).await?,
                    Some(Err(e)) => tracing::debug!("cluster: registry stream: {e}"),
                    None => return Err("the consumer's message stream ended".into()),
                },
            }
        }
    }

    /// Publishes `p` to the stream; its outcome comes when it is read back.
    async fn publish(&mut self, p: Proposal) {
        let Ok(body) = serde_json::to_vec(&p.change) else {
            let _ = p
                .reply
                .send(Err(RegistryError::Invalid("unencodable".into())));
            return;
        };
        self.next += 1;
        let mut headers = HeaderMap::new();
        headers.insert("rmq-n", self.config.node.as_str());
        headers.insert("rmq-p", self.next.to_string().as_str());
        let sent = self
            .js
            .publish_with_headers(self.subject(), headers, body.into())
            .await;
        let stored = match sent {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => {
                self.pending.insert(self.next, p.reply);
            }
            Err(e) => {
                let why = format!("the cluster's registry stream did not take the change: {e}");
                let _ = p.reply.send(Err(RegistryError::Unavailable(why)));
            }
        }
    }

    /// Applies one change read from the stream, tells its proposer (if
    /// this node) the outcome, and acknowledges it.
    async fn apply(&mut self, m: jetstream::Message) -> Result<(), String> {
        let mine = (header(&m.headers, "rmq-n") == Some(self.config.node.as_str()))
            .then(|| header(&m.headers, "rmq-p").and_then(|n| n.parse::<u64>().ok()))
            .flatten();
        let outcome = match serde_json::from_slice::<Change>(&m.payload) {
            Ok(change) => {
                let owner = Arc::clone(&self.owner);
                let applied = tokio::task::spawn_blocking(move || owner.apply_change(change));
                applied
                    .await
                    .unwrap_or_else(|e| Err(RegistryError::Unavailable(e.to_string())))
            }
            Err(e) => Err(RegistryError::Invalid(format!("unreadable change: {e}"))),
        };
        if let Err(e) = &outcome {
            tracing::info!(
                proposed_here = mine.is_some(),
                "cluster: a registry change was refused here: {e}"
            );
        }
        if let Some(reply) = mine.and_then(|n| self.pending.remove(&n)) {
            let _ = reply.send(outcome);
        }
        m.ack().await.map_err(|e| e.to_string())
    }

    /// Proposals whose outcome can no longer come (the consumer failed):
    /// their callers hear so; the changes may still be applied later.
    fn refuse_pending(&mut self) {
        for (_, reply) in self.pending.drain() {
            let why = "the cluster's registry stream failed; the change may still be applied";
            let _ = reply.send(Err(RegistryError::Unavailable(why.into())));
        }
    }
}
