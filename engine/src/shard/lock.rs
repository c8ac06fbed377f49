//! One broker per data directory and per listen address. Listeners use
//! SO_REUSEPORT (so that every shard accepts on its own socket), which
//! would let a second broker share the port silently; both are checked
//! before any shard starts.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::RunError;
use crate::config::Config;

/// Holds the data directory's lock until dropped.
#[derive(Debug)]
pub(super) struct DataLock {
    _file: File,
}

/// Locks `data_dir/LOCK` (flock, exclusive) and checks that no other
/// process listens on the configured addresses.
pub(super) fn acquire(config: &Config) -> Result<DataLock, RunError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| RunError::Io {
        what: format!("cannot create data directory {}", dir.display()),
        source,
    })?;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RunError::Io {
            what: format!("cannot open {}", path.display()),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(RunError::Busy(format!(
            "data directory {} is in use by another ringmq (lock {} is held)",
            dir.display(),
            path.display()
        )));
    }
    for addr in &config.listeners.tcp {
        // A plain bind (no SO_REUSEPORT) fails if anyone listens there.
        if let Err(e) = TcpListener::bind(addr) {
            return Err(RunError::Busy(format!("cannot listen on {addr}: {e}")));
        }
    }
    Ok(DataLock { _file: file })
}
