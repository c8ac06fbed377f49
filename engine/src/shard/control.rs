//! The control plane: threads that are not shards (the signal handler, the
//! registry's owner, the admin API) send [`Control`] messages over
//! crossbeam-channel and wake the shard by writing a byte to its socket
//! pair; the shard awaits that socket in its reactor, so nothing polls. A
//! [`Job`] runs on the shard with its broker: the only way in from outside.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::RunError;
use crate::core::Broker;

/// Work for a shard, run on its executor with its broker and `now`.
pub type Job = Box<dyn FnOnce(&mut Broker, Instant) + Send>;

/// Work for a shard whose outcome must be durable: the job runs with the
/// broker, and what it returns is called once everything the job routed
/// has been applied by every shard and logged (synced under `flush =
/// always`). Dropped without a call if the shard stops first.
pub type DurableJob = Box<dyn FnOnce(&mut Broker, Instant) -> Done + Send>;

/// See [`DurableJob`].
pub type Done = Box<dyn FnOnce() + Send>;

/// A request from outside the shards.
pub enum Control {
    /// Disconnect every client and stop.
    Shutdown,
    /// Run a job on the shard's broker (a registry change, a query).
    Run(Job),
    /// Run a job and report once its messages are durable.
    Durable(DurableJob),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Shutdown => f.write_str("Shutdown"),
            Control::Run(_) => f.write_str("Run"),
            Control::Durable(_) => f.write_str("Durable"),
        }
    }
}

/// The sending side, one channel and wake-up socket per shard.
#[derive(Debug, Clone)]
pub struct Controls {
    shards: Vec<(Sender<Control>, Arc<UnixStream>)>,
}

/// A shard did not answer in time, or has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shards did not answer within {0:?}")]
pub struct NoAnswer(pub Duration);

impl Controls {
    /// Asks every shard to stop.
    pub fn shutdown(&self) {
        for shard in 0..self.shards.len() {
            self.send(shard, Control::Shutdown);
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Sends `c` to `shard` and wakes it; false if the shard is gone.
    fn send(&self, shard: usize, c: Control) -> bool {
        let Some((tx, wake)) = self.shards.get(shard) else {
            return false;
        };
        let sent = tx.send(c).is_ok();
        let _ = (&**wake).write(&[1]);
        sent
    }

    /// Runs `job` on `shard` without waiting for it; false if the shard is
    /// gone.
    pub fn run(&self, shard: usize, job: Job) -> bool {
        self.send(shard, Control::Run(job))
    }

    /// Runs `job` on `shard`; what it returns is called once what it
    /// routed is durable (see [`DurableJob`]). False if the shard is gone.
    pub fn run_durable(&self, shard: usize, job: DurableJob) -> bool {
        self.send(shard, Control::Durable(job))
    }

    /// Runs `job` on every shard and returns their answers, in shard
    /// order; gives up after `timeout`.
    pub fn call_all<R: Send + 'static>(
        &self,
        job: impl Fn(&mut Broker, Instant) -> R + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<Vec<R>, NoAnswer> {
        let job = Arc::new(job);
        let n = self.shards.len();
        let (tx, rx) = crossbeam_channel::bounded(n);
        for shard in 0..n {
            let (job, tx) = (Arc::clone(&job), tx.clone());
            let run: Job = Box::new(move |broker, now| {
                let _ = tx.send((shard, job(broker, now)));
            });
            if !self.send(shard, Control::Run(run)) {
                return Err(NoAnswer(timeout));
            }
        }
        let deadline = Instant::now() + timeout;
        let mut answers: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let (shard, answer) = rx.recv_deadline(deadline).map_err(|_| NoAnswer(timeout))?;
            answers[shard] = Some(answer);
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Runs `job` on one shard and returns its answer.
    pub fn call<R: Send + 'static>(
        &self,
        shard: usize,
        job: impl FnOnce(&mut Broker, Instant) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, NoAnswer> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let run: Job = Box::new(move |broker, now| {
            let _ = tx.send(job(broker, now));
        });
        if !self.send(shard, Control::Run(run)) {
            return Err(NoAnswer(timeout));
        }
        rx.recv_timeout(timeout).map_err(|_| NoAnswer(timeout))
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
/// exits at once. SIGHUP reloads the TLS certificate and key (a bad file
/// leaves the ones in force, with an error in the log).
pub(super) fn watch_signals(
    controls: Controls,
    tls: Option<Arc<super::transport::Certificates>>,
) -> Result<(), RunError> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| RunError::Io {
        what: "cannot install signal handlers".into(),
        source,
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(tls.as_deref());
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal, "shutting down");
                controls.shutdown();
            }
        })
        .map_err(|source| RunError::Io {
            what: "cannot start the signal thread".into(),
            source,
        })?;
    Ok(())
}

fn reload(tls: Option<&super::transport::Certificates>) {
    match tls.map(super::transport::Certificates::reload) {
        None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
        Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Some(Err(e)) => {
            tracing::error!("SIGHUP: TLS certificate not reloaded, the old one stays: {e}")
        }
    }
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
