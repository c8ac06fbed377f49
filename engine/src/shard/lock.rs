//! One broker per data directory and per listen address. Listeners use
//! SO_REUSEPORT (so that every shard accepts on its own socket), which
//! would let a second broker share the port silently; both are checked
//! before any shard starts.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::RunError;
use crate::config::Config;

/// Holds the data directory's lock until dropped.
#[derive(Debug)]
pub struct DataLock {
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
    for addr in config.listeners.all() {
        port_free(addr)?;
    }
    Ok(DataLock { _file: file })
}

/// How long a listen address may stay taken before start-up gives up.
const PORT_WAIT: Duration = Duration::from_secs(3);

/// A plain bind (no SO_REUSEPORT) fails if anyone listens there. It does
/// not listen itself: a client connecting at that moment would be
/// accepted into the backlog of a socket about to close, and reset. A
/// broker killed a moment ago can still hold its port briefly (its
/// io_uring instances release their sockets after the process is gone),
/// so a busy port is tried again for up to [`PORT_WAIT`].
fn port_free(addr: &SocketAddr) -> Result<(), RunError> {
    let deadline = Instant::now() + PORT_WAIT;
    let mut logged = false;
    loop {
        match bound(addr) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    tracing::info!(%addr, "address in use; waiting up to 3 s for it");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(RunError::Busy(format!("cannot listen on {addr}: {e}"))),
        }
    }
}

/// Binds a TCP socket to `addr` without listening, then lets it go.
/// SO_REUSEADDR, as std's bind sets it: connections of an earlier run in
/// TIME_WAIT do not count; a listener does.
fn bound(addr: &SocketAddr) -> std::io::Result<()> {
    tcp_socket(addr)?.bind(&(*addr).into())
}

/// A TCP socket for `addr` with SO_REUSEADDR set (the listeners' and the
/// start-up check's).
pub(super) fn tcp_socket(addr: &SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}
