//! Password files: one `user:hash` line per user, the hash an argon2id PHC
//! string with its own random salt. `ringmq passwd FILE USER` writes them;
//! [`PasswordFile`] checks CONNECT against them.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ringmq_protocol::{Connect, ReasonCode};

use crate::core::auth::Authenticator;
use crate::store::replace::{replace, Access};

/// Users and their password hashes.
#[derive(Debug, Default, Clone)]
pub struct PasswordFile {
    users: BTreeMap<String, String>,
    allow_anonymous: bool,
}

/// A password file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A line is not `user:hash`.
    #[error("line {line}: expected `user:$argon2id$...`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// The user name is empty or holds `:`.
    #[error("user names must be non-empty and must not contain ':'")]
    BadUser,
    /// Hashing failed.
    #[error("hashing failed: {0}")]
    Hash(String),
    /// The password given is empty.
    #[error(
        "the password is empty: refused (a user without a password could sign in with any client)"
    )]
    EmptyPassword,
    /// The password typed twice differs.
    #[error("the passwords typed differ: nothing written")]
    Mismatch,
}

impl PasswordFile {
    /// Reads a password file.
    pub fn load(path: &Path, allow_anonymous: bool) -> Result<Self, PasswdError> {
        let text = std::fs::read_to_string(path)?;
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or(PasswdError::Syntax { line: i + 1 })?;
            PasswordHash::new(hash).map_err(|_| PasswdError::Syntax { line: i + 1 })?;
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(PasswordFile {
            users,
            allow_anonymous,
        })
    }

    /// Whether `user` with `password` is known.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
    }
}

impl Authenticator for PasswordFile {
    fn authenticate(&self, c: &Connect) -> Result<(), ReasonCode> {
        match (&c.username, &c.password) {
            (None, _) if self.allow_anonymous => Ok(()),
            (Some(user), Some(password)) if self.verify(user.as_str(), password) => Ok(()),
            _ => Err(ReasonCode::BadUserNameOrPassword),
        }
    }
}

/// An argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, PasswdError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswdError::Hash(e.to_string()))
}

/// Adds or replaces `user` in `file`. The password is read from the
/// terminal without echo, typed twice, when stdin is one; otherwise from
/// the first line of stdin. An empty password is refused. The file is
/// replaced as a whole: a new one is 0600, an existing one keeps its
/// owner, group and group-read bit and loses any access for others.
pub fn add_user_from_stdin(file: &Path, user: &str) -> Result<(), PasswdError> {
    if user.is_empty() || user.contains(':') {
        return Err(PasswdError::BadUser);
    }
    let password = read_password()?;
    if password.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    let hash = hash_password(password.as_bytes())?;
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let mut out: String = existing
        .lines()
        .filter(|l| l.split_once(':').map(|(u, _)| u) != Some(user))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{user}:{hash}\n"));
    // A symlinked file is written where it points; an existing file keeps
    // its owner and group (a service user may read it) but never its bits
    // for others; a new one is 0600.
    let target = match std::fs::canonicalize(file) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => file.to_owned(),
        Err(e) => return Err(e.into()),
    };
    let access = Access::kept_from(&target)?;
    replace(&target, out.as_bytes(), access)?;
    Ok(())
}

/// The password: prompted for twice without echo on a terminal, else the
/// first line of stdin.
fn read_password() -> Result<String, PasswdError> {
    if !io::IsTerminal::is_terminal(&io::stdin()) {
        return Ok(tty::read_line()?);
    }
    // Echo stays off from before the first prompt to after the second,
    // so nothing typed ahead is shown.
    let _quiet = tty::NoEcho::new()?;
    let first = tty::prompt("Password: ")?;
    if first.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    let second = tty::prompt("Password again: ")?;
    match first == second {
        true => Ok(first),
        false => Err(PasswdError::Mismatch),
    }
}

/// Reading a line from stdin, and from the terminal with echo off.
mod tty {
    use std::io::{self, BufRead, Write};

    /// Echo turned off on stdin until dropped.
    pub(super) struct NoEcho(libc::termios);

    impl NoEcho {
        pub(super) fn new() -> io::Result<NoEcho> {
            // SAFETY: a termios is plain data; tcgetattr fills it.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: fd 0 is open; `saved` is a valid termios.
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            // SAFETY: as above.
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(NoEcho(saved))
        }
    }

    impl Drop for NoEcho {
        fn drop(&mut self) {
            // SAFETY: restores the attributes read in `new`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
        }
    }

    /// Prints `prompt` on stderr and reads one line (echo is the
    /// caller's: see [`NoEcho`]).
    pub(super) fn prompt(prompt: &str) -> io::Result<String> {
        eprint!("{prompt}");
        io::stderr().flush()?;
        read_line()
    }

    /// The first line of stdin, without its line end.
    pub(super) fn read_line() -> io::Result<String> {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}
