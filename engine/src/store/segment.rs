//! One segment file of a log: pre-allocated (so that a full disk is an
//! error at creation, never a SIGBUS on a page fault), mapped shared, and
//! filled front to back with frames. The unwritten rest is zeros, which
//! reads as the end.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw, UncheckedAdvice};

use super::record::FRAME_HEAD_BYTES;

/// A segment being written.
#[derive(Debug)]
pub struct Segment {
    /// Its number, which orders segments and names the file.
    pub index: u64,
    /// Where it is.
    pub path: PathBuf,
    map: Arc<MmapRaw>,
    _file: File,
    /// Bytes written.
    pub len: usize,
    /// Bytes known to be on disk.
    pub synced: usize,
}

/// The file name of segment `index`.
pub fn file_name(index: u64) -> String {
    format!("{index:016}.log")
}

/// The index of a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    name.strip_suffix(".log")?.parse().ok()
}

impl Segment {
    /// Creates segment `index` in `dir`, `bytes` long, reserved on disk.
    pub fn create(dir: &Path, index: u64, bytes: usize) -> io::Result<Segment> {
        let path = dir.join(file_name(index));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let created = allocate(&file, bytes).and_then(|()| Segment::map(index, path.clone(), file));
        if created.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        created
    }

    /// Opens an existing segment for writing after its first `len` bytes.
    pub fn open(path: &Path, index: u64, len: usize) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut s = Segment::map(index, path.to_owned(), file)?;
        s.len = len.min(s.capacity());
        s.synced = s.len;
        Ok(s)
    }

    fn map(index: u64, path: PathBuf, file: File) -> io::Result<Segment> {
        let map = MmapRaw::map_raw(&file)?;
        let _ = map.advise(Advice::Sequential);
        Ok(Segment {
            index,
            path,
            map: Arc::new(map),
            _file: file,
            len: 0,
            synced: 0,
        })
    }

    /// The mapping, to read frames back.
    pub fn mapping(&self) -> Arc<MmapRaw> {
        Arc::clone(&self.map)
    }

    /// Bytes the segment holds.
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Whether `n` more bytes fit, leaving room for the zero frame head
    /// that marks the end.
    pub fn fits(&self, n: usize) -> bool {
        self.len + n + FRAME_HEAD_BYTES <= self.capacity()
    }

    /// Copies `bytes` after what is written. The caller checked [`fits`].
    ///
    /// [`fits`]: Segment::fits
    pub fn append(&mut self, bytes: &[u8]) {
        assert!(
            self.len + bytes.len() <= self.capacity(),
            "segment overflow"
        );
        // SAFETY: in bounds (checked above); this process maps the file
        // once and only this segment writes through the mapping.
        unsafe {
            let dst = self.map.as_mut_ptr().add(self.len);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
        self.len += bytes.len();
    }

    /// Zeroes everything from `from` to the end (a torn tail, so that a
    /// later scan does not read it).
    pub fn zero_from(&mut self, from: usize) {
        let n = self.capacity().saturating_sub(from);
        // SAFETY: `from..capacity` is inside the mapping.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(from), 0, n) };
    }

    /// What must be synced to make everything written durable: the mapping
    /// and the unsynced range. Run [`Pending::sync`] off the event loop.
    pub fn pending(&self) -> Option<Pending> {
        (self.len > self.synced).then(|| Pending {
            map: Arc::clone(&self.map),
            from: self.synced,
            to: self.len,
        })
    }
}

/// An unsynced range of a segment.
#[derive(Debug)]
pub struct Pending {
    map: Arc<MmapRaw>,
    from: usize,
    /// End of the range.
    pub to: usize,
}

impl Pending {
    /// msync of the range: blocks until it is on disk.
    pub fn sync(&self) -> io::Result<()> {
        self.map.flush_range(self.from, self.to - self.from)
    }

    /// Lets go of the range's pages: they stay in the page cache (and are
    /// written back as usual) but no longer count in the broker's RSS. The
    /// page the writer is in comes back on its next write.
    pub fn release(&self) {
        release(&self.map, self.from, self.to);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(1)
}

fn allocate(file: &File, bytes: usize) -> io::Result<()> {
    file.set_len(bytes as u64)?;
    // SAFETY: fallocate on a descriptor this function borrows.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    match rc {
        0 => Ok(()),
        _ => {
            let e = io::Error::last_os_error();
            // Filesystems without fallocate keep the sparse file.
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) => Ok(()),
                _ => Err(e),
            }
        }
    }
}

/// Maps segment file `path` read-only, to scan it and read frames back.
pub fn map_read(path: &Path) -> io::Result<MmapRaw> {
    let file = File::open(path)?;
    let map = memmap2::MmapOptions::new().map_raw_read_only(&file)?;
    let _ = map.advise(Advice::Sequential);
    Ok(map)
}

/// The bytes of a mapping.
///
/// # Safety
///
/// Nothing may write the range the caller reads while it borrows it: a
/// segment is written only after its last frame, by the thread that reads.
pub unsafe fn bytes(map: &MmapRaw) -> &[u8] {
    // SAFETY: the mapping is `len` bytes long and lives while borrowed.
    unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }
}

/// Lets go of a mapping's pages in `from..to` (see [`Pending::release`]).
pub fn release(map: &MmapRaw, from: usize, to: usize) {
    let page = page_size();
    let (from, to) = (from / page * page, to.min(map.len()) / page * page);
    if to > from {
        // SAFETY: a shared file mapping: dropped pages are read back from
        // the page cache, never zeroed; no slice of them outlives the
        // read that made it (frames are copied out).
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from) };
    }
}

/// The body of the intact frame at `at`, if there is one.
pub fn frame_body(bytes: &[u8], at: usize) -> Option<&[u8]> {
    match frame_at(bytes, at) {
        Frame::Valid(body) => Some(body),
        _ => None,
    }
}

/// The body of the frame at `at` by its length alone: for a frame already
/// checked (by the scan at start) or written by this process.
pub fn frame_body_checked_before(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let head = bytes.get(at..at + FRAME_HEAD_BYTES)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let start = at + FRAME_HEAD_BYTES;
    bytes.get(start..start + len).filter(|b| !b.is_empty())
}

/// Reads the frames of a segment file from the start. Calls `f` with the
/// offset and body of every intact frame; skips a corrupt frame that a
/// valid one follows; stops at the zero end, a torn tail, or the file's end.
pub fn scan(bytes: &[u8], mut f: impl FnMut(usize, &[u8])) -> ScanEnd {
    let mut at = 0usize;
    let mut corrupt = 0u64;
    loop {
        match frame_at(bytes, at) {
            Frame::Valid(body) => {
                f(at, body);
                at += FRAME_HEAD_BYTES + body.len();
            }
            Frame::End => {
                return ScanEnd {
                    len: at,
                    torn: false,
                    corrupt,
                }
            }
            Frame::Bad(next) => {
                // Corrupt in the middle if an intact frame follows.
                if next < bytes.len() && matches!(frame_at(bytes, next), Frame::Valid(_)) {
                    corrupt += 1;
                    at = next;
                    continue;
                }
                return ScanEnd {
                    len: at,
                    torn: true,
                    corrupt,
                };
            }
        }
    }
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Bytes of intact frames (the write position).
    pub len: usize,
    /// Whether it ended on a torn (partly written) frame.
    pub torn: bool,
    /// Corrupt frames skipped.
    pub corrupt: u64,
}

enum Frame<'a> {
    Valid(&'a [u8]),
    End,
    /// Unreadable; where the next frame would start if its length is right.
    Bad(usize),
}

fn frame_at(bytes: &[u8], at: usize) -> Frame<'_> {
    let Some(head) = bytes.get(at..at + FRAME_HEAD_BYTES) else {
        return Frame::End;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 && crc == 0 {
        return Frame::End;
    }
    let start = at + FRAME_HEAD_BYTES;
    let Some(body) = bytes.get(start..start + len) else {
        return Frame::Bad(usize::MAX);
    };
    if len == 0 || crc32c::crc32c(body) != crc {
        return Frame::Bad(start + len);
    }
    Frame::Valid(body)
}
