//! The Alibaba Cloud profile on a virtual clock: sign-in modes, names and
//! limits, tokens (scopes, upload, the 5-minute notice, expiry,
//! revocation), P2P within and across shards, online/offline events,
//! the offline rule and traces.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_engine::core::aliyun::registry::{Change, DeviceCredential};
use ringmq_engine::core::aliyun::signin::signature;
use ringmq_engine::core::aliyun::token::Actions;
use ringmq_engine::core::connect::home_shard;
use ringmq_engine::core::trace::answer::{DeviceTrace, MessageOfClientTrace, Paging};
use ringmq_engine::core::trace::TraceQuery;
use ringmq_engine::core::Broker;
use ringmq_protocol::{
    Connect, Decoder, Disconnect, MqttString, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, TopicFilter,
};
use serde_json::Value;

mod support;

use support::aliyun::*;
use support::client::*;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MIN: Duration = Duration::from_secs(60);

/// The CONNACK code of a refused CONNECT.
fn refused(b: &mut Broker, c: Connect, now: Instant) -> ReasonCode {
    let v = c.protocol;
    let Err(r) = b.connect(c, false, now) else {
        panic!("CONNECT accepted");
    };
    let mut buf = BytesMut::from(&r.connack[..]);
    match Decoder::with_version(v, 1 << 20).decode(&mut buf) {
        Ok(Some(Packet::ConnAck(a))) => a.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The SUBACK codes of one SUBSCRIBE of `filters` at QoS 1.
fn suback(c: &mut Client, b: &mut Broker, filters: &[&str], now: Instant) -> Vec<ReasonCode> {
    let s = Subscribe {
        packet_id: pid(9),
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|f| {
                let f = TopicFilter::new((*f).to_owned()).expect("filter");
                (f, SubscriptionOptions::qos(QoS::AtLeastOnce))
            })
            .collect(),
    };
    c.send(b, Packet::Subscribe(s), now);
    match c.recv(b).as_slice() {
        [Packet::SubAck(a)] => a.reason_codes.clone(),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The reason codes of the PUBACKs the client received.
fn puback_codes(c: &mut Client, b: &mut Broker) -> Vec<ReasonCode> {
    let got = c.recv(b).into_iter();
    let acks = got.filter_map(|p| match p {
        Packet::PubAck(a) => Some(a.reason_code),
        _ => None,
    });
    acks.collect()
}

fn json(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).expect("JSON payload")
}

#[test]
fn every_sign_in_mode_is_checked_and_failures_are_not_authorized() {
    let t0 = Instant::now();
    for v in [V311, V5] {
        let mut b = aliyun_broker(t0);
        connect(&mut b, signed("GID_sensor@@@d1", v, true), t0);
        // Legacy: the bare AccessKeyId, the Group ID signed.
        let mut legacy = connect_packet("GID_app@@@old", v, true);
        legacy.username = MqttString::new(AK.to_owned()).ok();
        legacy.password = Some(Bytes::from(signature(SECRET, "GID_app")));
        connect(&mut b, legacy, t0);
        // DeviceCredential: a per-device key signs the client id.
        b.apply_registry(&Change::PutCredential(DeviceCredential {
            client_id: "GID_sensor@@@d2".into(),
            key_id: "DC.key".into(),
            secret: "DC.secret".into(),
            create_ms: 1,
            update_ms: 1,
        }));
        let mut dc = connect_packet("GID_sensor@@@d2", v, true);
        dc.username = MqttString::new(format!("DeviceCredential|DC.key|{INSTANCE}")).ok();
        dc.password = Some(Bytes::from(signature("DC.secret", "GID_sensor@@@d2")));
        connect(&mut b, dc.clone(), t0);

        let bad = |f: &dyn Fn(&mut Connect)| {
            let mut c = signed("GID_sensor@@@d3", v, true);
            f(&mut c);
            c
        };
        let user = |u: &str| MqttString::new(u.to_owned()).ok();
        let cases: Vec<(&str, Connect)> = vec![
            (
                "bad signature",
                bad(&|c| c.password = Some(Bytes::from("AAAA"))),
            ),
            (
                "unknown key",
                bad(&|c| c.username = user(&format!("Signature|nokey|{INSTANCE}"))),
            ),
            (
                "wrong instance",
                bad(&|c| c.username = user(&format!("Signature|{AK}|other"))),
            ),
            ("anonymous", bad(&|c| c.username = None)),
            ("unknown mode", bad(&|c| c.username = user("Magic|a|b"))),
            ("device key of another client", {
                let mut c = dc.clone();
                c.client_id = MqttString::new("GID_sensor@@@d3".to_owned()).expect("id");
                c.password = Some(Bytes::from(signature("DC.secret", "GID_sensor@@@d3")));
                c
            }),
            (
                "bad token",
                bad(&|c| {
                    c.username = user(&format!("Token|{AK}|{INSTANCE}"));
                    c.password = Some(Bytes::from("R|not-a-token"));
                }),
            ),
        ];
        let n = cases.len() as u64;
        for (what, c) in cases {
            assert_eq!(
                refused(&mut b, c, t0),
                ReasonCode::NotAuthorized,
                "{what} ({v:?})"
            );
        }
        assert_eq!(b.stats.connects_refused, n);
        assert_eq!(b.stats.signins_refused, n);
        let q = TraceQuery::Device {
            client_id: "GID_sensor@@@d3".into(),
            begin_ms: 0,
            end_ms: u64::MAX,
        };
        let traced = b.traces.query(&q, &b.naming(t0));
        assert_eq!(traced.len() as u64, n, "every refusal is traced");
        assert!(traced
            .iter()
            .all(|i| i.action == "close" && i.action_info == "not authorized"));
    }
}

#[test]
fn client_ids_must_be_group_at_device_of_a_known_group() {
    let t0 = Instant::now();
    for v in [V311, V5] {
        let mut b = aliyun_broker(t0);
        let long = format!("GID_sensor@@@{}", "d".repeat(52));
        for id in [
            "plain",
            "GID_nope@@@d",
            "GID_sensor@@@",
            &long,
            "GID_sensor@@@a b",
        ] {
            let code = refused(&mut b, signed(id, v, true), t0);
            assert_eq!(code, ReasonCode::ClientIdentifierNotValid, "{id:?} ({v:?})");
        }
        let ok = format!("GID_sensor@@@{}", "d".repeat(51));
        connect(&mut b, signed(&ok, v, true), t0);
    }
}

#[test]
fn a_token_gets_its_expiry_notice_five_minutes_ahead_then_an_invalid_notice_at_expiry() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let t = token(&["devices/#"], Actions::R, 10 * MIN, "t1");
    let mut c = connect(
        &mut b,
        with_tokens("GID_app@@@tok", V311, &format!("R|{t}")),
        t0,
    );
    b.tick(t0 + 4 * MIN);
    assert!(c.recv(&mut b).is_empty(), "6 minutes left: no notice yet");
    b.tick(t0 + 5 * MIN + Duration::from_secs(1));
    let got = c.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "$SYS/tokenExpireNotice");
    let expected = EPOCH_MS + 10 * 60_000;
    assert_eq!(
        json(&got[0]),
        serde_json::json!({"expireTime": expected, "type": "R"})
    );
    b.tick(t0 + 8 * MIN);
    assert!(c.recv(&mut b).is_empty(), "the notice is sent once");
    assert!(!c.closed);
    b.tick(t0 + 10 * MIN);
    let got = c.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "$SYS/tokenInvalidNotice");
    assert_eq!(json(&got[0]), serde_json::json!({"code": 2, "type": "R"}));
    assert!(c.closed, "an expired token's connection is closed");
    assert_eq!(b.stats.tokens_invalidated, 1);
}

#[test]
fn a_token_allows_only_its_resources_and_actions() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let r = token(&["devices/#"], Actions::R, 60 * MIN, "r");
    let w = token(&["alerts/+"], Actions::W, 60 * MIN, "w");
    let mut c = connect(
        &mut b,
        with_tokens("GID_app@@@a", V5, &format!("R|{r}|W|{w}")),
        t0,
    );
    let codes = suback(&mut c, &mut b, &["devices/x/+", "alerts/#"], t0);
    assert_eq!(
        codes,
        vec![ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError]
    );
    c.send(
        &mut b,
        publish("alerts/fire", "x", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    c.send(
        &mut b,
        publish("devices/x/t", "x", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    let acks = puback_codes(&mut c, &mut b);
    // Allowed (nobody subscribes: 0x10), then refused.
    assert_eq!(
        acks,
        vec![ReasonCode::NoMatchingSubscribers, ReasonCode::NotAuthorized]
    );
    // A 3.1.1 client has no negative PUBACK: told why, then closed.
    let mut old = connect(
        &mut b,
        with_tokens("GID_app@@@b", V311, &format!("R|{r}")),
        t0,
    );
    old.send(
        &mut b,
        publish("devices/x/t", "x", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    let got = old.publishes(&mut b);
    assert_eq!(got[0].topic.as_str(), "$SYS/tokenInvalidNotice");
    assert_eq!(
        json(&got[0]),
        serde_json::json!({"code": 5, "type": "W"}),
        "no W token"
    );
    assert!(old.closed);
    // RW covers both.
    let rw = token(&["devices/#"], Actions::RW, 60 * MIN, "rw");
    let mut both = connect(
        &mut b,
        with_tokens("GID_app@@@c", V5, &format!("RW|{rw}")),
        t0,
    );
    assert_eq!(
        suback(&mut both, &mut b, &["devices/#"], t0),
        vec![ReasonCode::GrantedQoS1]
    );
    both.send(
        &mut b,
        publish("devices/1", "x", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    assert!(both
        .recv(&mut b)
        .iter()
        .any(|p| matches!(p, Packet::PubAck(a) if a.reason_code == ReasonCode::Success)));
    // A token presented as a kind it does not grant refuses the CONNECT.
    let code = refused(
        &mut b,
        with_tokens("GID_app@@@d", V5, &format!("W|{r}")),
        t0,
    );
    assert_eq!(code, ReasonCode::NotAuthorized);
}

#[test]
fn upload_token_replaces_a_token_and_a_bad_upload_closes_the_connection() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let devices = token(&["devices/#"], Actions::R, 60 * MIN, "d");
    let alerts = token(&["alerts/#"], Actions::R, 60 * MIN, "a");
    let mut c = connect(
        &mut b,
        with_tokens("GID_app@@@up", V311, &format!("R|{devices}")),
        t0,
    );
    assert_eq!(
        suback(&mut c, &mut b, &["alerts/#"], t0),
        vec![ReasonCode::UnspecifiedError]
    );
    let body = serde_json::json!({"token": alerts, "type": "R"}).to_string();
    c.send(
        &mut b,
        publish("$SYS/uploadToken", &body, QoS::AtLeastOnce, Some(3)),
        t0,
    );
    assert!(matches!(c.recv(&mut b).as_slice(), [Packet::PubAck(_)]));
    assert_eq!(
        suback(&mut c, &mut b, &["alerts/#"], t0),
        vec![ReasonCode::GrantedQoS1]
    );
    // A token signed with another secret.
    let forged = ringmq_engine::core::aliyun::token::sign(
        &ringmq_engine::core::aliyun::token::peek(&alerts).expect("claims"),
        "not the secret",
    );
    let body = serde_json::json!({"token": forged, "type": "R"}).to_string();
    c.send(
        &mut b,
        publish("$SYS/uploadToken", &body, QoS::AtLeastOnce, Some(4)),
        t0,
    );
    let got = c.publishes(&mut b);
    assert_eq!(json(&got[0]), serde_json::json!({"code": 8, "type": "R"}));
    assert!(c.closed);
    let mut d = connect(
        &mut b,
        with_tokens("GID_app@@@up2", V311, &format!("R|{devices}")),
        t0,
    );
    d.send(
        &mut b,
        publish("$SYS/uploadToken", "{oops", QoS::AtMostOnce, None),
        t0,
    );
    assert_eq!(
        json(&d.publishes(&mut b)[0]),
        serde_json::json!({"code": 1, "type": "RW"})
    );
    assert!(d.closed);
}

#[test]
fn a_revoked_token_disconnects_its_holders_and_signs_in_no_more() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let t = token(&["devices/#"], Actions::RW, 60 * MIN, "gone");
    let keep = token(&["devices/#"], Actions::RW, 60 * MIN, "kept");
    let mut c = connect(
        &mut b,
        with_tokens("GID_app@@@r1", V5, &format!("RW|{t}")),
        t0,
    );
    let mut other = connect(
        &mut b,
        with_tokens("GID_app@@@r2", V5, &format!("RW|{keep}")),
        t0,
    );
    b.apply_registry(&Change::RevokeToken {
        id: "gone".into(),
        expire_ms: EPOCH_MS + 3_600_000,
    });
    let got = c.recv(&mut b);
    match got.as_slice() {
        [Packet::Publish(p), Packet::Disconnect(d)] => {
            assert_eq!(p.topic.as_str(), "$SYS/tokenInvalidNotice");
            assert_eq!(json(p), serde_json::json!({"code": 3, "type": "RW"}));
            assert_eq!(d.reason_code, ReasonCode::NotAuthorized);
        }
        other => panic!("expected the notice and DISCONNECT, got {other:?}"),
    }
    assert!(other.recv(&mut b).is_empty(), "other tokens are untouched");
    let again = with_tokens("GID_app@@@r3", V5, &format!("RW|{t}"));
    assert_eq!(refused(&mut b, again, t0), ReasonCode::NotAuthorized);
}

#[test]
fn a_bad_topic_is_never_delivered_and_gets_the_products_refusal() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut sub = connect(&mut b, signed("GID_app@@@sub", V311, true), t0);
    sub.subscribe(&mut b, "devices/#", QoS::AtLeastOnce, t0);
    // v5, QoS 1: PUBACK 0x90, still connected.
    let mut p5 = connect(&mut b, signed("GID_sensor@@@p5", V5, true), t0);
    for (i, topic) in ["nope/x", "devices/a.b", "devices/x/é"].iter().enumerate() {
        p5.send(
            &mut b,
            publish(topic, "bad", QoS::AtLeastOnce, Some(i as u16 + 1)),
            t0,
        );
        match p5.recv(&mut b).as_slice() {
            [Packet::PubAck(a)] => {
                assert_eq!(a.reason_code, ReasonCode::TopicNameInvalid, "{topic}")
            }
            other => panic!("{topic}: {other:?}"),
        }
    }
    assert!(!p5.closed);
    // v5, QoS 0: DISCONNECT 0x90.
    p5.send(&mut b, publish("nope/x", "bad", QoS::AtMostOnce, None), t0);
    match p5.recv(&mut b).as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::TopicNameInvalid),
        other => panic!("{other:?}"),
    }
    assert!(p5.closed);
    // 3.1.1: closed.
    let mut p3 = connect(&mut b, signed("GID_sensor@@@p3", V311, true), t0);
    p3.send(
        &mut b,
        publish("devices/a.b", "bad", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    assert!(p3.recv(&mut b).is_empty());
    assert!(p3.closed);
    assert!(
        sub.publishes(&mut b).is_empty(),
        "nothing refused is delivered"
    );
    assert_eq!(b.stats.publishes_refused, 5);
}

#[test]
fn a_payload_over_64_kib_closes_the_connection_and_is_not_delivered() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut sub = connect(&mut b, signed("GID_app@@@sub", V311, true), t0);
    sub.subscribe(&mut b, "devices/#", QoS::AtMostOnce, t0);
    let limit = "x".repeat(64 << 10);
    let mut p5 = connect(&mut b, signed("GID_sensor@@@p5", V5, true), t0);
    p5.send(
        &mut b,
        publish("devices/big", &limit, QoS::AtLeastOnce, Some(1)),
        t0,
    );
    assert_eq!(sub.publishes(&mut b).len(), 1, "64 KiB is allowed");
    let _ = p5.recv(&mut b);
    let over = format!("{limit}x");
    p5.send(
        &mut b,
        publish("devices/big", &over, QoS::AtLeastOnce, Some(2)),
        t0,
    );
    match p5.recv(&mut b).as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::PacketTooLarge),
        other => panic!("{other:?}"),
    }
    let mut p3 = connect(&mut b, signed("GID_sensor@@@p3", V311, true), t0);
    p3.send(
        &mut b,
        publish("devices/big", &over, QoS::AtMostOnce, None),
        t0,
    );
    assert!(p3.recv(&mut b).is_empty());
    assert!(p3.closed);
    assert!(sub.publishes(&mut b).is_empty());
}

#[test]
fn subscribe_refuses_bad_filters_one_by_one_and_caps_a_client_at_30() {
    let t0 = Instant::now();
    for v in [V311, V5] {
        let mut b = aliyun_broker(t0);
        let mut c = connect(&mut b, signed("GID_app@@@s", v, true), t0);
        let codes = suback(
            &mut c,
            &mut b,
            &[
                "devices/+/t",
                "#",
                "+/x",
                "nope/x",
                "devices/a.b",
                "GID_sensor_MQTT/+",
                "devices/p2p/",
                "GID_nope_MQTT/+",
            ],
            t0,
        );
        let bad = ReasonCode::UnspecifiedError;
        let ok = ReasonCode::GrantedQoS1;
        assert_eq!(codes, vec![ok, bad, bad, bad, bad, ok, ok, bad], "{v:?}");
        // Two stored so far; the P2P filter is not one.
        let filters: Vec<String> = (0..28).map(|i| format!("devices/{i}")).collect();
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        assert!(suback(&mut c, &mut b, &refs, t0).iter().all(|c| *c == ok));
        assert_eq!(
            suback(&mut c, &mut b, &["devices/more"], t0),
            vec![bad],
            "the 31st"
        );
        assert_eq!(
            suback(&mut c, &mut b, &["devices/1"], t0),
            vec![ok],
            "a resubscription is no new one"
        );
    }
}

#[test]
fn a_parent_topic_holds_100_wildcard_filters_across_the_instance() {
    let t0 = Instant::now();
    let mut a = aliyun_shard(0, 2, t0);
    let mut b = aliyun_shard(1, 2, t0);
    // 60 on shard 1 (two clients), announced to shard 0.
    for k in 0..2 {
        let mut c = connect(&mut b, signed(&format!("GID_app@@@b{k}"), V311, true), t0);
        let filters: Vec<String> = (0..30).map(|i| format!("devices/b{k}-{i}/+")).collect();
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        assert!(suback(&mut c, &mut b, &refs, t0)
            .iter()
            .all(|c| !c.is_error()));
    }
    for r in std::mem::take(&mut b.outbox[0]) {
        a.apply_remote(1, r, t0);
    }
    // 40 more on shard 0 reach the cap.
    let mut c = connect(&mut a, signed("GID_app@@@a0", V311, true), t0);
    let filters: Vec<String> = (0..30).map(|i| format!("devices/a-{i}/#")).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    assert!(suback(&mut c, &mut a, &refs, t0)
        .iter()
        .all(|c| !c.is_error()));
    let mut d = connect(&mut a, signed("GID_app@@@a1", V311, true), t0);
    let filters: Vec<String> = (0..10).map(|i| format!("devices/a1-{i}/#")).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    assert!(suback(&mut d, &mut a, &refs, t0)
        .iter()
        .all(|c| !c.is_error()));
    let codes = suback(
        &mut d,
        &mut a,
        &[
            "devices/new/+",
            "devices/b0-1/+",
            "alerts/+",
            "devices/plain",
        ],
        t0,
    );
    let (ok, bad) = (ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError);
    assert_eq!(
        codes,
        vec![bad, ok, ok, ok],
        "101st wildcard refused; an existing one, another parent, a plain filter are fine"
    );
}

#[test]
fn p2p_reaches_one_client_across_shards_and_offline_but_no_subscriber() {
    let t0 = Instant::now();
    let mut shards = [aliyun_shard(0, 2, t0), aliyun_shard(1, 2, t0)];
    let target = (0..)
        .map(|i| format!("GID_app@@@t{i}"))
        .find(|id| home_shard(id.as_bytes(), 2) == 1)
        .expect("an id on shard 1");
    let mut t = connect(&mut shards[1], signed(&target, V311, false), t0);
    let mut watcher = connect(&mut shards[1], signed("GID_app@@@w", V311, true), t0);
    watcher.subscribe(&mut shards[1], "devices/#", QoS::AtLeastOnce, t0);
    for r in std::mem::take(&mut shards[1].outbox[0]) {
        shards[0].apply_remote(1, r, t0);
    }
    let publisher = connect(&mut shards[0], signed("GID_sensor@@@p", V311, true), t0);
    let topic = format!("devices/p2p/{target}");
    publisher.send(
        &mut shards[0],
        publish(&topic, "for you", QoS::AtLeastOnce, Some(1)),
        t0,
    );
    let batch = std::mem::take(&mut shards[0].outbox[1]);
    assert_eq!(batch.len(), 1, "one P2P message to the target's shard");
    for r in batch {
        shards[1].apply_remote(0, r, t0);
    }
    let got = t.publishes(&mut shards[1]);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), got[0].qos),
        (topic.as_str(), QoS::AtLeastOnce)
    );
    let ack = ringmq_protocol::PubAck::new(got[0].packet_id.expect("QoS 1"));
    t.send(&mut shards[1], Packet::PubAck(ack), t0);
    assert!(
        watcher.publishes(&mut shards[1]).is_empty(),
        "no subscriber of devices/# gets P2P"
    );
    // Offline and persistent: a QoS 1 message waits for it; QoS 2 does not.
    shards[1].disconnected(t.id, t0);
    for (qos, body) in [(QoS::AtLeastOnce, "kept"), (QoS::ExactlyOnce, "not kept")] {
        publisher.send(&mut shards[0], publish(&topic, body, qos, Some(2)), t0);
        for r in std::mem::take(&mut shards[0].outbox[1]) {
            shards[1].apply_remote(0, r, t0);
        }
    }
    assert_eq!(shards[1].stats.dropped_offline_rule, 1);
    let mut back = connect(&mut shards[1], signed(&target, V311, false), t0);
    let got = back.publishes(&mut shards[1]);
    let bodies: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(bodies, vec![&b"kept"[..]]);
    // No session at all: dropped and counted.
    publisher.send(
        &mut shards[0],
        publish("devices/p2p/GID_app@@@nobody", "x", QoS::AtMostOnce, None),
        t0,
    );
    let home = home_shard(b"GID_app@@@nobody", 2);
    if home == 0 {
        assert_eq!(shards[0].stats.p2p_no_target, 1);
    } else {
        for r in std::mem::take(&mut shards[0].outbox[1]) {
            shards[1].apply_remote(0, r, t0);
        }
        assert_eq!(shards[1].stats.p2p_no_target, 1);
    }
}

#[test]
fn online_offline_events_follow_each_connection_in_order() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut w = connect(&mut b, signed("GID_app@@@watch", V311, true), t0);
    w.subscribe(&mut b, "GID_sensor_MQTT/+", QoS::AtLeastOnce, t0);
    let peer = "10.0.0.7:50000".parse().ok();
    let id = b
        .connect_from(signed("GID_sensor@@@d1", V5, true), false, peer, t0)
        .expect("accepted")
        .id;
    let mut d1 = Client::attach(id, V5);
    let _ = d1.recv(&mut b);
    d1.send(
        &mut b,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
        t0,
    );
    b.disconnected(d1.id, t0);
    // Take-over: the old channel is cleaned before the new one connects.
    let old = connect(&mut b, signed("GID_sensor@@@d2", V311, true), t0);
    let _new = connect(&mut b, signed("GID_sensor@@@d2", V311, true), t0);
    b.disconnected(old.id, t0);
    // Keep-alive timeout.
    let mut sleepy = signed("GID_sensor@@@d3", V311, true);
    sleepy.keep_alive = 10;
    let s = connect(&mut b, sleepy, t0);
    b.tick(t0 + Duration::from_secs(16));
    b.disconnected(s.id, t0 + Duration::from_secs(16));
    let events: Vec<Value> = w.publishes(&mut b).iter().map(json).collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["clientId"].as_str().unwrap_or("").into(),
                e["eventType"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let expect = [
        ("GID_sensor@@@d1", "connect"),
        ("GID_sensor@@@d1", "disconnect"),
        ("GID_sensor@@@d1", "tcpclean"),
        ("GID_sensor@@@d2", "connect"),
        ("GID_sensor@@@d2", "tcpclean"),
        ("GID_sensor@@@d2", "connect"),
        ("GID_sensor@@@d3", "connect"),
        ("GID_sensor@@@d3", "tcpclean"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    assert_eq!(seen, expect);
    assert_eq!(events[0]["clientIp"], "10.0.0.7:50000");
    assert_eq!(events[0]["time"], EPOCH_MS);
    assert_eq!(
        events[0]["channelId"], events[2]["channelId"],
        "one channel per connection"
    );
    assert_ne!(events[3]["channelId"], events[5]["channelId"]);
    assert_eq!(
        events[3]["channelId"], events[4]["channelId"],
        "the take-over cleans the old channel"
    );
    assert_eq!(events[0]["channelId"].as_str().map(str::len), Some(32));
}

#[test]
fn only_qos_1_copies_of_qos_1_subscriptions_wait_for_an_offline_session() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut one = connect(&mut b, signed("GID_app@@@q1", V311, false), t0);
    one.subscribe(&mut b, "devices/#", QoS::AtLeastOnce, t0);
    let mut two = connect(&mut b, signed("GID_app@@@q2", V311, false), t0);
    two.subscribe(&mut b, "devices/#", QoS::ExactlyOnce, t0);
    b.disconnected(one.id, t0);
    b.disconnected(two.id, t0);
    let p = connect(&mut b, signed("GID_sensor@@@p", V311, true), t0);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        p.send(
            &mut b,
            publish("devices/x", &format!("q{i}"), qos, Some(i as u16 + 1)),
            t0,
        );
    }
    let mut one = connect(&mut b, signed("GID_app@@@q1", V311, false), t0);
    let mut two = connect(&mut b, signed("GID_app@@@q2", V311, false), t0);
    let got: Vec<Bytes> = one
        .publishes(&mut b)
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        got,
        vec![Bytes::from("q1"), Bytes::from("q2")],
        "QoS 1 copies (q2 downgraded to the QoS 1 subscription)"
    );
    assert!(
        two.publishes(&mut b).is_empty(),
        "a QoS 2 subscription keeps nothing offline"
    );
}

#[test]
fn traces_record_connects_publishes_deliveries_and_closes() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut sub = connect(&mut b, signed("GID_app@@@sub", V311, false), t0);
    sub.subscribe(&mut b, "devices/#", QoS::AtLeastOnce, t0);
    let p = connect(&mut b, signed("GID_sensor@@@pub", V311, true), t0);
    let t1 = t0 + Duration::from_millis(5);
    p.send(
        &mut b,
        publish("devices/a", "live", QoS::AtLeastOnce, Some(1)),
        t1,
    );
    b.disconnected(sub.id, t1);
    let t2 = t0 + Duration::from_millis(10);
    p.send(
        &mut b,
        publish("devices/a", "later", QoS::AtLeastOnce, Some(2)),
        t2,
    );
    let _back = connect(&mut b, signed("GID_app@@@sub", V311, false), t2);
    let naming = b.naming(t2);
    let mut all = |q| b.traces.query(&q, &naming);
    let mine = all(TraceQuery::MessageOfClient {
        client_id: "GID_app@@@sub".into(),
        begin_ms: EPOCH_MS,
        end_ms: EPOCH_MS + 1_000,
    });
    let page = MessageOfClientTrace::new(
        mine,
        Paging {
            current_page: 1,
            page_size: 10,
            reverse: false,
        },
    );
    let actions: Vec<(&str, &str)> = page
        .message_of_client_list
        .iter()
        .map(|m| (m.action.as_str(), m.action_info.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("sub", "Push To Mqtt Client"),
            ("push_offline", "Push Offline Msg To Mqtt Client")
        ]
    );
    assert_eq!(page.total, 2);
    let msg = page.message_of_client_list[1].msg_id.clone();
    assert_eq!(msg.len(), 32);
    let published = all(TraceQuery::Publish {
        msg_id: ringmq_engine::core::message::parse_msg_id(&msg).expect("a MsgId"),
        begin_ms: 0,
        end_ms: u64::MAX,
    });
    assert_eq!(published.len(), 1);
    assert_eq!(
        (
            published[0].action.as_str(),
            published[0].client_id.as_str()
        ),
        ("pub_mqtt", "GID_sensor@@@pub")
    );
    assert_eq!(
        published[0].time, "2026-01-01 08:00:00.010",
        "China time, like the product"
    );
    let device = all(TraceQuery::Device {
        client_id: "GID_app@@@sub".into(),
        begin_ms: 0,
        end_ms: u64::MAX,
    });
    let page = DeviceTrace::new(
        device,
        Paging {
            current_page: 1,
            page_size: 2,
            reverse: true,
        },
    );
    let newest: Vec<(&str, &str)> = page
        .device_info_list
        .iter()
        .map(|d| (d.action.as_str(), d.action_info.as_str()))
        .collect();
    assert_eq!(
        newest,
        vec![("connect", "accepted"), ("close", "closed by client")]
    );
    assert_eq!(page.total, 3);
}

#[test]
fn p2p_test_ids_sit_where_the_python_tests_say() {
    // tests/python/test_aliyun.py: CROSS crosses shards, SAME does not.
    let home = |id: &str| home_shard(id.as_bytes(), 2);
    assert_eq!(
        (
            home("GID_sensor@@@p2p-sender-1"),
            home("GID_app@@@p2p-target-1")
        ),
        (1, 0)
    );
    assert_eq!(
        (
            home("GID_sensor@@@p2p-sender-2"),
            home("GID_app@@@p2p-target-2")
        ),
        (1, 1)
    );
}

#[test]
fn a_will_on_a_p2p_topic_goes_to_its_target_alone() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut target = connect(&mut b, signed("GID_app@@@heir", V311, true), t0);
    let mut snoop = connect(&mut b, signed("GID_app@@@snoop", V311, true), t0);
    snoop.subscribe(&mut b, "devices/#", QoS::AtMostOnce, t0);
    let mut c = signed("GID_sensor@@@mortal", V311, true);
    c.will = Some(will("devices/p2p/GID_app@@@heir", None));
    let mortal = connect(&mut b, c, t0);
    b.disconnected(mortal.id, t0);
    let got = target.publishes(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "devices/p2p/GID_app@@@heir");
    assert!(snoop.publishes(&mut b).is_empty());
}

#[test]
fn an_upload_from_a_signature_client_changes_nothing() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let mut c = connect(&mut b, signed("GID_app@@@sig", V5, true), t0);
    let r = token(&["devices/#"], Actions::R, 60 * MIN, "r");
    let body = serde_json::json!({"token": r, "type": "R"}).to_string();
    c.send(
        &mut b,
        publish("$SYS/uploadToken", &body, QoS::AtLeastOnce, Some(1)),
        t0,
    );
    c.send(
        &mut b,
        publish("alerts/x", "still allowed", QoS::AtLeastOnce, Some(2)),
        t0,
    );
    let acks = puback_codes(&mut c, &mut b);
    // The upload is taken; the publish is allowed (and matched nobody).
    assert_eq!(
        acks,
        vec![ReasonCode::Success, ReasonCode::NoMatchingSubscribers]
    );
    assert!(!c.closed);
}

#[test]
fn an_expired_tokens_connection_is_told_once_while_it_closes() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    let t = token(&["devices/#"], Actions::RW, 2 * MIN, "short");
    let mut c = connect(
        &mut b,
        with_tokens("GID_app@@@once", V5, &format!("RW|{t}")),
        t0,
    );
    b.tick(t0 + Duration::from_secs(1));
    b.tick(t0 + 2 * MIN);
    b.tick(t0 + 2 * MIN + Duration::from_secs(1));
    let notices: Vec<String> = c
        .publishes(&mut b)
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect();
    assert_eq!(
        notices,
        vec!["$SYS/tokenExpireNotice", "$SYS/tokenInvalidNotice"]
    );
    assert_eq!(b.stats.tokens_invalidated, 1);
}

#[test]
fn status_rules_put_their_groups_events_in_the_outflow_and_no_others() {
    let t0 = Instant::now();
    let mut b = aliyun_broker(t0);
    if let Some(profile) = b.aliyun.as_mut() {
        profile.status_groups.insert("GID_sensor".into());
    }
    let d = connect(&mut b, signed("GID_sensor@@@d1", V311, true), t0);
    let other = connect(&mut b, signed("GID_app@@@a1", V311, true), t0);
    b.disconnected(d.id, t0);
    b.disconnected(other.id, t0);
    let out: Vec<(String, Value)> = std::mem::take(&mut b.outflow)
        .into_iter()
        .map(|o| {
            let body = serde_json::from_slice(&o.payload).expect("JSON");
            (o.subject, body)
        })
        .collect();
    let subjects: Vec<&str> = out.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        ["GID_sensor_MQTT.connect", "GID_sensor_MQTT.tcpclean"]
    );
    assert_eq!(out[0].1["clientId"], "GID_sensor@@@d1");
    assert_eq!(out[1].1["eventType"], "tcpclean");
    assert_eq!(out[0].1["channelId"], out[1].1["channelId"]);
    // The MQTT topic gets the same events (notify_online_offline is on).
    assert_eq!(b.stats.events_published, 4);
}
