//! QoS 1/2 end to end across the cluster: a publisher's acknowledgement
//! waits until every other live node with a persistent session subscribed
//! to its message says it holds it (delivered, or stored for the session
//! as durably as the flush policy says).
//!
//! - **Who has persistent subscribers.** A node puts a key per filter its
//!   persistent sessions subscribe to (`d.<node>.<filter>`) in the bucket
//!   `<subject_prefix>-interest`, and deletes it with the last one; at
//!   start it first clears what an earlier run left. Every node watches
//!   the bucket, keeps who has which filter, and tells its shards which
//!   filters some other node has (`Broker::remote_durable`), so that only
//!   those messages wait.
//! - **Who is alive.** Each node publishes `<subject_prefix>.h.<node>`
//!   every `BEAT`; a node not heard of for `ALIVE_FOR` is not waited for.
//! - **Waiting.** Such a message goes out with the header `rmq-a`, the
//!   subject `<subject_prefix>.k.<node>.<n>` to answer on; a node answers
//!   once it holds the message. When all expected nodes have, the shard is
//!   told to acknowledge; past `cluster.remote_ack_wait_ms`, the publisher
//!   is disconnected unacknowledged (and publishes again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::Client;
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Confirm;
use crate::core::cluster::ClusterRoute;
use crate::core::subject::{name_subject, subject_name};
use crate::core::trie::Trie;
use crate::shard::Controls;

/// How often a node says it is alive.
const BEAT: Duration = Duration::from_secs(1);
/// How long a node not heard of is still waited for.
const ALIVE_FOR: Duration = Duration::from_secs(4);
/// How often expired waits are looked for.
const SWEEP: Duration = Duration::from_millis(50);
/// How long opening the interest bucket may take before it is tried again.
const SETUP_WAIT: Duration = Duration::from_secs(4);
/// How long listing the interest bucket's keys may take.
const LIST_WAIT: Duration = Duration::from_secs(2);
/// How often the interest bucket is tried again while it cannot be opened.
const REOPEN: Duration = Duration::from_secs(2);

/// What the other nodes hold and who waits for them; shared by the
/// bridge's publisher and its tasks (one thread: never contended).
#[derive(Clone)]
pub(super) struct Acks {
    inner: Arc<Mutex<Inner>>,
    node: String,
    /// `<subject_prefix>.k.<node>`: where the answers come.
    answers: String,
}

struct Inner {
    /// Filter → the other nodes with persistent subscribers on it.
    interest: Trie<Vec<Box<str>>>,
    /// Client id → the node holding its persistent session (the session
    /// registry, for P2P messages).
    homes: HashMap<Box<str>, Box<str>>,
    /// When each other node was last heard of.
    alive: HashMap<String, Instant>,
    waiting: HashMap<u64, Waiting>,
    next: u64,
    wait: Duration,
    timeouts: u64,
}

struct Waiting {
    expected: Vec<Box<str>>,
    confirm: Confirm,
    deadline: Instant,
}

impl Acks {
    pub(super) fn new(route: &ClusterRoute, wait: Duration) -> Acks {
        Acks {
            inner: Arc::new(Mutex::new(Inner {
                interest: Trie::default(),
                homes: HashMap::new(),
                alive: HashMap::new(),
                waiting: HashMap::new(),
                next: 0,
                wait,
                timeouts: 0,
            })),
            node: route.node.clone(),
            answers: name_subject(&format!("{}.k", route.prefix), &route.node),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The message on `topic` goes out: the subject the nodes it waits
    /// for answer on, or `None` (told `confirm` at once) if it waits for
    /// none.
    pub(super) fn expect(&self, topic: &str, confirm: Confirm) -> Option<String> {
        let inner = self.lock();
        let mut expected: Vec<Box<str>> = Vec::new();
        inner.interest.for_each_match(topic, |nodes| {
            for n in nodes {
                if !expected.contains(n) {
                    expected.push(n.clone());
                }
            }
        });
        self.wait_for(inner, expected, confirm)
    }

    /// The P2P message for `client_id` goes out: the subject the node
    /// holding its persistent session answers on, or `None` (told
    /// `confirm` at once) if that is this node or none.
    pub(super) fn expect_home(&self, client_id: &str, confirm: Confirm) -> Option<String> {
        let inner = self.lock();
        let home = inner.homes.get(client_id).filter(|n| ***n != *self.node);
        let expected = home.into_iter().cloned().collect();
        self.wait_for(inner, expected, confirm)
    }

    /// Node `node` holds `client_id`'s persistent session now (`None`:
    /// no node does).
    pub(super) fn home(&self, client_id: &str, node: Option<&str>) {
        let mut inner = self.lock();
        match node {
            Some(node) => inner.homes.insert(client_id.into(), node.into()),
            None => inner.homes.remove(client_id),
        };
    }

    /// Waits for those of `expected` that are alive.
    fn wait_for(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        mut expected: Vec<Box<str>>,
        confirm: Confirm,
    ) -> Option<String> {
        let now = Instant::now();
        expected.retain(|n| {
            inner
                .alive
                .get(&**n)
                .is_some_and(|at| now.duration_since(*at) < ALIVE_FOR)
        });
        if expected.is_empty() {
            let _ = confirm.send(true);
            return None;
        }
        inner.next += 1;
        let (n, deadline) = (inner.next, now + inner.wait);
        let waiting = Waiting {
            expected,
            confirm,
            deadline,
        };
        inner.waiting.insert(n, waiting);
        Some(format!("{}.{n}", self.answers))
    }

    /// Node `from` holds message `n`.
    fn answered(&self, n: u64, from: &str) {
        let mut inner = self.lock();
        let Some(w) = inner.waiting.get_mut(&n) else {
            return;
        };
        w.expected.retain(|e| &**e != from);
        if w.expected.is_empty() {
            if let Some(w) = inner.waiting.remove(&n) {
                let _ = w.confirm.send(true);
            }
        }
    }

    /// Waits past their deadline: their publishers are not acknowledged.
    fn sweep(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let expired: Vec<u64> = (inner.waiting.iter())
            .filter(|(_, w)| w.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            let Some(w) = inner.waiting.remove(&n) else {
                continue;
            };
            inner.timeouts += 1;
            // Logged at the 1st, 2nd, 4th, 8th… time.
            if inner.timeouts.is_power_of_two() {
                let nodes: Vec<&str> = w.expected.iter().map(|n| &**n).collect();
                tracing::warn!(?nodes, timeouts = inner.timeouts, "cluster: nodes with persistent subscribers did not confirm a QoS 1/2 message in time");
            }
            let _ = w.confirm.send(false);
        }
    }

    /// Node `node` has (`add`) or no longer has persistent subscribers on
    /// `filter`; whether this made the filter's first or last such node.
    fn interest(&self, filter: &str, node: &str, add: bool) -> bool {
        let mut inner = self.lock();
        let nodes = inner.interest.entry(filter);
        let was_empty = nodes.is_empty();
        match add {
            true if !nodes.iter().any(|n| &**n == node) => nodes.push(node.into()),
            true => {}
            false => nodes.retain(|n| &**n != node),
        }
        let now_empty = nodes.is_empty();
        if now_empty {
            inner.interest.prune(filter);
        }
        was_empty != now_empty
    }

    fn heard(&self, node: String) {
        self.lock().alive.insert(node, Instant::now());
    }
}

/// Starts the tasks: answers, heartbeats, this node's interest and the
/// watch of the others'. What a shard's persistent subscribers gained or
/// lost goes to the returned channel.
pub(super) fn start(
    (client, js): (Client, jetstream::Context),
    route: &ClusterRoute,
    replicas: usize,
    acks: Acks,
    controls: Controls,
) -> mpsc::UnboundedSender<(Box<str>, bool)> {
    let prefix = route.prefix.clone();
    tokio::spawn(answers(client.clone(), acks.clone()));
    tokio::spawn(beat(client.clone(), prefix.clone(), acks.clone()));
    let sweeper = acks.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP);
        loop {
            every.tick().await;
            sweeper.sweep();
        }
    });
    let bucket = format!(
        "{}-interest",
        prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let interest = Interest {
        js,
        bucket,
        replicas,
        acks,
        controls,
        counts: HashMap::new(),
        store: None,
        watching: false,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(interest.run(rx));
    tx
}

async fn answers(client: Client, acks: Acks) {
    let Ok(mut sub) = client.subscribe(format!("{}.*", acks.answers)).await else {
        return tracing::warn!("cluster: cannot take the other nodes' confirmations");
    };
    while let Some(m) = sub.next().await {
        let from = super::header(&m.headers, "rmq-n");
        let n = m.subject.rsplit('.').next().and_then(|n| n.parse().ok());
        if let (Some(from), Some(n)) = (from, n) {
            acks.answered(n, from);
        }
    }
}

async fn beat(client: Client, prefix: String, acks: Acks) {
    let beats = format!("{prefix}.h");
    let Ok(mut heard) = client.subscribe(format!("{beats}.*")).await else {
        return tracing::warn!("cluster: cannot hear the other nodes");
    };
    let own = name_subject(&beats, &acks.node);
    let mut every = tokio::time::interval(BEAT);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let _ = client.publish(own.clone(), bytes::Bytes::new()).await;
            }
            m = heard.next() => match m {
                Some(m) => {
                    if let Some(node) = subject_name(&beats, m.subject.as_str()) {
                        acks.heard(node);
                    }
                }
                None => return,
            },
        }
    }
}

/// This node's part of the interest bucket, and its watch of the others'.
struct Interest {
    js: jetstream::Context,
    bucket: String,
    replicas: usize,
    acks: Acks,
    controls: Controls,
    /// Filter → this node's shards with persistent subscribers on it.
    counts: HashMap<Box<str>, usize>,
    store: Option<kv::Store>,
    /// The others' keys are being watched.
    watching: bool,
}

impl Interest {
    /// Follows what the shards' persistent subscribers gain and lose;
    /// opens the bucket (retried every `REOPEN` until it works).
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<(Box<str>, bool)>) {
        let mut retry = tokio::time::interval(REOPEN);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some((filter, add)) => self.changed(filter, add).await,
                    None => return,
                },
                _ = retry.tick(), if self.store.is_none() => {
                    // Right after a NATS cluster starts, JetStream may not
                    // answer a first request at all: ask again soon.
                    if tokio::time::timeout(SETUP_WAIT, self.open()).await.is_err() {
                        tracing::debug!(bucket = %self.bucket, "cluster: JetStream did not answer");
                    }
                }
            }
        }
    }

    /// Opens the bucket, clears this node's keys of an earlier run, and
    /// starts watching the others'. Retried by `changed` until it works.
    async fn open(&mut self) -> Option<kv::Store> {
        if let Some(store) = &self.store {
            return Some(store.clone());
        }
        tracing::debug!(bucket = %self.bucket, "cluster: opening the interest bucket");
        let store = match self.js.get_key_value(self.bucket.as_str()).await {
            Ok(store) => store,
            Err(_) => super::registry::create_bucket(&self.js, &self.bucket, self.replicas)
                .await
                .map_err(|e| tracing::warn!(bucket = %self.bucket, "cluster: the interest bucket is not available: {e}"))
                .ok()?,
        };
        self.clear_own(&store).await;
        tracing::debug!(bucket = %self.bucket, "cluster: own keys cleared");
        for filter in self.counts.keys() {
            if let Err(e) = store.put(self.key(filter), bytes::Bytes::new()).await {
                tracing::debug!(bucket = %self.bucket, "cluster: not put yet: {e}");
                return None;
            }
        }
        if !self.watching {
            let (acks, controls) = (self.acks.clone(), self.controls.clone());
            tokio::spawn(watch_others(store.clone(), acks, controls));
            self.watching = true;
        }
        self.store = Some(store.clone());
        tracing::debug!(bucket = %self.bucket, "cluster: interest bucket open");
        Some(store)
    }

    fn key(&self, filter: &str) -> String {
        name_subject(&format!("d.{}", self.acks.node), filter)
    }

    async fn clear_own(&self, store: &kv::Store) {
        // Listing the keys of an empty bucket would wait forever.
        let held = match self.js.get_stream(format!("KV_{}", self.bucket)).await {
            Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        };
        if held == 0 {
            return;
        }
        let mine = format!("d.{}.", self.acks.node);
        let listing = async {
            let mut stale = Vec::new();
            let Ok(mut keys) = store.keys().await else {
                return stale;
            };
            while let Some(Ok(key)) = keys.next().await {
                if key.starts_with(&mine) {
                    stale.push(key);
                }
            }
            stale
        };
        let stale = tokio::time::timeout(LIST_WAIT, listing).await;
        for key in stale.unwrap_or_default() {
            let _ = store.delete(key).await;
        }
    }

    /// A shard gained (`add`) its first persistent subscriber on `filter`,
    /// or lost its last.
    async fn changed(&mut self, filter: Box<str>, add: bool) {
        let count = self.counts.entry(filter.clone()).or_insert(0);
        let first_or_last = match add {
            true => {
                *count += 1;
                *count == 1
            }
            false => {
                *count = count.saturating_sub(1);
                *count == 0
            }
        };
        if !add && *count == 0 {
            self.counts.remove(&filter);
        }
        if !first_or_last {
            return;
        }
        let Ok(Some(store)) = tokio::time::timeout(SETUP_WAIT, self.open()).await else {
            return;
        };
        let key = self.key(&filter);
        let done = match add {
            true => store
                .put(key, bytes::Bytes::new())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            false => store.delete(key).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = done {
            // Opened again (own keys cleared, the current ones put) on the
            // next try.
            tracing::warn!(%filter, "cluster: the interest bucket was not updated, trying again: {e}");
            self.store = None;
        }
    }
}

/// Follows the other nodes' keys and tells the shards which filters some
/// other node has persistent subscribers on, for as long as the bridge
/// runs: a watch that ends is started again from the revision after the
/// last one seen, so no change (a key deleted meanwhile included) is
/// missed.
async fn watch_others(store: kv::Store, acks: Acks, controls: Controls) {
    let mut last = 0;
    loop {
        let watch = match last {
            0 => store.watch_with_history(">").await,
            seen => store.watch_from_revision(">", seen + 1).await,
        };
        match watch {
            Ok(watch) => {
                if !follow(watch, &acks, &controls, &mut last).await {
                    return;
                }
                tracing::warn!(
                    revision = last,
                    "cluster: the watch of the interest bucket ended; watching again"
                );
            }
            Err(e) => {
                tracing::warn!("cluster: cannot watch the interest bucket, trying again: {e}")
            }
        }
        tokio::time::sleep(REOPEN).await;
    }
}

/// Applies what `watch` says until it ends (true) or the shards are gone
/// (false); `last` is the last revision seen.
async fn follow(mut watch: kv::Watch, acks: &Acks, controls: &Controls, last: &mut u64) -> bool {
    let own = format!("d.{}.", acks.node);
    while let Some(entry) = watch.next().await {
        let Ok(entry) = entry else { continue };
        *last = entry.revision;
        if entry.key.starts_with(&own) {
            continue;
        }
        let Some((node, filter)) = parse_key(&entry.key) else {
            continue;
        };
        let add = entry.operation == kv::Operation::Put;
        if !acks.interest(&filter, &node, add) {
            continue;
        }
        for shard in 0..controls.shards() {
            let filter = filter.clone();
            let job: crate::shard::Job = Box::new(move |broker, _| {
                broker.remote_durable(&filter, add);
            });
            if !controls.run(shard, job) {
                return false;
            }
        }
    }
    true
}

/// `d.<node>.<filter>` → (node, filter).
fn parse_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("d.")?;
    let (node, token) = rest.split_once('.')?;
    let filter = subject_name("x", &format!("x.{token}"))?;
    Some((node.to_owned(), filter))
}

#[cfg(test)]
mod tests {
    use super::parse_key;
    use crate::core::subject::name_subject;

    #[test]
    fn an_interest_key_reads_back_as_its_node_and_filter() {
        let key = name_subject("d.n1", "a/+/b c/#");
        assert_eq!(parse_key(&key), Some(("n1".into(), "a/+/b c/#".into())));
        assert_eq!(parse_key("d.n1"), None);
        assert_eq!(parse_key("x.n1.abc"), None);
    }
}
