//! A shard's logs: `data/shard-<i>/state` (persistent sessions, their
//! subscriptions, retained messages of the topics the shard owns) and
//! `data/shard-<i>/offline` (messages held for persistent sessions, and
//! their acknowledgements). The broker's journal is appended right after
//! every batch of input, before the shard yields — so before any
//! acknowledgement it caused reaches a socket. When the logs reach the disk
//! is `sync.rs`'s part.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::config::{Config, Flush};
use crate::core::journal::Entry;
use crate::core::restore::{Replay, RestoreCounts};
use crate::core::Broker;
use crate::store::log::{Log, Opened};
use crate::store::record::{self, Clock};
use crate::store::segment::Segment;

use super::offline_reader::{OfflineReader, Unwritten};
use super::sync::SyncState;

/// The logs of one shard and their sync state.
#[derive(Debug)]
pub(super) struct Storage {
    pub(super) logs: RefCell<Logs>,
    flush: Flush,
    interval: Duration,
    pub(super) sync: RefCell<SyncState>,
    /// Write errors so far (disk full, I/O errors).
    pub(super) errors: Cell<u64>,
    /// A write failed: the log takes nothing until it can grow again.
    full: Cell<bool>,
    /// Syncs that wrote something, their total and longest time.
    pub(super) syncs: Cell<(u64, Duration, Duration)>,
}

#[derive(Debug)]
pub(super) struct Logs {
    pub(super) state: Log,
    /// Shared with the broker, which reads messages back from it.
    pub(super) offline: Rc<RefCell<Log>>,
    /// Messages whose frame could not be written (a full disk), kept in
    /// memory for the sessions that hold them, with how many copies.
    unwritten: Unwritten,
    frame: Vec<u8>,
    scratch: BytesMut,
    state_segment_bytes: usize,
    /// Bytes of the last snapshot of the state log.
    snapshot_bytes: usize,
    making_spare: bool,
}

/// What recovery found and how long it took, for the log line.
#[derive(Debug)]
pub(super) struct Recovered {
    state: Opened,
    offline: Opened,
    counts: RestoreCounts,
    took: Duration,
}

/// The directory of shard `index`'s logs.
pub(super) fn shard_dir(config: &Config, index: usize) -> PathBuf {
    config.data_dir.join(format!("shard-{index}"))
}

impl Storage {
    /// Opens shard `index`'s logs and restores what they hold into
    /// `broker`.
    pub(super) fn open(
        config: &Config,
        index: usize,
        broker: &mut Broker,
    ) -> std::io::Result<(Storage, Recovered)> {
        let started = Instant::now();
        let dir = shard_dir(config, index);
        let s = &config.storage;
        let clock = Clock {
            now: started,
            now_millis: broker.unix_millis(started),
        };
        let mut replay = Replay::default();
        let mut bad = 0u64;
        let (state, state_opened) =
            Log::open(&dir.join("state"), s.state_segment_bytes, |_, body| {
                match record::decode(body, clock) {
                    Ok(e) => replay.apply(e),
                    Err(_) => bad += 1,
                }
                None
            })?;
        let mut targets = Vec::new();
        let (mut offline, offline_opened): (Log, Opened) =
            Log::open(&dir.join("offline"), s.segment_bytes, |_, body| {
                targets.clear();
                // A message is not decoded: it is read back when delivered.
                match record::peek_message(body, &mut targets) {
                    Some(Ok((lsn, weight))) => {
                        replay.message(lsn, weight, &targets);
                        return Some(lsn);
                    }
                    Some(Err(_)) => bad += 1,
                    None => match record::decode(body, clock) {
                        Ok(e) => replay.apply(e),
                        Err(_) => bad += 1,
                    },
                }
                None
            })?;
        if bad > 0 {
            tracing::warn!(
                shard = index,
                records = bad,
                "unreadable log records skipped"
            );
        }
        offline.set_bytes_max(s.disk_bytes_max.div_ceil(broker.shards() as u64));
        let offline = Rc::new(RefCell::new(offline));
        let unwritten = Unwritten::default();
        let reader = OfflineReader::new(Rc::clone(&offline), Rc::clone(&unwritten));
        broker.set_log_reader(Box::new(reader));
        let counts = broker.restore(replay, started);
        {
            let mut log = offline.borrow_mut();
            for lsn in broker.held_lsns() {
                log.hold(lsn);
            }
            // Copies restore let go of (unreadable): their acks, about to
            // be written, release what is held here.
            for e in &broker.journal.entries {
                if let Entry::Ack { lsn, .. } = e {
                    log.hold(*lsn);
                }
            }
            log.release_read();
        }
        broker.journal.enabled = true;
        broker.journal.hold_acks = broker.shards() > 1;
        broker.journal.sync_acks = s.flush == Flush::Always;
        let storage = Storage {
            logs: RefCell::new(Logs {
                state,
                offline,
                unwritten,
                frame: Vec::with_capacity(4096),
                scratch: BytesMut::new(),
                state_segment_bytes: s.state_segment_bytes,
                snapshot_bytes: 0,
                making_spare: false,
            }),
            flush: s.flush,
            interval: Duration::from_millis(s.flush_interval_millis),
            sync: RefCell::new(SyncState::default()),
            errors: Cell::new(0),
            full: Cell::new(false),
            syncs: Cell::new((0, Duration::ZERO, Duration::ZERO)),
        };
        let recovered = Recovered {
            state: state_opened,
            offline: offline_opened,
            counts,
            took: started.elapsed(),
        };
        Ok((storage, recovered))
    }

    /// Appends everything the broker journaled. Runs synchronously after
    /// each batch of input.
    pub(super) fn drain(&self, broker: &mut Broker) {
        if broker.journal.is_empty() {
            return;
        }
        let now = Instant::now();
        let entries = std::mem::take(&mut broker.journal.entries);
        let released = std::mem::take(&mut broker.journal.released);
        let clock = Clock {
            now,
            now_millis: broker.unix_millis(now),
        };
        let mut logs = self.logs.borrow_mut();
        for entry in &entries {
            if let Err(e) = logs.append(entry, clock) {
                self.write_failed(&e);
                self.full.set(true);
                broker.journal.unavailable = true;
                logs.keep_unwritten(entry);
            }
        }
        {
            let mut offline = logs.offline.borrow_mut();
            for &lsn in &released {
                offline.release(lsn);
            }
            offline.reclaim();
        }
        logs.release_unwritten(&entries, &released);
        if logs.state_needs_compaction() && self.sync.borrow().compacted.is_none() {
            drop(logs);
            self.compact(broker, clock);
        }
    }

    pub(super) fn write_failed(&self, e: &std::io::Error) {
        let n = self.errors.get() + 1;
        self.errors.set(n);
        if n.is_power_of_two() {
            tracing::error!(errors = n, "cannot write the log: {e}");
        }
    }

    /// Rewrites the state log as a snapshot of what is live, from a fresh
    /// segment on; the segments before it go once a sync has put the
    /// snapshot on disk.
    fn compact(&self, broker: &Broker, clock: Clock) {
        let snapshot = broker.snapshot();
        let mut logs = self.logs.borrow_mut();
        if let Err(e) = logs.state.rotate(0) {
            return self.write_failed(&e);
        }
        let first = logs.state.active_index();
        let mut bytes = 0;
        for entry in &snapshot {
            if let Err(e) = logs.append(entry, clock) {
                return self.write_failed(&e);
            }
            bytes += logs.frame.len();
        }
        logs.snapshot_bytes = bytes;
        drop(logs);
        let mut s = self.sync.borrow_mut();
        s.requested = s.started + 1;
        s.compacted = Some((s.requested, first));
        if let Some(w) = s.task.take() {
            w.wake();
        }
        tracing::debug!(entries = snapshot.len(), "state log compacted");
    }

    /// After a failed write: whether both logs can grow again (a segment
    /// was freed, or the disk has room). Then QoS 1/2 publishes are taken
    /// again, and the state log is rewritten whole, since entries may have
    /// been lost meanwhile.
    pub(super) fn retry_full(&self, broker: &mut Broker) {
        if !self.full.get() {
            return;
        }
        let mut logs = self.logs.borrow_mut();
        let offline = Rc::clone(&logs.offline);
        let mut offline = offline.borrow_mut();
        offline.reclaim();
        if offline.rotate(0).is_err() || logs.state.rotate(0).is_err() {
            return;
        }
        drop((logs, offline));
        self.full.set(false);
        broker.journal.unavailable = false;
        tracing::warn!("the log can be written again: QoS 1/2 publishes are accepted");
        let clock = Clock {
            now: Instant::now(),
            now_millis: broker.unix_millis(Instant::now()),
        };
        if self.sync.borrow().compacted.is_none() {
            self.compact(broker, clock);
        }
    }

    /// A spare segment to create ahead of need, for the state log
    /// (`true`) or the offline log, and where.
    pub(super) fn spare_wanted(&self) -> Option<(bool, (PathBuf, u64, usize))> {
        let mut logs = self.logs.borrow_mut();
        if logs.making_spare {
            return None;
        }
        let offline = Rc::clone(&logs.offline);
        let mut offline = offline.borrow_mut();
        let plan = match (logs.state.wants_spare(), offline.wants_spare()) {
            (true, _) => (true, logs.state.spare_plan()),
            (false, true) => (false, offline.spare_plan()),
            (false, false) => return None,
        };
        logs.making_spare = true;
        Some(plan)
    }

    /// A spare segment was created (or failed to be).
    pub(super) fn spare_made(&self, state: bool, made: std::io::Result<Segment>) {
        let mut logs = self.logs.borrow_mut();
        logs.making_spare = false;
        match (made, state) {
            (Ok(s), true) => logs.state.set_spare(s),
            (Ok(s), false) => logs.offline.borrow_mut().set_spare(s),
            (Err(e), state) => {
                match state {
                    true => logs.state.spare_failed(),
                    false => logs.offline.borrow_mut().spare_failed(),
                }
                drop(logs);
                self.write_failed(&e);
            }
        }
    }

    /// The policy.
    pub(super) fn flush(&self) -> Flush {
        self.flush
    }

    /// Period of `flush = interval`.
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }
}

impl Logs {
    fn append(&mut self, entry: &Entry, clock: Clock) -> std::io::Result<()> {
        self.frame.clear();
        record::encode(entry, clock, &mut self.scratch, &mut self.frame);
        match entry {
            Entry::Message { lsn, targets, .. } => {
                let copies = targets.len() as u64;
                self.offline
                    .borrow_mut()
                    .append_message(&self.frame, *lsn, copies)?;
            }
            Entry::Ack { lsn, .. } => {
                // Released even if the ack is not logged: after a crash the
                // copy is delivered again, which QoS 1 allows.
                let mut offline = self.offline.borrow_mut();
                offline.release(*lsn);
                offline.append(&self.frame)?;
            }
            _ => {
                self.state.append(&self.frame)?;
            }
        }
        Ok(())
    }

    /// Keeps the message of an entry that could not be written in memory,
    /// since sessions hold it.
    fn keep_unwritten(&mut self, entry: &Entry) {
        if let Entry::Message {
            lsn,
            message,
            targets,
        } = entry
        {
            let copies = targets.len() as u64;
            let mut unwritten = self.unwritten.borrow_mut();
            unwritten.insert(*lsn, (Arc::clone(message), copies));
        }
    }

    /// Counts the copies of unwritten messages let go of.
    fn release_unwritten(&mut self, entries: &[Entry], released: &[u64]) {
        let mut unwritten = self.unwritten.borrow_mut();
        if unwritten.is_empty() {
            return;
        }
        let acked = entries.iter().filter_map(|e| match e {
            Entry::Ack { lsn, .. } => Some(*lsn),
            _ => None,
        });
        for lsn in acked.chain(released.iter().copied()) {
            if let Some((_, copies)) = unwritten.get_mut(&lsn) {
                *copies = copies.saturating_sub(1);
                if *copies == 0 {
                    unwritten.remove(&lsn);
                }
            }
        }
    }

    /// Whether the state log has grown well past what is live: four
    /// segments of changes beyond twice the last snapshot (a large live
    /// state does not compact again and again).
    fn state_needs_compaction(&self) -> bool {
        self.state.older_bytes() >= 4 * self.state_segment_bytes + 2 * self.snapshot_bytes
    }
}

impl Recovered {
    /// Logs what was recovered.
    pub(super) fn report(&self, shard: usize, dir: &Path) {
        tracing::info!(
            shard,
            dir = %dir.display(),
            sessions = self.counts.sessions,
            sessions_expired = self.counts.expired,
            messages = self.counts.messages,
            retained = self.counts.retained,
            segments = self.state.segments + self.offline.segments,
            records = self.state.frames + self.offline.frames,
            bytes = self.state.bytes + self.offline.bytes,
            corrupt_records = self.state.corrupt + self.offline.corrupt,
            torn_tails = self.state.torn + self.offline.torn,
            millis = self.took.as_millis() as u64,
            "recovered"
        );
    }
}

/// Refuses a data directory written with another shard count: a session
/// lives on shard `hash(client id) % shards`, and its state with it.
pub(super) fn check_layout(config: &Config, shards: usize) -> Result<(), String> {
    if !config.storage.enabled {
        return Ok(());
    }
    let path = config.data_dir.join("shards");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n == shards => Ok(()),
            Ok(n) => Err(format!(
                "{} holds the state of {n} shards; start with --shards {n} (or move the directory away)",
                config.data_dir.display()
            )),
            Err(_) => Err(format!("{}: not a shard count", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&path, format!("{shards}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
