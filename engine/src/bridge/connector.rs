//! The bridge thread: a single-threaded tokio runtime, one async-nats
//! client, and a loop that publishes what the shards hand over, in order.

use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;

use super::{ClusterConfig, Handed, NatsConfig, Rule};
use crate::core::aliyun::names;
use crate::core::cluster::ClusterRoute;
use crate::core::subject::subject_topic;
use crate::shard::Controls;

/// What the bridge thread starts with.
pub(super) struct Parts {
    pub(super) config: NatsConfig,
    /// What the shards hand over.
    pub(super) rx: Receiver<Handed>,
    /// Fires once the shards have stopped.
    pub(super) stopped: oneshot::Receiver<()>,
    /// The inflow rules, the control plane they wait for, and the rules
    /// created and deleted later.
    pub(super) inflow: (
        Vec<Rule>,
        oneshot::Receiver<Controls>,
        tokio::sync::mpsc::UnboundedReceiver<super::RuleChange>,
    ),
    /// The cluster, what the shards tell it, and the control plane.
    pub(super) cluster: (
        ClusterConfig,
        super::cluster::Inputs,
        oneshot::Receiver<Controls>,
    ),
    /// Where durable messages are held until NATS has them, if anywhere.
    pub(super) spool: Option<std::sync::Arc<super::replay::Shared>>,
    /// The bridge's figures.
    pub(super) figures: std::sync::Arc<super::Figures>,
    /// The registry's changes this node proposes, and its owner.
    pub(super) replica: (
        tokio::sync::mpsc::UnboundedReceiver<super::replica::Proposal>,
        oneshot::Receiver<std::sync::Arc<dyn super::ApplyChange>>,
    ),
}

/// How long a stopping bridge waits for NATS to take what it holds.
pub(super) const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Tries to have JetStream store one message.
const JETSTREAM_ATTEMPTS: u32 = 8;

/// Runs until `stopped` fires (the shards have stopped), then sends what
/// is left and flushes.
pub(super) fn run(parts: Parts) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(publish_all(parts)),
        Err(e) => tracing::error!("the NATS bridge cannot start its runtime: {e}"),
    }
}

/// The options of the bridge's connection named `name`. `no_echo`: what it
/// publishes never comes back to it (a cluster node's main connection).
pub(super) fn options(
    config: &NatsConfig,
    name: String,
    no_echo: bool,
) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        // The first server listed first (a node's own, in a cluster); the
        // others when it fails.
        .retain_servers_order()
        .connection_timeout(Duration::from_secs(5))
        .client_capacity(config.client_messages_max)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS bridge connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS bridge disconnected; holding messages until it is back")
                }
                // Every failed reconnect, every few seconds while NATS is
                // down: the warning above already said so.
                async_nats::Event::ClientError(e) => tracing::debug!("NATS bridge: {e}"),
                other => tracing::info!("NATS bridge: {other}"),
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if no_echo {
        options = options.no_echo();
    }
    options
}

async fn publish_all(parts: Parts) {
    let Parts {
        config,
        mut rx,
        mut stopped,
        inflow: (rules, controls, changes),
        cluster: (cluster, events, cluster_controls),
        spool,
        figures,
        replica: (proposed, owner),
    } = parts;
    // In a cluster, what this node publishes never comes back to it.
    let name = match cluster.enabled() {
        true => format!("ringmq-{}", cluster.node_id),
        false => "ringmq".into(),
    };
    let connecting = options(&config, name, cluster.enabled()).connect(config.servers.as_slice());
    let client = match connecting.await {
        Ok(client) => client,
        Err(e) => return tracing::error!("the NATS bridge cannot start: {e}"),
    };
    tracing::info!(servers = ?config.servers, "NATS bridge started");
    let js = async_nats::jetstream::new(client.clone());
    let batch = config.inflow_batch_messages_max;
    tokio::spawn(super::inflow::run_all(
        js.clone(),
        rules,
        controls,
        batch,
        changes,
    ));
    let cluster = match cluster.enabled() {
        true => {
            let inputs = (events, cluster_controls, proposed, owner);
            Some(start_cluster(&config, &client, &js, cluster, inputs))
        }
        false => None,
    };
    let replay = spool.clone().map(|shared| {
        let to = super::replay::Sender {
            client: client.clone(),
            js: js.clone(),
            window: config.jetstream_acks_pending_max as usize,
        };
        let (stop, stopping) = oneshot::channel();
        (stop, tokio::spawn(super::replay::run(shared, to, stopping)))
    });
    let out = Out {
        spool,
        figures,
        js_queued: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        js_queued_max: config.outbox_messages_max,
        cluster,
        seq: std::cell::Cell::new(0),
        js,
        client,
        window: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config.jetstream_acks_pending_max as usize,
        )),
        window_size: config.jetstream_acks_pending_max,
    };
    let deadline = forward(&out, &mut rx, &mut stopped).await;
    finish(&out, &mut rx, deadline, replay).await;
}

/// What the cluster's side starts with: the shards' events, the control
/// plane, the registry's proposals and owner.
type ClusterInputs = (
    super::cluster::Inputs,
    oneshot::Receiver<Controls>,
    tokio::sync::mpsc::UnboundedReceiver<super::replica::Proposal>,
    oneshot::Receiver<std::sync::Arc<dyn super::ApplyChange>>,
);

/// Starts the cluster's tasks (see `cluster`, `replica`, `acks`).
fn start_cluster(
    config: &NatsConfig,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    cluster: ClusterConfig,
    (events, controls, proposed, owner): ClusterInputs,
) -> ClusterOut {
    let replica = super::replica::ReplicaConfig {
        node: cluster.node_id.clone(),
        subject_prefix: cluster.subject_prefix.clone(),
        replicas: cluster.registry_replicas,
    };
    tokio::spawn(super::replica::run(js.clone(), replica, proposed, owner));
    let route = ClusterRoute::new(&cluster.subject_prefix, &cluster.node_id);
    let wait = Duration::from_millis(cluster.remote_ack_wait_ms);
    let acks = super::acks::Acks::new(&route, wait);
    // This run of this node: a restarted node numbers from 1 again.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let origin = format!("{}-{started}", cluster.node_id);
    // Queue groups (shared subscriptions) on a connection of their own,
    // which gets this node's messages too.
    let name = format!("ringmq-{}-groups", cluster.node_id);
    let groups = (options(config, name, false), config.servers.clone());
    let run = super::cluster::run(
        client.clone(),
        groups,
        cluster,
        events,
        controls,
        acks.clone(),
    );
    tokio::spawn(run);
    ClusterOut {
        origin,
        route,
        acks,
    }
}

/// Publishes what the shards hand over, in order, until `stopped` fires;
/// returns when what is left must be sent by (FLUSH_WAIT from then). A
/// publish under way then (waiting for the client's buffer, or for the
/// window of JetStream acknowledgements) is finished first.
async fn forward(
    out: &Out,
    rx: &mut Receiver<Handed>,
    stopped: &mut oneshot::Receiver<()>,
) -> tokio::time::Instant {
    let deadline = || tokio::time::Instant::now() + FLUSH_WAIT;
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = &mut *stopped => return deadline(),
        };
        let Some(msg) = msg else { return deadline() };
        // Never waits for NATS: what it cannot take yet is spooled,
        // queued for JetStream, or dropped and counted.
        publish(out, msg).await;
        if let (Some(spool), true) = (&out.spool, rx.is_empty()) {
            spool.write_pending();
        }
    }
}

/// The replay's stop and its task.
type Replay = (
    oneshot::Sender<tokio::time::Instant>,
    tokio::task::JoinHandle<()>,
);

/// Sends what the shards handed over before they stopped and waits for
/// JetStream's acknowledgements, the spool's replay and the client's
/// flush, by `deadline`.
async fn finish(
    out: &Out,
    rx: &mut Receiver<Handed>,
    deadline: tokio::time::Instant,
    replay: Option<Replay>,
) {
    let (stop, replaying) = replay.unzip();
    let mut stop = stop;
    let rest = async {
        while let Ok(msg) = rx.try_recv() {
            publish(out, msg).await;
        }
        if let Some(spool) = &out.spool {
            spool.write_pending();
        }
        if let Some(stop) = stop.take() {
            let _ = stop.send(deadline);
        }
        let _ = out.window.acquire_many(out.window_size).await;
        out.client.flush().await
    };
    let done = tokio::time::timeout_at(deadline, rest).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("NATS bridge: could not flush before stopping: {e}"),
        Err(_) => tracing::warn!(
            left = rx.len(),
            "NATS bridge: NATS did not take what was held within {FLUSH_WAIT:?}"
        ),
    }
    if let Some(stop) = stop {
        let _ = stop.send(deadline);
    }
    if let Some(replaying) = replaying {
        let _ = replaying.await;
    }
}

/// Passes one message on without waiting for NATS: to the spool (see
/// `spooled`); to JetStream, its acknowledgement awaited in a task of
/// its own (see `queue_for_jetstream`); or to core NATS, tried once.
async fn publish(out: &Out, handed: Handed) {
    let Handed { msg, mut confirm } = handed;
    if let (Some(spool), true) = (&out.spool, spooled(&msg, &confirm)) {
        spool.append(&msg);
        return;
    }
    let mut headers = header_map(&msg.headers);
    if let (true, Some(c)) = (msg.cluster, &out.cluster) {
        out.seq.set(out.seq.get() + 1);
        headers.insert("rmq-n", c.origin.as_str());
        headers.insert("rmq-s", out.seq.get().to_string().as_str());
        // A QoS 1/2 message for nodes with persistent subscribers: they
        // answer once they hold it (see `acks`).
        if let Some(confirm) = confirm.take() {
            if let Some(reply) = expect_answers(c, &msg.subject, confirm) {
                headers.insert("rmq-a", reply.as_str());
            }
        }
    }
    if msg.jetstream {
        return queue_for_jetstream(out, msg, headers, confirm);
    }
    // Not waited for: with the client's buffer full (NATS down for long)
    // the message is dropped, counted.
    let publishing = async {
        match headers.is_empty() {
            true => out.client.publish(msg.subject, msg.payload).await,
            false => {
                let client = &out.client;
                client
                    .publish_with_headers(msg.subject, headers, msg.payload)
                    .await
            }
        }
    };
    match tokio::time::timeout(Duration::ZERO, publishing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("NATS bridge: a message was not published: {e}"),
        Err(_) => out.dropped("the NATS client's buffer (nats.client_messages_max) is full"),
    }
}

/// Publishes `msg` to JetStream in a task of its own once the window of
/// acknowledgements has room (in order: the window is fair); at most
/// `nats.outbox_messages_max` wait, beyond which it is dropped, counted
/// (`confirm` dropped with it: the publisher is disconnected).
fn queue_for_jetstream(
    out: &Out,
    msg: super::Outflow,
    headers: async_nats::HeaderMap,
    confirm: Option<super::Confirm>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    if out.js_queued.fetch_add(1, Relaxed) >= out.js_queued_max {
        out.js_queued.fetch_sub(1, Relaxed);
        return out.dropped("JetStream publishes waiting (nats.outbox_messages_max)");
    }
    let (js, window) = (out.js.clone(), std::sync::Arc::clone(&out.window));
    let queued = std::sync::Arc::clone(&out.js_queued);
    tokio::spawn(async move {
        let permit = window.acquire_owned().await;
        queued.fetch_sub(1, Relaxed);
        let Ok(_permit) = permit else { return };
        let stored = stored(&js, msg.subject, headers, msg.payload, confirm.is_some()).await;
        if let (true, Some(confirm)) = (stored, confirm) {
            let _ = confirm.send(true);
        }
    });
}

/// Publishes to JetStream until the stream acknowledges: at most
/// `JETSTREAM_ATTEMPTS` times, or for as long as the bridge runs when a
/// publisher's acknowledgement waits for it (`confirmed`). Returns
/// whether it was stored.
async fn stored(
    js: &async_nats::jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
    confirmed: bool,
) -> bool {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match stored_once(js, &subject, headers.clone(), payload.clone()).await {
            Ok(()) => return true,
            Err(e) if attempt == JETSTREAM_ATTEMPTS && !confirmed => {
                tracing::warn!(%subject, "NATS bridge: JetStream did not store a message: {e}");
                return false;
            }
            Err(e) => {
                tracing::debug!(%subject, attempt, "NATS bridge: JetStream publish failed: {e}")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// One JetStream publish, its acknowledgement awaited.
pub(super) async fn stored_once(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<(), String> {
    let ack = js
        .publish_with_headers(subject.to_owned(), headers, payload)
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(drop).map_err(|e| e.to_string())
}

/// The subject the nodes a cluster message waits for answer on, or
/// `None` (`confirm` told at once): those with persistent subscribers on
/// its topic, or, for a P2P message, the node of its target's session.
fn expect_answers(c: &ClusterOut, subject: &str, confirm: super::Confirm) -> Option<String> {
    let route = &c.route;
    let topic =
        subject_topic(&route.messages, subject).or_else(|| subject_topic(&route.retained, subject));
    if let Some(topic) = topic {
        return c.acks.expect(&topic, confirm);
    }
    let p2p = subject_topic(&route.p2p, subject);
    match p2p
        .as_deref()
        .map(|t| names::check_topic(t, usize::MAX, usize::MAX))
    {
        Some(Ok(names::Topic::P2p { target, .. })) => c.acks.expect_home(target, confirm),
        _ => confirmed(confirm),
    }
}

/// Tells `confirm` at once that nothing is waited for.
fn confirmed(confirm: super::Confirm) -> Option<String> {
    let _ = confirm.send(true);
    None
}

/// Whether `msg` goes through the spool: a durable one (QoS 1/2 rule
/// messages, status notifications) whose publisher does not wait for it.
fn spooled(msg: &super::Outflow, confirm: &Option<super::Confirm>) -> bool {
    msg.durable && !msg.cluster && confirm.is_none()
}

fn header_map(headers: &[(&'static str, String)]) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.as_str());
    }
    map
}

/// Where messages go: the client, its JetStream context, and the window of
/// JetStream acknowledgements awaited at once.
struct Out {
    figures: std::sync::Arc<super::Figures>,
    /// JetStream publishes waiting for the window, and how many may.
    js_queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    js_queued_max: usize,
    /// Where durable messages go first (`nats.spool_bytes_max` > 0).
    spool: Option<std::sync::Arc<super::replay::Shared>>,
    /// In a cluster: this node's run and who waits for other nodes.
    cluster: Option<ClusterOut>,
    /// The last cluster message's number (`rmq-s`).
    seq: std::cell::Cell<u64>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    window: std::sync::Arc<tokio::sync::Semaphore>,
    /// `nats.jetstream_acks_pending_max`: the window's permits.
    window_size: u32,
}

/// The cluster's part of what is published.
struct ClusterOut {
    /// This node's run (`rmq-n`).
    origin: String,
    route: ClusterRoute,
    acks: super::acks::Acks,
}

impl Out {
    /// A message NATS cannot take yet and the bridge has no room for:
    /// counted, logged at the 1st, 2nd, 4th… time.
    fn dropped(&self, why: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let dropped = self.figures.bridge_dropped.fetch_add(1, Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "NATS bridge: dropping a message: {why}");
        }
    }
}
