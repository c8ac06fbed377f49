//! The log files themselves: the record codec, reopening, torn tails,
//! corrupt records, segment deletion and the size cap.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_engine::core::journal::{Entry, InflightRef, Target};
use ringmq_engine::core::message::Message;
use ringmq_engine::core::session::Subscription;
use ringmq_engine::store::log::Log;
use ringmq_engine::store::record::{self, Clock};
use ringmq_protocol::properties::PublishProperties;
use ringmq_protocol::{
    MqttString, QoS, RetainHandling, SubscriptionId, SubscriptionOptions, TopicName, UserProperty,
};

mod support;

const SEGMENT_BYTES: usize = 64 << 10;

fn clock() -> Clock {
    Clock {
        now: Instant::now(),
        now_millis: 1_790_000_000_000,
    }
}

fn message(payload: &str, expires_in: Option<Duration>, now: Instant) -> Arc<Message> {
    let mut props = PublishProperties::default();
    props.user_properties.push(user_property());
    props.content_type = Some(mqtt("text/plain"));
    Arc::new(Message {
        id: 42,
        topic: TopicName::new("a/b".to_owned()).expect("topic"),
        payload: Bytes::from(payload.to_owned()),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: Some(Box::new(props)),
        origin: 7,
        expires_at: expires_in.map(|d| now + d),
        encoded: Default::default(),
    })
}

fn user_property() -> UserProperty {
    UserProperty {
        name: mqtt("k"),
        value: mqtt("v"),
    }
}

fn mqtt(s: &str) -> MqttString {
    MqttString::new(s.to_owned()).expect("string")
}

fn frame(e: &Entry, clock: Clock) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(e, clock, &mut BytesMut::new(), &mut out);
    out
}

fn ack(lsn: u64) -> Entry {
    Entry::Ack { uid: 1, lsn }
}

/// The bodies a fresh open of `dir` reads, with what it found.
fn reopen(dir: &Path) -> (Vec<Vec<u8>>, ringmq_engine::store::log::Opened, Log) {
    let mut bodies = Vec::new();
    let (log, opened) = Log::open(dir, SEGMENT_BYTES, |_, body| {
        bodies.push(body.to_vec());
        message_lsn(body)
    })
    .expect("open");
    (bodies, opened, log)
}

fn message_lsn(body: &[u8]) -> Option<u64> {
    match record::peek_message(body, &mut Vec::new()) {
        Some(Ok((lsn, _))) => Some(lsn),
        _ => None,
    }
}

fn acks_in(bodies: &[Vec<u8>]) -> Vec<u64> {
    bodies
        .iter()
        .map(|b| match record::decode(b, clock()) {
            Ok(Entry::Ack { lsn, .. }) => lsn,
            other => panic!("expected an ack, got {other:?}"),
        })
        .collect()
}

#[test]
fn every_entry_reads_back_as_written() {
    let c = clock();
    let sub = Subscription {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        },
        id: SubscriptionId::new(77),
    };
    let m = message("payload", Some(Duration::from_secs(30)), c.now);
    let entries = [
        Entry::Session {
            uid: 3,
            client_id: mqtt("GID_x@@@dev"),
            username: Some(mqtt("user")),
            expiry_secs: u32::MAX,
        },
        Entry::Detached {
            uid: 3,
            at_millis: 123,
            inflight: vec![InflightRef {
                lsn: 5,
                packet_id: 65535,
                released: true,
            }],
        },
        Entry::Qos2In {
            uid: 3,
            packet_id: 17,
            received: true,
        },
        Entry::SessionEnd { uid: 3 },
        Entry::Subscribe {
            uid: 3,
            filter: "$share/g/a/+".into(),
            sub,
        },
        Entry::Unsubscribe {
            uid: 3,
            filter: "a/#".into(),
        },
        Entry::Retain(Arc::clone(&m)),
        Entry::Message {
            lsn: 9,
            message: Arc::clone(&m),
            targets: vec![Target {
                uid: 3,
                qos: QoS::AtLeastOnce,
                retain: true,
            }],
        },
        ack(9),
    ];
    for e in &entries {
        let bytes = frame(e, c);
        let body = &bytes[record::FRAME_HEAD_BYTES..];
        let back = record::decode(body, c).expect("decodes");
        // Messages compare by content; the rest by their debug form.
        match (e, &back) {
            (Entry::Message { message: a, .. }, Entry::Message { message: b, .. })
            | (Entry::Retain(a), Entry::Retain(b)) => {
                assert_eq!(
                    (a.id, a.origin, a.qos, a.retain),
                    (b.id, b.origin, b.qos, b.retain)
                );
                assert_eq!((&a.topic, &a.payload), (&b.topic, &b.payload));
                let props = b.properties.as_ref().expect("properties kept");
                assert_eq!(props.user_properties, vec![user_property()]);
                assert_eq!(props.content_type, Some(mqtt("text/plain")));
                let left = b.remaining_secs(c.now).expect("expiry kept");
                assert!((29..=30).contains(&left), "expiry {left} s");
            }
            _ => assert_eq!(format!("{e:?}"), format!("{back:?}")),
        }
    }
}

#[test]
fn a_reopened_log_reads_every_frame_and_appends_after_them() {
    let dir = support::temp_dir("store-reopen");
    let (_, _, mut log) = reopen(&dir);
    for lsn in 1..=3000 {
        log.append(&frame(&ack(lsn), clock())).expect("append");
    }
    drop(log);
    let (bodies, opened, mut log) = reopen(&dir);
    assert_eq!(acks_in(&bodies), (1..=3000).collect::<Vec<_>>());
    assert!(opened.segments > 1, "{opened:?}");
    assert_eq!((opened.torn, opened.corrupt), (0, 0));
    log.append(&frame(&ack(3001), clock())).expect("append");
    drop(log);
    let (bodies, _, _) = reopen(&dir);
    assert_eq!(bodies.len(), 3001);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The last segment file of `dir`.
fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

/// Writes acks 1 to 10 in a fresh log in `dir`; returns a frame's size.
fn ten_acks(dir: &Path) -> usize {
    let (_, _, mut log) = reopen(dir);
    for lsn in 1..=10 {
        log.append(&frame(&ack(lsn), clock())).expect("append");
    }
    frame(&ack(1), clock()).len()
}

#[test]
fn a_torn_tail_is_cut_at_the_last_intact_frame() {
    let dir = support::temp_dir("store-torn");
    let one = ten_acks(&dir);
    // The tenth frame was half written when the machine stopped.
    let path = last_segment(&dir);
    let mut bytes = std::fs::read(&path).expect("read");
    for b in &mut bytes[9 * one + 10..10 * one] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).expect("write");

    let (bodies, opened, mut log) = reopen(&dir);
    assert_eq!(acks_in(&bodies), (1..=9).collect::<Vec<_>>());
    assert_eq!((opened.torn, opened.corrupt), (1, 0));
    log.append(&frame(&ack(11), clock())).expect("append");
    drop(log);
    let (bodies, opened, _) = reopen(&dir);
    assert_eq!(acks_in(&bodies).last(), Some(&11));
    assert_eq!(bodies.len(), 10);
    assert_eq!(opened.torn, 0, "the torn bytes were zeroed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_frame_in_the_middle_is_skipped_and_counted() {
    let dir = support::temp_dir("store-corrupt");
    let one = ten_acks(&dir);
    let path = last_segment(&dir);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[3 * one + record::FRAME_HEAD_BYTES + 2] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write");

    let (bodies, opened, _) = reopen(&dir);
    let want: Vec<u64> = (1..=10).filter(|&l| l != 4).collect();
    assert_eq!(acks_in(&bodies), want);
    assert_eq!((opened.corrupt, opened.torn), (1, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_segment_is_deleted_once_nothing_in_it_is_held() {
    let dir = support::temp_dir("store-reclaim");
    let (_, _, mut log) = reopen(&dir);
    let c = clock();
    let m = message(&"x".repeat(1000), None, c.now);
    let target = Target {
        uid: 1,
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    for lsn in 1..=200 {
        let e = Entry::Message {
            lsn,
            message: Arc::clone(&m),
            targets: vec![target],
        };
        log.append_message(&frame(&e, c), lsn, 1).expect("append");
    }
    let before = log.segments();
    assert!(before >= 3, "{before} segments");
    for lsn in 1..=150 {
        log.release(lsn);
    }
    let deleted = log.reclaim();
    assert!(deleted >= 1);
    assert_eq!(log.segments(), before - deleted);
    // What is left still holds message 151 onwards.
    drop(log);
    let (bodies, _, _) = reopen(&dir);
    let first = record::decode(&bodies[0], c).expect("decodes");
    assert!(matches!(first, Entry::Message { lsn, .. } if lsn <= 151));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn past_its_byte_cap_the_log_refuses_a_new_segment_as_a_full_disk() {
    let dir = support::temp_dir("store-cap");
    let (_, _, mut log) = reopen(&dir);
    log.set_bytes_max(2 * SEGMENT_BYTES as u64);
    let big = frame(
        &Entry::Retain(message(&"x".repeat(20_000), None, clock().now)),
        clock(),
    );
    let mut appended = 0;
    let err = loop {
        match log.append(&big) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 100, "the cap never applied");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(log.segments(), 2);
    assert!(log.bytes() <= 2 * SEGMENT_BYTES as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rotation_while_the_spare_is_being_made_skips_its_number() {
    let dir = support::temp_dir("store-spare");
    let (_, _, mut log) = reopen(&dir);
    // The spare (segment 2) is being created off the event loop...
    let (spare_dir, index, bytes) = log.spare_plan();
    assert_eq!(index, 2);
    let spare =
        ringmq_engine::store::segment::Segment::create(&spare_dir, index, bytes).expect("spare");
    // ...when the writer fills segment 1.
    let big = frame(
        &Entry::Retain(message(&"x".repeat(20_000), None, clock().now)),
        clock(),
    );
    while log.segments() < 2 {
        log.append(&big).expect("append");
    }
    log.set_spare(spare);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["0000000000000001.log", "0000000000000003.log"]);
    drop(log);
    let (bodies, opened, _) = reopen(&dir);
    assert_eq!((opened.segments, opened.torn), (2, 0));
    assert!(bodies.len() >= 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn messages_are_read_back_by_lsn_from_every_segment_and_after_a_reopen() {
    let dir = support::temp_dir("store-read");
    let (_, _, mut log) = reopen(&dir);
    let c = clock();
    let target = Target {
        uid: 7,
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    let topic = |lsn: u64| format!("read/{lsn}");
    for lsn in 1..=300u64 {
        let m = message(&format!("{lsn:0>900}"), None, c.now);
        let mut m = (*m).clone();
        m.topic = ringmq_protocol::TopicName::new(topic(lsn)).expect("topic");
        m.id = lsn << 16;
        let e = Entry::Message {
            lsn,
            message: Arc::new(m),
            targets: vec![target],
        };
        log.append_message(&frame(&e, c), lsn, 1).expect("append");
        // An acknowledgement between messages takes a place in the segment.
        log.append(&frame(&ack(lsn), c)).expect("append");
    }
    assert!(log.segments() >= 3, "{} segments", log.segments());
    let check = |log: &mut Log, lsn: u64| {
        let body = log
            .read(lsn)
            .unwrap_or_else(|| panic!("lsn {lsn} not found"));
        assert_eq!(record::message_id(body), Ok(lsn << 16));
        let m = record::decode_message(body, c).expect("decodes");
        assert_eq!(m.topic.as_str(), topic(lsn));
        assert_eq!(m.payload.len(), 900);
        let mut targets = Vec::new();
        assert_eq!(
            record::peek_message(body, &mut targets).map(|r| r.map(|(l, _)| l)),
            Some(Ok(lsn))
        );
        assert_eq!(targets, vec![target]);
    };
    for lsn in [1, 2, 150, 299, 300] {
        check(&mut log, lsn);
    }
    assert!(log.read(0).is_none() && log.read(301).is_none());
    drop(log);
    let (_, _, mut log) = reopen(&dir);
    for lsn in (1..=300).step_by(7) {
        check(&mut log, lsn);
    }
    log.release_read();
    // The oldest segments go once nothing in them is held; their
    // messages cannot be read any more, the rest still can.
    for lsn in 1..=300 {
        log.hold(lsn);
    }
    for lsn in 1..=200 {
        log.release(lsn);
    }
    assert!(log.reclaim() >= 1);
    assert!(log.read(1).is_none());
    check(&mut log, 250);
    let _ = std::fs::remove_dir_all(&dir);
}
