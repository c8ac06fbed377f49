//! The control plane: threads that are not shards (the signal handler, later
//! the admin API) send [`Control`] messages over crossbeam-channel and wake
//! the shard by writing a byte to its socket pair; the shard awaits that
//! socket in its reactor, so nothing polls.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::RunError;

/// A request from outside the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Disconnect every client and stop.
    Shutdown,
}

/// The sending side, one channel and wake-up socket per shard.
#[derive(Debug, Clone)]
pub(super) struct Controls {
    shards: Vec<(Sender<Control>, Arc<UnixStream>)>,
}

impl Controls {
    /// Sends `c` to every shard and wakes it.
    pub(super) fn broadcast(&self, c: Control) {
        for (tx, wake) in &self.shards {
            let _ = tx.send(c);
            let _ = (&**wake).write(&[1]);
        }
    }
}

/// The receiving side of one shard.
#[derive(Debug)]
pub(super) struct Wake {
    rx: Receiver<Control>,
    socket: OwnedFd,
}

/// Channels and wake-up sockets for `n` shards.
pub(super) fn channels(n: usize) -> Result<(Controls, Vec<Wake>), RunError> {
    let mut shards = Vec::with_capacity(n);
    let mut wakes = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ours, theirs) = UnixStream::pair().map_err(|source| RunError::Io {
            what: "cannot create a control socket pair".into(),
            source,
        })?;
        let _ = theirs.set_nonblocking(true);
        let _ = ours.set_nonblocking(true);
        shards.push((tx, Arc::new(ours)));
        wakes.push(Wake {
            rx,
            socket: theirs.into(),
        });
    }
    Ok((Controls { shards }, wakes))
}

/// Turns SIGINT and SIGTERM into [`Control::Shutdown`]; a second signal
/// exits at once.
pub(super) fn watch_signals(controls: Controls) -> Result<(), RunError> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|source| RunError::Io {
        what: "cannot install signal handlers".into(),
        source,
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal, "shutting down");
                controls.broadcast(Control::Shutdown);
            }
        })
        .map_err(|source| RunError::Io {
            what: "cannot start the signal thread".into(),
            source,
        })?;
    Ok(())
}

impl Wake {
    /// Waits for the next control message; `None` once every sender is gone.
    pub(super) async fn run(self, mut on: impl FnMut(Control) -> bool) {
        let fd = self.socket.into_raw_fd();
        // SAFETY: `fd` was just released from an OwnedFd; the stream owns it now.
        let mut socket = unsafe { glommio::net::UnixStream::from_raw_fd(fd) };
        let mut buf = [0u8; 64];
        loop {
            while let Ok(c) = self.rx.try_recv() {
                if !on(c) {
                    return;
                }
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
