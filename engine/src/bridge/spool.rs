//! The spool: QoS ≥ 1 rule messages and status notifications on disk until
//! NATS has them. Every such message is appended here before it is sent
//! (see `replay`), and stays until its JetStream acknowledgement (or, on
//! core NATS, the client's flush) came, so a NATS outage, a slow stream or
//! a broker killed meanwhile loses none of them.
//!
//! The spool is a directory of segments, `<n>.seg`, each frames
//!
//! ```text
//! length u32 LE | crc32c(body) u32 LE | body (length bytes)
//! body: flags u8 (bit 0: JetStream) | subject (u16 length, bytes)
//!       | header count u8 | (name: u8 length, bytes; value: u16 length, bytes)…
//!       | payload (the rest)
//! ```
//!
//! and `cursor`: the position before which every message was sent
//! (segment u64 LE | offset u64 LE | crc32c of both u32 LE), written at
//! most every `CURSOR_EVERY`: a restart may send again what was sent just
//! before (at least once; JetStream drops the copy by its `Nats-Msg-Id`).
//! A segment wholly before the cursor is deleted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::outflow::Outflow;

/// A segment is closed once it is this large.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Frames kept in memory before they are written to the segment.
const PENDING_BYTES: usize = 64 << 10;
/// Frames kept in memory at most while writes fail (a full disk); past
/// it new messages are dropped, counted.
const PENDING_BYTES_MAX: usize = 4 << 20;
/// Bytes read from a segment at once.
const READ_BYTES: usize = 256 << 10;
const FRAME_HEAD: usize = 8;
/// The longest body: a NATS message is far smaller.
const BODY_BYTES_MAX: usize = 256 << 20;

/// The spool's figures, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Figures {
    /// Messages written to the spool.
    pub spooled: AtomicU64,
    /// Messages the spool had no room for (`nats.spool_bytes_max`), or
    /// that NATS refused again and again while connected.
    pub dropped: AtomicU64,
    /// Messages sent from the spool (JetStream acknowledged, or flushed).
    pub sent: AtomicU64,
    /// Bytes in the spool not yet sent.
    pub held_bytes: AtomicU64,
    /// Messages not spooled that NATS could not take yet and the bridge
    /// had no room for (QoS 0 rule messages, the cluster's traffic).
    pub bridge_dropped: AtomicU64,
}

/// One message as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) subject: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) payload: Bytes,
    pub(super) jetstream: bool,
}

/// A place in the spool: a segment and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Position {
    seg: u64,
    off: u64,
}

/// The spool's files and where sending has got to.
#[derive(Debug)]
pub(super) struct Spool {
    dir: PathBuf,
    /// Segments on disk, oldest first, with the bytes written to each.
    segments: VecDeque<(u64, u64)>,
    /// The last segment, appended to.
    writer: File,
    /// Frames not yet written to `writer`.
    pending: Vec<u8>,
    /// The segment being read, and its number.
    reader: Option<(u64, File)>,
    /// The next frame to send.
    read: Position,
    /// Bytes of the segment read from `read` on, `ahead_used` of them
    /// taken already.
    ahead: Vec<u8>,
    ahead_used: usize,
    /// Everything before it was sent.
    committed: Position,
    /// `committed` as the cursor file has it.
    saved: Position,
    /// Bytes from `committed` to the end, `pending` included.
    held: u64,
    bytes_max: u64,
    /// Written since the last sync.
    dirty: bool,
    /// Writes that failed.
    write_errors: u64,
    figures: Arc<Figures>,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing): what an earlier run
    /// left unsent is sent first. A torn or corrupt frame ends what is
    /// read (the rest of its segment is cut, logged).
    pub(super) fn open(dir: &Path, bytes_max: u64, figures: Arc<Figures>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut numbers = segment_numbers(dir)?;
        let cursor = read_cursor(dir);
        let committed = match numbers.first() {
            Some(&first) if cursor.seg < first => Position { seg: first, off: 0 },
            _ => cursor,
        };
        for &n in numbers.iter().filter(|&&n| n < committed.seg) {
            std::fs::remove_file(segment_path(dir, n))?;
        }
        numbers.retain(|&n| n >= committed.seg);
        let mut segments = VecDeque::new();
        for &n in &numbers {
            segments.push_back((n, checked_length(dir, n)?));
        }
        if segments.is_empty() {
            segments.push_back((committed.seg.max(1), 0));
        }
        let committed = clamp(committed, &segments);
        let (last, _) = *segments.back().unwrap_or(&(1, 0));
        let writer = open_segment(dir, last)?;
        let held = held_from(committed, &segments);
        figures.held_bytes.store(held, Relaxed);
        if held > 0 {
            tracing::info!(bytes = held, dir = %dir.display(), "NATS spool: messages from an earlier run to send");
        }
        Ok(Spool {
            dir: dir.to_owned(),
            segments,
            writer,
            pending: Vec::new(),
            reader: None,
            read: committed,
            ahead: Vec::new(),
            ahead_used: 0,
            committed,
            saved: cursor,
            held,
            bytes_max,
            dirty: false,
            write_errors: 0,
            figures,
        })
    }

    /// Appends `msg`; false (dropped, counted) when the spool holds
    /// `nats.spool_bytes_max` already.
    pub(super) fn append(&mut self, msg: &Outflow) -> bool {
        let start = self.pending.len();
        encode(msg, &mut self.pending);
        let len = (self.pending.len() - start) as u64;
        if self.held + len > self.bytes_max || self.pending.len() > PENDING_BYTES_MAX {
            self.pending.truncate(start);
            let dropped = self.figures.dropped.fetch_add(1, Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    bytes_max = self.bytes_max,
                    "NATS spool full (nats.spool_bytes_max): dropping"
                );
            }
            return false;
        }
        self.held += len;
        self.figures.spooled.fetch_add(1, Relaxed);
        self.figures.held_bytes.store(self.held, Relaxed);
        if self.pending.len() >= PENDING_BYTES {
            self.write_or_log();
        }
        true
    }

    /// Writes what is pending; a failure (a full disk) is logged at the
    /// 1st, 2nd, 4th… time, and what is pending waits.
    pub(super) fn write_or_log(&mut self) {
        if let Err(e) = self.write_pending() {
            self.write_errors += 1;
            if self.write_errors.is_power_of_two() {
                let errors = self.write_errors;
                tracing::error!(
                    errors,
                    pending = self.pending.len(),
                    "NATS spool: cannot write: {e}"
                );
            }
        }
    }

    /// Writes what is pending to its segment, and starts a new segment
    /// once this one is full (synced first). A write that fails is cut
    /// off the file and tried again whole later.
    pub(super) fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (last, len) = *self.segments.back().unwrap_or(&(1, 0));
        if let Err(e) = self.writer.write_all(&self.pending) {
            let _ = self.writer.set_len(len);
            return Err(e);
        }
        let written = len + self.pending.len() as u64;
        if let Some(back) = self.segments.back_mut() {
            back.1 = written;
        }
        self.pending.clear();
        self.dirty = true;
        if written >= SEGMENT_BYTES {
            self.writer.sync_data()?;
            self.writer = open_segment(&self.dir, last + 1)?;
            self.segments.push_back((last + 1, 0));
        }
        Ok(())
    }

    /// The file to sync, if anything was written since the last time.
    pub(super) fn take_unsynced(&mut self) -> Option<std::io::Result<File>> {
        std::mem::take(&mut self.dirty).then(|| self.writer.try_clone())
    }

    /// Up to `max` messages after those already taken, in order, each with
    /// the position after it (to [`Spool::commit`] once it is sent).
    /// (What could not be written yet, the disk full, waits: what was
    /// written is still taken.)
    pub(super) fn take(&mut self, max: usize) -> std::io::Result<Vec<(Held, Position)>> {
        self.write_or_log();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((body, next)) = frame(&self.ahead, self.ahead_used) else {
                if self.read_ahead()? {
                    continue;
                }
                break;
            };
            self.read.off += (next - self.ahead_used) as u64;
            self.ahead_used = next;
            match decode(body) {
                Some(held) => out.push((held, self.read)),
                None => tracing::error!("NATS spool: a message that cannot be decoded was skipped"),
            }
        }
        Ok(out)
    }

    /// Reads what follows the last frame taken into `ahead` (at least the
    /// next frame whole); false if nothing follows yet.
    fn read_ahead(&mut self) -> std::io::Result<bool> {
        loop {
            let Some(&(seg, len)) = self.segments.iter().find(|(n, _)| *n == self.read.seg) else {
                return Ok(false);
            };
            if self.read.off >= len {
                let Some(&(next, _)) = self.segments.iter().find(|(n, _)| *n > seg) else {
                    return Ok(false);
                };
                self.read = Position { seg: next, off: 0 };
                self.ahead_used = self.ahead.len();
                continue;
            }
            let left = (len - self.read.off) as usize;
            let known = &self.ahead[self.ahead_used..];
            let whole = frame_len(known).map_or(0, |n| FRAME_HEAD + n);
            let want = left.min(READ_BYTES.max(whole));
            if want <= known.len() {
                // Read whole and still no valid frame.
                tracing::error!(
                    segment = seg,
                    at = self.read.off,
                    "NATS spool: a corrupt frame; the rest of its segment is skipped"
                );
                self.read.off = len;
                self.ahead_used = self.ahead.len();
                continue;
            }
            self.ahead = self.read_segment(seg, self.read.off, want)?;
            self.ahead_used = 0;
            return Ok(true);
        }
    }

    fn read_segment(&mut self, seg: u64, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        if self.reader.as_ref().is_none_or(|(n, _)| *n != seg) {
            self.reader = Some((seg, File::open(segment_path(&self.dir, seg))?));
        }
        let mut buf = vec![0; len];
        if let Some((_, file)) = &self.reader {
            let read = file.read_at(&mut buf, off)?;
            buf.truncate(read);
        }
        Ok(buf)
    }

    /// Every message before `at` was sent.
    pub(super) fn commit(&mut self, at: Position) {
        if at <= self.committed {
            return;
        }
        let sent = bytes_between(self.committed, at, &self.segments);
        self.held = self.held.saturating_sub(sent);
        self.committed = at;
        self.figures.held_bytes.store(self.held, Relaxed);
    }

    /// Writes the cursor if it moved, and deletes the segments before it.
    pub(super) fn save_cursor(&mut self) -> std::io::Result<()> {
        if self.committed == self.saved {
            return Ok(());
        }
        write_cursor(&self.dir, self.committed)?;
        self.saved = self.committed;
        while self.segments.len() > 1 && self.segments[0].0 < self.committed.seg {
            let (n, _) = self.segments[0];
            std::fs::remove_file(segment_path(&self.dir, n))?;
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(r, _)| *r == n) {
                self.reader = None;
            }
        }
        Ok(())
    }
}

/// Bytes from `from` to `to` (one frame, usually in one segment).
fn bytes_between(from: Position, to: Position, segments: &VecDeque<(u64, u64)>) -> u64 {
    if from.seg == to.seg {
        return to.off.saturating_sub(from.off);
    }
    let crossed = segments
        .iter()
        .filter(|(n, _)| (from.seg..=to.seg).contains(n));
    crossed
        .map(|&(n, len)| match n {
            n if n == from.seg => len.saturating_sub(from.off),
            n if n == to.seg => to.off,
            _ => len,
        })
        .sum()
}

/// Bytes from `at` to the end of `segments`.
fn held_from(at: Position, segments: &VecDeque<(u64, u64)>) -> u64 {
    segments
        .iter()
        .filter(|(n, _)| *n >= at.seg)
        .map(|&(n, len)| match n == at.seg {
            true => len.saturating_sub(at.off),
            false => len,
        })
        .sum()
}

/// `at`, or the end of its segment if the segment is shorter (cut).
fn clamp(at: Position, segments: &VecDeque<(u64, u64)>) -> Position {
    match segments.iter().find(|(n, _)| *n == at.seg) {
        Some(&(_, len)) => Position {
            seg: at.seg,
            off: at.off.min(len),
        },
        None => segments
            .front()
            .map_or(at, |&(seg, _)| Position { seg, off: 0 }),
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn open_segment(dir: &Path, n: u64) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))
}

/// The segments in `dir`, in order.
fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The length of segment `n` up to its last whole, valid frame; what
/// follows (a write torn by a crash) is cut.
fn checked_length(dir: &Path, n: u64) -> std::io::Result<u64> {
    let path = segment_path(dir, n);
    let bytes = std::fs::read(&path)?;
    let mut at = 0;
    while let Some((_, next)) = frame(&bytes, at) {
        at = next;
    }
    if at < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            bytes = bytes.len() - at,
            "NATS spool: cut a torn or corrupt end"
        );
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(at as u64)?;
    }
    Ok(at as u64)
}

fn read_cursor(dir: &Path) -> Position {
    let Ok(bytes) = std::fs::read(dir.join("cursor")) else {
        return Position::default();
    };
    let (Some(seg), Some(off), Some(crc)) = (
        bytes
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes),
        bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes),
        bytes
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes),
    ) else {
        return Position::default();
    };
    match crc32c::crc32c(&bytes[..16]) == crc {
        true => Position { seg, off },
        false => Position::default(),
    }
}

fn write_cursor(dir: &Path, at: Position) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&at.seg.to_le_bytes());
    bytes.extend_from_slice(&at.off.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    // 20 bytes in place: a torn write fails the CRC, and the spool then
    // starts from its first segment (at least once).
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dir.join("cursor"))?
        .write_all_at(&bytes, 0)
}

fn frame_len(head: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(head.get(0..4)?.try_into().ok()?) as usize;
    (len > 0 && len <= BODY_BYTES_MAX).then_some(len)
}

/// The body of the frame at `at` in `bytes` and where the next begins, if
/// it is whole and its CRC matches.
fn frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + FRAME_HEAD)?;
    let len = frame_len(head)?;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let body = bytes.get(at + FRAME_HEAD..at + FRAME_HEAD + len)?;
    (crc32c::crc32c(body) == crc).then_some((body, at + FRAME_HEAD + len))
}

fn encode(msg: &Outflow, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    out.push(u8::from(msg.jetstream));
    let subject = &msg.subject.as_bytes()[..msg.subject.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(subject);
    let headers = &msg.headers[..msg.headers.len().min(u8::MAX as usize)];
    out.push(headers.len() as u8);
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&msg.payload);
    let body = &out[start + FRAME_HEAD..];
    let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads fields off the front of a body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn text(&mut self, wide: bool) -> Option<String> {
        let len = match wide {
            true => u16::from_le_bytes(self.bytes(2)?.try_into().ok()?) as usize,
            false => self.u8()? as usize,
        };
        String::from_utf8(self.bytes(len)?.to_vec()).ok()
    }
}

fn decode(body: &[u8]) -> Option<Held> {
    let mut f = Fields(body);
    let jetstream = f.u8()? & 1 == 1;
    let subject = f.text(true)?;
    let count = f.u8()?;
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = f.text(false)?;
        headers.push((name, f.text(true)?));
    }
    Some(Held {
        subject,
        headers,
        payload: Bytes::copy_from_slice(f.0),
        jetstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Relaxed);
            let dir = std::env::temp_dir().join(format!("ringmq-spool-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn outflow(n: usize) -> Outflow {
        Outflow {
            subject: format!("mqtt.devices.{n}"),
            headers: vec![
                ("qoslevel", "1".into()),
                ("mqttMessageId", format!("{n:032}")),
            ],
            payload: Bytes::from(vec![n as u8; n % 300]),
            jetstream: n % 2 == 0,
            confirm: None,
            cluster: false,
            durable: true,
        }
    }

    /// `outflow(n)` as the spool gives it back.
    fn held(n: usize) -> Held {
        let o = outflow(n);
        Held {
            subject: o.subject,
            headers: o
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            payload: o.payload,
            jetstream: o.jetstream,
        }
    }

    fn open(dir: &Path, max: u64) -> Spool {
        Spool::open(dir, max, Arc::default()).expect("open")
    }

    #[test]
    fn messages_come_back_in_order_and_what_was_sent_is_not_sent_again() {
        let dir = Dir::new();
        let mut spool = open(dir.path(), u64::MAX);
        for n in 0..1000 {
            assert!(spool.append(&outflow(n)));
        }
        let first = spool.take(400).expect("take");
        assert_eq!(
            first.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
            (0..400).map(held).collect::<Vec<_>>()
        );
        spool.commit(first[299].1);
        spool.save_cursor().expect("cursor");
        spool.write_pending().expect("write");
        drop(spool);
        // A restart sends what was not committed: 300.., though 300..400
        // were taken.
        let mut spool = open(dir.path(), u64::MAX);
        let rest = spool.take(usize::MAX).expect("take");
        assert_eq!(
            rest.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
            (300..1000).map(held).collect::<Vec<_>>()
        );
        spool.commit(rest[rest.len() - 1].1);
        assert_eq!(spool.held, 0);
    }

    #[test]
    fn a_full_spool_drops_the_new_message_and_counts_it() {
        let dir = Dir::new();
        let figures = Arc::new(Figures::default());
        let mut spool = Spool::open(dir.path(), 2_000, Arc::clone(&figures)).expect("open");
        let appended = (0..100).filter(|&n| spool.append(&outflow(n))).count();
        assert!(appended > 0 && appended < 100);
        assert_eq!(figures.dropped.load(Relaxed), 100 - appended as u64);
        assert!(figures.held_bytes.load(Relaxed) <= 2_000);
        let taken = spool.take(usize::MAX).expect("take");
        spool.commit(taken[taken.len() - 1].1);
        assert!(spool.append(&outflow(7)), "room again once sent");
    }

    #[test]
    fn a_torn_end_is_cut_and_what_precedes_it_kept() {
        let dir = Dir::new();
        let mut spool = open(dir.path(), u64::MAX);
        for n in 0..10 {
            spool.append(&outflow(n));
        }
        spool.write_pending().expect("write");
        drop(spool);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
        std::fs::write(&path, bytes).expect("write");
        let mut spool = open(dir.path(), u64::MAX);
        let got = spool.take(usize::MAX).expect("take");
        assert_eq!(got.len(), 10);
        spool.append(&outflow(10));
        assert_eq!(spool.take(usize::MAX).expect("take")[0].0, held(10));
    }

    #[test]
    fn segments_before_the_cursor_are_deleted() {
        let dir = Dir::new();
        let mut spool = open(dir.path(), u64::MAX);
        let big = Outflow {
            payload: Bytes::from(vec![7u8; 1 << 20]),
            ..outflow(0)
        };
        for _ in 0..40 {
            spool.append(&big);
        }
        spool.write_pending().expect("write");
        assert!(segment_numbers(dir.path()).expect("list").len() >= 2);
        let taken = spool.take(usize::MAX).expect("take");
        assert_eq!(taken.len(), 40);
        spool.commit(taken[39].1);
        spool.save_cursor().expect("cursor");
        assert_eq!(segment_numbers(dir.path()).expect("list").len(), 1);
        assert_eq!(spool.held, 0);
        drop(spool);
        let mut spool = open(dir.path(), u64::MAX);
        assert!(spool.take(10).expect("take").is_empty());
    }
}
