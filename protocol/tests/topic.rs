//! Table-driven topic matching and validation (MQTT §4.7, §4.8.2).

use ringmq_protocol::topic::{matches, parse_shared, SharedFilter};
use ringmq_protocol::{DecodeError, TopicFilter, TopicName};

/// (filter, name, matches?)
const MATCHING: &[(&str, &str, bool)] = &[
    // exact
    ("sport/tennis/player1", "sport/tennis/player1", true),
    ("sport/tennis/player1", "sport/tennis/player2", false),
    ("sport/tennis", "sport/tennis/player1", false),
    ("sport/tennis/player1", "sport/tennis", false),
    ("Sport", "sport", false),
    // '#' (§4.7.1.2)
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/#", "sport", true),
    ("#", "sport/tennis", true),
    ("#", "/", true),
    ("sport/tennis/#", "sport/tennisplayer1", false),
    // '+' (§4.7.1.3)
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player2", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+", "/finance", false),
    ("+/tennis/#", "sport/tennis/player1", true),
    ("+/tennis/#", "sport/tennis", true),
    ("+/+/+", "a/b", false),
    ("a/+/c", "a//c", true),
    // empty levels are levels
    ("a//b", "a//b", true),
    ("a/b", "a//b", false),
    ("/", "/", true),
    // '$' topics are not matched by a leading wildcard [MQTT-4.7.2-1]
    ("#", "$SYS/broker/clients", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", true),
    ("a/#", "a/$b", true),
    // unicode
    ("传感器/+/温度", "传感器/1/温度", true),
];

#[test]
fn filters_match_names_as_the_spec_examples_say() {
    for &(filter, name, expected) in MATCHING {
        assert_eq!(
            matches(filter, name),
            expected,
            "filter {filter:?} vs name {name:?}"
        );
        let f = TopicFilter::new(filter).expect("table filters are valid");
        assert_eq!(
            f.matches(name),
            expected,
            "TopicFilter {filter:?} vs {name:?}"
        );
    }
}

#[test]
fn shared_filters_match_with_the_filter_after_the_share_name() {
    let f = TopicFilter::new("$share/group1/sensors/+/temp").expect("valid");
    assert_eq!(
        f.shared(),
        Some(SharedFilter {
            group: "group1",
            filter: "sensors/+/temp"
        })
    );
    assert!(f.matches("sensors/1/temp"));
    assert!(!f.matches("$share/group1/sensors/1/temp"));
    assert_eq!(f.match_filter(), "sensors/+/temp");
    assert_eq!(TopicFilter::new("sensors/#").expect("valid").shared(), None);
}

/// (filter, expected error or None when valid)
const FILTERS: &[(&str, Option<DecodeError>)] = &[
    ("#", None),
    ("+", None),
    ("+/+/#", None),
    ("a/+/b/#", None),
    ("/", None),
    ("$SYS/#", None),
    ("$share/g/#", None),
    ("$share/g/a/+/b", None),
    ("$shared/x", None),
    ("$share", None),
    ("", Some(DecodeError::EmptyTopic)),
    ("a/#/b", Some(DecodeError::MisplacedMultiLevelWildcard)),
    ("a/b#", Some(DecodeError::MisplacedMultiLevelWildcard)),
    ("a#", Some(DecodeError::MisplacedMultiLevelWildcard)),
    ("##", Some(DecodeError::MisplacedMultiLevelWildcard)),
    ("a+/b", Some(DecodeError::MisplacedSingleLevelWildcard)),
    ("a/+b", Some(DecodeError::MisplacedSingleLevelWildcard)),
    ("++", Some(DecodeError::MisplacedSingleLevelWildcard)),
    ("$share//a", Some(DecodeError::InvalidSharedSubscription)),
    ("$share/g", Some(DecodeError::InvalidSharedSubscription)),
    ("$share/g/", Some(DecodeError::InvalidSharedSubscription)),
    ("$share/g+/a", Some(DecodeError::InvalidSharedSubscription)),
    ("$share/#/a", Some(DecodeError::InvalidSharedSubscription)),
    (
        "$share/g/a/#/b",
        Some(DecodeError::MisplacedMultiLevelWildcard),
    ),
    ("a\0b", Some(DecodeError::NullCharacter)),
];

#[test]
fn filters_are_validated_with_the_rule_they_break() {
    for (filter, expected) in FILTERS {
        assert_eq!(
            TopicFilter::new(*filter).err(),
            *expected,
            "filter {filter:?}"
        );
    }
}

/// (name, expected error or None when valid)
const NAMES: &[(&str, Option<DecodeError>)] = &[
    ("a", None),
    ("/", None),
    ("a//b", None),
    ("$SYS/x", None),
    (" ", None),
    ("", Some(DecodeError::EmptyTopic)),
    ("a/+", Some(DecodeError::WildcardInTopicName)),
    ("a/#", Some(DecodeError::WildcardInTopicName)),
    ("a+b", Some(DecodeError::WildcardInTopicName)),
    ("a\0", Some(DecodeError::NullCharacter)),
];

#[test]
fn names_reject_wildcards_and_empty_strings() {
    for (name, expected) in NAMES {
        assert_eq!(TopicName::new(*name).err(), *expected, "name {name:?}");
    }
}

#[test]
fn parse_shared_splits_group_and_filter() {
    assert_eq!(
        parse_shared("$share/g/a/b"),
        Some(SharedFilter {
            group: "g",
            filter: "a/b"
        })
    );
    assert_eq!(parse_shared("$share/g"), None);
    assert_eq!(parse_shared("share/g/a"), None);
}

#[test]
fn names_and_filters_longer_than_65535_bytes_are_refused() {
    let long = "a".repeat(65_536);
    assert_eq!(
        TopicName::new(long.clone()).err(),
        Some(DecodeError::StringTooLong(65_536))
    );
    assert_eq!(
        TopicFilter::new(long).err(),
        Some(DecodeError::StringTooLong(65_536))
    );
    assert!(TopicName::new("a".repeat(65_535)).is_ok());
}
