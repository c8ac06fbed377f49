//! ACL files, in the shape mosquitto users know:
//!
//! ```text
//! # rules before the first `user` line apply to every client
//! topic read public/#
//! user alice
//! topic readwrite sensors/#
//! pattern write clients/%c/out     # %c: client id, %u: user name
//! ```
//!
//! A client may publish to a topic if a `write`/`readwrite` rule matches it,
//! and subscribe to a filter if a `read`/`readwrite` rule covers every topic
//! the filter can match. Everything else is refused.

use std::collections::BTreeMap;
use std::path::Path;

use ringmq_protocol::topic;

use crate::core::auth::{Authorizer, Principal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    filter: String,
    /// `pattern` rules substitute `%c` and `%u` first.
    pattern: bool,
}

/// Parsed ACL rules.
#[derive(Debug, Default, Clone)]
pub struct AclFile {
    everyone: Vec<Rule>,
    users: BTreeMap<String, Vec<Rule>>,
}

/// An ACL file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line is not understood.
    #[error("line {line}: {why}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

impl AclFile {
    /// Reads an ACL file.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        Self::parse(&std::fs::read_to_string(path)?)
    }

    /// Parses ACL text.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            // Only whole lines are comments: `#` is also the multi-level wildcard.
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| AclError::Syntax {
                line: i + 1,
                why: why.to_owned(),
            };
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("");
            let rest: Vec<&str> = words.collect();
            match keyword {
                "user" if rest.len() == 1 => user = Some(rest[0].to_owned()),
                "topic" | "pattern" => {
                    let (access, filter) = match rest.as_slice() {
                        [f] => (Access::ReadWrite, *f),
                        [a, f] => (
                            parse_access(a)
                                .ok_or_else(|| err("access is read, write or readwrite"))?,
                            *f,
                        ),
                        _ => return Err(err("expected `topic [read|write|readwrite] FILTER`")),
                    };
                    let pattern = keyword == "pattern";
                    if !pattern && ringmq_protocol::TopicFilter::new(filter.to_owned()).is_err() {
                        return Err(err("invalid topic filter"));
                    }
                    let rule = Rule {
                        access,
                        filter: filter.to_owned(),
                        pattern,
                    };
                    match &user {
                        Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        None => acl.everyone.push(rule),
                    }
                }
                _ => return Err(err("expected `user NAME`, `topic ...` or `pattern ...`")),
            }
        }
        Ok(acl)
    }

    fn allows(&self, who: Principal<'_>, write: bool, subject: &str) -> bool {
        let own = who
            .username
            .and_then(|u| self.users.get(u))
            .into_iter()
            .flatten();
        self.everyone.iter().chain(own).any(|rule| {
            let ok = match rule.access {
                Access::ReadWrite => true,
                Access::Read => !write,
                Access::Write => write,
            };
            if !ok {
                return false;
            }
            // A wildcard or level separator in the substituted name would
            // widen the rule to other clients' topics.
            let unsafe_name = |s: &str| s.contains(['+', '#', '/']);
            if rule.pattern && (unsafe_name(who.client_id) || who.username.is_some_and(unsafe_name))
            {
                return false;
            }
            let filter = match rule.pattern {
                true => rule
                    .filter
                    .replace("%c", who.client_id)
                    .replace("%u", who.username.unwrap_or("")),
                false => rule.filter.clone(),
            };
            match write {
                true => topic::matches(&filter, subject),
                false => ringmq_protocol::topic::covers(&filter, subject),
            }
        })
    }
}

fn parse_access(s: &str) -> Option<Access> {
    match s {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        _ => None,
    }
}

impl Authorizer for AclFile {
    fn can_publish(&self, who: Principal<'_>, topic: &str) -> bool {
        self.allows(who, true, topic)
    }

    fn can_subscribe(&self, who: Principal<'_>, filter: &str) -> bool {
        let filter = topic::parse_shared(filter).map_or(filter, |s| s.filter);
        self.allows(who, false, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_does_not_match_for_names_holding_wildcards() {
        let acl = AclFile::parse("pattern write clients/%c/out\n").expect("valid");
        let who = |client_id| Principal {
            client_id,
            username: None,
        };
        assert!(acl.can_publish(who("dev1"), "clients/dev1/out"));
        assert!(!acl.can_publish(who("+"), "clients/dev1/out"));
        assert!(!acl.can_publish(who("#"), "clients/x/out"));
        assert!(!acl.can_publish(who("a/b"), "clients/a/b/out"));
    }
}
