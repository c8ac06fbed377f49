//! The product's naming rules: Group IDs, client ids, parent topics, topic
//! names and filters. Pure checks on strings; whether a Group ID or parent
//! topic exists is the registry's question, asked by the caller.

/// The level of a topic that names a P2P target: `<parent>/p2p/<clientId>`.
pub const P2P_LEVEL: &str = "p2p";

/// The separator of a client id's Group ID and device id.
pub const GROUP_SEPARATOR: &str = "@@@";

/// The suffix of the topic a Group ID's online/offline events go to:
/// `<GroupID>_MQTT/<eventType>`.
pub const NOTICE_SUFFIX: &str = "_MQTT";

/// Why a name breaks the product's rules; the text goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Too short or too long.
    #[error("{what} must be {min}-{max} characters, not {len}")]
    Length {
        /// What was checked.
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// A character outside `[0-9A-Za-z_-]` (or the extra ones allowed).
    #[error("{0} may hold only [0-9A-Za-z_-]")]
    Charset(&'static str),
    /// A Group ID without the `GID_`/`GID-` prefix.
    #[error("a Group ID starts with GID_ or GID-")]
    GroupPrefix,
    /// A client id that is not `<GroupID>@@@<DeviceID>`.
    #[error("a client id is <GroupID>@@@<DeviceID>")]
    ClientIdForm,
    /// A client id with an invisible character.
    #[error("a client id may not hold invisible characters")]
    Invisible,
    /// A topic whose first level is a wildcard or empty.
    #[error("a topic or filter starts with a parent topic")]
    NoParent,
    /// A P2P topic that is not `<parent>/p2p/<clientId>`.
    #[error("a P2P topic is <parent>/p2p/<clientId>")]
    P2pForm,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn length(what: &'static str, s: &str, min: usize, max: usize) -> Result<(), NameError> {
    let len = s.chars().count();
    if len < min || len > max {
        return Err(NameError::Length {
            what,
            len,
            min,
            max,
        });
    }
    Ok(())
}

/// A Group ID: 7-64 characters of `[0-9A-Za-z_-]`, starting `GID_`/`GID-`.
pub fn check_group_id(id: &str) -> Result<(), NameError> {
    length("a Group ID", id, 7, 64)?;
    if !id.chars().all(is_name_char) {
        return Err(NameError::Charset("a Group ID"));
    }
    if !(id.starts_with("GID_") || id.starts_with("GID-")) {
        return Err(NameError::GroupPrefix);
    }
    Ok(())
}

/// A parent topic: 3-64 characters of `[0-9A-Za-z_-]`.
pub fn check_parent_topic(name: &str) -> Result<(), NameError> {
    if !name.bytes().all(is_name_byte) {
        return Err(NameError::Charset("a parent topic"));
    }
    length("a parent topic", name, 3, 64)
}

/// Splits a client id into its Group ID and device id, checking the form
/// and the length (`chars_max`); the Group ID's own rules are checked too.
pub fn split_client_id(id: &str, chars_max: usize) -> Result<(&str, &str), NameError> {
    length("a client id", id, 1, chars_max)?;
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(NameError::Invisible);
    }
    let (group, device) = id
        .split_once(GROUP_SEPARATOR)
        .ok_or(NameError::ClientIdForm)?;
    if device.is_empty() || device.contains(GROUP_SEPARATOR) {
        return Err(NameError::ClientIdForm);
    }
    check_group_id(group)?;
    Ok((group, device))
}

/// What a topic name is, once its form is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// An ordinary topic under `parent`.
    Plain {
        /// Its first level.
        parent: &'a str,
    },
    /// `<parent>/p2p/<target>`: for one client.
    P2p {
        /// Its first level.
        parent: &'a str,
        /// The client id it is for.
        target: &'a str,
    },
}

impl<'a> Topic<'a> {
    /// The parent topic.
    pub fn parent(&self) -> &'a str {
        match self {
            Topic::Plain { parent } | Topic::P2p { parent, .. } => parent,
        }
    }
}

/// Checks a topic name of a PUBLISH: a parent topic, then levels of
/// `[0-9A-Za-z_-]`, at most `chars_max` characters in all. A P2P topic's
/// last level is a client id (at most `client_id_chars_max`), whose length
/// does not count against `chars_max`.
pub fn check_topic(
    topic: &str,
    chars_max: usize,
    client_id_chars_max: usize,
) -> Result<Topic<'_>, NameError> {
    let (parent, rest) = topic.split_once('/').unwrap_or((topic, ""));
    check_parent_topic(parent).map_err(|_| NameError::NoParent)?;
    if let Some(target) = rest
        .strip_prefix(P2P_LEVEL)
        .and_then(|r| r.strip_prefix('/'))
    {
        if target.contains('/') {
            return Err(NameError::P2pForm);
        }
        split_client_id(target, client_id_chars_max)?;
        return Ok(Topic::P2p { parent, target });
    }
    // ASCII only, so bytes are characters.
    if !rest.bytes().all(|b| b == b'/' || is_name_byte(b)) {
        return Err(NameError::Charset("a topic level"));
    }
    if topic.len() > chars_max {
        let (len, max) = (topic.len(), chars_max);
        return Err(NameError::Length {
            what: "a topic",
            len,
            min: 3,
            max,
        });
    }
    Ok(Topic::Plain { parent })
}

/// What a subscription filter is, once its form is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter<'a> {
    /// An ordinary filter under `parent`.
    Plain {
        /// Its first level.
        parent: &'a str,
        /// Whether it holds `+` or `#`.
        wildcard: bool,
    },
    /// `<parent>/p2p/…`: P2P messages arrive without a subscription; old
    /// clients subscribe anyway.
    P2p {
        /// Its first level.
        parent: &'a str,
    },
    /// `<GroupID>_MQTT/…`: the Group ID's online/offline events.
    Notices {
        /// The Group ID.
        group: &'a str,
    },
}

/// Checks a subscription filter (without `$share/<group>/`): a parent topic
/// or `<GroupID>_MQTT` first, then levels of `[0-9A-Za-z_-]` or a whole
/// `+`/`#` (the protocol decoder has placed the wildcards already), at most
/// `chars_max` characters.
pub fn check_filter(filter: &str, chars_max: usize) -> Result<Filter<'_>, NameError> {
    let mut levels = filter.split('/');
    let first = levels.next().unwrap_or_default();
    let rest: Vec<&str> = levels.collect();
    let notices = first
        .strip_suffix(NOTICE_SUFFIX)
        .filter(|group| check_group_id(group).is_ok());
    if notices.is_none() {
        check_parent_topic(first).map_err(|_| NameError::NoParent)?;
    }
    if notices.is_none() && rest.first() == Some(&P2P_LEVEL) {
        return Ok(Filter::P2p { parent: first });
    }
    length("a topic filter", filter, 3, chars_max)?;
    let level_ok = |l: &&str| *l == "+" || *l == "#" || l.chars().all(is_name_char);
    if !rest.iter().all(level_ok) {
        return Err(NameError::Charset("a topic filter level"));
    }
    if let Some(group) = notices {
        return Ok(Filter::Notices { group });
    }
    let wildcard = rest.iter().any(|l| *l == "+" || *l == "#");
    Ok(Filter::Plain {
        parent: first,
        wildcard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_follow_the_product_rules() {
        assert!(check_group_id("GID_sensor").is_ok());
        assert!(check_group_id("GID-a_b-9").is_ok());
        assert_eq!(
            check_group_id("GID_x"),
            Err(NameError::Length {
                what: "a Group ID",
                len: 5,
                min: 7,
                max: 64
            })
        );
        assert_eq!(check_group_id("gid_sensor"), Err(NameError::GroupPrefix));
        assert_eq!(
            check_group_id("GID_sen.sor"),
            Err(NameError::Charset("a Group ID"))
        );
        assert!(check_group_id(&format!("GID_{}", "a".repeat(61))).is_err());
    }

    #[test]
    fn client_ids_are_group_and_device() {
        assert_eq!(
            split_client_id("GID_sensor@@@dev1", 64),
            Ok(("GID_sensor", "dev1"))
        );
        assert_eq!(
            split_client_id("GID_sensor@dev1", 64),
            Err(NameError::ClientIdForm)
        );
        assert_eq!(
            split_client_id("GID_sensor@@@", 64),
            Err(NameError::ClientIdForm)
        );
        assert_eq!(
            split_client_id("GID_sensor@@@a b", 64),
            Err(NameError::Invisible)
        );
        assert_eq!(
            split_client_id("GID_x@@@dev", 64),
            Err(NameError::Length {
                what: "a Group ID",
                len: 5,
                min: 7,
                max: 64
            })
        );
        let long = format!("GID_sensor@@@{}", "d".repeat(52));
        assert!(matches!(
            split_client_id(&long, 64),
            Err(NameError::Length { len: 65, .. })
        ));
    }

    #[test]
    fn topics_start_with_a_parent_and_use_the_charset() {
        assert_eq!(
            check_topic("devices/a/b", 64, 64),
            Ok(Topic::Plain { parent: "devices" })
        );
        assert_eq!(
            check_topic("devices", 64, 64),
            Ok(Topic::Plain { parent: "devices" })
        );
        assert_eq!(
            check_topic("devices/a.b", 64, 64),
            Err(NameError::Charset("a topic level"))
        );
        assert_eq!(check_topic("de", 64, 64), Err(NameError::NoParent));
        assert_eq!(check_topic("$SYS/x", 64, 64), Err(NameError::NoParent));
        let long = format!("devices/{}", "x".repeat(57));
        assert!(matches!(
            check_topic(&long, 64, 64),
            Err(NameError::Length { len: 65, .. })
        ));
    }

    #[test]
    fn p2p_topics_name_a_client() {
        assert_eq!(
            check_topic("devices/p2p/GID_app@@@phone-1", 64, 64),
            Ok(Topic::P2p {
                parent: "devices",
                target: "GID_app@@@phone-1"
            })
        );
        assert_eq!(
            check_topic("devices/p2p/GID_app@@@a/b", 64, 64),
            Err(NameError::P2pForm)
        );
        assert_eq!(
            check_topic("devices/p2p/nobody", 64, 64),
            Err(NameError::ClientIdForm)
        );
    }

    #[test]
    fn filters_start_with_a_parent_or_a_notice_topic() {
        assert_eq!(
            check_filter("devices/+/t", 64),
            Ok(Filter::Plain {
                parent: "devices",
                wildcard: true
            })
        );
        assert_eq!(
            check_filter("devices/a", 64),
            Ok(Filter::Plain {
                parent: "devices",
                wildcard: false
            })
        );
        assert_eq!(check_filter("#", 64), Err(NameError::NoParent));
        assert_eq!(check_filter("+/a", 64), Err(NameError::NoParent));
        assert_eq!(
            check_filter("GID_sensor_MQTT/+", 64),
            Ok(Filter::Notices {
                group: "GID_sensor"
            })
        );
        assert_eq!(
            check_filter("devices/p2p/", 64),
            Ok(Filter::P2p { parent: "devices" })
        );
        assert_eq!(
            check_filter("devices/p2p/#", 64),
            Ok(Filter::P2p { parent: "devices" })
        );
        assert_eq!(
            check_filter("devices/a b", 64),
            Err(NameError::Charset("a topic filter level"))
        );
    }
}
