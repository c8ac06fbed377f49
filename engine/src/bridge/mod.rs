//! The bridge to NATS: a thread of its own running a tokio runtime and an
//! async-nats client. Shards hand it what rules send out over one bounded
//! queue and never wait on it: a full queue (NATS down or slow for long)
//! drops the new message, counted by the shard and logged. While the
//! client reconnects it holds up to `nats.client_messages_max` messages
//! and sends them once NATS is back; QoS 1/2 rule messages and status
//! notifications go through a spool on disk first (see `spool`), and stay
//! there until NATS has them. Inflow rules read JetStream streams
//! and reach the shards through the control plane (see `inflow`).

mod acks;
mod cluster;
pub mod config;
mod connector;
mod groups;
mod inflow;
mod moved;
mod registry;
mod replay;
mod replica;
mod spool;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use crate::core::cluster::ClusterEvent;
pub use crate::core::outflow::Outflow;
pub use config::{ClusterConfig, NatsConfig, Rule, RuleKind};
pub use inflow::RuleChange;
pub use registry::Fetch;
pub use replica::{ApplyChange, Proposals};
pub use spool::Figures;

/// The value of header `name` of a NATS message, if it has it.
pub(crate) fn header<'a>(
    headers: &'a Option<async_nats::HeaderMap>,
    name: &str,
) -> Option<&'a str> {
    headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Told `true` once a stream stored a message whose publisher's
/// acknowledgement waits for it (see [`Outflow::confirm`]); dropped unsent
/// if it never is (the queue was full, the broker stopped).
pub type Confirm = tokio::sync::oneshot::Sender<bool>;

/// What the bridge's queue carries.
#[derive(Debug)]
pub(crate) struct Handed {
    msg: Outflow,
    confirm: Option<Confirm>,
}

/// The shards' end of the bridge.
#[derive(Debug, Clone)]
pub struct Bridge {
    tx: mpsc::Sender<Handed>,
    cluster: mpsc::UnboundedSender<Vec<ClusterEvent>>,
    /// Where a CONNECT's session is fetched from another node; `None`:
    /// sessions stay on their node.
    fetch: Option<mpsc::UnboundedSender<Fetch>>,
}

impl Bridge {
    /// Hands `msg` to the bridge without waiting; false if its queue is
    /// full or the bridge stopped (`confirm` is dropped with it).
    pub fn offer(&self, msg: Outflow, confirm: Option<Confirm>) -> bool {
        self.tx.try_send(Handed { msg, confirm }).is_ok()
    }

    /// The persistent session of `client_id` if another node of the
    /// cluster holds it: that node gives it up. `None` at once outside a
    /// cluster.
    pub async fn fetch_session(&self, client_id: &str) -> Option<crate::core::moved::Moved> {
        let fetch = self.fetch.as_ref()?;
        let (reply, moved) = tokio::sync::oneshot::channel();
        let client_id = client_id.to_owned();
        fetch.send(Fetch { client_id, reply }).ok()?;
        moved.await.ok().flatten()
    }

    /// Tells the cluster's side what the shard's interest and connections
    /// did (never dropped: one entry per filter change or connect).
    pub fn cluster(&self, events: Vec<ClusterEvent>) {
        let _ = self.cluster.send(events);
    }
}

/// The bridge thread, to stop once the shards stopped.
#[derive(Debug)]
pub struct Running {
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    controls: Vec<tokio::sync::oneshot::Sender<crate::shard::Controls>>,
    /// In a cluster: where the registry's owner proposes changes, and
    /// where it is given to the replica.
    replica: Option<(
        Proposals,
        tokio::sync::oneshot::Sender<Arc<dyn ApplyChange>>,
    )>,
    /// The spool's figures.
    figures: Arc<Figures>,
    /// Where inflow rules created or deleted later go.
    rule_changes: mpsc::UnboundedSender<RuleChange>,
}

impl Running {
    /// Gives the bridge the shards' control plane: inflow rules start
    /// reading their streams.
    pub fn attach(&mut self, controls: crate::shard::Controls) {
        for tx in self.controls.drain(..) {
            let _ = tx.send(controls.clone());
        }
    }

    /// In a cluster, shares the aliyun registry `owner` holds with the
    /// other nodes: the owner proposes its changes through what this
    /// returns, and applies every node's in one order (see `replica`).
    /// `None` outside a cluster.
    pub fn replicate(&mut self, owner: Arc<dyn ApplyChange>) -> Option<Proposals> {
        let (proposals, give) = self.replica.take()?;
        give.send(owner).ok()?;
        Some(proposals)
    }

    /// Where to start and stop inflow rules created and deleted while the
    /// broker runs.
    pub fn rule_changes(&self) -> mpsc::UnboundedSender<RuleChange> {
        self.rule_changes.clone()
    }

    /// The spool's figures (zero without a spool).
    pub fn figures(&self) -> Arc<Figures> {
        Arc::clone(&self.figures)
    }

    /// Stops the bridge once it has sent what the shards handed it (waiting
    /// at most `connector::FLUSH_WAIT` for NATS to take it).
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::warn!("the NATS bridge thread panicked");
        }
    }
}

/// Starts the bridge thread if `[nats]` names servers. It connects in the
/// background (NATS need not be up yet) and runs until [`Running::stop`];
/// its inflow rules and the cluster's subscriptions wait for
/// [`Running::attach`]. Its spool is `<data_dir>/nats-spool`; without a
/// data directory (storage off), it has none.
pub fn start(
    config: &NatsConfig,
    rules: &[Rule],
    cluster: &ClusterConfig,
    data_dir: Option<&std::path::Path>,
) -> std::io::Result<Option<(Bridge, Running)>> {
    if config.servers.is_empty() {
        return Ok(None);
    }
    let figures = Arc::new(Figures::default());
    let spool = match (config.spool_bytes_max, data_dir) {
        (0, _) | (_, None) => None,
        (max, Some(data_dir)) => {
            let dir = data_dir.join("nats-spool");
            let spool = spool::Spool::open(&dir, max, Arc::clone(&figures))?;
            Some(replay::Shared::new(spool, Arc::clone(&figures)))
        }
    };
    let (tx, rx) = mpsc::channel(config.outbox_messages_max);
    let (cluster_tx, cluster_rx) = mpsc::unbounded_channel();
    let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
    let (rule_changes, changes) = mpsc::unbounded_channel();
    let moves = cluster.enabled() && cluster.session_move_wait_ms > 0;
    let (proposals, proposed) = replica::channel();
    let (give_owner, owner) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (inflow_controls, inflow_attached) = tokio::sync::oneshot::channel();
    let (cluster_controls, cluster_attached) = tokio::sync::oneshot::channel();
    let inflow = rules
        .iter()
        .filter(|r| r.kind == RuleKind::Inflow)
        .cloned()
        .collect();
    let parts = connector::Parts {
        config: config.clone(),
        rx,
        stopped,
        inflow: (inflow, inflow_attached, changes),
        cluster: (cluster.clone(), (cluster_rx, fetch_rx), cluster_attached),
        spool,
        figures: Arc::clone(&figures),
        replica: (proposed, owner),
    };
    let thread = std::thread::Builder::new()
        .name("nats".into())
        .spawn(move || connector::run(parts))?;
    let running = Running {
        thread,
        stop,
        controls: vec![inflow_controls, cluster_controls],
        replica: cluster.enabled().then_some((proposals, give_owner)),
        figures,
        rule_changes,
    };
    let bridge = Bridge {
        tx,
        cluster: cluster_tx,
        fetch: moves.then_some(fetch_tx),
    };
    Ok(Some((bridge, running)))
}
