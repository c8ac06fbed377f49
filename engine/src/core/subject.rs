//! MQTT topics and filters as NATS subjects, for the cluster: one token per
//! topic level, after a prefix. A level's bytes `[A-Za-z0-9_-]` are kept;
//! every other byte (`.`, spaces, `*`, `>`, `=`, UTF-8 beyond ASCII…)
//! becomes `=` and two uppercase hex digits; an empty level is a lone `=`.
//! So the mapping is one to one, every token is non-empty printable ASCII
//! without NATS's separators or wildcards, and the product's names
//! (`GID_x`, parent topics) read the same on both sides. A filter's `+` is
//! `*`, and a trailing `#` is `>` plus the parent's own subject, since
//! `a/#` also matches `a` [MQTT-4.7.1-2].

/// The NATS subject of `topic` under `prefix`; `None` for the broker's own
/// `$` topics [MQTT-4.7.2-1], which stay on their node, and for a subject
/// longer than `max` bytes.
pub fn topic_subject(prefix: &str, topic: &str, max: usize) -> Option<String> {
    if topic.starts_with('$') {
        return None;
    }
    let mut subject = String::with_capacity(prefix.len() + topic.len() + 8);
    subject.push_str(prefix);
    for level in topic.split('/') {
        subject.push('.');
        push_level(&mut subject, level);
    }
    (subject.len() <= max).then_some(subject)
}

/// The NATS subjects that receive what `filter` matches (one, or two for a
/// trailing `#`); none for a shared subscription's `$share/…` or a filter
/// on `$` topics, and none if longer than `max` bytes.
pub fn filter_subjects(prefix: &str, filter: &str, max: usize) -> Vec<String> {
    if filter.starts_with('$') {
        return Vec::new();
    }
    let mut subject = String::with_capacity(prefix.len() + filter.len() + 8);
    subject.push_str(prefix);
    let mut parent = None;
    for level in filter.split('/') {
        match level {
            "#" => {
                parent = Some(subject.clone());
                subject.push_str(".>");
            }
            "+" => subject.push_str(".*"),
            level => {
                subject.push('.');
                push_level(&mut subject, level);
            }
        }
    }
    let mut out = vec![subject];
    // A bare `#` is the prefix's whole subject space: no parent to add.
    out.extend(parent.filter(|p| p != prefix));
    out.retain(|s| s.len() <= max);
    out
}

/// The topic of `subject` (made by [`topic_subject`] under `prefix`), or
/// `None` if it is not one.
pub fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut bytes = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        decode_level(token, &mut bytes)?;
    }
    String::from_utf8(bytes).ok()
}

/// `<prefix>.<name>`, the whole of `name` (a client id) one token, `/`
/// included.
pub fn name_subject(prefix: &str, name: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + name.len() + 4);
    subject.push_str(prefix);
    subject.push('.');
    push_level(&mut subject, name);
    subject
}

/// The NATS queue group of MQTT shared group `group` on `filter`: one per
/// (ShareName, filter), as MQTT's groups are [MQTT §4.8.2] (NATS groups by
/// queue name across subjects). A ShareName has no `/`, so the pair reads
/// back unambiguously.
pub fn queue_name(group: &str, filter: &str) -> String {
    name_subject("g", &format!("{group}/{filter}"))
}

/// The name of a subject made by [`name_subject`].
pub fn subject_name(prefix: &str, subject: &str) -> Option<String> {
    let token = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    if token.contains('.') {
        return None;
    }
    let mut bytes = Vec::with_capacity(token.len());
    decode_level(token, &mut bytes)?;
    String::from_utf8(bytes).ok()
}

fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('=');
        return;
    }
    for b in level.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn decode_level(token: &str, out: &mut Vec<u8>) -> Option<()> {
    if token == "=" {
        return Some(());
    }
    let t = token.as_bytes();
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'=' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn topics_map_level_by_level_and_back() {
        let cases = [
            ("devices/d1/temp", "m.devices.d1.temp"),
            ("GID_x@@@dev-1", "m.GID_x=40=40=40dev-1"),
            ("a//b", "m.a.=.b"),
            ("/a", "m.=.a"),
            ("a/", "m.a.="),
            ("/", "m.=.="),
            ("a.b c/d", "m.a=2Eb=20c.d"),
            ("温", "m.=E6=B8=A9"),
            ("x=1/*/>", "m.x=3D1.=2A.=3E"),
        ];
        for (topic, subject) in cases {
            assert_eq!(topic_subject("m", topic, MAX).as_deref(), Some(subject));
            assert_eq!(subject_topic("m", subject).as_deref(), Some(topic));
        }
        assert_eq!(topic_subject("m", "$SYS/broker/uptime", MAX), None);
        assert_eq!(topic_subject("m", "a/b", 4), None);
        assert_eq!(subject_topic("m", "other.a"), None);
        assert_eq!(subject_topic("m", "m.a=4"), None);
    }

    #[test]
    fn a_client_id_is_one_token_and_back() {
        for name in ["GID_x@@@dev-1", "a/b.c", "", "$weird id"] {
            let subject = name_subject("c", name);
            assert_eq!(subject.matches('.').count(), 1, "{subject}");
            assert_eq!(subject_name("c", &subject).as_deref(), Some(name));
        }
    }

    #[test]
    fn filters_map_wildcards_and_a_trailing_hash_takes_its_parent_too() {
        assert_eq!(filter_subjects("m", "a/+/c", MAX), vec!["m.a.*.c"]);
        assert_eq!(filter_subjects("m", "a/#", MAX), vec!["m.a.>", "m.a"]);
        assert_eq!(filter_subjects("m", "#", MAX), vec!["m.>"]);
        assert_eq!(filter_subjects("m", "+", MAX), vec!["m.*"]);
        assert_eq!(
            filter_subjects("m", "a b/#", MAX),
            vec!["m.a=20b.>", "m.a=20b"]
        );
        assert!(filter_subjects("m", "$SYS/#", MAX).is_empty());
        assert!(filter_subjects("m", "$share/g/a", MAX).is_empty());
    }

    #[test]
    fn a_filter_subject_matches_the_subjects_of_the_topics_the_filter_matches() {
        let filters = ["a/+", "a/#", "+/+", "#", "a/+/c", "+"];
        let topics = ["a", "a/", "a/b", "a/b/c", "b/c", "/", "x"];
        for filter in filters {
            let subjects = filter_subjects("m", filter, MAX);
            for topic in topics {
                let subject = topic_subject("m", topic, MAX).unwrap_or_default();
                let nats = subjects.iter().any(|s| nats_matches(s, &subject));
                let mqtt = ringmq_protocol::topic::matches(filter, topic);
                assert_eq!(nats, mqtt, "{filter} vs {topic}");
            }
        }
    }

    /// NATS's own matching: `*` one token, `>` one or more.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let (f, s): (Vec<&str>, Vec<&str>) =
            (filter.split('.').collect(), subject.split('.').collect());
        for (i, token) in f.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }
}
