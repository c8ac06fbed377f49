//! The runtime: one glommio executor per shard, pinned to its core, each
//! accepting its own connections on every listener (SO_REUSEPORT) and
//! running its [`Broker`](crate::core::Broker). Shards share nothing; they
//! talk over a full mesh of bounded SPSC queues. Threads outside the shards
//! (signals) reach them over crossbeam-channel plus a wake-up socket.

mod conn;
mod context;
mod control;
mod lock;
mod mesh;
mod storage;
mod sync;
mod writer;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;

pub use control::Control;
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
    /// An executor could not start or panicked.
    #[error("shard {0} failed: {1}")]
    Shard(usize, String),
}

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), RunError> {
    let _lock = lock::acquire(&config)?;
    raise_fd_limit();
    let shards = config.shard_count();
    storage::check_layout(&config, shards).map_err(RunError::Data)?;
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let offline_counts: Arc<[AtomicU64]> = (0..shards).map(|_| AtomicU64::new(0)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = Arc::new(config);
    let mesh = MeshBuilder::<ShardMsg, Full>::full(shards, config.runtime.mesh_queue_batches_max);
    let (controls, wakers) = control::channels(shards)?;
    control::watch_signals(controls.clone())?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        shards,
        listeners = ?config.listeners.tcp,
        data_dir = %config.data_dir.display(),
        "ringmq starting"
    );
    let mut handles = Vec::with_capacity(shards);
    for (index, wake) in wakers.into_iter().enumerate() {
        let config = Arc::clone(&config);
        let mesh = mesh.clone();
        let ready = Arc::clone(&ready);
        let counts = Arc::clone(&offline_counts);
        let handle = LocalExecutorBuilder::new(Placement::Fixed(index % cores))
            .name(&format!("shard-{index}"))
            .io_memory(config.runtime.io_memory_bytes)
            .spin_before_park(Duration::from_micros(0))
            .spawn(move || {
                let shared = context::Shared { ready, counts };
                context::shard_main(index, shards, config, mesh, wake, shared)
            })
            .map_err(|e| RunError::Shard(index, e.to_string()))?;
        handles.push(handle);
    }
    let mut failure = None;
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(RunError::Shard(index, e))),
            Err(e) => failure = failure.or(Some(RunError::Shard(index, e.to_string()))),
        }
    }
    // A shard that failed to start must not leave the others running.
    controls.broadcast(Control::Shutdown);
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("ringmq stopped");
            Ok(())
        }
    }
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
