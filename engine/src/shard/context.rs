//! One shard: its broker, its end of the mesh, and the tasks that run it
//! (listeners, mesh receivers, the clock, the control channel).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::TcpListener;
use glommio::timer::Timer;
use glommio::{GlommioError, ResourceType};

use super::control::{Control, Wake};
use super::line::Line;
use super::mesh::{self, ShardMsg};
use super::routes::Routes;
use super::storage::{self, Storage};
use super::transport::Layers;
use crate::config::{Config, Flush, Profile};
use crate::core::aliyun::registry::Registry;
use crate::core::aliyun::Aliyun;
use crate::core::trace::Traces;
use crate::core::{Broker, Remote};

/// Everything a shard owns. Lives in an `Rc` on its executor: it is not
/// `Send`, so no other thread can reach it.
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) config: Arc<Config>,
    pub(super) broker: RefCell<Broker>,
    pub(super) senders: Senders<ShardMsg>,
    /// The waker of each peer's sender task, set while it waits for output.
    sender_wakers: RefCell<Vec<Option<Waker>>>,
    barriers: RefCell<Barriers>,
    pub(super) shutting_down: Cell<bool>,
    pub(super) connections: Cell<usize>,
    /// Readers waiting for congested connections to drain, in order.
    pub(super) line: RefCell<Line>,
    /// Route changes in flight between this shard and the others.
    pub(super) routes: Routes,
    /// Where the broker's outflow goes (NATS), if anywhere.
    pub(super) bridge: Option<crate::bridge::Bridge>,
    /// Outflow messages whose publisher's acknowledgement waits for them.
    pub(super) confirms: super::confirm::Confirms,
    /// Every connection of the shard reads through this buffer, then keeps
    /// only what it read.
    pub(super) read_buf: RefCell<Box<[u8]>>,
    /// The shard's logs, unless storage is off.
    pub(super) storage: Option<Storage>,
}

#[derive(Debug, Default)]
struct Barriers {
    next: u64,
    waiting: AHashMap<u64, (usize, Option<Waker>)>,
}

impl Shard {
    /// Logs what the broker journaled, then wakes the tasks that send the
    /// broker's outbox to other shards. Called after every batch of input,
    /// before the shard yields: what a batch journaled is in the log before
    /// any acknowledgement it wrote reaches a socket.
    pub(super) fn kick(&self) {
        if let Some(storage) = &self.storage {
            storage.drain(&mut self.broker.borrow_mut());
        }
        self.hand_outflow();
        let broker = self.broker.borrow();
        let mut wakers = self.sender_wakers.borrow_mut();
        for (peer, waker) in wakers.iter_mut().enumerate() {
            if !broker.outbox[peer].is_empty() {
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Hands the broker's outflow to the NATS bridge; what its full queue
    /// refuses is dropped and counted.
    fn hand_outflow(&self) {
        let mut broker = self.broker.borrow_mut();
        if !broker.cluster_events.is_empty() {
            let events = std::mem::take(&mut broker.cluster_events);
            if let Some(bridge) = &self.bridge {
                bridge.cluster(events);
            }
        }
        if broker.outflow.is_empty() {
            return;
        }
        let outflow = std::mem::take(&mut broker.outflow);
        let Some(bridge) = &self.bridge else {
            return;
        };
        for msg in outflow {
            let confirm = msg.confirm.map(|token| self.confirms.channel(token));
            if bridge.offer(msg, confirm) {
                broker.stats.outflow_sent += 1;
            } else {
                broker.stats.outflow_dropped += 1;
                // Logged at the 1st, 2nd, 4th, 8th… drop of the shard.
                if broker.stats.outflow_dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped = broker.stats.outflow_dropped,
                        "the NATS bridge's queue is full (nats.outbox_messages_max): dropping"
                    );
                }
            }
        }
    }

    /// Whether some outbox holds more than `mesh_backlog_pause_messages`
    /// or `mesh_backlog_pause_bytes`: the mesh is behind and publishers
    /// should wait.
    pub(super) fn mesh_backed_up(&self) -> bool {
        let max = self.config.runtime.mesh_backlog_pause_messages;
        let max_bytes = self.config.runtime.mesh_backlog_pause_bytes;
        let broker = self.broker.borrow();
        broker.outbox.iter().any(|o| o.len() > max)
            || broker.outbox_bytes.iter().any(|&b| b > max_bytes)
    }

    /// Wakes paused readers if some congestion cleared.
    pub(super) fn wake_paused(&self) {
        if self.broker.borrow_mut().take_drained() {
            self.mesh_drained();
        }
    }

    /// Wakes the readers that may read on now to re-check: the one at the
    /// front of the line, and the first mesh receiver in it.
    fn mesh_drained(&self) {
        let mut line = self.line.borrow_mut();
        line.wake_front();
        line.wake_first_mesh();
    }

    /// Whether `reader` (the connection asking, if any) must wait for
    /// congested connections before it reads on.
    pub(super) fn must_wait(&self, reader: Option<crate::core::ConnId>) -> bool {
        let local = self
            .broker
            .borrow_mut()
            .backpressure(Instant::now(), reader);
        // Only publishers wait for the mesh; the mesh's own receivers must not.
        local || (reader.is_some() && self.mesh_backed_up())
    }

    /// Returns once every other shard has applied everything this shard
    /// sent before the call. The barrier travels in the outbox, behind
    /// everything queued before it.
    pub(super) async fn barrier(&self) {
        let peers = self.sending_peers();
        if peers == 0 {
            return;
        }
        let token = {
            let mut b = self.barriers.borrow_mut();
            b.next += 1;
            let token = b.next;
            b.waiting.insert(token, (peers, None));
            token
        };
        {
            let mut broker = self.broker.borrow_mut();
            for peer in (0..broker.outbox.len()).filter(|&p| p != self.index) {
                broker.outbox[peer].push(Remote::Barrier(token));
            }
        }
        self.kick();
        poll_fn(|cx| {
            let mut b = self.barriers.borrow_mut();
            match b.waiting.get_mut(&token) {
                Some((left, waker)) if *left > 0 => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => {
                    b.waiting.remove(&token);
                    Poll::Ready(())
                }
            }
        })
        .await;
    }

    /// Writes connection `id`'s acknowledgements held until what they
    /// acknowledge is durable: logged by every shard it went to (a barrier:
    /// a peer logs a batch as it applies it) and, under `flush = always`,
    /// synced, and stored by the NATS streams of rules that say so. The
    /// connection reads nothing more meanwhile, so its acknowledgements
    /// keep their order. False if a stream did not store one: the
    /// connection is closing.
    pub(super) async fn commit(&self, id: crate::core::ConnId) -> bool {
        let acks = self.broker.borrow_mut().take_held_acks(id);
        if acks.is_empty() {
            return true;
        }
        let confirms = self.broker.borrow_mut().take_confirms(id);
        let held_at = Instant::now();
        self.kick();
        self.barrier().await;
        if let Some(storage) = self.storage.as_ref().filter(|s| s.flush() == Flush::Always) {
            storage.synced().await;
        }
        if !confirms.is_empty() && !self.confirms.all(confirms).await {
            // Not acknowledged: the client publishes it again.
            self.broker.borrow_mut().unconfirmed(id);
            return false;
        }
        let mut broker = self.broker.borrow_mut();
        let n = acks.len() as u64;
        broker.metrics.ack_latency.record_n(held_at.elapsed(), n);
        broker.release_acks(acks);
        true
    }

    /// Under `flush = always`, a barrier from a peer is answered once this
    /// shard's log is synced (the peer holds acknowledgements for it).
    pub(super) fn sync_before_barrier_ack(&self) -> bool {
        self.storage
            .as_ref()
            .is_some_and(|s| s.flush() == Flush::Always)
    }

    fn sending_peers(&self) -> usize {
        self.sender_wakers.borrow().len().saturating_sub(1)
    }

    /// One peer has answered barrier `token`.
    pub(super) fn barrier_acked(&self, token: u64) {
        let mut b = self.barriers.borrow_mut();
        if let Some((left, waker)) = b.waiting.get_mut(&token) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// The body of shard `index`'s executor; returns after shutdown.
pub(super) async fn shard_main(
    index: usize,
    shards: usize,
    config: Arc<Config>,
    mesh: MeshBuilder<ShardMsg, Full>,
    wake: Wake,
    shared: Shared,
) -> Result<(), String> {
    let Shared {
        ready,
        counts,
        routes_sent,
        bridge,
        registry,
        tls,
    } = shared;
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|_| "cannot join the shard mesh".to_owned())?;
    let mut broker = Broker::new(
        index,
        shards,
        config.limits.clone(),
        crate::access::load(&config)?,
        Instant::now(),
    );
    broker.offline_counts = Some(counts);
    set_profile(&mut broker, &config, registry.as_deref(), shards);
    let storage = match config.storage.enabled {
        true => Some(open_storage(&config, index, &mut broker)?),
        false => None,
    };
    let shard = Rc::new(Shard {
        index,
        config: Arc::clone(&config),
        broker: RefCell::new(broker),
        senders,
        sender_wakers: RefCell::new(vec![None; shards]),
        barriers: RefCell::new(Barriers::default()),
        shutting_down: Cell::new(false),
        connections: Cell::new(0),
        line: RefCell::new(Line::default()),
        routes: Routes::new(index, shards, routes_sent),
        bridge,
        confirms: Default::default(),
        read_buf: RefCell::new(vec![0; config.runtime.read_bytes_max].into_boxed_slice()),
        storage,
    });
    for (from, rx) in receivers.streams() {
        glommio::spawn_local(mesh::receive(Rc::clone(&shard), from, rx)).detach();
    }
    for peer in (0..shards).filter(|&p| p != index) {
        glommio::spawn_local(send_loop(Rc::clone(&shard), peer)).detach();
    }
    glommio::spawn_local(super::sync::sync_loop(Rc::clone(&shard))).detach();
    all_ready(&shard, &ready, shards).await;
    let mut accepts = Vec::new();
    for (addr, layers) in listener_layers(&config, tls) {
        let listener = listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        accepts.push(glommio::spawn_local(accept_loop(
            Rc::clone(&shard),
            listener,
            layers,
        )));
    }
    glommio::spawn_local(ticker(Rc::clone(&shard))).detach();
    tracing::debug!(shard = index, "shard running");
    wake.run(|c| match c {
        Control::Shutdown => false,
        Control::Run(job) => {
            job(&mut shard.broker.borrow_mut(), Instant::now());
            shard.kick();
            shard.wake_paused();
            true
        }
        Control::Durable(job) => {
            glommio::spawn_local(durable(Rc::clone(&shard), job)).detach();
            true
        }
    })
    .await;
    shard.shutting_down.set(true);
    for task in accepts {
        task.cancel().await;
    }
    shard.broker.borrow_mut().shutdown();
    let grace = Instant::now() + Duration::from_millis(config.runtime.shutdown_grace_millis);
    while shard.connections.get() > 0 && Instant::now() < grace {
        Timer::new(Duration::from_millis(10)).await;
    }
    shard.kick();
    if let Some(storage) = &shard.storage {
        storage.synced().await;
    }
    let stats = shard.broker.borrow().stats.clone();
    tracing::info!(shard = index, ?stats, "shard stopped");
    if let Some(storage) = &shard.storage {
        storage.report(index);
    }
    Ok(())
}

/// Runs `job` once back-pressure lets a publisher read on (its turn in
/// line, as a mesh receiver's: congested local subscribers hold it back;
/// those of other shards hold back their mesh receivers, and so the
/// barrier), then calls what it returns once what it routed is durable,
/// as [`Shard::commit`] does for a connection's acknowledgements.
async fn durable(shard: Rc<Shard>, job: super::control::DurableJob) {
    shard.wait_turn(None).await;
    let done = job(&mut shard.broker.borrow_mut(), Instant::now());
    shard.kick();
    shard.wake_paused();
    shard.barrier().await;
    if let Some(storage) = shard
        .storage
        .as_ref()
        .filter(|s| s.flush() == Flush::Always)
    {
        storage.synced().await;
    }
    done();
}

/// What every shard shares with the others, set up before they start.
#[derive(Debug)]
pub(super) struct Shared {
    /// Shards that have restored their state and announced their routes.
    pub(super) ready: Arc<AtomicUsize>,
    /// Logged copies held by each shard (see `Broker::offline_counts`).
    pub(super) counts: Arc<[AtomicU64]>,
    /// Batches with route changes each shard has sent each other one.
    pub(super) routes_sent: Arc<[AtomicU64]>,
    /// The NATS bridge, if it runs.
    pub(super) bridge: Option<crate::bridge::Bridge>,
    /// The instance registry (aliyun profile), copied by every shard.
    pub(super) registry: Option<Arc<Registry>>,
    /// The TLS listeners' certificates.
    pub(super) tls: Option<Arc<super::transport::Certificates>>,
}

/// Seeds of the hash that turns the instance id into message ids' tag.
const TAG_SEEDS: [u64; 4] = [
    0x6d73_6769_6474,
    0x6167_7269_6e67,
    0x6d71_7461_6773,
    0x0102_0304,
];

/// The profile's part of a shard's broker: the Alibaba Cloud rules and
/// registry copy, and the trace store.
fn set_profile(broker: &mut Broker, config: &Config, registry: Option<&Registry>, shards: usize) {
    let aliyun = config.profile == Profile::Aliyun;
    broker.cluster = config.cluster.enabled().then(|| {
        let c = &config.cluster;
        let mut route = crate::core::cluster::ClusterRoute::new(&c.subject_prefix, &c.node_id);
        route.remote_acks = c.remote_ack_wait_ms > 0;
        route
    });
    // The config file's rules, then those created through the OpenAPI.
    let api_rules = registry
        .iter()
        .flat_map(|r| r.rules.values().map(|s| &s.rule));
    let rules: Vec<_> = config.rules.iter().chain(api_rules).collect();
    broker.outflow_rules = crate::bridge::config::outflow_rules(rules.iter().copied());
    if let (true, Some(r)) = (aliyun, registry) {
        let mut profile = Aliyun::new(config.aliyun.clone(), r.for_shard());
        profile.status_groups = crate::bridge::config::status_groups(rules.iter().copied());
        broker.aliyun = Some(Box::new(profile));
    }
    let t = &config.trace;
    if t.enabled.unwrap_or(aliyun) {
        // Not `config.shard_count()`: on a shard's pinned thread the
        // machine seems to have one core.
        let per_shard = t.events_max.div_ceil(shards.max(1));
        broker.traces = Traces::new(per_shard, t.retention_secs.saturating_mul(1000));
    }
    broker.trace_offset_minutes = t.time_offset_minutes;
    let [a, b, c, d] = TAG_SEEDS;
    broker.instance_tag =
        ahash::RandomState::with_seeds(a, b, c, d).hash_one(config.aliyun.instance_id.as_bytes());
}

/// Opens and recovers shard `index`'s logs into `broker`.
fn open_storage(config: &Config, index: usize, broker: &mut Broker) -> Result<Storage, String> {
    let dir = storage::shard_dir(config, index);
    let (storage, recovered) = Storage::open(config, index, broker)
        .map_err(|e| format!("cannot open the logs in {}: {e}", dir.display()))?;
    recovered.report(index, &dir);
    Ok(storage)
}

/// Returns once every shard has restored its state and every other shard
/// has applied the routes it announced: no shard accepts a client before
/// it can route to every persistent session.
async fn all_ready(shard: &Shard, ready: &AtomicUsize, shards: usize) {
    shard.kick();
    shard.barrier().await;
    ready.fetch_add(1, Ordering::AcqRel);
    while ready.load(Ordering::Acquire) < shards {
        Timer::new(Duration::from_millis(1)).await;
    }
}

/// Every listen address with what its connections speak.
fn listener_layers(
    config: &Config,
    tls: Option<Arc<super::transport::Certificates>>,
) -> Vec<(&std::net::SocketAddr, Layers)> {
    let l = &config.listeners;
    // A WebSocket frame holds one MQTT packet at most, or a part of one.
    let frame_max = config.limits.packet_bytes_max as usize + 16;
    let ws = Some((Arc::<str>::from(l.ws_path.as_str()), frame_max));
    let kinds = [
        (&l.tcp, None, None),
        (&l.tls, tls.clone(), None),
        (&l.ws, None, ws.clone()),
        (&l.wss, tls, ws),
    ];
    let mut out = Vec::new();
    for (addrs, tls, ws) in kinds {
        for addr in addrs {
            out.push((
                addr,
                Layers {
                    tls: tls.clone(),
                    ws: ws.clone(),
                },
            ));
        }
    }
    out
}

/// Accepts connections on `listener`; `layers` says what they speak.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, layers: Layers) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let serve = super::conn::serve(Rc::clone(&shard), stream, layers.clone());
                glommio::spawn_local(serve).detach();
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(shard = shard.index, "accept failed: {e}");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends the outbox for `peer`, batch by batch, in order. The only task
/// that sends batches to `peer`, so nothing else ever waits on the mesh.
async fn send_loop(shard: Rc<Shard>, peer: usize) {
    loop {
        let batch = poll_fn(|cx| {
            let mut broker = shard.broker.borrow_mut();
            let batch = std::mem::take(&mut broker.outbox[peer]);
            broker.outbox_bytes[peer] = 0;
            drop(broker);
            if batch.is_empty() {
                shard.sender_wakers.borrow_mut()[peer] = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(batch)
        })
        .await;
        let routes = Routes::carried_by(&batch);
        if routes {
            shard.routes.sending(peer);
        }
        let msg = match shard
            .senders
            .try_send_to(peer, ShardMsg::Batch(batch, routes))
        {
            Ok(()) => None,
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => Some(msg),
            Err(e) => {
                tracing::warn!(peer, "mesh send failed: {e}");
                return;
            }
        };
        if let Some(msg) = msg {
            if shard.senders.send_to(peer, msg).await.is_err() {
                tracing::warn!(peer, "mesh closed");
                return;
            }
        }
        // The outbox shrank: publishers waiting on it may go on.
        shard.mesh_drained();
    }
}

async fn ticker(shard: Rc<Shard>) {
    let period = Duration::from_millis(shard.config.runtime.tick_millis);
    while !shard.shutting_down.get() {
        Timer::new(period).await;
        shard.broker.borrow_mut().tick(Instant::now());
        shard.kick();
        shard.wake_paused();
    }
}

/// A listening socket shared by every shard (SO_REUSEPORT). SO_REUSEADDR
/// too, which glommio's own `bind` leaves out: without it, the previous
/// process's connections in TIME_WAIT keep a restarted broker from
/// listening for a minute.
fn listen(addr: &std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = super::lock::tcp_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&(*addr).into())?;
    socket.listen(libc::SOMAXCONN)?;
    // SAFETY: the descriptor is bound and listening, and handed over whole.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}
