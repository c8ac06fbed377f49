//! Topic names, topic filters and how one matches the other (MQTT §4.7), and
//! shared-subscription filters (MQTT 5.0 §4.8.2).

use crate::error::DecodeError;

/// Prefix of a shared-subscription filter.
pub const SHARE_PREFIX: &str = "$share/";

/// A parsed `$share/<group>/<filter>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The ShareName: the members of one group share each message.
    pub group: &'a str,
    /// The filter the group subscribes to.
    pub filter: &'a str,
}

/// Checks a topic filter, and a `$share/` filter's share name and filter.
pub(crate) fn validate_filter(filter: &str) -> Result<(), DecodeError> {
    let plain = match filter.strip_prefix(SHARE_PREFIX) {
        Some(_) => {
            parse_shared(filter)
                .ok_or(DecodeError::InvalidSharedSubscription)?
                .filter
        }
        None => filter,
    };
    validate_plain_filter(plain)
}

/// One pass over the bytes: a wildcard must fill its level, and `#` must be
/// the last level.
fn validate_plain_filter(filter: &str) -> Result<(), DecodeError> {
    let f = filter.as_bytes();
    if f.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    let last = f.len() - 1;
    for (i, &b) in f.iter().enumerate() {
        if b != b'+' && b != b'#' {
            continue;
        }
        let starts_level = i == 0 || f[i - 1] == b'/';
        let ends_level = i == last || f[i + 1] == b'/';
        match b {
            b'#' if !starts_level || i != last => {
                return Err(DecodeError::MisplacedMultiLevelWildcard)
            }
            b'+' if !starts_level || !ends_level => {
                return Err(DecodeError::MisplacedSingleLevelWildcard)
            }
            _ => {}
        }
    }
    Ok(())
}

/// Splits `$share/<group>/<filter>`; `None` if `filter` is not a valid shared
/// filter (empty group, group with `+`/`#`, or empty filter) [MQTT-4.8.2-1]
/// [MQTT-4.8.2-2]. The filter part is not validated here.
pub fn parse_shared(filter: &str) -> Option<SharedFilter<'_>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let (group, filter) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
        return None;
    }
    Some(SharedFilter { group, filter })
}

/// Whether topic `name` matches a valid, non-shared topic `filter`.
///
/// A filter starting with a wildcard does not match a name starting with `$`
/// [MQTT-4.7.2-1]; `a/#` matches `a` itself (§4.7.1.2).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = name.as_bytes().split(|&b| b == b'/');
    let mut filters = filter.as_bytes().split(|&b| b == b'/');
    loop {
        match (filters.next(), names.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic that `filter` can match is matched by `rule` (both
/// valid, non-shared filters): `a/#` covers `a/+/b` and `a`; `a/+` does not
/// cover `a/#`.
pub fn covers(rule: &str, filter: &str) -> bool {
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_level_wildcard_matches_parent_level() {
        assert!(matches("sport/#", "sport"));
        assert!(!matches("sport/+", "sport"));
    }
}
