//! The instance registry on disk, under `data/registry/`: `snapshot.json`
//! (the whole registry and the sequence number of the last change in it)
//! and `journal` (one line per change since: `crc32c seq json`). A change
//! is appended and `fdatasync`ed before its caller hears of it, so what was
//! acknowledged survives `kill -9` and power loss. At start the snapshot is
//! read and the journal replayed from there; a torn last line (a crash
//! during an append) is cut off. When the journal outgrows the snapshot it
//! is folded into a new one (written aside, synced, renamed).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::aliyun::registry::{Change, Registry};

/// Journal lines past which the journal is folded into a snapshot (and
/// past twice the snapshot's entries).
const JOURNAL_LINES_MIN: u64 = 1_000;

#[derive(Debug, Deserialize)]
struct Snapshot {
    seq: u64,
    registry: Registry,
}

#[derive(Debug, Serialize)]
struct SnapshotRef<'a> {
    seq: u64,
    registry: &'a Registry,
}

/// The registry's files.
#[derive(Debug)]
pub struct RegistryStore {
    dir: PathBuf,
    journal: File,
    /// Sequence number of the last change written.
    seq: u64,
    /// Lines in the journal.
    lines: u64,
    /// Entries in the last snapshot (sizes the next fold).
    snapshot_entries: u64,
}

/// What opening found.
#[derive(Debug)]
pub struct Loaded {
    /// The registry as of the last durable change.
    pub registry: Registry,
    /// Changes replayed from the journal.
    pub replayed: u64,
    /// Bytes cut from a torn journal tail.
    pub torn_bytes: u64,
}

impl RegistryStore {
    /// Opens (or creates) the registry in `dir` and loads it.
    pub fn open(dir: &Path) -> io::Result<(RegistryStore, Loaded)> {
        fs::create_dir_all(dir)?;
        let snapshot = read_snapshot(&dir.join("snapshot.json"))?;
        let mut registry = snapshot.registry;
        registry.keeps_issued = true;
        let path = dir.join("journal");
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (mut seq, mut replayed, mut lines) = (snapshot.seq, 0, 0);
        let mut good = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let Some((line_seq, change)) = parse_line(line) else {
                break;
            };
            good += line.len();
            lines += 1;
            if line_seq > seq {
                registry.apply(&change);
                seq = line_seq;
                replayed += 1;
            }
        }
        let torn_bytes = (text.len() - good) as u64;
        let journal = OpenOptions::new().create(true).append(true).open(&path)?;
        if torn_bytes > 0 {
            journal.set_len(good as u64)?;
            journal.sync_all()?;
        }
        registry.reindex();
        let snapshot_entries = entries(&registry);
        let store = RegistryStore {
            dir: dir.to_owned(),
            journal,
            seq,
            lines,
            snapshot_entries,
        };
        let loaded = Loaded {
            registry,
            replayed,
            torn_bytes,
        };
        Ok((store, loaded))
    }

    /// Appends `change` and syncs it.
    pub fn append(&mut self, change: &Change) -> io::Result<()> {
        let body = serde_json::to_string(change).map_err(io::Error::other)?;
        let seq = self.seq + 1;
        let payload = format!("{seq} {body}");
        let line = format!("{:08x} {payload}\n", crc32c::crc32c(payload.as_bytes()));
        self.journal.write_all(line.as_bytes())?;
        self.journal.sync_data()?;
        self.seq = seq;
        self.lines += 1;
        Ok(())
    }

    /// Folds the journal into a snapshot of `registry` (with every change
    /// appended made) once it has outgrown the last snapshot. A failure
    /// leaves the journal as it was: nothing is lost.
    pub fn fold_if_due(&mut self, registry: &Registry) -> io::Result<()> {
        if self.lines > JOURNAL_LINES_MIN.max(2 * self.snapshot_entries) {
            self.fold(registry)?;
        }
        Ok(())
    }

    /// Writes `registry` as the snapshot and empties the journal. A crash
    /// at any point leaves a snapshot and a journal that load to it: the
    /// journal's lines carry sequence numbers, and those the snapshot
    /// already holds are skipped.
    fn fold(&mut self, registry: &Registry) -> io::Result<()> {
        let snapshot = SnapshotRef {
            seq: self.seq,
            registry,
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        // Owner-only: the snapshot holds the access keys' secrets.
        let path = self.dir.join("snapshot.json");
        super::replace::replace(&path, &bytes, super::replace::Access::PRIVATE)?;
        self.journal.set_len(0)?;
        self.journal.sync_all()?;
        self.lines = 0;
        self.snapshot_entries = entries(registry);
        Ok(())
    }
}

fn read_snapshot(path: &Path) -> io::Result<Snapshot> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Snapshot {
            seq: 0,
            registry: Registry::default(),
        }),
        Err(e) => Err(e),
    }
}

/// `crc32c seq json\n`, checked; `None` for a torn or corrupt line.
fn parse_line(line: &[u8]) -> Option<(u64, Change)> {
    let line = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let (crc, payload) = line.split_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(payload.as_bytes()) {
        return None;
    }
    let (seq, body) = payload.split_once(' ')?;
    Some((seq.parse().ok()?, serde_json::from_str(body).ok()?))
}

fn entries(r: &Registry) -> u64 {
    (r.access_keys.len()
        + r.parent_topics.len()
        + r.group_ids.len()
        + r.credentials.len()
        + r.tokens.len()
        + r.revoked.len()
        + r.custom.identities.len()
        + r.custom.permissions.len()) as u64
}
