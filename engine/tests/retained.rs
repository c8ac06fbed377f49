//! The retained store's index answers every filter exactly as matching the
//! filter against each stored topic would (`topic::matches`), including
//! the `$` rule, `#` matching its parent level, and empty levels.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use ringmq_engine::core::message::Message;
use ringmq_engine::core::retained::Retained;
use ringmq_protocol::{topic, QoS, TopicName};

fn message(topic: &str, payload: &'static [u8], expires_at: Option<Instant>) -> Arc<Message> {
    Arc::new(Message {
        id: 0,
        topic: TopicName::new(topic.to_owned()).expect("topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: None,
        origin: 0,
        expires_at,
        encoded: Default::default(),
    })
}

fn matched(r: &Retained, filter: &str, now: Instant) -> BTreeSet<String> {
    let got = r.matching(filter, now);
    let topics: BTreeSet<String> = got.iter().map(|m| m.topic.as_str().to_owned()).collect();
    assert_eq!(topics.len(), got.len(), "{filter}: each topic once");
    topics
}

fn topic_levels() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "a-b", "a.b", "ab", "", "$s", "c d"]).prop_map(String::from)
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_levels(), 1..5)
        .prop_map(|v| v.join("/"))
        .prop_filter("a topic is not empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "a-b", "", "$s", "+", "+"]);
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(v, hash)| {
        let mut levels: Vec<&str> = v;
        if hash || levels.is_empty() {
            levels.push("#");
        }
        levels.join("/")
    })
}

proptest! {
    #[test]
    fn the_index_matches_like_the_spec(
        topics in prop::collection::vec(topic_name(), 0..40),
        filters in prop::collection::vec(filter(), 1..10),
    ) {
        let now = Instant::now();
        let mut r = Retained::default();
        for t in &topics {
            prop_assert!(r.store(message(t, b"x", None), usize::MAX));
        }
        let stored: BTreeSet<&String> = topics.iter().collect();
        for f in &filters {
            let want: BTreeSet<String> = stored
                .iter()
                .filter(|t| topic::matches(f, t))
                .map(|t| (*t).clone())
                .collect();
            prop_assert_eq!(matched(&r, f, now), want, "filter {}", f);
        }
    }
}

#[test]
fn store_replace_clear_cap_and_expiry() {
    let now = Instant::now();
    let mut r = Retained::default();
    assert!(r.store(message("a/b", b"1", None), 2));
    assert!(
        r.store(message("a/b", b"2", None), 2),
        "a replacement needs no room"
    );
    assert!(r.store(message("a", b"3", Some(now + Duration::from_secs(1))), 2));
    assert!(
        !r.store(message("c", b"4", None), 2),
        "a third topic is over the cap"
    );
    assert_eq!(r.len(), 2);
    let got = r.matching("a/#", now);
    let payloads: Vec<&[u8]> = got.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(
        payloads,
        [&b"3"[..], b"2"],
        "`a/#` matches `a` too, in topic order"
    );
    assert_eq!(
        r.matching("a/#", now + Duration::from_secs(2)).len(),
        1,
        "expired: not sent"
    );
    r.purge_expired(now + Duration::from_secs(2));
    assert_eq!(r.len(), 1);
    assert!(
        r.store(message("a/b", b"", None), 2),
        "an empty payload clears"
    );
    assert!(r.is_empty());
}

#[test]
fn wide_levels_are_stepped_and_sought_over_alike() {
    // Many keys under each level, so `+` both steps over small subtrees and
    // seeks past large ones.
    let now = Instant::now();
    let mut r = Retained::default();
    let mut stored = Vec::new();
    for top in ["a", "a-b", "$s", "b"] {
        for mid in 0..12 {
            for leaf in 0..(mid * 2) {
                stored.push(format!("{top}/{mid}/{leaf}"));
            }
            stored.push(format!("{top}/{mid}"));
        }
    }
    for t in &stored {
        r.store(message(t, b"x", None), usize::MAX);
    }
    for f in [
        "+/+/3", "+/7/#", "a/+", "+/+", "#", "+/#", "$s/+/+", "a-b/+/#", "+/11/21",
    ] {
        let want: BTreeSet<String> = stored
            .iter()
            .filter(|t| topic::matches(f, t))
            .cloned()
            .collect();
        assert_eq!(matched(&r, f, now), want, "filter {f}");
    }
}
