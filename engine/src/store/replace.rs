//! Replacing a small file whole: written beside it under a fresh name,
//! synced, renamed over it, the directory synced. A reader (or a crash)
//! sees the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Who owns the new file and what it allows.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// Permission bits.
    pub mode: u32,
    /// Owner and group to give it (`None`: the writing process's).
    pub owner: Option<(u32, u32)>,
}

impl Access {
    /// Owner-only (0600), owned by the writer.
    pub const PRIVATE: Access = Access {
        mode: 0o600,
        owner: None,
    };

    /// What the file at `path` has now, without its bits for others
    /// (`mode & 0o640`), or [`Access::PRIVATE`] if there is none.
    pub fn kept_from(path: &Path) -> io::Result<Access> {
        match fs::metadata(path) {
            Ok(m) => Ok(Access {
                mode: m.mode() & 0o640,
                owner: Some((m.uid(), m.gid())),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Access::PRIVATE),
            Err(e) => Err(e),
        }
    }
}

/// Replaces `path` with `bytes`. The temporary file is created new
/// (never an existing file or a symlink planted under its name), and
/// removed if anything fails.
pub fn replace(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    let tmp = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(access.mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = fill(&mut file, bytes, access).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

fn fill(file: &mut File, bytes: &[u8], access: Access) -> io::Result<()> {
    // The mode given at creation is cut by the umask: set it exactly.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(access.mode))?;
    if let Some((uid, gid)) = access.owner {
        match std::os::unix::fs::fchown(&*file, Some(uid), Some(gid)) {
            Ok(()) => {}
            // Not ours to give away (not root): the writer keeps it.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    file.write_all(bytes)?;
    file.sync_all()
}
