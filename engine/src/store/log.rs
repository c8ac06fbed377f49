//! A log: numbered segment files in one directory, appended to in order.
//! It knows which message lsns each segment holds and how many copies of
//! them are still held by sessions, so that a segment whose messages are
//! all acknowledged, expired or dropped is deleted whole (oldest first).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use super::segment::{self, Pending, ScanEnd, Segment};

/// Bytes of frames read back after which the pages read are let go of,
/// so that a drain does not grow the broker's RSS by what it reads.
const READ_RELEASE_BYTES: usize = 4 << 20;

/// Most lsns a segment's index pads over for messages that were never
/// written (an append refused while the disk was full); past it, a message
/// is left out of the index (and reads as unreadable) rather than padding
/// the index without bound.
const INDEX_GAP_MAX: usize = 1 << 20;

/// What opening a log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Segment files read.
    pub segments: usize,
    /// Intact frames read.
    pub frames: u64,
    /// Corrupt frames skipped.
    pub corrupt: u64,
    /// Segments whose tail was torn (cut at the last intact frame).
    pub torn: usize,
    /// Bytes read.
    pub bytes: u64,
}

#[derive(Debug)]
struct Meta {
    index: u64,
    path: PathBuf,
    /// Copies of its messages still held by sessions.
    live: u64,
    /// Written and not yet synced, when it stopped being the active one.
    unsynced: Option<Pending>,
    /// Size of the file.
    bytes: u64,
    /// The mapping frames are read back through.
    map: Option<Arc<MmapRaw>>,
    /// Where the frame of message `offsets_from + i` starts
    /// (`u32::MAX`: no such message here).
    offsets_from: u64,
    offsets: Vec<u32>,
}

/// One log directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    segment_bytes: usize,
    active: Segment,
    /// Every segment, oldest first; the last is `active`.
    metas: VecDeque<Meta>,
    spare: Option<Segment>,
    /// The index of a spare being created off the event loop.
    spare_pending: Option<u64>,
    /// Most bytes of segment files (0: no cap but the disk's).
    bytes_max: u64,
    /// Bytes read back since pages were last let go of, and from which
    /// segments.
    read_bytes: usize,
    read_from: Vec<u64>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, calling `f` with the segment
    /// index and body of every intact frame, oldest first; `f` returns the
    /// lsn of a message frame, which [`Log::read`] then finds. A torn tail
    /// of the last segment is cut off and zeroed.
    pub fn open(
        dir: &Path,
        segment_bytes: usize,
        mut f: impl FnMut(u64, &[u8]) -> Option<u64>,
    ) -> io::Result<(Log, Opened)> {
        std::fs::create_dir_all(dir)?;
        let mut opened = Opened::default();
        let mut metas = VecDeque::new();
        let mut last: Option<ScanEnd> = None;
        for (index, path) in list(dir)? {
            let map = segment::map_read(&path)?;
            let mut meta = Meta::new(index, path);
            // SAFETY: mapped read-only; no other process writes the data
            // directory (it is locked) and this one writes only the active
            // segment, chosen below.
            let end = segment::scan(unsafe { segment::bytes(&map) }, |at, body| {
                opened.frames += 1;
                if let Some(lsn) = f(index, body) {
                    meta.locate(lsn, at);
                }
            });
            // The scan read every page: they go back to the page cache.
            segment::release(&map, 0, map.len());
            meta.offsets.shrink_to_fit();
            opened.segments += 1;
            opened.corrupt += end.corrupt;
            opened.torn += usize::from(end.torn);
            opened.bytes += end.len as u64;
            last = Some(end);
            meta.bytes = map.len() as u64;
            meta.map = Some(Arc::new(map));
            metas.push_back(meta);
        }
        let active = match (metas.back_mut(), last) {
            (Some(m), Some(end)) => {
                let mut s = Segment::open(&m.path, m.index, end.len)?;
                if end.torn {
                    s.zero_from(end.len);
                }
                m.map = Some(s.mapping());
                s
            }
            _ => {
                let s = Segment::create(dir, 1, segment_bytes)?;
                let mut meta = Meta::new(1, s.path.clone());
                meta.bytes = s.capacity() as u64;
                meta.map = Some(s.mapping());
                metas.push_back(meta);
                s
            }
        };
        let log = Log {
            dir: dir.to_owned(),
            segment_bytes,
            active,
            metas,
            spare: None,
            spare_pending: None,
            bytes_max: 0,
            read_bytes: 0,
            read_from: Vec::new(),
        };
        Ok((log, opened))
    }

    /// Caps the bytes of segment files: past it, a new segment is refused
    /// as if the disk were full (ENOSPC).
    pub fn set_bytes_max(&mut self, bytes_max: u64) {
        self.bytes_max = bytes_max;
    }

    /// Bytes of segment files (the spare included).
    pub fn bytes(&self) -> u64 {
        let spare = self.spare.as_ref().map_or(0, |s| s.capacity() as u64);
        self.metas.iter().map(|m| m.bytes).sum::<u64>() + spare
    }

    /// Appends one frame, moving to a new segment if it does not fit.
    /// Returns where in the active segment it starts.
    pub fn append(&mut self, frame: &[u8]) -> io::Result<usize> {
        if !self.active.fits(frame.len()) {
            self.rotate(frame.len())?;
        }
        let at = self.active.len;
        self.active.append(frame);
        Ok(at)
    }

    /// Appends the frame of message `lsn`, held by `copies` sessions.
    pub fn append_message(&mut self, frame: &[u8], lsn: u64, copies: u64) -> io::Result<()> {
        let at = self.append(frame)?;
        if let Some(m) = self.metas.back_mut() {
            m.locate(lsn, at);
            m.live += copies;
        }
        Ok(())
    }

    /// The body of message `lsn`'s frame, if the log holds it. Its
    /// checksum is not computed again: every indexed frame was checked by
    /// the scan at start or written by this process (check what it holds,
    /// e.g. its lsn). Pages read are let go of every few megabytes read.
    pub fn read(&mut self, lsn: u64) -> Option<&[u8]> {
        if self.read_bytes >= READ_RELEASE_BYTES {
            self.release_read();
        }
        let m = self
            .metas
            .iter()
            .rev()
            .find(|m| !m.offsets.is_empty() && m.offsets_from <= lsn)?;
        let at = m.offset_of(lsn)?;
        let map = m.map.as_ref()?;
        if self.read_from.last() != Some(&m.index) {
            self.read_from.push(m.index);
        }
        // SAFETY: frames before the write position are never written
        // again, and `frame_body` reads only up to a frame's end.
        let body = segment::frame_body_checked_before(unsafe { segment::bytes(map) }, at as usize)?;
        self.read_bytes += body.len();
        Some(body)
    }

    /// Lets go of the pages of the segments read from (not the active
    /// one's, which the sync releases).
    pub fn release_read(&mut self) {
        self.read_bytes = 0;
        let active = self.active.index;
        let mut from = std::mem::take(&mut self.read_from);
        from.sort_unstable();
        from.dedup();
        for m in self
            .metas
            .iter()
            .filter(|m| m.index != active && from.binary_search(&m.index).is_ok())
        {
            if let Some(map) = &m.map {
                segment::release(map, 0, map.len());
            }
        }
        from.clear();
        self.read_from = from;
    }

    /// Starts a new segment (big enough for a frame of `need` bytes); the
    /// old one's unsynced rest is kept for the next sync.
    pub fn rotate(&mut self, need: usize) -> io::Result<()> {
        let bytes = self
            .segment_bytes
            .max(need + 2 * super::record::FRAME_HEAD_BYTES);
        let mut index = self.active.index + 1;
        if self.spare.is_none() && self.spare_pending == Some(index) {
            // That file is being created right now: skip its number (the
            // spare, too late, is deleted when it arrives).
            index += 1;
        }
        let spare = self.spare.as_ref().map_or(0, |s| s.capacity() as u64);
        let after = self.bytes() - spare + bytes as u64;
        if self.bytes_max > 0 && after > self.bytes_max {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let next = match self.spare.take() {
            Some(s) if s.capacity() >= bytes && s.index == index => s,
            other => {
                if let Some(s) = other {
                    let _ = std::fs::remove_file(&s.path);
                }
                Segment::create(&self.dir, index, bytes)?
            }
        };
        let old = std::mem::replace(&mut self.active, next);
        if let Some(m) = self.metas.back_mut() {
            m.unsynced = old.pending();
            m.offsets.shrink_to_fit();
        }
        let mut meta = Meta::new(index, self.active.path.clone());
        meta.bytes = self.active.capacity() as u64;
        meta.map = Some(self.active.mapping());
        self.metas.push_back(meta);
        Ok(())
    }

    /// Whether a spare segment should be made ready (the active one is
    /// half full and none is ready).
    pub fn wants_spare(&self) -> bool {
        if self.spare_pending.is_some() {
            return false;
        }
        let room =
            self.bytes_max == 0 || self.bytes() + self.segment_bytes as u64 <= self.bytes_max;
        room && self.spare.is_none() && self.active.len * 2 >= self.active.capacity()
    }

    /// Where the next segment goes and its index and size, to create it
    /// off the event loop.
    pub fn spare_plan(&mut self) -> (PathBuf, u64, usize) {
        let index = self.active.index + 1;
        self.spare_pending = Some(index);
        (self.dir.clone(), index, self.segment_bytes)
    }

    /// Creating the spare failed.
    pub fn spare_failed(&mut self) {
        self.spare_pending = None;
    }

    /// Hands over a spare segment created off the event loop.
    pub fn set_spare(&mut self, s: Segment) {
        self.spare_pending = None;
        match self.spare {
            None if s.index == self.active.index + 1 => self.spare = Some(s),
            _ => {
                let _ = std::fs::remove_file(&s.path);
            }
        }
    }

    /// Everything written and not synced: the active segment's range and
    /// the rest of the segments rotated away. Taking them marks them
    /// synced; run the syncs off the event loop.
    pub fn take_pending(&mut self) -> Vec<Pending> {
        let mut out: Vec<Pending> = self
            .metas
            .iter_mut()
            .filter_map(|m| m.unsynced.take())
            .collect();
        if let Some(p) = self.active.pending() {
            self.active.synced = p.to;
            out.push(p);
        }
        out
    }

    /// One more copy of `lsn` is held (recovery).
    pub fn hold(&mut self, lsn: u64) {
        if let Some(m) = self.meta_of(lsn) {
            m.live += 1;
        }
    }

    /// One copy of `lsn` is no longer held.
    pub fn release(&mut self, lsn: u64) {
        if let Some(m) = self.meta_of(lsn) {
            m.live = m.live.saturating_sub(1);
        }
    }

    /// The segment message `lsn` was written to (not one whose range
    /// merely covers it: a message that could not be written is in none).
    fn meta_of(&mut self, lsn: u64) -> Option<&mut Meta> {
        // Few segments, and acknowledgements are mostly for recent ones.
        let m = self
            .metas
            .iter_mut()
            .rev()
            .find(|m| !m.offsets.is_empty() && m.offsets_from <= lsn)?;
        m.offset_of(lsn).is_some().then_some(m)
    }

    /// Deletes the oldest segments that hold nothing live, up to the
    /// active one. Returns how many.
    pub fn reclaim(&mut self) -> usize {
        let mut n = 0;
        while self.metas.len() > 1 {
            let Some(m) = self.metas.front() else { break };
            // Unsynced or not: nothing in it is needed any more.
            if m.live > 0 {
                break;
            }
            if let Err(e) = std::fs::remove_file(&m.path) {
                tracing::warn!(path = %m.path.display(), "cannot delete a log segment: {e}");
                break;
            }
            self.metas.pop_front();
            n += 1;
        }
        n
    }

    /// Deletes every segment before segment `index` (a snapshot of
    /// everything live starts there and is synced).
    pub fn drop_before(&mut self, index: u64) {
        while self.metas.len() > 1 && self.metas.front().is_some_and(|m| m.index < index) {
            if let Some(m) = self.metas.pop_front() {
                if let Err(e) = std::fs::remove_file(&m.path) {
                    tracing::warn!(path = %m.path.display(), "cannot delete a log segment: {e}");
                }
            }
        }
    }

    /// The index of the segment being written.
    pub fn active_index(&self) -> u64 {
        self.active.index
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.metas.len()
    }

    /// Bytes written in the active segment.
    pub fn active_len(&self) -> usize {
        self.active.len
    }

    /// Bytes of the segments before the active one, roughly.
    pub fn older_bytes(&self) -> usize {
        (self.metas.len() - 1) * self.segment_bytes
    }
}

impl Meta {
    fn new(index: u64, path: PathBuf) -> Meta {
        Meta {
            index,
            path,
            live: 0,
            unsynced: None,
            bytes: 0,
            map: None,
            offsets_from: 0,
            offsets: Vec::new(),
        }
    }

    /// Where message `lsn`'s frame starts, if it was written here.
    fn offset_of(&self, lsn: u64) -> Option<u32> {
        let i = usize::try_from(lsn.checked_sub(self.offsets_from)?).ok()?;
        self.offsets.get(i).copied().filter(|&at| at != u32::MAX)
    }

    /// Message `lsn`'s frame starts at `at`. Lsns only grow within a
    /// segment; a gap (a message that could not be written) reads as none.
    fn locate(&mut self, lsn: u64, at: usize) {
        let Ok(at) = u32::try_from(at) else { return };
        if self.offsets.is_empty() {
            self.offsets_from = lsn;
        }
        let Some(i) = lsn.checked_sub(self.offsets_from) else {
            return;
        };
        let Ok(i) = usize::try_from(i) else { return };
        if i >= self.offsets.len() && i - self.offsets.len() < INDEX_GAP_MAX {
            self.offsets.resize(i, u32::MAX);
            self.offsets.push(at);
        }
    }
}

/// The segment files of `dir`, by index.
fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(index) = e.file_name().to_str().and_then(segment::parse_name) {
            out.push((index, e.path()));
        }
    }
    out.sort_unstable_by_key(|(i, _)| *i);
    Ok(out)
}
