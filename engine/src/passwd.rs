//! Password files: one `user:hash` line per user, the hash an argon2id PHC
//! string with its own random salt. `ringmq passwd FILE USER` writes them;
//! [`PasswordFile`] checks CONNECT against them.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ringmq_protocol::{Connect, ReasonCode};

use crate::core::auth::Authenticator;

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

/// Adds or replaces `user` in `file`, reading the password from the first
/// line of stdin.
pub fn add_user_from_stdin(file: &Path, user: &str) -> Result<(), PasswdError> {
    if user.is_empty() || user.contains(':') {
        return Err(PasswdError::BadUser);
    }
    let mut password = String::new();
    io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
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
    std::fs::write(file, out)?;
    Ok(())
}
