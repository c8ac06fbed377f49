//! The runtime: one glommio executor per shard, pinned to its core, each
//! accepting its own connections on every listener (SO_REUSEPORT) and
//! running its [`Broker`](crate::core::Broker). Shards share nothing; they
//! talk over a full mesh of bounded SPSC queues. Threads outside the shards
//! (signals) reach them over crossbeam-channel plus a wake-up socket.

mod confirm;
mod conn;
mod context;
mod control;
mod line;
mod lock;
mod mesh;
mod offline_reader;
mod routes;
mod storage;
mod sync;
pub mod transport;
mod writer;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::core::aliyun::registry::Registry;

pub use control::{Control, Controls, Done, DurableJob, Job, NoAnswer};
pub use lock::DataLock;
pub use mesh::ShardMsg;

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another process holds the data directory or a listen address.
    #[error("{0}")]
    Busy(String),
    /// Setting up failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data directory cannot be used as it is.
    #[error("{0}")]
    Data(String),
    /// The configuration's authentication or a file it names (password,
    /// ACL, certificate) cannot be used: found before anything starts.
    #[error("{0}")]
    Config(String),
    /// An executor could not start or panicked.
    #[error("shard {0} failed: {1}")]
    Shard(usize, String),
}

/// Shards running: their executors and the control plane that reaches
/// them.
#[derive(Debug)]
pub struct Running {
    handles: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
    controls: Controls,
    tls: Option<Arc<transport::Certificates>>,
    _lock: DataLock,
}

/// Reads every file the configuration names (password and ACL files,
/// certificates and keys), so that a broken one stops the broker before it
/// creates or locks anything; returns the certificates, for [`start`].
pub fn check_files(config: &Config) -> Result<Option<Arc<transport::Certificates>>, RunError> {
    crate::access::load(config).map_err(RunError::Config)?;
    let l = &config.listeners;
    if l.tls.is_empty() && l.wss.is_empty() {
        return Ok(None);
    }
    let certificates = transport::Certificates::load(&config.tls).map_err(RunError::Config)?;
    Ok(Some(Arc::new(certificates)))
}

/// Locks the data directory and checks the listen addresses are free:
/// the first step of starting.
pub fn lock_data(config: &Config) -> Result<DataLock, RunError> {
    let lock = lock::acquire(config)?;
    raise_fd_limit();
    storage::check_layout(config, config.shard_count()).map_err(RunError::Data)?;
    Ok(lock)
}

/// Starts one executor per shard; `registry` is the instance registry of
/// the aliyun profile, which every shard copies; `tls` what
/// [`check_files`] loaded; `bridge` the NATS bridge, if it runs. Returns once the executors are spawned (they
/// restore their state, then accept).
pub fn start(
    config: Arc<Config>,
    lock: DataLock,
    registry: Option<Arc<Registry>>,
    tls: Option<Arc<transport::Certificates>>,
    bridge: Option<crate::bridge::Bridge>,
) -> Result<Running, RunError> {
    let shards = config.shard_count();
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let offline_counts: Arc<[AtomicU64]> = (0..shards).map(|_| AtomicU64::new(0)).collect();
    let routes_sent = routes::Routes::counters(shards);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mesh = MeshBuilder::<ShardMsg, Full>::full(shards, config.runtime.mesh_queue_batches_max);
    let (controls, wakers) = control::channels(shards)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        shards,
        profile = ?config.profile,
        listeners = ?config.listeners.tcp,
        tls_listeners = ?config.listeners.tls,
        ws_listeners = ?config.listeners.ws,
        wss_listeners = ?config.listeners.wss,
        data_dir = %config.data_dir.display(),
        "ringmq starting"
    );
    let mut handles = Vec::with_capacity(shards);
    for (index, wake) in wakers.into_iter().enumerate() {
        let config = Arc::clone(&config);
        let mesh = mesh.clone();
        let shared = context::Shared {
            ready: Arc::clone(&ready),
            counts: Arc::clone(&offline_counts),
            routes_sent: Arc::clone(&routes_sent),
            bridge: bridge.clone(),
            registry: registry.clone(),
            tls: tls.clone(),
        };
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(index % cores))
            .name(&format!("shard-{index}"))
            .io_memory(config.runtime.io_memory_bytes)
            .ring_depth(config.runtime.io_ring_entries)
            .spin_before_park(Duration::from_micros(0))
            .spawn(move || context::shard_main(index, shards, config, mesh, wake, shared));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // The shards already started must not be left running.
                controls.shutdown();
                return Err(RunError::Shard(index, e.to_string()));
            }
        }
    }
    Ok(Running {
        handles,
        controls,
        tls,
        _lock: lock,
    })
}

impl Running {
    /// The control plane of the shards.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// The TLS listeners' certificates, if there are TLS listeners.
    pub fn certificates(&self) -> Option<&Arc<transport::Certificates>> {
        self.tls.as_ref()
    }

    /// Waits until every shard has stopped (after a shutdown, or a
    /// failure of one, which stops the others).
    pub fn wait(self) -> Result<(), RunError> {
        let mut failure = None;
        for (index, handle) in self.handles.into_iter().enumerate() {
            let result = handle.join();
            if !matches!(result, Ok(Ok(()))) {
                // One shard failing stops the others.
                self.controls.shutdown();
            }
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(RunError::Shard(index, e))),
                Err(e) => failure = failure.or(Some(RunError::Shard(index, e.to_string()))),
            }
        }
        self.controls.shutdown();
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("ringmq stopped");
                Ok(())
            }
        }
    }
}

/// Stops the shards on SIGINT or SIGTERM (a second signal exits at once);
/// reloads the TLS certificate on SIGHUP.
pub fn watch_signals(
    controls: Controls,
    tls: Option<Arc<transport::Certificates>>,
) -> Result<(), RunError> {
    control::watch_signals(controls, tls)
}

/// Raises the open-file soft limit to the hard limit: every connection is a
/// descriptor, and the default soft limit (often 1024) would cap the broker
/// far below what the system allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            tracing::info!(open_files_max = lim.rlim_cur, "open-file limit");
        }
    }
}
