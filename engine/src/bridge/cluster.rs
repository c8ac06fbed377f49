//! The cluster's side of the bridge. Out: messages the shards send to the
//! other nodes are published to core NATS with the origin's headers
//! (`rmq-n`, this node's run; `rmq-s`, its sequence number). In: the
//! shards' interest (a filter gained or lost on a shard) becomes NATS
//! subscriptions to the filter's subjects, counted across shards, so NATS
//! sends a node only what it has subscribers for; what arrives is handed
//! to the shards in batches, each origin's messages to one shard (its
//! order kept), and each message once even when several of the node's
//! subscriptions match it.

use std::collections::{HashMap, HashSet, VecDeque};

use std::sync::Arc;

use async_nats::{Client, ConnectOptions, HeaderMap, Subscriber};
use futures_lite::StreamExt;
use ringmq_protocol::properties::PublishProperties;
use ringmq_protocol::{Decoder, Packet, ProtocolVersion, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::acks::{self, Acks};
use super::groups::{GroupKey, Groups, Inbox};
use super::header;
use super::registry::{self, Fetch, Registry};
use super::{ClusterConfig, ClusterEvent};
use crate::core::cluster::{ClusterRoute, Connected, FromCluster, SUBJECT_BYTES_MAX};
use crate::core::subject::{filter_subjects, name_subject, subject_name, subject_topic};
use crate::shard::{Controls, DurableJob};

/// Messages from one origin handed to the shards at once, at most.
const BATCH_MESSAGES_MAX: usize = 256;
/// Sequence numbers remembered per origin to drop a second copy.
const SEEN_PER_ORIGIN: usize = 4096;

/// What the shards tell the cluster's side: their interest and
/// connections, and the sessions their CONNECTs fetch.
pub(super) type Inputs = (
    mpsc::UnboundedReceiver<Vec<ClusterEvent>>,
    mpsc::UnboundedReceiver<Fetch>,
);

/// Subscribes to what the shards are interested in and hands what
/// arrives to them; tells the other nodes of the clients that connect
/// here, and closes the older connection when a client connects on
/// another node; until the bridge stops.
pub(super) async fn run(
    client: Client,
    groups: (ConnectOptions, Vec<String>),
    config: ClusterConfig,
    (mut events, mut fetches): Inputs,
    controls: oneshot::Receiver<Controls>,
    acks: Acks,
) {
    let Ok(controls) = controls.await else { return };
    let route = ClusterRoute::new(&config.subject_prefix, &config.node_id);
    let js = async_nats::jetstream::new(client.clone());
    let durable = acks::start(
        (client.clone(), js.clone()),
        &route,
        config.registry_replicas,
        acks.clone(),
        controls.clone(),
    );
    let registry = Registry::new(js, &config.subject_prefix, config.registry_replicas);
    if config.remote_ack_wait_ms > 0 {
        tokio::spawn(registry.clone().watch_homes(acks));
    }
    let wait = std::time::Duration::from_millis(config.session_move_wait_ms);
    tokio::spawn(registry::serve(
        client.clone(),
        route.clone(),
        controls.clone(),
        wait,
    ));
    let (tx, rx) = mpsc::channel(config.inbox_messages_max);
    tokio::spawn(inject(rx, controls.clone(), route.clone(), client.clone()));
    match client.subscribe(format!("{}.>", route.clients)).await {
        Ok(sub) => {
            tokio::spawn(take_over(sub, controls, route.clone()));
        }
        Err(e) => tracing::warn!("cluster: cannot subscribe to connections: {e}"),
    }
    let mut groups = Groups::connect(groups.0, &groups.1, route.clone(), tx.clone()).await;
    let mut subscribed: HashMap<String, (usize, AbortHandle)> = HashMap::new();
    // Every retained message, whoever subscribes: each node keeps them
    // all. Every P2P message: its target may be here.
    for all in [&route.retained, &route.p2p] {
        gain(&client, &mut subscribed, format!("{all}.>"), &tx).await;
    }
    loop {
        let batch = tokio::select! {
            batch = events.recv() => batch,
            Some(fetch) = fetches.recv() => {
                let (client, registry, route) = (client.clone(), registry.clone(), route.clone());
                tokio::spawn(registry::fetch(client, registry, route, fetch, wait));
                continue;
            }
        };
        let Some(batch) = batch else { return };
        for event in batch {
            match event {
                ClusterEvent::Interest(filter, add) => {
                    for subject in filter_subjects(&route.messages, &filter, SUBJECT_BYTES_MAX) {
                        match add {
                            true => gain(&client, &mut subscribed, subject, &tx).await,
                            false => lose(&mut subscribed, &subject),
                        }
                    }
                }
                ClusterEvent::Connected(c) => {
                    announce(&client, &route, &c).await;
                    if c.persistent {
                        let (registry, node) = (registry.clone(), route.node.clone());
                        tokio::spawn(async move { registry.record(&c.client_id, &node).await });
                    }
                }
                ClusterEvent::Group(filter, group, add) => {
                    if let Some(groups) = groups.as_mut() {
                        groups.change(filter, group, add).await;
                    }
                }
                ClusterEvent::Durable(filter, add) => {
                    let _ = durable.send((filter, add));
                }
            }
        }
    }
}

/// Tells the other nodes that a client connected here (`rmq-t`: when;
/// `rmq-c`: with Clean Start).
async fn announce(client: &Client, route: &ClusterRoute, c: &Connected) {
    let client_id = &*c.client_id;
    let mut headers = HeaderMap::new();
    headers.insert("rmq-n", route.node.as_str());
    headers.insert("rmq-t", c.at_millis.to_string().as_str());
    if c.clean_start {
        headers.insert("rmq-c", "1");
    }
    let subject = name_subject(&route.clients, client_id);
    let sent = client
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await;
    if let Err(e) = sent {
        tracing::warn!(client = client_id, "cluster: connection not announced: {e}");
    }
}

/// Closes this node's connection of a client that connected later on
/// another node (see `Broker::connected_elsewhere`).
async fn take_over(mut sub: Subscriber, controls: Controls, route: ClusterRoute) {
    while let Some(m) = sub.next().await {
        let (Some(node), Some(at)) = (
            header(&m.headers, "rmq-n").map(str::to_owned),
            header(&m.headers, "rmq-t").and_then(|t| t.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let Some(client_id) = subject_name(&route.clients, m.subject.as_str()) else {
            continue;
        };
        let clean_start = header(&m.headers, "rmq-c").is_some();
        for shard in 0..controls.shards() {
            let (client_id, node) = (client_id.clone(), node.clone());
            let job: crate::shard::Job = Box::new(move |broker, now| {
                broker.connected_elsewhere(&client_id, (at, &node), clean_start, now);
            });
            if !controls.run(shard, job) {
                return;
            }
        }
    }
}

async fn gain(
    client: &Client,
    subscribed: &mut HashMap<String, (usize, AbortHandle)>,
    subject: String,
    tx: &Inbox,
) {
    if let Some((count, _)) = subscribed.get_mut(&subject) {
        *count += 1;
        return;
    }
    match client.subscribe(subject.clone()).await {
        Ok(sub) => {
            let task = tokio::spawn(forward(sub, tx.clone(), None));
            subscribed.insert(subject, (1, task.abort_handle()));
        }
        Err(e) => tracing::warn!(%subject, "cluster: cannot subscribe: {e}"),
    }
}

/// One subscription fewer on `subject`; the last one gone, NATS's goes.
pub(super) fn lose<K: Eq + std::hash::Hash>(
    subscribed: &mut HashMap<K, (usize, AbortHandle)>,
    subject: &K,
) {
    let Some((count, task)) = subscribed.get_mut(subject) else {
        return;
    };
    *count -= 1;
    if *count == 0 {
        // The subscriber is dropped with its task: async-nats unsubscribes.
        task.abort();
        subscribed.remove(subject);
    }
}

/// Hands what `sub` receives to the inbox, with the shared group it is
/// for if it is a queue group's.
pub(super) async fn forward(mut sub: Subscriber, tx: Inbox, group: Option<Arc<GroupKey>>) {
    while let Some(m) = sub.next().await {
        if tx.send((m, group.clone())).await.is_err() {
            return;
        }
    }
}

/// One message for a shard.
struct Arrived {
    message: FromCluster,
    /// The shared group a queue group gave it to, for one member here.
    group: Option<Arc<GroupKey>>,
}

/// Hands what arrives to the shards, batch by batch, each batch once the
/// last one is delivered (so a slow node pushes back on NATS).
/// Messages whose publisher waits (header `rmq-a`, see `acks`) are
/// answered once the batches they came in are delivered.
async fn inject(
    mut rx: mpsc::Receiver<(async_nats::Message, Option<Arc<GroupKey>>)>,
    controls: Controls,
    route: ClusterRoute,
    client: Client,
) {
    let mut seen = Seen::default();
    let shards = controls.shards().max(1);
    while let Some(first) = rx.recv().await {
        let mut batches: HashMap<usize, Vec<Arrived>> = HashMap::new();
        let mut answers = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some((m, group)) = next.take() {
            taken += 1;
            if let Some(a) = header(&m.headers, "rmq-a") {
                answers.push(a.to_owned());
            }
            if let Some((shard, arrived)) = arrived(&m, group, &route, &mut seen, shards) {
                batches.entry(shard).or_default().push(arrived);
            }
            if taken < BATCH_MESSAGES_MAX {
                next = rx.try_recv().ok();
            }
        }
        for (shard, batch) in batches {
            if !deliver(&controls, shard, batch).await {
                return;
            }
        }
        answer(&client, &route.node, answers).await;
    }
}

/// Tells the nodes waiting on `answers` that this node holds their messages.
async fn answer(client: &Client, node: &str, answers: Vec<String>) {
    for subject in answers {
        let mut headers = HeaderMap::new();
        headers.insert("rmq-n", node);
        let sent = client
            .publish_with_headers(subject, headers, bytes::Bytes::new())
            .await;
        if let Err(e) = sent {
            tracing::debug!("cluster: a confirmation was not sent: {e}");
        }
    }
}

/// The message, and the shard its origin's messages go to; `None` for a
/// second copy or a subject that is not a topic's. A queue group's
/// (`group`) is never a second copy: NATS gives each group one.
fn arrived(
    m: &async_nats::Message,
    group: Option<Arc<GroupKey>>,
    route: &ClusterRoute,
    seen: &mut Seen,
    shards: usize,
) -> Option<(usize, Arrived)> {
    let origin = header(&m.headers, "rmq-n").unwrap_or_default();
    let seq = header(&m.headers, "rmq-s").and_then(|s| s.parse::<u64>().ok());
    if let (Some(seq), None) = (seq, &group) {
        if !seen.first(origin, seq) {
            return None;
        }
    }
    let subject = m.subject.as_str();
    let (topic, retain) = match subject_topic(&route.messages, subject) {
        Some(topic) => (topic, false),
        None => match subject_topic(&route.retained, subject) {
            Some(topic) => (topic, true),
            None => (subject_topic(&route.p2p, subject)?, false),
        },
    };
    let qos = header(&m.headers, "rmq-q")
        .and_then(|q| q.parse::<u8>().ok())
        .and_then(|q| QoS::from_bits(q).ok())
        .unwrap_or(QoS::AtMostOnce);
    let (payload, properties) = match header(&m.headers, "rmq-v5") {
        Some(_) => with_properties(&m.payload)?,
        None => (m.payload.clone(), None),
    };
    let message = FromCluster {
        topic,
        payload,
        qos,
        retain,
        properties,
    };
    Some((origin_shard(origin, shards), Arrived { message, group }))
}

/// The payload and v5 properties of a message sent as a whole PUBLISH
/// (header `rmq-v5`); `None` if it does not decode.
fn with_properties(bytes: &bytes::Bytes) -> Option<(bytes::Bytes, Option<Box<PublishProperties>>)> {
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, bytes.len().max(16));
    match decoder.decode(&mut buf) {
        Ok(Some(Packet::Publish(p))) => Some((p.payload, p.properties)),
        _ => {
            tracing::debug!("cluster: a message with properties does not decode");
            None
        }
    }
}

/// Each origin's messages go to one shard: their order is kept.
fn origin_shard(origin: &str, shards: usize) -> usize {
    let hash = origin.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    usize::try_from(hash % shards as u64).unwrap_or(0)
}

/// Delivers `batch` through `shard`; false once the shards are gone.
async fn deliver(controls: &Controls, shard: usize, batch: Vec<Arrived>) -> bool {
    let (tx, rx) = oneshot::channel();
    let job: DurableJob = Box::new(move |broker, now| {
        for Arrived { message, group } in batch {
            let known = match &group {
                Some(g) => broker.shared_from_cluster((&g.filter, &g.group), message, now),
                None => broker.publish_from_cluster(message, now),
            };
            if !known {
                tracing::debug!("cluster: a message's subject is not a valid topic here");
            }
        }
        Box::new(move || {
            let _ = tx.send(());
        })
    });
    controls.run_durable(shard, job) && rx.await.is_ok()
}

/// The sequence numbers lately seen from each origin.
#[derive(Default)]
struct Seen {
    by_origin: HashMap<String, (HashSet<u64>, VecDeque<u64>)>,
}

impl Seen {
    /// Whether `seq` from `origin` is new (and remembers it).
    fn first(&mut self, origin: &str, seq: u64) -> bool {
        if !self.by_origin.contains_key(origin) {
            self.by_origin.insert(origin.to_owned(), Default::default());
        }
        let Some((set, order)) = self.by_origin.get_mut(origin) else {
            return true;
        };
        if !set.insert(seq) {
            return false;
        }
        order.push_back(seq);
        if order.len() > SEEN_PER_ORIGIN {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn a_second_copy_is_dropped_and_origins_are_apart() {
        let mut seen = Seen::default();
        assert!(seen.first("a", 1));
        assert!(seen.first("a", 2));
        assert!(!seen.first("a", 1));
        assert!(seen.first("b", 1));
        for seq in 3..5000 {
            assert!(seen.first("a", seq));
        }
        assert!(
            seen.first("a", 1),
            "forgotten after SEEN_PER_ORIGIN newer ones"
        );
    }
}
