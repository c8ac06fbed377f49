//! Deterministic tests of `engine::core` on a virtual clock: no sockets, no
//! threads; time moves only when a test says so.

use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_engine::core::auth::Auth;
use ringmq_engine::core::{Broker, Flow, Limits};
use ringmq_protocol::{
    Disconnect, MqttString, Packet, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, QoS,
    ReasonCode, SubscriptionOptions,
};

mod support;

use support::client::*;

#[test]
fn keep_alive_expiry_closes_the_connection_and_publishes_the_will() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V311, true, t0);
    watcher.subscribe(&mut b, "wills/#", QoS::AtLeastOnce, t0);
    let mut c = connect_packet("sleepy", ProtocolVersion::V5, true);
    c.keep_alive = 10;
    c.will = Some(will("wills/sleepy", None));
    let mut sleepy = connect(&mut b, c, t0);

    b.tick(t0 + Duration::from_secs(14));
    assert!(
        sleepy.recv(&mut b).is_empty(),
        "1.4 × keep-alive is still fine"
    );
    b.tick(t0 + Duration::from_secs(16));
    match sleepy.recv(&mut b).as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert!(sleepy.closed);
    b.disconnected(sleepy.id, t0 + Duration::from_secs(16));
    let got = watcher.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "wills/sleepy");
    assert_eq!(b.stats.keep_alive_timeouts, 1);
}

#[test]
fn a_packet_resets_the_keep_alive_clock() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut c = connect_packet("pinger", ProtocolVersion::V311, true);
    c.keep_alive = 10;
    let mut pinger = connect(&mut b, c, t0);
    pinger.send(&mut b, Packet::PingReq, t0 + Duration::from_secs(12));
    assert_eq!(pinger.recv(&mut b), vec![Packet::PingResp]);
    b.tick(t0 + Duration::from_secs(20));
    assert!(!pinger.closed);
    b.tick(t0 + Duration::from_secs(28));
    assert!(pinger.recv(&mut b).is_empty(), "3.1.1 gets no DISCONNECT");
    assert!(pinger.closed);
}

#[test]
fn will_delay_waits_and_a_reconnect_cancels_it() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V311, true, t0);
    watcher.subscribe(&mut b, "wills/#", QoS::AtMostOnce, t0);

    // Delay 30 s, session 60 s: published at 30 s.
    let mut c = v5_connect("delayed", 60);
    c.will = Some(will("wills/delayed", Some(30)));
    let d = connect(&mut b, c.clone(), t0);
    b.disconnected(d.id, t0);
    b.tick(t0 + Duration::from_secs(29));
    assert!(watcher.publishes(&mut b).is_empty());
    b.tick(t0 + Duration::from_secs(31));
    assert_eq!(watcher.publishes(&mut b).len(), 1);

    // Same again, but the client comes back after 10 s: no Will.
    let t1 = t0 + Duration::from_secs(100);
    let d = connect(&mut b, c.clone(), t1);
    b.disconnected(d.id, t1);
    let mut again = c;
    again.will = None;
    again.clean_start = false;
    let _back = connect(&mut b, again, t1 + Duration::from_secs(10));
    b.tick(t1 + Duration::from_secs(40));
    assert!(
        watcher.publishes(&mut b).is_empty(),
        "a reconnect cancels the delayed Will"
    );
}

#[test]
fn will_is_not_published_after_disconnect_but_is_after_0x04() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V311, true, t0);
    watcher.subscribe(&mut b, "wills/#", QoS::AtMostOnce, t0);
    for (code, expected) in [
        (ReasonCode::Success, 0),
        (ReasonCode::DisconnectWithWill, 1),
    ] {
        let mut c = connect_packet("leaver", ProtocolVersion::V5, true);
        c.will = Some(will("wills/leaver", None));
        let leaver = connect(&mut b, c, t0);
        leaver.send(&mut b, Packet::Disconnect(Disconnect::new(code)), t0);
        b.disconnected(leaver.id, t0);
        assert_eq!(
            watcher.publishes(&mut b).len(),
            expected,
            "after DISCONNECT {code:?}"
        );
    }
}

#[test]
fn session_expiry_ends_a_detached_session() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut s = connect(&mut b, v5_connect("expiring", 10), t0);
    s.subscribe(&mut b, "x/#", QoS::AtLeastOnce, t0);
    b.disconnected(s.id, t0);
    b.tick(t0 + Duration::from_secs(9));
    assert_eq!(b.session_count(), 1);
    b.tick(t0 + Duration::from_secs(11));
    assert_eq!(b.session_count(), 0);
    assert_eq!(b.stats.sessions_expired, 1);
    let mut c = v5_connect("expiring", 10);
    c.clean_start = false;
    let id = b
        .connect(c, false, t0 + Duration::from_secs(12))
        .expect("accepted")
        .id;
    let mut client = Client::attach(id, ProtocolVersion::V5);
    match client.recv(&mut b).as_slice() {
        [Packet::ConnAck(a)] => assert!(!a.session_present, "expired session is not resumed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.version, ProtocolVersion::V5);
}

#[test]
fn qos2_from_a_client_is_delivered_exactly_once() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, true, t0);
    sub.subscribe(&mut b, "q2", QoS::AtMostOnce, t0);
    let mut publisher = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    publisher.send(&mut b, publish("q2", "once", QoS::ExactlyOnce, Some(7)), t0);
    assert_eq!(
        publisher.recv(&mut b),
        vec![Packet::PubRec(PubRec::new(pid(7)))]
    );
    // The PUBREC was lost; the client resends with DUP.
    let mut dup = publish("q2", "once", QoS::ExactlyOnce, Some(7));
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    publisher.send(&mut b, dup, t0);
    assert_eq!(
        publisher.recv(&mut b),
        vec![Packet::PubRec(PubRec::new(pid(7)))]
    );
    publisher.send(&mut b, Packet::PubRel(PubRel::new(pid(7))), t0);
    assert_eq!(
        publisher.recv(&mut b),
        vec![Packet::PubComp(PubComp::new(pid(7)))]
    );
    assert_eq!(sub.publishes(&mut b).len(), 1, "delivered once");
    // After PUBCOMP the id is free: a new message with it is new.
    publisher.send(
        &mut b,
        publish("q2", "again", QoS::ExactlyOnce, Some(7)),
        t0,
    );
    assert_eq!(sub.publishes(&mut b).len(), 1);
}

#[test]
fn qos2_to_a_client_completes_with_pubrel_and_pubcomp() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V5, true, t0);
    sub.subscribe(&mut b, "q2", QoS::ExactlyOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(&mut b, publish("q2", "x", QoS::ExactlyOnce, Some(1)), t0);
    let got = sub.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let id = got[0].packet_id.expect("QoS 2 has an id");
    sub.send(&mut b, Packet::PubRec(PubRec::new(id)), t0);
    assert_eq!(sub.recv(&mut b), vec![Packet::PubRel(PubRel::new(id))]);
    sub.send(&mut b, Packet::PubComp(PubComp::new(id)), t0);
    assert!(b.session(sub.id).expect("connected").inflight.is_empty());
}

#[test]
fn takeover_closes_the_old_connection_with_0x8e() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut old = join(&mut b, "same", ProtocolVersion::V5, true, t0);
    let _new = join(&mut b, "same", ProtocolVersion::V5, true, t0);
    match old.recv(&mut b).as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(old.closed);
    assert_eq!(b.stats.takeovers, 1);
    // The old connection's end does not touch the new one.
    b.disconnected(old.id, t0);
    assert_eq!(b.connection_count(), 1);
}

#[test]
fn takeover_of_a_v5_session_with_expiry_zero_starts_a_new_session() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    // Session Expiry 0: the session ends with the connection the take-over closes.
    let mut old = join(&mut b, "brief", ProtocolVersion::V5, false, t0);
    old.subscribe(&mut b, "t", QoS::AtLeastOnce, t0);
    let id = b
        .connect(
            connect_packet("brief", ProtocolVersion::V5, false),
            false,
            t0,
        )
        .expect("accepted")
        .id;
    let mut new = Client::attach(id, ProtocolVersion::V5);
    match new.recv(&mut b).as_slice() {
        [Packet::ConnAck(ack)] => assert!(!ack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(&mut b, publish("t", "x", QoS::AtLeastOnce, Some(1)), t0);
    assert!(
        new.publishes(&mut b).is_empty(),
        "the old subscription ended"
    );
}

#[test]
fn persistent_session_gets_unacknowledged_messages_again_with_dup() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = join(&mut b, "keeper", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "jobs", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(&mut b, publish("jobs", "1", QoS::AtLeastOnce, Some(1)), t0);
    let first = sub.publishes(&mut b);
    assert_eq!(first.len(), 1);
    b.disconnected(sub.id, t0);
    publisher.send(&mut b, publish("jobs", "2", QoS::AtLeastOnce, Some(2)), t0);
    publisher.send(&mut b, publish("jobs", "3", QoS::AtMostOnce, None), t0);
    let mut back = join(&mut b, "keeper", ProtocolVersion::V311, false, t0);
    let again = back.publishes(&mut b);
    let payloads: Vec<_> = again.iter().map(|p| (p.payload.clone(), p.dup)).collect();
    assert_eq!(
        payloads,
        vec![(Bytes::from("1"), true), (Bytes::from("2"), false)],
        "unacked one resent with DUP, queued QoS 1 follows, offline QoS 0 is not kept"
    );
}

#[test]
fn the_outbound_window_honours_the_clients_receive_maximum() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut c = connect_packet("slow", ProtocolVersion::V5, true);
    c.properties.receive_maximum = NonZeroU16::new(2);
    let mut slow = connect(&mut b, c, t0);
    slow.subscribe(&mut b, "w", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    for i in 1..=5 {
        publisher.send(
            &mut b,
            publish("w", &i.to_string(), QoS::AtLeastOnce, Some(i)),
            t0,
        );
    }
    let got = slow.publishes(&mut b);
    assert_eq!(got.len(), 2, "only Receive Maximum in flight");
    let id = got[0].packet_id.expect("id");
    slow.send(&mut b, Packet::PubAck(PubAck::new(id)), t0);
    let next = slow.publishes(&mut b);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, Bytes::from("3"));
}

#[test]
fn a_full_session_queue_drops_new_messages_and_counts_them() {
    let t0 = Instant::now();
    let limits = Limits {
        session_queue_messages_max: 3,
        ..Limits::default()
    };
    let mut b = Broker::new(0, 1, limits, Auth::default(), t0);
    let mut sub = join(&mut b, "offline", ProtocolVersion::V311, false, t0);
    sub.subscribe(&mut b, "q", QoS::AtLeastOnce, t0);
    b.disconnected(sub.id, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    for i in 1..=5 {
        publisher.send(
            &mut b,
            publish("q", &i.to_string(), QoS::AtLeastOnce, Some(i)),
            t0,
        );
    }
    assert_eq!(b.stats.dropped_queue_full, 2);
    let mut back = join(&mut b, "offline", ProtocolVersion::V311, false, t0);
    let payloads: Vec<_> = back
        .publishes(&mut b)
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        payloads,
        vec![Bytes::from("1"), Bytes::from("2"), Bytes::from("3")]
    );
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = join(&mut b, "overlap", ProtocolVersion::V5, true, t0);
    let opts = |q| SubscriptionOptions::qos(q);
    sub.subscribe_with(&mut b, "a/+", opts(QoS::AtMostOnce), Some(1), t0);
    sub.subscribe_with(&mut b, "a/#", opts(QoS::AtLeastOnce), Some(2), t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(&mut b, publish("a/b", "x", QoS::ExactlyOnce, Some(1)), t0);
    let got = sub.publishes(&mut b);
    assert_eq!(got.len(), 1, "one copy [MQTT-3.3.5-1]");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids: Vec<u32> = got[0]
        .properties()
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "every matching Subscription Identifier");
}

#[test]
fn no_local_keeps_a_clients_own_messages_from_it() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut me = join(&mut b, "me", ProtocolVersion::V5, true, t0);
    let mut opts = SubscriptionOptions::qos(QoS::AtMostOnce);
    opts.no_local = true;
    me.subscribe_with(&mut b, "chat", opts, None, t0);
    let mut other = join(&mut b, "other", ProtocolVersion::V5, true, t0);
    other.subscribe(&mut b, "chat", QoS::AtMostOnce, t0);
    me.send(&mut b, publish("chat", "hi", QoS::AtMostOnce, None), t0);
    assert!(me.publishes(&mut b).is_empty());
    assert_eq!(other.publishes(&mut b).len(), 1);
}

#[test]
fn message_expiry_counts_down_and_expired_messages_are_dropped() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = connect(&mut b, v5_connect("later", 3600), t0);
    sub.subscribe(&mut b, "e", QoS::AtLeastOnce, t0);
    b.disconnected(sub.id, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    for (n, secs) in [(1u16, 60u32), (2, 5)] {
        let mut p = publish("e", &n.to_string(), QoS::AtLeastOnce, Some(n));
        if let Packet::Publish(p) = &mut p {
            p.properties_mut().message_expiry_interval = Some(secs);
        }
        publisher.send(&mut b, p, t0);
    }
    let mut c = v5_connect("later", 3600);
    c.clean_start = false;
    let mut back = connect(&mut b, c, t0 + Duration::from_secs(20));
    let got = back.publishes(&mut b);
    assert_eq!(got.len(), 1, "the 5 s message expired");
    assert_eq!(got[0].properties().message_expiry_interval, Some(40));
    assert_eq!(b.stats.dropped_expired, 1);
}

#[test]
fn copies_over_the_clients_maximum_packet_size_are_dropped() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut c = connect_packet("small", ProtocolVersion::V5, true);
    c.properties.maximum_packet_size = NonZeroU32::new(64);
    let mut small = connect(&mut b, c, t0);
    small.subscribe(&mut b, "big", QoS::AtMostOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(
        &mut b,
        publish("big", &"x".repeat(100), QoS::AtMostOnce, None),
        t0,
    );
    publisher.send(&mut b, publish("big", "fits", QoS::AtMostOnce, None), t0);
    let got = small.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("fits"));
    assert_eq!(b.stats.dropped_too_large, 1);
}

#[test]
fn retained_messages_are_stored_replaced_and_cleared() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    let retained = |payload: &str| {
        let mut p = publish("r/t", payload, QoS::AtMostOnce, None);
        if let Packet::Publish(p) = &mut p {
            p.retain = true;
        }
        p
    };
    publisher.send(&mut b, retained("one"), t0);
    publisher.send(&mut b, retained("two"), t0);
    let mut sub = join(&mut b, "sub", ProtocolVersion::V311, true, t0);
    sub.subscribe(&mut b, "r/#", QoS::AtMostOnce, t0);
    // subscribe() consumed the SUBACK and the retained message together.
    let mut late = join(&mut b, "late", ProtocolVersion::V311, true, t0);
    late.send(&mut b, subscribe_packet(3, "r/+"), t0);
    let got = late.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("two"));
    assert!(
        got[0].retain,
        "sent on subscribe with RETAIN [MQTT-3.3.1-9]"
    );
    publisher.send(&mut b, retained(""), t0);
    assert!(
        sub.publishes(&mut b).iter().all(|p| !p.retain),
        "live copies lose RETAIN"
    );
    assert_eq!(
        late.publishes(&mut b).len(),
        1,
        "the clearing message is delivered live"
    );
    late.send(&mut b, subscribe_packet(4, "r/#"), t0);
    assert!(
        late.publishes(&mut b).is_empty(),
        "an empty payload cleared it"
    );
}

#[test]
fn route_changes_reach_other_shards_and_publishes_follow_them() {
    let t0 = Instant::now();
    let mut a = Broker::new(0, 2, Limits::default(), Auth::default(), t0);
    let mut b = Broker::new(1, 2, Limits::default(), Auth::default(), t0);
    let mut sub = join(&mut b, "on-b", ProtocolVersion::V311, true, t0);
    if let Flow::Barrier(p) = b.handle(sub.id, subscribe_packet(1, "s/+"), t0) {
        for r in std::mem::take(&mut b.outbox[0]) {
            a.apply_remote(1, r, t0);
        }
        b.finish_subscribe(p, t0);
    } else {
        panic!("two shards: SUBACK waits for the route to reach the other shard");
    }
    let publisher = join(&mut a, "on-a", ProtocolVersion::V311, true, t0);
    publisher.send(&mut a, publish("s/1", "cross", QoS::AtMostOnce, None), t0);
    publisher.send(&mut a, publish("t/1", "nobody", QoS::AtMostOnce, None), t0);
    let batch = std::mem::take(&mut a.outbox[1]);
    assert_eq!(batch.len(), 1, "only the matching message crosses");
    for r in batch {
        b.apply_remote(0, r, t0);
    }
    let got = sub.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("cross"));
}

#[test]
fn a_shared_group_gets_each_message_once_round_robin() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut members: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = connect(
                &mut b,
                connect_packet(&format!("m{i}"), ProtocolVersion::V5, true),
                t0,
            );
            c.subscribe(&mut b, "$share/workers/jobs/+", QoS::AtLeastOnce, t0);
            c
        })
        .collect();
    let mut plain = join(&mut b, "plain", ProtocolVersion::V311, true, t0);
    plain.subscribe(&mut b, "jobs/#", QoS::AtMostOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    for n in 1..=6 {
        publisher.send(
            &mut b,
            publish("jobs/x", &n.to_string(), QoS::AtLeastOnce, Some(n)),
            t0,
        );
    }
    let counts: Vec<usize> = members
        .iter_mut()
        .map(|m| m.publishes(&mut b).len())
        .collect();
    assert_eq!(counts, vec![2, 2, 2], "one member per message, in turn");
    assert_eq!(
        plain.publishes(&mut b).len(),
        6,
        "plain subscribers are unaffected"
    );
}

#[test]
fn a_leaving_members_unacknowledged_messages_go_to_another_member() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut a = join(&mut b, "a", ProtocolVersion::V5, true, t0);
    a.subscribe(&mut b, "$share/g/t", QoS::AtLeastOnce, t0);
    let mut c = join(&mut b, "c", ProtocolVersion::V5, true, t0);
    c.subscribe(&mut b, "$share/g/t", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    publisher.send(&mut b, publish("t", "first", QoS::AtLeastOnce, Some(1)), t0);
    let got_a = a.publishes(&mut b);
    assert_eq!(
        got_a.len(),
        1,
        "a got the first message and does not ack it"
    );
    b.disconnected(a.id, t0);
    let got_c = c.publishes(&mut b);
    assert_eq!(got_c.len(), 1);
    assert_eq!(got_c[0].payload, Bytes::from("first"));
}

#[test]
fn shared_groups_span_shards_and_each_message_lands_on_one() {
    let t0 = Instant::now();
    let mut shards = [
        Broker::new(0, 2, Limits::default(), Auth::default(), t0),
        Broker::new(1, 2, Limits::default(), Auth::default(), t0),
    ];
    let mut members = Vec::new();
    for (s, shard) in shards.iter_mut().enumerate() {
        let mut m = connect(
            shard,
            connect_packet(&format!("m{s}"), ProtocolVersion::V311, true),
            t0,
        );
        let sub = subscribe_packet(1, "$share/g/x");
        if let Flow::Barrier(p) = shard.handle(m.id, sub, t0) {
            shard.finish_subscribe(p, t0);
        }
        let _ = m.recv(shard);
        members.push(m);
    }
    let exchange = |shards: &mut [Broker; 2]| {
        for from in 0..2 {
            let to = 1 - from;
            for r in std::mem::take(&mut shards[from].outbox[to]) {
                shards[to].apply_remote(from, r, t0);
            }
        }
    };
    exchange(&mut shards);
    let publisher = connect(
        &mut shards[0],
        connect_packet("pub", ProtocolVersion::V311, true),
        t0,
    );
    for _ in 0..4 {
        publisher.send(&mut shards[0], publish("x", "m", QoS::AtMostOnce, None), t0);
    }
    exchange(&mut shards);
    let counts: Vec<usize> = (0..2)
        .map(|s| members[s].publishes(&mut shards[s]).len())
        .collect();
    assert_eq!(
        counts,
        vec![2, 2],
        "each message to one shard's member, alternating"
    );
}

#[test]
fn packet_ids_are_not_reused_while_in_flight_after_the_counter_wraps() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut sub = join(&mut b, "long", ProtocolVersion::V311, true, t0);
    sub.subscribe(&mut b, "w", QoS::AtLeastOnce, t0);
    let mut publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    let mut stuck = None;
    for n in 0..70_000u32 {
        publisher.send(&mut b, publish("w", "m", QoS::AtLeastOnce, Some(1)), t0);
        let _ = publisher.recv(&mut b);
        for p in sub.publishes(&mut b) {
            let id = p.packet_id.expect("QoS 1");
            match stuck {
                // The first one is never acknowledged.
                None => stuck = Some(id),
                Some(s) => {
                    assert_ne!(id, s, "message {n} reused the id still in flight");
                    sub.send(&mut b, Packet::PubAck(PubAck::new(id)), t0);
                }
            }
        }
    }
}

#[test]
fn the_server_sends_topic_aliases_up_to_the_clients_maximum() {
    let t0 = Instant::now();
    let limits = Limits {
        topic_alias_out_max: 16,
        ..Limits::default()
    };
    let mut b = Broker::new(0, 1, limits, Auth::default(), t0);
    let mut c = connect_packet("aliased", ProtocolVersion::V5, true);
    c.properties.topic_alias_maximum = Some(2);
    let mut sub = connect(&mut b, c, t0);
    sub.subscribe(&mut b, "t/#", QoS::AtLeastOnce, t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V311, true, t0);
    for (n, topic) in ["t/a", "t/a", "t/b", "t/c", "t/b"].into_iter().enumerate() {
        publisher.send(
            &mut b,
            publish(topic, "x", QoS::AtLeastOnce, Some(n as u16 + 1)),
            t0,
        );
    }
    let got: Vec<(String, Option<u16>)> = sub
        .publishes(&mut b)
        .iter()
        .map(|p| {
            (
                p.topic.as_str().to_owned(),
                p.properties().topic_alias.map(|a| a.get()),
            )
        })
        .collect();
    let want = [
        ("t/a", Some(1)),
        ("", Some(1)),
        ("t/b", Some(2)),
        ("t/c", None),
        ("", Some(2)),
    ];
    let want: Vec<(String, Option<u16>)> = want.iter().map(|(t, a)| (t.to_string(), *a)).collect();
    assert_eq!(
        got, want,
        "alias set with the topic, then sent alone; none past the maximum"
    );
}

#[test]
fn no_will_on_takeover_after_a_normal_disconnect() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V311, true, t0);
    watcher.subscribe(&mut b, "wills/#", QoS::AtMostOnce, t0);
    let mut c = connect_packet("quick", ProtocolVersion::V5, true);
    c.will = Some(will("wills/quick", None));
    let old = connect(&mut b, c.clone(), t0);
    old.send(
        &mut b,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
        t0,
    );
    // The client is back before the old connection's end was processed.
    let _new = connect(&mut b, c, t0);
    b.disconnected(old.id, t0);
    assert!(
        watcher.publishes(&mut b).is_empty(),
        "[MQTT-3.1.2-10] the Will went with DISCONNECT"
    );
}

#[test]
fn disconnect_cannot_raise_session_expiry_past_the_cap() {
    let t0 = Instant::now();
    let limits = Limits {
        session_expiry_secs_max: 60,
        ..Limits::default()
    };
    let mut b = Broker::new(0, 1, limits, Auth::default(), t0);
    let c = connect(&mut b, v5_connect("capped", 10), t0);
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(u32::MAX);
    c.send(&mut b, Packet::Disconnect(d), t0);
    b.disconnected(c.id, t0);
    b.tick(t0 + Duration::from_secs(61));
    assert_eq!(b.session_count(), 0, "expired at the 60 s cap");
}

#[test]
fn a_suback_for_a_connection_that_is_gone_is_not_sent_to_its_successor() {
    let t0 = Instant::now();
    let mut a = Broker::new(0, 2, Limits::default(), Auth::default(), t0);
    let publisher = join(&mut a, "retainer", ProtocolVersion::V311, true, t0);
    let mut p = publish("secret/x", "s", QoS::AtMostOnce, None);
    if let Packet::Publish(p) = &mut p {
        p.retain = true;
    }
    publisher.send(&mut a, p, t0);
    let old = join(&mut a, "sub", ProtocolVersion::V311, true, t0);
    let sub = subscribe_packet(1, "secret/#");
    let Flow::Barrier(pending) = a.handle(old.id, sub, t0) else {
        panic!("two shards: SUBACK waits for the barrier");
    };
    a.disconnected(old.id, t0);
    let mut other = join(&mut a, "someone-else", ProtocolVersion::V311, true, t0);
    a.finish_subscribe(pending, t0);
    assert!(
        other.recv(&mut a).is_empty(),
        "nothing for the new occupant of the slot"
    );
}

#[test]
fn another_user_cannot_resume_a_session() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut c = connect_packet("shared-id", ProtocolVersion::V311, false);
    c.username = Some(MqttString::new("alice".to_owned()).expect("name"));
    let mut alice = connect(&mut b, c.clone(), t0);
    alice.subscribe(&mut b, "alice/#", QoS::AtLeastOnce, t0);
    b.disconnected(alice.id, t0);
    c.username = Some(MqttString::new("bob".to_owned()).expect("name"));
    let id = b.connect(c, false, t0).expect("accepted").id;
    let mut bob = Client::attach(id, ProtocolVersion::V311);
    match bob.recv(&mut b).first() {
        Some(Packet::ConnAck(a)) => assert!(!a.session_present, "bob starts clean"),
        other => panic!("{other:?}"),
    }
    assert!(b.session(id).expect("connected").subs.is_empty());
}

#[test]
fn connect_beyond_sessions_max_is_refused_with_quota_exceeded() {
    let t0 = Instant::now();
    let limits = Limits {
        sessions_max: 2,
        ..Limits::default()
    };
    let mut b = Broker::new(0, 1, limits, Auth::default(), t0);
    let _first = join(&mut b, "one", ProtocolVersion::V5, true, t0);
    let _second = join(&mut b, "two", ProtocolVersion::V5, true, t0);
    let refused = b
        .connect(
            connect_packet("three", ProtocolVersion::V5, true),
            false,
            t0,
        )
        .expect_err("over sessions_max");
    // CONNACK 0x97 Quota exceeded: 0x20, length 3, flags, code, no properties.
    assert_eq!(&refused.connack[..], &[0x20, 0x03, 0x00, 0x97, 0x00]);
    // An existing client id may still reconnect (take-over).
    assert!(b
        .connect(connect_packet("one", ProtocolVersion::V5, true), false, t0)
        .is_ok());
    assert_eq!(b.stats.takeovers, 1);
}

#[test]
fn expired_retained_messages_are_purged() {
    let t0 = Instant::now();
    let mut b = broker(t0);
    let publisher = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    let mut p = publish("short/lived", "x", QoS::AtMostOnce, None);
    if let Packet::Publish(p) = &mut p {
        p.retain = true;
        p.properties_mut().message_expiry_interval = Some(5);
    }
    publisher.send(&mut b, p, t0);
    assert_eq!(b.retained_count(), 1);
    b.tick(t0 + Duration::from_secs(11));
    assert_eq!(b.retained_count(), 0);
}

/// The old connection's Will on a take-over, case by case, as MQTT 5.0
/// §3.1.2.5, §3.1.3.2.2 and §3.1.4 word it (EMQX and HiveMQ do the same;
/// mosquitto 2.0 drops it on a persistent 3.1.1 resume): published unless
/// the new connection resumes the session (Clean Start 0, Session Expiry
/// > 0) and the Will has a delay [MQTT-3.1.3-9].
#[test]
fn the_will_on_a_take_over_follows_the_spec_case_by_case() {
    let v311 = ProtocolVersion::V311;
    // (case, old CONNECT, its Will Delay, new Clean Start, Will published
    // at the take-over)
    let cases = [
        (
            "3.1.1, new clean session",
            connect_packet("c", v311, true),
            None,
            true,
            true,
        ),
        (
            "3.1.1, persistent session resumed",
            connect_packet("c", v311, false),
            None,
            false,
            true,
        ),
        (
            "v5, delay 0, resumed",
            v5_connect("c", 60),
            None,
            false,
            true,
        ),
        (
            "v5, delay 30, resumed",
            v5_connect("c", 60),
            Some(30),
            false,
            false,
        ),
        (
            "v5, delay 30, Clean Start 1",
            v5_connect("c", 60),
            Some(30),
            true,
            true,
        ),
        (
            "v5, delay 30, Session Expiry 0",
            v5_connect("c", 0),
            Some(30),
            false,
            true,
        ),
    ];
    for (case, mut old, delay, clean, published) in cases {
        let t0 = Instant::now();
        let mut b = broker(t0);
        let mut watcher = join(&mut b, "watcher", v311, true, t0);
        watcher.subscribe(&mut b, "wills/#", QoS::AtMostOnce, t0);
        old.will = Some(will("wills/c", delay));
        let old_client = connect(&mut b, old.clone(), t0);
        let mut new = old.clone();
        new.will = None;
        new.clean_start = clean;
        let _new = connect(&mut b, new, t0 + Duration::from_secs(1));
        b.disconnected(old_client.id, t0 + Duration::from_secs(1));
        let at_once = watcher.publishes(&mut b).len();
        b.tick(t0 + Duration::from_secs(120));
        let later = watcher.publishes(&mut b).len();
        assert_eq!(
            (at_once, later),
            (usize::from(published), 0),
            "{case}: Will at the take-over, and none later"
        );
    }
}

#[test]
fn a_delayed_will_of_a_session_that_ends_with_its_connection_goes_at_once() {
    // "until the Will Delay Interval has passed or the Session ends,
    // whichever happens first" (§3.1.3.2.2): Session Expiry 0 ends it now.
    let t0 = Instant::now();
    let mut b = broker(t0);
    let mut watcher = join(&mut b, "watcher", ProtocolVersion::V311, true, t0);
    watcher.subscribe(&mut b, "wills/#", QoS::AtMostOnce, t0);
    let mut c = v5_connect("brief", 0);
    c.will = Some(will("wills/brief", Some(30)));
    let brief = connect(&mut b, c, t0);
    b.disconnected(brief.id, t0);
    assert_eq!(watcher.publishes(&mut b).len(), 1);
}

#[test]
fn an_outflow_rule_that_waits_for_its_stream_holds_the_publishers_qos1_ack() {
    let t0 = Instant::now();
    let (mut b, mut c) = confirming_publisher(t0);
    c.send(
        &mut b,
        publish("devices/a", "x", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    c.send(&mut b, publish("devices/b", "y", QoS::AtMostOnce, None), t0);
    c.send(
        &mut b,
        publish("other/c", "z", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    assert!(
        c.recv(&mut b).is_empty(),
        "both PUBACKs wait: the second is behind the first"
    );
    let out = std::mem::take(&mut b.outflow);
    let confirms: Vec<Option<u64>> = out.iter().map(|o| o.confirm).collect();
    assert_eq!(confirms, vec![Some(1), None], "QoS 0 has no PUBACK to hold");
    assert_eq!(b.take_confirms(c.id), vec![1]);
    let acks = b.take_held_acks(c.id);
    b.release_acks(acks);
    let codes: Vec<(u16, ReasonCode)> = c
        .recv(&mut b)
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some((a.packet_id.get(), a.reason_code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (1, ReasonCode::Success),
            (2, ReasonCode::NoMatchingSubscribers)
        ]
    );
}

#[test]
fn a_message_its_stream_did_not_confirm_closes_the_publisher_unacknowledged() {
    let t0 = Instant::now();
    let (mut b, mut c) = confirming_publisher(t0);
    c.send(
        &mut b,
        publish("devices/a", "x", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    let _ = b.take_held_acks(c.id);
    b.unconfirmed(c.id);
    match c.recv(&mut b).as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::UnspecifiedError),
        other => panic!("expected DISCONNECT 0x80 and no PUBACK, got {other:?}"),
    }
    assert_eq!(b.stats.outflow_unconfirmed, 1);
    b.disconnected(c.id, t0);
    assert!(
        b.take_confirms(c.id).is_empty(),
        "let go with the connection"
    );
}

/// A broker whose outflow rule on `devices/#` holds acknowledgements for
/// its stream, and a v5 publisher.
fn confirming_publisher(t0: Instant) -> (Broker, Client) {
    use ringmq_engine::core::outflow::OutflowRule;
    let mut b = broker(t0);
    b.outflow_rules = vec![OutflowRule {
        filter: "devices/#".into(),
        subject: "mqtt.devices".into(),
        jetstream: true,
        confirm: true,
    }];
    let c = join(&mut b, "pub", ProtocolVersion::V5, true, t0);
    (b, c)
}

#[test]
fn a_session_moved_to_another_node_resumes_there_with_its_messages() {
    let t0 = Instant::now();
    let (mut here, mut there) = (broker(t0), broker(t0));
    let mut mover = connect(&mut here, v5_connect("mover", 3600), t0);
    mover.subscribe(&mut here, "m/#", QoS::AtLeastOnce, t0);
    here.disconnected(mover.id, t0);
    let publisher = join(&mut here, "pub", ProtocolVersion::V5, true, t0);
    for n in 1..=3u16 {
        let p = publish("m/x", &n.to_string(), QoS::AtLeastOnce, Some(n));
        publisher.send(&mut here, p, t0);
    }
    let moved = here
        .export_session("mover", t0)
        .expect("a persistent session");
    assert_eq!(moved.messages.len(), 3);
    assert_eq!(moved.expiry_secs, 3600);
    assert!(here.export_session("mover", t0).is_none(), "it left");
    assert!(here.export_session("pub", t0).is_none(), "not persistent");
    let id = MqttString::new("mover").expect("a client id");
    there.import_session(&id, moved, t0);
    let mut c = v5_connect("mover", 3600);
    c.clean_start = false;
    let id = there.connect(c, false, t0).expect("accepted").id;
    let mut back = Client::attach(id, ProtocolVersion::V5);
    let got = back.recv(&mut there);
    match got.first() {
        Some(Packet::ConnAck(a)) => assert!(a.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let payloads: Vec<Bytes> = got
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [&b"1"[..], b"2", b"3"].map(Bytes::from_static));
    // Its subscription came too.
    let other = join(&mut there, "pub2", ProtocolVersion::V5, true, t0);
    other.send(&mut there, publish("m/y", "4", QoS::AtMostOnce, None), t0);
    let more = back.publishes(&mut there);
    assert_eq!(more.len(), 1);
    assert_eq!(there.stats.sessions_moved_in, 1);
    assert_eq!(here.stats.sessions_moved_out, 1);
}
