//! When a shard's logs reach the disk: the sync task (every
//! `flush_interval_millis`, or when asked: `flush = always`, compaction,
//! shutdown), group commit for the callers that wait for a sync, and the
//! creation of each log's next segment ahead of need. msync and segment
//! creation run on the executor's blocking thread, never on its reactor.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::context::Shard;
use super::storage::Storage;
use crate::config::Flush;
use crate::store::segment::{Pending, Segment};

/// Syncs asked for, started and done, and who waits for them.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Syncs asked for (each must start after it was asked).
    pub(super) requested: u64,
    /// Syncs started.
    pub(super) started: u64,
    /// Syncs finished.
    pub(super) done: u64,
    pub(super) task: Option<Waker>,
    pub(super) waiters: Vec<Waker>,
    /// A snapshot starting at segment `.1` is on disk once sync `.0` is.
    pub(super) compacted: Option<(u64, u64)>,
}

impl Storage {
    /// Returns once a sync that started after this call has finished:
    /// everything appended before it is on disk. Many callers share one
    /// sync (group commit).
    pub(super) async fn synced(&self) {
        let target = {
            let mut s = self.sync.borrow_mut();
            s.requested = s.started + 1;
            if let Some(w) = s.task.take() {
                w.wake();
            }
            s.requested
        };
        poll_fn(|cx| {
            let mut s = self.sync.borrow_mut();
            if s.done >= target {
                return Poll::Ready(());
            }
            s.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// The sync task's wait: until a sync is asked for, or `timeout`.
    pub(super) async fn sync_asked(&self, timeout: Duration) {
        let asked = poll_fn(|cx| {
            let mut s = self.sync.borrow_mut();
            if s.requested > s.started {
                return Poll::Ready(());
            }
            s.task = Some(cx.waker().clone());
            Poll::Pending
        });
        futures_lite::future::or(asked, async {
            glommio::timer::Timer::new(timeout).await;
        })
        .await
    }

    /// Starts a sync: what must be synced now.
    pub(super) fn begin_sync(&self) -> (u64, Vec<Pending>) {
        let epoch = {
            let mut s = self.sync.borrow_mut();
            s.started += 1;
            s.started
        };
        let mut logs = self.logs.borrow_mut();
        let mut pending = logs.state.take_pending();
        pending.extend(logs.offline.borrow_mut().take_pending());
        (epoch, pending)
    }

    /// Bytes of both logs on disk.
    pub(super) fn bytes(&self) -> u64 {
        let logs = self.logs.borrow();
        let offline = logs.offline.borrow().bytes();
        logs.state.bytes() + offline
    }

    /// A sync that wrote something took `took`.
    fn count_sync(&self, took: Duration) {
        let (n, total, max) = self.syncs.get();
        self.syncs.set((n + 1, total + took, max.max(took)));
    }

    /// Logs the syncs' count and times (at shutdown).
    pub(super) fn report(&self, shard: usize) {
        let (n, total, max) = self.syncs.get();
        let mean = total.checked_div(n.max(1) as u32).unwrap_or_default();
        tracing::info!(
            shard,
            syncs = n,
            sync_mean_micros = mean.as_micros() as u64,
            sync_max_micros = max.as_micros() as u64,
            write_errors = self.errors.get(),
            "storage stopped"
        );
    }

    /// Sync `epoch` finished.
    pub(super) fn end_sync(&self, epoch: u64, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.write_failed(&e);
        }
        let mut s = self.sync.borrow_mut();
        s.done = s.done.max(epoch);
        for w in s.waiters.drain(..) {
            w.wake();
        }
        if let Some((at, first)) = s.compacted {
            if s.done >= at {
                s.compacted = None;
                self.logs.borrow_mut().state.drop_before(first);
            }
        }
    }
}

/// Syncs the logs: every `flush_interval_millis` under `interval`, and
/// whenever a sync is asked for (`always`, compaction, shutdown). Also
/// creates each log's next segment ahead of need.
pub(super) async fn sync_loop(shard: Rc<Shard>) {
    let Some(storage) = shard.storage.as_ref() else {
        return;
    };
    let timeout = match storage.flush() {
        Flush::Interval => storage.interval(),
        Flush::Never | Flush::Always => Duration::from_millis(10),
    };
    loop {
        storage.sync_asked(timeout).await;
        {
            let mut broker = shard.broker.borrow_mut();
            storage.retry_full(&mut broker);
            broker.metrics.log_bytes = storage.bytes();
            broker.metrics.log_errors = storage.errors.get();
        }
        if let Some((state, (dir, index, bytes))) = storage.spare_wanted() {
            let made = glommio::executor()
                .spawn_blocking(move || Segment::create(&dir, index, bytes))
                .await;
            storage.spare_made(state, made);
        }
        let asked = {
            let s = storage.sync.borrow();
            s.requested > s.started
        };
        if storage.flush() == Flush::Never && !asked {
            // Nothing to sync: written pages leave the RSS, and the
            // mappings of full segments go.
            let (_, pending) = storage.begin_sync();
            pending.iter().for_each(Pending::release);
            continue;
        }
        if storage.flush() == Flush::Always && !asked {
            continue;
        }
        if let Some(took) = sync_once(storage).await {
            shard.broker.borrow_mut().metrics.sync_latency.record(took);
        }
    }
}

/// One sync of everything written: msync, then the synced pages leave the
/// RSS; on the blocking thread. Returns how long it took, if it wrote.
async fn sync_once(storage: &Storage) -> Option<Duration> {
    let (epoch, pending) = storage.begin_sync();
    let mut took = None;
    let result = match pending.is_empty() {
        true => Ok(()),
        false => {
            let started = Instant::now();
            let r = glommio::executor()
                .spawn_blocking(move || {
                    let r = pending.iter().try_for_each(Pending::sync);
                    pending.iter().for_each(Pending::release);
                    r
                })
                .await;
            took = Some(started.elapsed());
            storage.count_sync(started.elapsed());
            r
        }
    };
    storage.end_sync(epoch, result);
    took
}
