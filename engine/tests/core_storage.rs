//! What a broker journals for persistent sessions and retained messages,
//! and what a new broker restores from it, on a virtual clock: entries go
//! through the record codec (as the storage layer writes them) into a
//! replay, as after a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_engine::core::auth::Auth;
use ringmq_engine::core::message::Message;
use ringmq_engine::core::restore::{Replay, RestoreCounts};
use ringmq_engine::core::spill::LogReader;
use ringmq_engine::core::{Broker, Flow, Limits};
use ringmq_engine::store::record::{self, Clock};
use ringmq_engine::store::segment;
use ringmq_protocol::{Packet, PacketId, ProtocolVersion, PubAck, PubRel, QoS, ReasonCode};

mod support;

use support::client::*;

/// A Unix time for the virtual clock's start.
const T0_MILLIS: u64 = 1_790_000_000_000;

/// A broker that journals, its wall clock at `T0_MILLIS` + `after`.
fn logging_broker(t0: Instant, after: Duration, limits: Limits) -> Broker {
    let now = t0 + after;
    let mut b = Broker::new(0, 1, limits, Auth::default(), now);
    b.set_wall_clock(now, T0_MILLIS + after.as_millis() as u64);
    b.journal.enabled = true;
    b
}

/// The frames of everything `b` journaled so far (what the storage layer
/// appends), added to `log`.
fn persist(b: &mut Broker, log: &mut Vec<u8>, now: Instant) {
    let clock = Clock {
        now,
        now_millis: b.unix_millis(now),
    };
    let mut scratch = BytesMut::new();
    for e in std::mem::take(&mut b.journal.entries) {
        record::encode(&e, clock, &mut scratch, log);
    }
    b.journal.released.clear();
}

/// A new broker restored from `log`, `after` the start of the clock.
fn restart(log: &[u8], t0: Instant, after: Duration, limits: Limits) -> (Broker, RestoreCounts) {
    restart_losing(log, t0, after, limits, |_| false)
}

/// [`restart`], with the messages whose lsn is `lost` unreadable (a
/// damaged segment).
fn restart_losing(
    log: &[u8],
    t0: Instant,
    after: Duration,
    limits: Limits,
    lost: impl Fn(u64) -> bool,
) -> (Broker, RestoreCounts) {
    let mut b = logging_broker(t0, after, limits);
    let now = t0 + after;
    let clock = Clock {
        now,
        now_millis: b.unix_millis(now),
    };
    let mut replay = Replay::default();
    let mut at = HashMap::new();
    let mut targets = Vec::new();
    let end = segment::scan(log, |offset, body| {
        // Messages as the storage layer reads them: only what is needed
        // to hold them, read back from the log when delivered.
        targets.clear();
        match record::peek_message(body, &mut targets) {
            Some(Ok((lsn, weight))) => {
                replay.message(lsn, weight, &targets);
                if !lost(lsn) {
                    at.insert(lsn, offset);
                }
            }
            _ => replay.apply(record::decode(body, clock).expect("a logged record decodes")),
        }
    });
    assert!(!end.torn && end.corrupt == 0);
    b.set_log_reader(Box::new(Frames {
        bytes: log.to_vec(),
        at,
    }));
    let counts = b.restore(replay, now);
    (b, counts)
}

/// The log a restarted broker reads messages back from.
#[derive(Debug)]
struct Frames {
    bytes: Vec<u8>,
    at: HashMap<u64, usize>,
}

impl LogReader for Frames {
    fn read(&self, lsn: u64, now: Instant, now_millis: u64) -> Option<Arc<Message>> {
        let body = segment::frame_body(&self.bytes, *self.at.get(&lsn)?)?;
        record::decode_message(body, Clock { now, now_millis }).ok()
    }

    fn message_id(&self, lsn: u64) -> Option<u64> {
        let body = segment::frame_body(&self.bytes, *self.at.get(&lsn)?)?;
        record::message_id(body).ok()
    }
}

/// A persistent 3.1.1 session `sub` on `a/#` that has left, and a clean
/// publisher `pub`.
fn offline_subscriber_and_publisher(b: &mut Broker, t0: Instant) -> Client {
    let mut sub = join(b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(b, "a/#", QoS::AtLeastOnce, t0);
    b.disconnected(sub.id, t0);
    join(b, "pub", ProtocolVersion::V311, true, t0)
}

fn payloads(got: &[ringmq_protocol::Publish]) -> Vec<String> {
    got.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

fn publish_n(b: &mut Broker, from: &Client, topic: &str, n: u16, qos: QoS, now: Instant) {
    for i in 1..=n {
        from.send(b, publish(topic, &format!("m{i}"), qos, Some(i)), now);
    }
}

#[test]
fn a_persistent_session_comes_back_with_its_subscription_and_unacknowledged_messages_in_order() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 5, QoS::AtLeastOnce, t0);
    assert_eq!(publisher.recv(&mut b).len(), 5, "five PUBACKs");
    persist(&mut b, &mut log, t0);
    drop(b);

    let later = Duration::from_secs(5);
    let (mut b, counts) = restart(&log, t0, later, Limits::default());
    assert_eq!((counts.sessions, counts.messages), (1, 5));
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0 + later);
    let got = sub.publishes(&mut b);
    assert_eq!(payloads(&got), ["m1", "m2", "m3", "m4", "m5"]);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    // The subscription came back too: a live message arrives.
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0 + later);
    publisher.send(
        &mut b,
        publish("a/c", "live", QoS::AtLeastOnce, Some(9)),
        t0 + later,
    );
    assert_eq!(payloads(&sub.publishes(&mut b)), ["live"]);
}

#[test]
fn acknowledged_messages_are_not_restored_and_those_in_flight_come_back_with_dup() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publish_n(&mut b, &publisher, "a/b", 4, QoS::AtLeastOnce, t0);
    let got = sub.publishes(&mut b);
    assert_eq!(got.len(), 4);
    let ids: Vec<_> = got[2..].iter().map(|p| p.packet_id).collect();
    for p in &got[..2] {
        let id = p.packet_id.expect("QoS 1 has an id");
        sub.send(&mut b, Packet::PubAck(PubAck::new(id)), t0);
    }
    b.disconnected(sub.id, t0);
    persist(&mut b, &mut log, t0);

    let (mut b, counts) = restart(&log, t0, Duration::from_secs(1), Limits::default());
    assert_eq!(counts.messages, 2);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    let got = sub.publishes(&mut b);
    assert_eq!(payloads(&got), ["m3", "m4"]);
    assert!(
        got.iter().all(|p| p.dup),
        "sent before the restart: DUP set"
    );
    let again: Vec<_> = got.iter().map(|p| p.packet_id).collect();
    assert_eq!(again, ids, "with their packet ids [MQTT-4.4.0-1]");
}

#[test]
fn a_qos2_message_received_before_a_restart_is_not_delivered_again() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut publisher = connect(&mut b, v5_connect("pub", 3600), t0);
    publisher.send(
        &mut b,
        publish("q/2", "once", QoS::ExactlyOnce, Some(7)),
        t0,
    );
    assert!(matches!(
        publisher.recv(&mut b).as_slice(),
        [Packet::PubRec(_)]
    ));
    b.disconnected(publisher.id, t0);
    persist(&mut b, &mut log, t0);

    let (mut b, _) = restart(&log, t0, Duration::from_secs(1), Limits::default());
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V5, true, t0);
    watcher.subscribe(&mut b, "q/#", QoS::ExactlyOnce, t0);
    let mut c = v5_connect("pub", 3600);
    c.clean_start = false;
    let mut publisher = connect(&mut b, c, t0);
    // The client did not see the PUBREC: it sends the PUBLISH again.
    let mut again = publish("q/2", "once", QoS::ExactlyOnce, Some(7));
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    publisher.send(&mut b, again, t0);
    assert!(matches!(
        publisher.recv(&mut b).as_slice(),
        [Packet::PubRec(_)]
    ));
    assert!(watcher.publishes(&mut b).is_empty(), "not delivered twice");
    let rel = Packet::PubRel(PubRel::new(PacketId::new(7).expect("id")));
    publisher.send(&mut b, rel, t0);
    match publisher.recv(&mut b).as_slice() {
        [Packet::PubComp(c)] => assert_eq!(c.reason_code, ReasonCode::Success),
        other => panic!("expected PUBCOMP 0x00, got {other:?}"),
    }
}

#[test]
fn retained_messages_survive_and_a_cleared_topic_stays_cleared() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let p = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    for (topic, payload) in [("r/1", "one"), ("r/2", "two"), ("r/2", "")] {
        let mut packet = publish(topic, payload, QoS::AtMostOnce, None);
        if let Packet::Publish(p) = &mut packet {
            p.retain = true;
        }
        p.send(&mut b, packet, t0);
    }
    persist(&mut b, &mut log, t0);

    let (mut b, counts) = restart(&log, t0, Duration::from_secs(1), Limits::default());
    assert_eq!(counts.retained, 1);
    let mut s = join(&mut b, "s", ProtocolVersion::V5, true, t0);
    s.send(&mut b, subscribe_packet(1, "r/#"), t0);
    let got = s.publishes(&mut b);
    assert_eq!(payloads(&got), ["one"]);
    assert!(got[0].retain);
}

#[test]
fn a_session_ended_by_clean_start_is_not_restored() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    b.disconnected(sub.id, t0);
    let again = join(&mut b, "sub", ProtocolVersion::V311, true, t0);
    b.disconnected(again.id, t0);
    persist(&mut b, &mut log, t0);

    let (b, counts) = restart(&log, t0, Duration::from_secs(1), Limits::default());
    assert_eq!(counts.sessions, 0);
    assert_eq!(b.session_count(), 0);
}

#[test]
fn a_session_that_expired_while_the_broker_was_down_is_ended() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut short = connect(&mut b, v5_connect("short", 10), t0);
    short.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    let long = connect(&mut b, v5_connect("long", 3600), t0);
    b.disconnected(short.id, t0);
    b.disconnected(long.id, t0);
    persist(&mut b, &mut log, t0);

    let (mut b, counts) = restart(&log, t0, Duration::from_secs(20), Limits::default());
    assert_eq!((counts.sessions, counts.expired), (1, 1));
    let mut c = v5_connect("short", 10);
    c.clean_start = false;
    let _ = connect(&mut b, c, t0 + Duration::from_secs(20));
    assert_eq!(b.session_count(), 2, "long is back; short starts anew");
}

#[test]
fn offline_messages_max_drops_the_oldest_and_counts_them() {
    let t0 = Instant::now();
    let limits = Limits {
        offline_messages_max: 10,
        ..Limits::default()
    };
    let mut b = logging_broker(t0, Duration::ZERO, limits.clone());
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 15, QoS::AtLeastOnce, t0);
    b.tick(t0 + Duration::from_millis(250));
    assert_eq!(b.stats.dropped_offline_cap, 5);
    let mut log = Vec::new();
    persist(&mut b, &mut log, t0);

    let (mut b, counts) = restart(&log, t0, Duration::from_secs(1), limits);
    assert_eq!(counts.messages, 10, "the drops were logged");
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    let got = payloads(&sub.publishes(&mut b));
    let want: Vec<String> = (6..=15).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn messages_past_offline_retention_secs_are_dropped_and_counted() {
    let t0 = Instant::now();
    let limits = Limits {
        offline_retention_secs: 60,
        ..Limits::default()
    };
    let mut b = logging_broker(t0, Duration::ZERO, limits);
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/old", 3, QoS::AtLeastOnce, t0);
    let t1 = t0 + Duration::from_secs(50);
    publisher.send(
        &mut b,
        publish("a/new", "new", QoS::AtLeastOnce, Some(9)),
        t1,
    );
    b.tick(t0 + Duration::from_secs(59));
    assert_eq!(b.stats.dropped_offline_retention, 0);
    b.tick(t0 + Duration::from_secs(71));
    assert_eq!(b.stats.dropped_offline_retention, 3);
    let mut sub = join(
        &mut b,
        "sub",
        ProtocolVersion::V311,
        false,
        t0 + Duration::from_secs(71),
    );
    assert_eq!(payloads(&sub.publishes(&mut b)), ["new"]);
}

#[test]
fn a_full_persistent_queue_drops_its_oldest_message() {
    let t0 = Instant::now();
    let limits = Limits {
        offline_session_messages_max: 3,
        ..Limits::default()
    };
    let mut b = logging_broker(t0, Duration::ZERO, limits);
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 5, QoS::AtLeastOnce, t0);
    assert_eq!(b.stats.dropped_queue_full, 2);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    assert_eq!(payloads(&sub.publishes(&mut b)), ["m3", "m4", "m5"]);
}

#[test]
fn qos2_persistent_sessions_are_restored_at_qos2() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = connect(&mut b, v5_connect("sub", 3600), t0);
    sub.subscribe(&mut b, "a/#", QoS::ExactlyOnce, t0);
    b.disconnected(sub.id, t0);
    let mut publisher = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    publisher.send(&mut b, publish("a/b", "two", QoS::ExactlyOnce, Some(1)), t0);
    assert!(matches!(
        publisher.recv(&mut b).as_slice(),
        [Packet::PubRec(_)]
    ));
    persist(&mut b, &mut log, t0);

    let (mut b, _) = restart(&log, t0, Duration::from_secs(1), Limits::default());
    let mut c = v5_connect("sub", 3600);
    c.clean_start = false;
    let mut sub = connect(&mut b, c, t0);
    let got = sub.publishes(&mut b);
    assert_eq!(payloads(&got), ["two"]);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

#[test]
fn while_the_log_cannot_be_written_qos1_is_refused_with_0x97_or_a_disconnect() {
    let t0 = Instant::now();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    b.journal.unavailable = true;
    let mut v5 = join(&mut b, "v5", ProtocolVersion::V5, true, t0);
    v5.send(&mut b, publish("a/b", "x", QoS::AtLeastOnce, Some(1)), t0);
    match v5.recv(&mut b).as_slice() {
        [Packet::PubAck(a)] => assert_eq!(a.reason_code, ReasonCode::QuotaExceeded),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    v5.send(&mut b, publish("a/b", "qos0", QoS::AtMostOnce, None), t0);
    let mut v3 = join(&mut b, "v3", ProtocolVersion::V311, true, t0);
    v3.send(&mut b, publish("a/b", "y", QoS::AtLeastOnce, Some(1)), t0);
    assert!(
        v3.recv(&mut b).is_empty() && v3.closed,
        "3.1.1: disconnected"
    );
    assert_eq!(
        payloads(&sub.publishes(&mut b)),
        ["qos0"],
        "QoS 0 still flows"
    );
    assert_eq!(b.stats.refused_storage, 2);
    b.journal.unavailable = false;
    v5.send(&mut b, publish("a/b", "z", QoS::AtLeastOnce, Some(2)), t0);
    match v5.recv(&mut b).as_slice() {
        [Packet::PubAck(a)] => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected PUBACK 0x00, got {other:?}"),
    }
}

#[test]
fn held_acknowledgements_are_written_only_when_released() {
    let t0 = Instant::now();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    b.journal.sync_acks = true;
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    let mut publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publish_n(&mut b, &publisher, "a/b", 2, QoS::AtLeastOnce, t0);
    assert!(publisher.recv(&mut b).is_empty(), "held until synced");
    let acks = std::mem::take(&mut b.journal.held_acks);
    assert_eq!(acks.len(), 2);
    b.release_acks(acks);
    let got = publisher.recv(&mut b);
    assert!(
        matches!(got.as_slice(), [Packet::PubAck(a), Packet::PubAck(b)]
        if a.packet_id.get() == 1 && b.packet_id.get() == 2)
    );
}

#[test]
fn offline_messages_max_holds_for_the_instance_across_shards() {
    let t0 = Instant::now();
    let limits = Limits {
        offline_messages_max: 10,
        ..Limits::default()
    };
    let counts: std::sync::Arc<[std::sync::atomic::AtomicU64]> =
        (0..2).map(|_| Default::default()).collect();
    let mut shards: Vec<Broker> = (0..2)
        .map(|i| {
            let mut b = Broker::new(i, 2, limits.clone(), Auth::default(), t0);
            b.journal.enabled = true;
            b.offline_counts = Some(std::sync::Arc::clone(&counts));
            b
        })
        .collect();
    for (b, n) in shards.iter_mut().zip([9u16, 3]) {
        let mut sub = join(b, "sub", ProtocolVersion::V311, false, t0);
        sub.subscribe(b, "a/#", QoS::AtLeastOnce, t0);
        b.disconnected(sub.id, t0);
        let publisher = join(b, "pub", ProtocolVersion::V311, true, t0);
        publish_n(b, &publisher, "a/b", n, QoS::AtLeastOnce, t0);
    }
    // 12 held, 10 allowed: each shard gives up its share of the excess,
    // oldest first, once it has seen the other's count.
    for round in 1..=2 {
        for b in shards.iter_mut() {
            b.tick(t0 + Duration::from_millis(250 * round));
        }
    }
    let held: u64 = shards.iter().map(|b| b.journal.copies).sum();
    let dropped: u64 = shards.iter().map(|b| b.stats.dropped_offline_cap).sum();
    assert!((9..=10).contains(&held), "{held} held");
    assert_eq!(held + dropped, 12);
    assert!(shards[0].stats.dropped_offline_cap >= 1 && shards[1].stats.dropped_offline_cap >= 1);
}

/// Applies everything each of two shards sent the other.
fn exchange(shards: &mut [Broker], t0: Instant) {
    for from in 0..2 {
        let to = 1 - from;
        for r in std::mem::take(&mut shards[from].outbox[to]) {
            shards[to].apply_remote(from, r, t0);
        }
    }
}

#[test]
fn a_publish_waits_for_another_shard_only_when_a_persistent_session_there_logs_it() {
    let t0 = Instant::now();
    let mut shards: Vec<Broker> = (0..2)
        .map(|i| {
            let mut b = Broker::new(i, 2, Limits::default(), Auth::default(), t0);
            b.journal.enabled = true;
            b.journal.hold_acks = true;
            b
        })
        .collect();
    let mut clean = join(&mut shards[1], "clean", ProtocolVersion::V311, true, t0);
    let sub = subscribe_packet(1, "x/#");
    if let Flow::Barrier(p) = shards[1].handle(clean.id, sub, t0) {
        shards[1].finish_subscribe(p, t0);
    }
    let _ = clean.recv(&mut shards[1]);
    exchange(&mut shards, t0);
    let mut publisher = join(&mut shards[0], "pub", ProtocolVersion::V311, true, t0);
    publisher.send(
        &mut shards[0],
        publish("x/1", "a", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    assert!(
        matches!(
            publisher.recv(&mut shards[0]).as_slice(),
            [Packet::PubAck(_)]
        ),
        "only a clean session there: acknowledged at once"
    );

    let mut durable = join(&mut shards[1], "durable", ProtocolVersion::V311, false, t0);
    if let Flow::Barrier(p) = shards[1].handle(durable.id, subscribe_packet(1, "x/+"), t0) {
        shards[1].finish_subscribe(p, t0);
    }
    let _ = durable.recv(&mut shards[1]);
    exchange(&mut shards, t0);
    publisher.send(
        &mut shards[0],
        publish("x/2", "b", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    assert!(
        publisher.recv(&mut shards[0]).is_empty(),
        "held for shard 1's log"
    );
    assert_eq!(shards[0].journal.held_acks.len(), 1);
    let acks = std::mem::take(&mut shards[0].journal.held_acks);
    shards[0].release_acks(acks);
    let _ = publisher.recv(&mut shards[0]);

    // The persistent session ends: acknowledgements no longer wait.
    shards[1].disconnected(durable.id, t0);
    let _ = join(&mut shards[1], "durable", ProtocolVersion::V311, true, t0);
    exchange(&mut shards, t0);
    publisher.send(
        &mut shards[0],
        publish("x/3", "c", QoS::AtLeastOnce, Some(3)),
        t0,
    );
    assert!(matches!(
        publisher.recv(&mut shards[0]).as_slice(),
        [Packet::PubAck(_)]
    ));
}

#[test]
fn an_acknowledgement_never_overtakes_a_held_one_of_the_same_connection() {
    let t0 = Instant::now();
    let mut shards: Vec<Broker> = (0..2)
        .map(|i| {
            let mut b = Broker::new(i, 2, Limits::default(), Auth::default(), t0);
            b.journal.enabled = true;
            b.journal.hold_acks = true;
            b
        })
        .collect();
    let mut durable = join(&mut shards[1], "durable", ProtocolVersion::V311, false, t0);
    if let Flow::Barrier(p) = shards[1].handle(durable.id, subscribe_packet(1, "x/#"), t0) {
        shards[1].finish_subscribe(p, t0);
    }
    let _ = durable.recv(&mut shards[1]);
    exchange(&mut shards, t0);
    let mut publisher = join(&mut shards[0], "pub", ProtocolVersion::V311, true, t0);
    let other = join(&mut shards[0], "other", ProtocolVersion::V311, true, t0);
    // 1 goes to the persistent session on shard 1 (held); 2 has no
    // subscriber at all, yet must not be acknowledged before 1.
    publisher.send(
        &mut shards[0],
        publish("x/1", "a", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    publisher.send(
        &mut shards[0],
        publish("y/1", "b", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    other.send(
        &mut shards[0],
        publish("y/2", "c", QoS::AtLeastOnce, Some(7)),
        t0,
    );
    assert!(
        publisher.recv(&mut shards[0]).is_empty(),
        "both held [MQTT-4.6.0-2]"
    );
    let acks = shards[0].take_held_acks(publisher.id);
    assert_eq!(acks.len(), 2);
    assert!(
        shards[0].journal.held_acks.is_empty(),
        "other connections' are not held"
    );
    shards[0].release_acks(acks);
    let ids: Vec<u16> = publisher
        .recv(&mut shards[0])
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.packet_id.get()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2]);
}

/// Counts the PUBLISHes `sub` gets while acknowledging each, so the
/// window keeps moving; returns the payloads in order.
fn drain_acking(sub: &mut Client, b: &mut Broker, now: Instant) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let got = sub.publishes(b);
        if got.is_empty() {
            return all;
        }
        for p in &got {
            if let Some(id) = p.packet_id {
                sub.send(b, Packet::PubAck(PubAck::new(id)), now);
            }
        }
        all.extend(payloads(&got));
    }
}

#[test]
fn a_persistent_session_holds_more_than_the_online_queue_cap_while_offline() {
    let t0 = Instant::now();
    // The online cap is small; the offline backlog follows the instance's.
    let limits = Limits {
        session_queue_messages_max: 100,
        session_queue_bytes_max: 4 << 10,
        ..Limits::default()
    };
    let mut b = logging_broker(t0, Duration::ZERO, limits.clone());
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 3_000, QoS::AtLeastOnce, t0);
    b.tick(t0 + Duration::from_millis(250));
    assert_eq!(b.stats.dropped_queue_full, 0);
    assert_eq!(b.stats.dropped_offline_cap, 0);
    let mut log = Vec::new();
    persist(&mut b, &mut log, t0);

    // After a restart too, and with live messages arriving during the drain.
    let (mut b, counts) = restart(&log, t0, Duration::from_secs(1), limits);
    assert_eq!(counts.messages, 3_000);
    let now = t0 + Duration::from_secs(1);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, now);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, now);
    publisher.send(
        &mut b,
        publish("a/b", "live", QoS::AtLeastOnce, Some(1)),
        now,
    );
    let got = drain_acking(&mut sub, &mut b, now);
    assert_eq!(
        got.len(),
        3_001,
        "nothing dropped: {:?}",
        b.stats.dropped_queue_full
    );
    assert_eq!(got[..3], ["m1", "m2", "m3"]);
    assert_eq!(got.last().map(String::as_str), Some("live"));
}

/// 90 messages for an offline persistent session under `limits`, a tick of
/// the clock, then the session back: what it gets, and the drops counted.
fn kept_of_90(limits: Limits, t0: Instant) -> (Vec<String>, u64) {
    let mut b = logging_broker(t0, Duration::ZERO, limits);
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 90, QoS::AtLeastOnce, t0);
    b.tick(t0 + Duration::from_millis(250));
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    let got = drain_acking(&mut sub, &mut b, t0);
    (
        got,
        b.stats.dropped_offline_cap + b.stats.dropped_queue_full,
    )
}

fn newest(n: usize) -> Vec<String> {
    (91 - n..=90).map(|i| format!("m{i}")).collect()
}

#[test]
fn offline_session_messages_max_and_offline_bytes_max_drop_the_oldest() {
    let t0 = Instant::now();
    let per_session = Limits {
        offline_session_messages_max: 40,
        ..Limits::default()
    };
    assert_eq!(kept_of_90(per_session, t0), (newest(40), 50));
    // Room for no bytes at all: the clock drops everything.
    let no_bytes = Limits {
        offline_bytes_max: 0,
        ..Limits::default()
    };
    assert_eq!(kept_of_90(no_bytes, t0), (newest(0), 90));
    // A byte cap that holds some: what is kept is the newest, in order.
    let some_bytes = Limits {
        offline_bytes_max: 2_000,
        ..Limits::default()
    };
    let (got, dropped) = kept_of_90(some_bytes, t0);
    assert!((1..90).contains(&got.len()), "{} kept", got.len());
    assert_eq!(
        (got.clone(), dropped),
        (newest(got.len()), 90 - got.len() as u64)
    );
}

#[test]
fn an_online_subscriber_that_falls_behind_holds_its_backlog_on_disk_and_gets_it_in_order() {
    let t0 = Instant::now();
    // Little room in memory: past it, copies wait in the log only.
    let limits = Limits {
        session_queue_messages_max: 20,
        session_queue_bytes_max: 2 << 10,
        ..Limits::default()
    };
    let mut b = logging_broker(t0, Duration::ZERO, limits.clone());
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "a/#", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    // The subscriber reads but does not acknowledge: its window fills.
    publish_n(&mut b, &publisher, "a/b", 2_000, QoS::AtLeastOnce, t0);
    let first = sub.publishes(&mut b);
    assert_eq!(first.len(), usize::from(limits.inflight_count_max));
    assert_eq!(b.stats.dropped_queue_full, 0);
    for p in &first {
        let id = p.packet_id.expect("QoS 1");
        sub.send(&mut b, Packet::PubAck(PubAck::new(id)), t0);
    }
    let mut got = payloads(&first);
    got.extend(drain_acking(&mut sub, &mut b, t0));
    let want: Vec<String> = (1..=2_000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(b.stats.dropped_unreadable, 0);
}

#[test]
fn subscription_identifiers_and_retain_flags_come_back_with_copies_held_on_disk() {
    let t0 = Instant::now();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = connect(&mut b, v5_connect("sub5", 3_600), t0);
    let mut options = ringmq_protocol::SubscriptionOptions::qos(QoS::AtLeastOnce);
    options.retain_as_published = true;
    sub.subscribe_with(&mut b, "a/#", options, Some(7), t0);
    b.disconnected(sub.id, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    let mut retained = ringmq_protocol::Publish::new(
        ringmq_protocol::TopicName::new("a/r".to_owned()).expect("topic"),
        bytes::Bytes::from_static(b"kept"),
    );
    retained.qos = QoS::AtLeastOnce;
    retained.retain = true;
    retained.packet_id = Some(pid(1));
    publisher.send(&mut b, Packet::Publish(retained), t0);
    publisher.send(
        &mut b,
        publish("a/b", "plain", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    let mut sub = connect(&mut b, v5_connect("sub5", 3_600), t0);
    let got = sub.publishes(&mut b);
    assert_eq!(payloads(&got), ["kept", "plain"]);
    assert_eq!(
        got.iter().map(|p| p.retain).collect::<Vec<_>>(),
        [true, false]
    );
    for p in &got {
        let ids = &p
            .properties
            .as_ref()
            .expect("properties")
            .subscription_identifiers;
        assert_eq!(ids.iter().map(|i| i.get()).collect::<Vec<_>>(), [7]);
    }
}

#[test]
fn messages_that_cannot_be_read_back_are_counted_and_the_rest_still_arrive() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let publisher = offline_subscriber_and_publisher(&mut b, t0);
    publish_n(&mut b, &publisher, "a/b", 1_000, QoS::AtLeastOnce, t0);
    persist(&mut b, &mut log, t0);

    // More unreadable in a row than one read-ahead batch.
    let later = Duration::from_secs(1);
    let (mut b, counts) = restart_losing(&log, t0, later, Limits::default(), |lsn| lsn <= 600);
    assert_eq!(counts.messages, 1_000);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, false, t0 + later);
    let got = drain_acking(&mut sub, &mut b, t0 + later);
    let want: Vec<String> = (601..=1_000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(b.stats.dropped_unreadable, 600);
}

#[test]
fn subscription_identifiers_of_copies_held_across_a_restart_are_those_that_match_them() {
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut b = logging_broker(t0, Duration::ZERO, Limits::default());
    let mut sub = connect(&mut b, v5_connect("sub5", 3_600), t0);
    let options = ringmq_protocol::SubscriptionOptions::qos(QoS::AtLeastOnce);
    sub.subscribe_with(&mut b, "a/#", options, Some(7), t0);
    sub.subscribe_with(&mut b, "a/b", options, Some(9), t0);
    sub.subscribe_with(&mut b, "z/#", options, None, t0);
    b.disconnected(sub.id, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(
        &mut b,
        publish("a/b", "both", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    publisher.send(&mut b, publish("a/c", "one", QoS::AtLeastOnce, Some(2)), t0);
    publisher.send(
        &mut b,
        publish("z/c", "none", QoS::AtLeastOnce, Some(3)),
        t0,
    );
    persist(&mut b, &mut log, t0);

    let later = Duration::from_secs(1);
    let (mut b, counts) = restart(&log, t0, later, Limits::default());
    assert_eq!(counts.messages, 3);
    let mut sub = connect(&mut b, v5_connect("sub5", 3_600), t0 + later);
    let got = sub.publishes(&mut b);
    assert_eq!(payloads(&got), ["both", "one", "none"]);
    let ids: Vec<Vec<u32>> = got
        .iter()
        .map(|p| {
            let props = p.properties.as_ref();
            let mut ids: Vec<u32> = props
                .map(|p| p.subscription_identifiers.iter().map(|i| i.get()).collect())
                .unwrap_or_default();
            ids.sort_unstable();
            ids
        })
        .collect();
    assert_eq!(ids, [vec![7, 9], vec![7], vec![]]);
}
