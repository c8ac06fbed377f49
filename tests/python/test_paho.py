"""End-to-end behaviour of the ringmq broker, observed through paho-mqtt 2.x
(and a raw socket where paho cannot send what a test needs).

Every test runs against a broker with two shards, so a publisher and its
subscribers generally live on different shards. Topics and client ids are
unique per test; every wait is bounded.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import (
    HOST,
    Broker,
    ClientFactory,
    _stop_and_check,
    _str,
    _varint,
    connect_packet,
    prop_u16,
    prop_u32,
    raw_connect,
    read_packet,
    ringmq_bin,
)

V311, V5 = 4, 5
BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])


# --------------------------------------------------------------------------
# publish / subscribe


@BOTH
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_publish_is_delivered_to_every_subscriber_at_min_of_publish_and_subscribe_qos(
    clients, topic, proto, pub_qos
):
    subs = []
    for sub_qos in (0, 1, 2):
        s = clients.new(f"sub{sub_qos}", protocol=proto)
        s.sub(f"{topic}/+", sub_qos)
        subs.append((s, sub_qos))
    pub = clients.new("pub", protocol=proto)

    assert pub.publish(f"{topic}/x", b"hello", qos=pub_qos) == 0

    for s, sub_qos in subs:
        m = s.expect_one()
        assert (m.topic, m.payload, m.qos, m.retain) == (
            f"{topic}/x", b"hello", min(pub_qos, sub_qos), False,
        )
    for s, _ in subs:
        s.expect_none(0.3)  # exactly once, whatever the QoS


@BOTH
def test_qos1_messages_from_one_publisher_arrive_in_publish_order(clients, topic, proto):
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/seq", 1)
    pub = clients.new("pub", protocol=proto)
    n = 300  # more than the broker's inflight_count_max (128)
    infos = [pub.c.publish(f"{topic}/seq", str(i), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(5)
        assert info.is_published()
    got = [int(m.payload) for m in sub.expect(n)]
    assert got == list(range(n))


def test_large_payload_is_delivered_intact(clients, topic):
    sub = clients.new("sub")
    sub.sub(f"{topic}/big", 1)
    pub = clients.new("pub")
    payload = bytes(range(256)) * 1024  # 256 KiB
    assert pub.publish(f"{topic}/big", payload, qos=1) == 0
    assert sub.expect_one().payload == payload


def test_wildcard_filters_match_per_mqtt_topic_rules(clients, topic):
    """'#' matches the parent level and everything below, '+' exactly one
    (possibly empty) level; each delivery names the subscriptions it matched."""
    sub = clients.new("sub")
    filters = {1: f"{topic}/#", 2: f"{topic}/+", 3: f"{topic}/+/c", 4: f"{topic}/a/#", 5: f"{topic}/a/b"}
    for sid, f in filters.items():
        sub.sub(f, 0, sub_id=sid)
    expected = {
        topic: {1},
        f"{topic}/": {1, 2},
        f"{topic}/a": {1, 2, 4},
        f"{topic}/a/b": {1, 4, 5},
        f"{topic}/x/c": {1, 3},
        f"{topic}/a/c": {1, 3, 4},
        f"{topic}/a/b/c": {1, 4},
    }
    pub = clients.new("pub")
    for t in expected:
        pub.publish(t, t.encode(), qos=1)
    msgs = sub.expect(len(expected)) + sub.drain()
    seen: dict[str, set[int]] = {}
    for m in msgs:
        assert m.payload == m.topic.encode()
        seen.setdefault(m.topic, set()).update(m.prop("SubscriptionIdentifier", []))
    assert seen == expected


def test_wildcard_plus_does_not_match_across_levels(clients, topic):
    sub = clients.new("sub", protocol=V311)
    sub.sub(f"{topic}/+", 0)
    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/a/b", b"deep", qos=1)
    pub.publish(f"{topic}/a", b"one", qos=1)
    assert sub.expect_one().payload == b"one"
    sub.expect_none()


def test_overlapping_subscriptions_deliver_one_copy_at_highest_qos_v311(clients, topic):
    sub = clients.new("sub", protocol=V311)
    sub.sub(f"{topic}/#", 1)
    sub.sub(f"{topic}/a", 2)
    sub.sub(f"{topic}/+", 0)
    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/a", b"x", qos=2)
    m = sub.expect_one()
    assert (m.topic, m.qos) == (f"{topic}/a", 2)
    sub.expect_none()


def test_dollar_topics_are_not_matched_by_leading_wildcards(clients, uid):
    """[MQTT-4.7.2-1]: '#' and '+/...' must not match topics starting with '$'."""
    dollar = f"$e2e/{uid}/x"
    pub = clients.new("pub")
    pub.publish(f"$e2e/{uid}/retained", b"r", qos=1, retain=True)
    wild = clients.new("wild")
    wild.sub("#", 0)
    wild.sub(f"+/{uid}/x", 0)
    explicit = clients.new("explicit")
    explicit.sub(f"$e2e/{uid}/x", 0)
    pub.publish(dollar, b"d", qos=1)

    assert explicit.expect_one().topic == dollar
    leaked = [m.topic for m in wild.drain() if m.topic.startswith("$")]
    assert leaked == []  # neither the retained nor the live '$' message
    pub.publish(f"$e2e/{uid}/retained", b"", qos=1, retain=True)


def test_resubscribing_replaces_qos_and_unsubscribe_stops_delivery(clients, topic):
    sub = clients.new("sub")
    sub.sub(f"{topic}/t", 0)
    sub.sub(f"{topic}/t", 2)  # same filter: replaces, does not add
    pub = clients.new("pub")
    pub.publish(f"{topic}/t", b"1", qos=2)
    m = sub.expect_one()
    assert m.qos == 2
    sub.expect_none(0.3)

    assert sub.unsubscribe(f"{topic}/t") == [0x00]
    assert sub.unsubscribe(f"{topic}/t") == [0x11]  # No subscription existed
    pub.publish(f"{topic}/t", b"2", qos=1)
    sub.expect_none()


def test_unsubscribe_v311_stops_delivery(clients, topic):
    sub = clients.new("sub", protocol=V311)
    sub.sub(f"{topic}/t", 1)
    sub.unsubscribe(f"{topic}/t")
    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/t", b"x", qos=1)
    sub.expect_none()


# --------------------------------------------------------------------------
# retained messages


@BOTH
def test_retained_message_is_delivered_to_later_subscriber_with_retain_flag(clients, topic, proto):
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/r", 1)
    m = sub.expect_one()
    assert (m.topic, m.payload, m.retain, m.qos) == (f"{topic}/r", b"kept", True, 1)
    sub.expect_none(0.3)
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


@BOTH
def test_retained_message_is_replaced_by_newer_retained_publish(clients, topic, proto):
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/r", b"old", qos=1, retain=True)
    pub.publish(f"{topic}/r", b"new", qos=1, retain=True)
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/#", 0)
    m = sub.expect_one()
    assert (m.payload, m.retain) == (b"new", True)
    sub.expect_none(0.3)
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


@BOTH
def test_empty_retained_publish_clears_the_retained_message(clients, topic, proto):
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/r", b"gone soon", qos=1, retain=True)
    live = clients.new("live", protocol=proto)
    live.sub(f"{topic}/r", 1)
    assert live.expect_one().payload == b"gone soon"

    pub.publish(f"{topic}/r", b"", qos=1, retain=True)
    # the clearing publish is still forwarded to existing subscribers
    m = live.expect_one()
    assert m.payload == b""

    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/r", 1)
    sub.expect_none()


def test_retained_messages_of_all_matching_topics_are_sent_on_wildcard_subscribe(clients, topic):
    pub = clients.new("pub")
    for t in ("a", "b", "c/d"):
        pub.publish(f"{topic}/{t}", t.encode(), qos=1, retain=True)
    sub = clients.new("sub")
    sub.sub(f"{topic}/#", 1)
    got = {m.topic: m.payload for m in sub.expect(3)}
    assert got == {f"{topic}/a": b"a", f"{topic}/b": b"b", f"{topic}/c/d": b"c/d"}
    sub.expect_none(0.3)
    for t in ("a", "b", "c/d"):
        pub.publish(f"{topic}/{t}", b"", qos=1, retain=True)


def test_retained_message_keeps_its_v5_properties(clients, topic):
    pub = clients.new("pub")
    pub.publish(f"{topic}/r", b"{}", qos=1, retain=True,
                props={"UserProperty": [("src", "e2e")], "ContentType": "application/json",
                       "ResponseTopic": f"{topic}/resp"})
    sub = clients.new("sub")
    sub.sub(f"{topic}/r", 1)
    m = sub.expect_one()
    assert m.retain
    assert m.prop("UserProperty") == [("src", "e2e")]
    assert m.prop("ContentType") == "application/json"
    assert m.prop("ResponseTopic") == f"{topic}/resp"
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


def test_retained_message_is_delivered_at_min_of_stored_and_subscription_qos(clients, topic):
    pub = clients.new("pub")
    pub.publish(f"{topic}/r1", b"q1", qos=1, retain=True)
    pub.publish(f"{topic}/r2", b"q2", qos=2, retain=True)
    sub0 = clients.new("sub0")
    sub0.sub(f"{topic}/+", 0)
    assert sorted((m.payload, m.qos) for m in sub0.expect(2)) == [(b"q1", 0), (b"q2", 0)]
    sub2 = clients.new("sub2")
    sub2.sub(f"{topic}/+", 2)
    assert sorted((m.payload, m.qos) for m in sub2.expect(2)) == [(b"q1", 1), (b"q2", 2)]
    pub.publish(f"{topic}/r1", b"", qos=1, retain=True)
    pub.publish(f"{topic}/r2", b"", qos=1, retain=True)


@BOTH
def test_retained_publish_to_existing_subscriber_arrives_without_retain_flag(clients, topic, proto):
    """[MQTT-3.3.1-9] (3.1.1) / Retain As Published = 0 (v5)."""
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/r", 1)
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/r", b"live", qos=1, retain=True)
    m = sub.expect_one()
    assert (m.payload, m.retain) == (b"live", False)
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


def test_retain_as_published_keeps_retain_flag_on_live_delivery(clients, topic):
    rap = clients.new("rap")
    rap.sub(f"{topic}/r", 1, retain_as_published=True)
    plain = clients.new("plain")
    plain.sub(f"{topic}/r", 1)
    pub = clients.new("pub")
    pub.publish(f"{topic}/r", b"r", qos=1, retain=True)
    pub.publish(f"{topic}/r", b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.expect(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.expect(2)] == [(b"r", False), (b"n", False)]
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


def test_retain_handling_2_sends_no_retained_messages_on_subscribe(clients, topic):
    pub = clients.new("pub")
    pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    sub = clients.new("sub")
    sub.sub(f"{topic}/r", 1, retain_handling=2)
    sub.expect_none()
    # live messages still flow
    pub.publish(f"{topic}/r", b"live", qos=1)
    assert sub.expect_one().payload == b"live"
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


def test_retain_handling_1_sends_retained_only_when_subscription_is_new(clients, topic):
    pub = clients.new("pub")
    pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    sub = clients.new("sub")
    sub.sub(f"{topic}/r", 1, retain_handling=1)
    assert sub.expect_one().payload == b"kept"
    sub.sub(f"{topic}/r", 1, retain_handling=1)  # exists already
    sub.expect_none()
    sub.sub(f"{topic}/r", 1, retain_handling=0)  # 0: sent on every SUBSCRIBE
    m = sub.expect_one()
    assert (m.payload, m.retain) == (b"kept", True)
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


# --------------------------------------------------------------------------
# wills


@BOTH
def test_will_is_published_when_connection_closes_without_disconnect(clients, topic, proto):
    watcher = clients.new("watcher", protocol=proto)
    watcher.sub(f"{topic}/will", 1)
    dying = clients.new(
        "dying", protocol=proto,
        will={"topic": f"{topic}/will", "payload": b"gone", "qos": 1},
    )
    dying.abort()
    m = watcher.expect_one()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{topic}/will", b"gone", 1, False)
    watcher.expect_none(0.3)


@BOTH
def test_will_is_not_published_after_normal_disconnect(clients, topic, proto):
    watcher = clients.new("watcher", protocol=proto)
    watcher.sub(f"{topic}/will", 1)
    leaving = clients.new(
        "leaving", protocol=proto, will={"topic": f"{topic}/will", "payload": b"gone", "qos": 1},
    )
    leaving.disconnect()
    watcher.expect_none(0.8)


def test_will_is_published_on_disconnect_with_reason_0x04(clients, topic):
    watcher = clients.new("watcher")
    watcher.sub(f"{topic}/will", 1)
    leaving = clients.new(
        "leaving",
        will={"topic": f"{topic}/will", "payload": b"asked for", "qos": 1,
              "props": {"UserProperty": [("why", "0x04")]}},
    )
    leaving.disconnect(reason=0x04)
    m = watcher.expect_one()
    assert m.payload == b"asked for"
    assert m.prop("UserProperty") == [("why", "0x04")]


def test_retained_will_becomes_the_retained_message(clients, topic):
    dying = clients.new(
        "dying", protocol=V311,
        will={"topic": f"{topic}/status", "payload": b"offline", "qos": 1, "retain": True},
    )
    dying.abort()
    time.sleep(0.3)
    later = clients.new("later", protocol=V311)
    later.sub(f"{topic}/status", 1)
    m = later.expect_one()
    assert (m.payload, m.retain) == (b"offline", True)
    later.publish(f"{topic}/status", b"", qos=1, retain=True)


def test_will_delay_interval_defers_the_will(clients, topic):
    watcher = clients.new("watcher")
    watcher.sub(f"{topic}/will", 1)
    dying = clients.new(
        "dying", session_expiry=30,
        will={"topic": f"{topic}/will", "payload": b"late", "qos": 1,
              "props": {"WillDelayInterval": 1}},
    )
    t0 = time.monotonic()
    dying.abort()
    watcher.expect_none(0.6)
    m = watcher.expect_one(timeout=3)
    assert m.payload == b"late"
    assert m.received - t0 >= 0.9


def test_will_is_not_sent_if_client_reconnects_within_will_delay(clients, topic):
    """[MQTT-3.1.3-9]"""
    watcher = clients.new("watcher")
    watcher.sub(f"{topic}/will", 1)
    will = {"topic": f"{topic}/will", "payload": b"late", "qos": 1, "props": {"WillDelayInterval": 1}}
    dying = clients.new("dying", session_expiry=30, will=will)
    dying.abort()
    back = clients.new("back", client_id=dying.client_id, clean=False, session_expiry=30)
    assert back.session_present
    watcher.expect_none(1.8)
    back.disconnect()


def test_will_is_sent_when_session_expires_before_will_delay(clients, topic):
    watcher = clients.new("watcher")
    watcher.sub(f"{topic}/will", 1)
    dying = clients.new(
        "dying", session_expiry=1,
        will={"topic": f"{topic}/will", "payload": b"session over", "qos": 1,
              "props": {"WillDelayInterval": 30}},
    )
    dying.abort()
    assert watcher.expect_one(timeout=4).payload == b"session over"


def test_silent_client_is_disconnected_after_1_5_keep_alive_and_its_will_sent(clients, topic, broker):
    watcher = clients.new("watcher", protocol=V311)
    watcher.sub(f"{topic}/will", 0)
    sock, rc, _ = raw_connect(
        broker.port, f"{watcher.client_id}-silent", keepalive=1,
        will=(f"{topic}/will", b"timed out", 0),
    )
    try:
        assert rc == 0
        t0 = time.monotonic()
        assert read_packet(sock, timeout=5) is None, "broker sent a packet instead of closing"
        elapsed = time.monotonic() - t0
        assert 1.0 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s for keep alive 1s"
    finally:
        sock.close()
    assert watcher.expect_one().payload == b"timed out"


def test_pingreq_keeps_a_short_keep_alive_connection_open(raw, uid):
    r = raw(4)
    assert r.connect(uid, keepalive=1) == (0, False)
    for _ in range(5):
        time.sleep(0.5)
        r.send(bytes([0xC0, 0x00]))  # PINGREQ
        assert r.recv(timeout=2) == (0xD0, b"")  # PINGRESP
    # 2.5 s later, still connected and served
    assert r.subscribe(1, f"e2e/{uid}", 0) == 0


def test_unsupported_protocol_level_is_refused(broker, uid):
    """[MQTT-3.1.2-2]: CONNACK 0x01 (v5: 0x84 allowed), then the connection is closed."""
    body = _str("MQTT") + bytes([9, 0x02]) + b"\x00\x3c" + _str(uid)
    with socket.create_connection((HOST, broker.port), timeout=3) as s:
        s.sendall(bytes([0x10]) + _varint(len(body)) + body)
        pkt = read_packet(s, timeout=3)
        if pkt is not None:
            assert pkt[0] == 0x20 and pkt[1][1] in (0x01, 0x84), pkt
            pkt = read_packet(s, timeout=3)
        assert pkt is None


def test_connect_with_reserved_flag_set_is_closed_without_connack(broker, uid):
    """[MQTT-3.1.2-3]: the reserved CONNECT flag must be 0, else malformed."""
    body = _str("MQTT") + bytes([4, 0x03]) + b"\x00\x3c" + _str(uid)
    with socket.create_connection((HOST, broker.port), timeout=3) as s:
        s.sendall(bytes([0x10]) + _varint(len(body)) + body)
        assert read_packet(s, timeout=3) is None


# --------------------------------------------------------------------------
# sessions


def test_v311_persistent_session_keeps_subscription_and_queues_qos1_qos2_while_offline(clients, topic):
    sub = clients.new("sub", protocol=V311, clean=False)
    assert sub.session_present is False
    sub.sub(f"{topic}/q", 2)
    sub.disconnect()

    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/q", b"one", qos=1)
    pub.publish(f"{topic}/q", b"two", qos=2)

    back = clients.new("back", client_id=sub.client_id, protocol=V311, clean=False)
    assert back.session_present is True
    msgs = back.expect(2)
    assert [(m.payload, m.qos) for m in msgs] == [(b"one", 1), (b"two", 2)]
    back.expect_none(0.3)
    # the subscription itself survived too
    pub.publish(f"{topic}/q", b"three", qos=1)
    assert back.expect_one().payload == b"three"
    back.disconnect()
    clients.new("wipe", client_id=sub.client_id, protocol=V311, clean=True).disconnect()


def test_v311_clean_session_discards_previous_session(clients, topic):
    sub = clients.new("sub", protocol=V311, clean=False)
    sub.sub(f"{topic}/q", 1)
    sub.disconnect()
    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/q", b"queued", qos=1)

    fresh = clients.new("fresh", client_id=sub.client_id, protocol=V311, clean=True)
    assert fresh.session_present is False
    fresh.expect_none()
    pub.publish(f"{topic}/q", b"after", qos=1)
    fresh.expect_none()


def test_v5_session_expiry_keeps_session_and_queues_messages_while_offline(clients, topic):
    sub = clients.new("sub", session_expiry=60)
    assert sub.session_present is False
    sub.sub(f"{topic}/q", 2)
    sub.disconnect()

    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"one", qos=1)
    pub.publish(f"{topic}/q", b"two", qos=2)

    back = clients.new("back", client_id=sub.client_id, clean=False, session_expiry=60)
    assert back.session_present is True
    assert [(m.payload, m.qos) for m in back.expect(2)] == [(b"one", 1), (b"two", 2)]
    back.disconnect(props={"SessionExpiryInterval": 0})


def test_v5_queued_messages_keep_properties_and_subscription_identifier(clients, topic):
    sub = clients.new("sub", session_expiry=60)
    sub.sub(f"{topic}/q", 1, sub_id=5)
    sub.disconnect()
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"m", qos=1,
                props={"UserProperty": [("k", "v")], "CorrelationData": b"c", "ContentType": "t"})
    back = clients.new("back", client_id=sub.client_id, clean=False, session_expiry=60)
    m = back.expect_one()
    assert m.prop("SubscriptionIdentifier") == [5]
    assert m.prop("UserProperty") == [("k", "v")]
    assert (m.prop("CorrelationData"), m.prop("ContentType")) == (b"c", "t")
    back.disconnect(props={"SessionExpiryInterval": 0})


def test_v5_session_expiry_zero_discards_session_at_disconnect(clients, topic):
    sub = clients.new("sub")  # no Session Expiry Interval: 0
    sub.sub(f"{topic}/q", 1)
    sub.disconnect()
    back = clients.new("back", client_id=sub.client_id, clean=False)
    assert back.session_present is False
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"x", qos=1)
    back.expect_none()


def test_v5_session_is_discarded_after_its_expiry_interval(clients, topic):
    sub = clients.new("sub", session_expiry=1)
    sub.sub(f"{topic}/q", 1)
    sub.disconnect()
    time.sleep(2.2)
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"x", qos=1)
    back = clients.new("back", client_id=sub.client_id, clean=False, session_expiry=1)
    assert back.session_present is False
    back.expect_none()


def test_v5_clean_start_discards_existing_session(clients, topic):
    sub = clients.new("sub", session_expiry=60)
    sub.sub(f"{topic}/q", 1)
    sub.disconnect()
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"queued", qos=1)
    fresh = clients.new("fresh", client_id=sub.client_id, clean=True)
    assert fresh.session_present is False
    fresh.expect_none()


def test_v5_session_takeover_sends_disconnect_0x8e_to_old_connection(clients, topic):
    old = clients.new("old", session_expiry=60)
    old.sub(f"{topic}/q", 1)
    new = clients.new("new", client_id=old.client_id, clean=False, session_expiry=60)
    assert old.wait_disconnected() == 0x8E
    assert new.session_present is True
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"to new", qos=1)
    assert new.expect_one().payload == b"to new"
    old.expect_none(0.2)
    new.disconnect(props={"SessionExpiryInterval": 0})


def test_v311_session_takeover_closes_old_connection_and_keeps_session(clients, topic):
    old = clients.new("old", protocol=V311, clean=False)
    old.sub(f"{topic}/q", 1)
    new = clients.new("new", client_id=old.client_id, protocol=V311, clean=False)
    old.wait_disconnected()
    assert new.session_present is True
    pub = clients.new("pub", protocol=V311)
    pub.publish(f"{topic}/q", b"to new", qos=1)
    assert new.expect_one().payload == b"to new"
    new.disconnect()
    clients.new("wipe", client_id=old.client_id, protocol=V311).disconnect()


def test_v5_empty_client_id_gets_an_assigned_client_identifier(clients, topic):
    a = clients.new("a", client_id="")
    b = clients.new("b", client_id="")
    ida = a.connack_props.AssignedClientIdentifier
    idb = b.connack_props.AssignedClientIdentifier
    assert ida and idb and ida != idb
    # the assigned id is usable and works like any client
    a.sub(f"{topic}/x", 1)
    b.publish(f"{topic}/x", b"hi", qos=1)
    assert a.expect_one().payload == b"hi"


def test_v311_empty_client_id_is_accepted_with_clean_session(broker):
    sock, rc, present = raw_connect(broker.port, "", version=4, clean=True)
    sock.close()
    assert (rc, present) == (0, False)


def test_v311_empty_client_id_without_clean_session_is_refused_with_code_2(broker):
    """[MQTT-3.1.3-8]: CONNACK 0x02 Identifier rejected, then close."""
    sock, rc, _ = raw_connect(broker.port, "", version=4, clean=False)
    try:
        assert rc == 0x02
        assert read_packet(sock, timeout=3) is None
    finally:
        sock.close()


def test_v5_assigned_client_identifier_can_resume_its_session(clients, topic):
    a = clients.new("a", client_id="", session_expiry=60)
    assigned = a.connack_props.AssignedClientIdentifier
    a.sub(f"{topic}/q", 1)
    a.disconnect()
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"kept for you", qos=1)
    back = clients.new("back", client_id=assigned, clean=False, session_expiry=60)
    assert back.session_present is True
    assert back.expect_one().payload == b"kept for you"
    back.disconnect(props={"SessionExpiryInterval": 0})


@BOTH
def test_unacknowledged_qos1_is_redelivered_with_dup_and_same_packet_id_on_reconnect(
    clients, raw, uid, topic, proto
):
    """[MQTT-4.4.0-1], [MQTT-3.3.1-1]"""
    props = prop_u32(0x11, 60) if proto == V5 else b""  # Session Expiry Interval
    r = raw(proto)
    assert r.connect(uid, clean=False, props=props) == (0, False)
    assert r.subscribe(1, f"{topic}/q", 1) == 1
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/q", b"unacked", qos=1)
    first = r.recv_publish()
    assert (first["payload"], first["qos"], first["dup"]) == (b"unacked", 1, False)
    r.close()  # no PUBACK

    r2 = raw(proto)
    assert r2.connect(uid, clean=False, props=props) == (0, True)
    again = r2.recv_publish()
    assert (again["payload"], again["pid"], again["dup"]) == (b"unacked", first["pid"], True)
    r2.ack(0x40, again["pid"])
    r2.recv_none()
    r2.close()
    r3 = raw(proto)
    r3.connect(uid, clean=True)  # drop the session


@BOTH
def test_qos2_flow_resumes_with_pubrel_after_reconnect(clients, raw, uid, topic, proto):
    """After PUBREC the broker owns the release: on reconnect it resends
    PUBREL, not the PUBLISH [MQTT-4.4.0-1]."""
    props = prop_u32(0x11, 60) if proto == V5 else b""
    r = raw(proto)
    r.connect(uid, clean=False, props=props)
    assert r.subscribe(1, f"{topic}/q", 2) == 2
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/q", b"twice?", qos=2)
    p = r.recv_publish()
    assert p["qos"] == 2
    r.ack(0x50, p["pid"])  # PUBREC
    r.recv_ack(0x62, p["pid"])  # PUBREL
    r.close()  # no PUBCOMP

    r2 = raw(proto)
    assert r2.connect(uid, clean=False, props=props) == (0, True)
    r2.recv_ack(0x62, p["pid"])
    r2.ack(0x70, p["pid"])
    r2.recv_none()
    r2.close()
    raw(proto).connect(uid, clean=True)


@BOTH
def test_inbound_qos2_retransmission_is_delivered_exactly_once(clients, raw, uid, topic, proto):
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/q", 2)
    r = raw(proto)
    r.connect(uid)
    r.publish(f"{topic}/q", b"once", qos=2, pid=7)
    assert r.recv_ack(0x50, 7) == 0
    r.publish(f"{topic}/q", b"once", qos=2, pid=7, dup=True)  # PUBREC was "lost"
    assert r.recv_ack(0x50, 7) == 0
    r.ack(0x62, 7)
    assert r.recv_ack(0x70, 7) == 0
    assert sub.expect_one().payload == b"once"
    sub.expect_none()


def test_inbound_qos2_can_be_released_after_publisher_reconnects(clients, raw, uid, topic):
    sub = clients.new("sub", protocol=V311)
    sub.sub(f"{topic}/q", 2)
    r = raw(4)
    r.connect(uid, clean=False)
    r.publish(f"{topic}/q", b"once", qos=2, pid=9)
    r.recv_ack(0x50, 9)
    r.close()
    r2 = raw(4)
    assert r2.connect(uid, clean=False) == (0, True)
    r2.ack(0x62, 9)
    r2.recv_ack(0x70, 9)
    assert [m.payload for m in sub.expect(1) + sub.drain()] == [b"once"]
    r2.close()
    raw(4).connect(uid, clean=True)


def test_v5_broker_respects_client_receive_maximum(clients, raw, uid, topic):
    """[MQTT-3.3.4-9]: no more unacknowledged QoS>0 PUBLISHes than Receive Maximum."""
    r = raw(5)
    r.connect(uid, props=prop_u16(0x21, 2))
    r.subscribe(1, f"{topic}/q", 1)
    pub = clients.new("pub")
    for i in range(5):
        pub.publish(f"{topic}/q", str(i).encode(), qos=1)
    first = [r.recv_publish(), r.recv_publish()]
    r.recv_none()
    got = [p["payload"] for p in first]
    for p in first:
        r.ack(0x40, p["pid"])
    rest = [r.recv_publish() for _ in range(2)]
    r.recv_none(0.3)
    for p in rest:
        r.ack(0x40, p["pid"])
    last = r.recv_publish()
    r.ack(0x40, last["pid"])
    got += [p["payload"] for p in rest] + [last["payload"]]
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_v5_broker_does_not_send_packets_above_client_maximum_packet_size(clients, topic):
    """[MQTT-3.1.2-24]/[MQTT-3.1.2-25]: too large messages are discarded for that client."""
    small = clients.new("small", connect_props={"MaximumPacketSize": 256})
    small.sub(f"{topic}/q", 1)
    big = clients.new("big")
    big.sub(f"{topic}/q", 1)
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"x" * 1000, qos=1)
    pub.publish(f"{topic}/q", b"fits", qos=1)
    assert [m.payload for m in big.expect(2)] == [b"x" * 1000, b"fits"]
    assert small.expect_one().payload == b"fits"
    assert not small.disconnected.is_set()


def test_v5_keep_alive_above_broker_maximum_is_answered_with_server_keep_alive(clients):
    c = clients.new("c", keepalive=7200)
    assert c.connack_props.ServerKeepAlive == 3600


@BOTH
def test_inflight_qos1_is_redelivered_to_the_connection_that_takes_the_session_over(
    clients, raw, uid, topic, proto
):
    props = prop_u32(0x11, 60) if proto == V5 else b""
    old = raw(proto)
    old.connect(uid, clean=False, props=props)
    old.subscribe(1, f"{topic}/q", 1)
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/q", b"in flight", qos=1)
    first = old.recv_publish()  # not acknowledged

    new = raw(proto)
    assert new.connect(uid, clean=False, props=props) == (0, True)
    again = new.recv_publish()
    assert (again["payload"], again["pid"], again["dup"]) == (b"in flight", first["pid"], True)
    new.ack(0x40, again["pid"])
    # the old connection is closed (v5: after DISCONNECT 0x8E)
    pkt = read_packet(old.sock, timeout=3)
    if proto == V5 and pkt is not None:
        assert pkt[0] == 0xE0 and pkt[1][0] == 0x8E, pkt
        pkt = read_packet(old.sock, timeout=3)
    assert pkt is None
    new.close()
    raw(proto).connect(uid, clean=True)


@BOTH
def test_packet_larger_than_packet_bytes_max_closes_the_connection(raw, uid, proto):
    """A PUBLISH announcing 2 MiB (limit 1 MiB) is refused from its fixed
    header: v5 gets DISCONNECT 0x95 Packet too large, then the close."""
    r = raw(proto)
    r.connect(uid)
    r.send(bytes([0x30]) + bytes([0x80, 0x80, 0x80, 0x01]) + b"\x00\x01a" + b"x" * 1000)
    pkt = read_packet(r.sock, timeout=3)
    if proto == V5:
        assert pkt is not None and pkt[0] == 0xE0 and pkt[1][0] == 0x95, pkt
        pkt = read_packet(r.sock, timeout=3)
    assert pkt is None


@BOTH
def test_topic_containing_nul_character_closes_the_connection(clients, raw, uid, topic, proto):
    """[MQTT-1.5.4-2] (v5 [MQTT-1.5.4-2] too): U+0000 in a UTF-8 string is malformed."""
    sub = clients.new("sub", protocol=proto)
    sub.sub(f"{topic}/#", 0)
    r = raw(proto)
    r.connect(uid)
    r.publish(f"{topic}/a\x00b", b"bad", qos=0)
    pkt = read_packet(r.sock, timeout=3)
    if proto == V5 and pkt is not None:
        assert pkt[0] == 0xE0 and pkt[1][0] >= 0x80, pkt
        pkt = read_packet(r.sock, timeout=3)
    assert pkt is None
    sub.expect_none(0.3)


@BOTH
def test_second_connect_on_a_connection_closes_it(raw, uid, proto):
    """[MQTT-3.1.0-2]: a second CONNECT is a protocol violation."""
    r = raw(proto)
    r.connect(uid)
    r.send(connect_packet(uid, version=proto))
    try:
        pkt = read_packet(r.sock, timeout=3)
    except TimeoutError:
        raise AssertionError("connection still open 3 s after a second CONNECT") from None
    if proto == V5 and pkt is not None:
        assert pkt == (0xE0, pkt[1]) and pkt[1][0] == 0x82, pkt  # DISCONNECT Protocol Error
        pkt = read_packet(r.sock, timeout=3)
    assert pkt is None


# --------------------------------------------------------------------------
# MQTT 5 features


def test_v5_publish_properties_are_passed_through_to_subscriber(clients, topic):
    sub = clients.new("sub")
    sub.sub(f"{topic}/req", 1)
    pub = clients.new("pub")
    props = {
        "UserProperty": [("a", "1"), ("b", "2"), ("a", "3")],
        "ResponseTopic": f"{topic}/reply",
        "CorrelationData": b"\x00\x01corr",
        "ContentType": "application/json",
        "PayloadFormatIndicator": 1,
    }
    pub.publish(f"{topic}/req", b'{"q": 1}', qos=1, props=props)
    m = sub.expect_one()
    assert m.payload == b'{"q": 1}'
    assert m.prop("UserProperty") == [("a", "1"), ("b", "2"), ("a", "3")]  # order kept
    assert m.prop("ResponseTopic") == f"{topic}/reply"
    assert m.prop("CorrelationData") == b"\x00\x01corr"
    assert m.prop("ContentType") == "application/json"
    assert m.prop("PayloadFormatIndicator") == 1


def test_v5_request_response_via_response_topic(clients, topic):
    responder = clients.new("responder")
    responder.sub(f"{topic}/service", 1)
    requester = clients.new("requester")
    requester.sub(f"{topic}/reply", 1)
    requester.publish(f"{topic}/service", b"ping", qos=1,
                      props={"ResponseTopic": f"{topic}/reply", "CorrelationData": b"42"})
    req = responder.expect_one()
    responder.publish(req.prop("ResponseTopic"), b"pong", qos=1,
                      props={"CorrelationData": req.prop("CorrelationData")})
    resp = requester.expect_one()
    assert (resp.payload, resp.prop("CorrelationData")) == (b"pong", b"42")


def test_v5_subscription_identifiers_are_sent_with_matching_messages(clients, topic):
    sub = clients.new("sub")
    sub.sub(f"{topic}/#", 1, sub_id=7)
    sub.sub(f"{topic}/+/x", 1, sub_id=9)
    sub.sub(f"{topic}/plain", 1)  # no identifier
    pub = clients.new("pub")

    pub.publish(f"{topic}/only7", b"a", qos=1)
    m = sub.expect_one()
    assert m.prop("SubscriptionIdentifier") == [7]

    pub.publish(f"{topic}/y/x", b"b", qos=1)
    ids = set()
    for m in sub.expect(1) + sub.drain(0.4):
        assert m.payload == b"b"
        ids.update(m.prop("SubscriptionIdentifier", []))
    assert ids == {7, 9}

    sub.unsubscribe(f"{topic}/#")
    pub.publish(f"{topic}/plain", b"c", qos=1)
    m = sub.expect_one()
    assert m.payload == b"c"
    assert m.prop("SubscriptionIdentifier") is None


def test_v5_no_local_subscription_does_not_receive_own_messages(clients, topic):
    me = clients.new("me")
    me.sub(f"{topic}/chat", 1, no_local=True)
    me.sub(f"{topic}/echo", 1)  # without No Local: own messages come back
    other = clients.new("other")
    other.sub(f"{topic}/chat", 1)

    me.publish(f"{topic}/chat", b"mine", qos=1)
    assert other.expect_one().payload == b"mine"
    me.expect_none()

    me.publish(f"{topic}/echo", b"echo", qos=1)
    assert me.expect_one().payload == b"echo"

    other.publish(f"{topic}/chat", b"theirs", qos=1)
    assert me.expect_one().payload == b"theirs"


def test_v5_message_expiry_drops_expired_messages_and_decrements_remaining_interval(clients, topic):
    sub = clients.new("sub", session_expiry=60)
    sub.sub(f"{topic}/q", 1)
    sub.disconnect()
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"short", qos=1, props={"MessageExpiryInterval": 1})
    pub.publish(f"{topic}/q", b"long", qos=1, props={"MessageExpiryInterval": 30})
    pub.publish(f"{topic}/q", b"forever", qos=1)
    pub.publish(f"{topic}/ret-short", b"r", qos=1, retain=True, props={"MessageExpiryInterval": 1})
    pub.publish(f"{topic}/ret-long", b"r", qos=1, retain=True, props={"MessageExpiryInterval": 30})
    time.sleep(2.2)

    back = clients.new("back", client_id=sub.client_id, clean=False, session_expiry=60)
    msgs = back.expect(2)
    back.expect_none(0.3)
    assert [m.payload for m in msgs] == [b"long", b"forever"]
    remaining = msgs[0].prop("MessageExpiryInterval")
    assert remaining is not None and 25 <= remaining <= 28, remaining
    assert msgs[1].prop("MessageExpiryInterval") is None
    back.disconnect(props={"SessionExpiryInterval": 0})

    late = clients.new("late")
    late.sub(f"{topic}/+", 1)
    m = late.expect_one()
    assert m.topic == f"{topic}/ret-long"
    assert 25 <= m.prop("MessageExpiryInterval") <= 28
    late.expect_none(0.3)
    pub.publish(f"{topic}/ret-long", b"", qos=1, retain=True)


def test_v5_topic_alias_from_client_is_resolved_before_routing(clients, topic):
    sub = clients.new("sub")
    sub.sub(f"{topic}/#", 1)
    pub = clients.new("pub")
    maximum = pub.connack_props.TopicAliasMaximum
    assert maximum >= 2

    pub.publish(f"{topic}/one", b"1", qos=1, props={"TopicAlias": 1})
    pub.publish("", b"2", qos=1, props={"TopicAlias": 1})
    pub.publish(f"{topic}/two", b"3", qos=0, props={"TopicAlias": 2})
    pub.publish(f"{topic}/three", b"4", qos=1, props={"TopicAlias": 1})  # remap
    pub.publish("", b"5", qos=1, props={"TopicAlias": 1})
    pub.publish("", b"6", qos=1, props={"TopicAlias": 2})
    got = [(m.topic, m.payload) for m in sub.expect(6)]
    assert got == [
        (f"{topic}/one", b"1"), (f"{topic}/one", b"2"), (f"{topic}/two", b"3"),
        (f"{topic}/three", b"4"), (f"{topic}/three", b"5"), (f"{topic}/two", b"6"),
    ]


def test_v5_connack_advertises_configured_limits(clients):
    c = clients.new("c")
    p = c.connack_props
    assert p.ReceiveMaximum == 128
    assert p.TopicAliasMaximum == 64
    assert p.MaximumPacketSize == 1048576


def test_v5_topic_aliases_do_not_survive_a_reconnect(clients, topic):
    """[MQTT-3.3.2-7]: alias mappings last for one network connection only."""
    sub = clients.new("sub")
    sub.sub(f"{topic}/#", 1)
    pub = clients.new("pub", session_expiry=60)
    pub.publish(f"{topic}/a", b"1", qos=1, props={"TopicAlias": 1})
    pub.disconnect()
    again = clients.new("again", client_id=pub.client_id, clean=False, session_expiry=60)
    again.c.publish("", b"2", qos=0, properties=_props(PacketTypes.PUBLISH, TopicAlias=1))
    assert again.wait_disconnected() == 0x82
    assert [m.payload for m in sub.expect(1) + sub.drain(0.3)] == [b"1"]
    clients.new("wipe", client_id=pub.client_id).disconnect()


def test_v5_disconnect_can_shorten_session_expiry_to_zero(clients, topic):
    c = clients.new("c", session_expiry=60)
    c.sub(f"{topic}/q", 1)
    c.disconnect(props={"SessionExpiryInterval": 0})
    back = clients.new("back", client_id=c.client_id, clean=False, session_expiry=60)
    assert back.session_present is False
    back.disconnect(props={"SessionExpiryInterval": 0})


def test_v5_topic_alias_above_maximum_is_a_protocol_error_0x94(clients, topic):
    pub = clients.new("pub")
    maximum = pub.connack_props.TopicAliasMaximum
    pub.c.publish(f"{topic}/x", b"x", qos=0,
                  properties=_props(PacketTypes.PUBLISH, TopicAlias=maximum + 1))
    assert pub.wait_disconnected() == 0x94


def test_v5_unknown_topic_alias_is_a_protocol_error(clients, topic):
    pub = clients.new("pub")
    pub.c.publish("", b"x", qos=0, properties=_props(PacketTypes.PUBLISH, TopicAlias=3))
    assert pub.wait_disconnected() == 0x82


def _props(kind, **kw) -> Properties:
    p = Properties(kind)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_v5_subscribe_with_several_filters_gets_one_reason_code_each(clients, topic):
    sub = clients.new("sub")
    got = {}

    def on_subscribe(client, userdata, mid, codes, props):
        got["codes"] = [c.value for c in codes]

    sub.c.on_subscribe = on_subscribe
    sub.c.subscribe([
        (f"{topic}/a", SubscribeOptions(qos=0)),
        (f"{topic}/b", SubscribeOptions(qos=1)),
        (f"{topic}/c/#", SubscribeOptions(qos=2)),
    ])
    deadline = time.monotonic() + 5
    while "codes" not in got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got.get("codes") == [0, 1, 2]


# --------------------------------------------------------------------------
# authentication and authorization (a second broker with a config file)

ACL = """\
# rules before the first user line apply to every client
topic read public/+
pattern readwrite clients/%c/+

user alice
topic readwrite alice/+
topic write public/+

user bob
topic read alice/+
topic readwrite bob/#
"""


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory):
    work = tmp_path_factory.mktemp("ringmq-auth")
    passwd = work / "passwd"
    for user, pw in (("alice", "alice-pw"), ("bob", "bob-pw")):
        r = subprocess.run(
            [ringmq_bin(), "passwd", str(passwd), user],
            input=f"{pw}\n".encode(), capture_output=True, timeout=30,
        )
        assert r.returncode == 0, r.stderr
    assert passwd.read_text().count("$argon2id$") == 2
    acl = work / "acl"
    acl.write_text(ACL)
    config = f"""\
[limits]
packet_bytes_max = 1048576
keep_alive_secs_max = 3600
inflight_count_max = 128
session_queue_messages_max = 10000
topic_alias_max = 64
[auth]
password_file = "{passwd}"
acl_file = "{acl}"
allow_anonymous = false
"""
    b = Broker(work, config=config).start()
    yield b
    _stop_and_check(b)


@pytest.fixture
def auth_clients(auth_broker, uid):
    f = ClientFactory(auth_broker.port, uid)
    yield f
    f.close_all()


@BOTH
def test_auth_correct_password_is_accepted(auth_clients, proto):
    c = auth_clients.new("alice", protocol=proto, username="alice", password="alice-pw")
    assert c.connack_rc == 0


def test_auth_wrong_password_is_refused_with_0x86_v5(auth_clients):
    c = auth_clients.new("alice", username="alice", password="nope", connect=False)
    c.connect(expect_success=False)
    assert c.connack_rc == 0x86
    c.wait_disconnected()


def test_auth_unknown_user_is_refused_with_0x86_v5(auth_clients):
    c = auth_clients.new("mallory", username="mallory", password="x", connect=False)
    c.connect(expect_success=False)
    assert c.connack_rc == 0x86


def test_auth_wrong_password_is_refused_with_code_4_v311(auth_broker, uid):
    sock, rc, _ = raw_connect(auth_broker.port, uid, version=4, username="alice", password="nope")
    try:
        assert rc == 0x04
        assert read_packet(sock, timeout=3) is None
    finally:
        sock.close()


def test_auth_anonymous_client_is_refused_when_anonymous_not_allowed(auth_clients):
    c = auth_clients.new("anon", connect=False)
    c.connect(expect_success=False)
    assert c.connack_rc in (0x86, 0x87)


def test_acl_denied_publish_gets_puback_0x87_and_is_not_delivered(auth_clients, uid):
    alice = auth_clients.new("alice", username="alice", password="alice-pw")
    alice.sub(f"alice/{uid}", 1)
    bob = auth_clients.new("bob", username="bob", password="bob-pw")
    bob.sub("alice/+", 1)

    assert bob.publish(f"alice/{uid}", b"forged", qos=1) == 0x87
    alice.expect_none()
    bob.expect_none(0.1)

    # the allowed direction works
    assert alice.publish(f"alice/{uid}", b"real", qos=1) == 0
    assert bob.expect_one().payload == b"real"


def test_acl_denied_publish_v311_is_not_delivered(auth_clients, uid):
    alice = auth_clients.new("alice", protocol=V311, username="alice", password="alice-pw")
    alice.sub(f"alice/{uid}", 1)
    bob = auth_clients.new("bob", protocol=V311, username="bob", password="bob-pw")
    try:
        # [MQTT-3.3.5-2]: acknowledged normally, or the connection closed
        bob.publish(f"alice/{uid}", b"forged", qos=1, timeout=3)
    except AssertionError:
        assert bob.disconnected.is_set()
    alice.expect_none()


def test_acl_denied_retained_publish_is_not_stored(auth_clients, uid):
    bob = auth_clients.new("bob", username="bob", password="bob-pw")
    assert bob.publish(f"alice/{uid}", b"forged", qos=1, retain=True) == 0x87
    alice = auth_clients.new("alice", username="alice", password="alice-pw")
    alice.sub(f"alice/{uid}", 1)
    alice.expect_none()


def test_acl_will_to_a_topic_the_client_may_not_publish_to_is_not_delivered(auth_clients, uid):
    bob = auth_clients.new("bob", username="bob", password="bob-pw")
    bob_topic = f"clients/{bob.client_id}/in"  # readable by bob only
    bob.sub(bob_topic, 1)
    alice = auth_clients.new(
        "alice", username="alice", password="alice-pw", connect=False,
        will={"topic": bob_topic, "payload": b"forged will", "qos": 1},
    )
    alice.connect(expect_success=False)
    assert alice.connack_rc == 0x87, "a Will needs the same permission as a PUBLISH"
    bob.expect_none(0.8)


@BOTH
def test_acl_denied_subscribe_gets_failure_code(auth_clients, proto, uid):
    bob = auth_clients.new("bob", protocol=proto, username="bob", password="bob-pw")
    assert bob.subscribe("secret/x", 1) == (0x87 if proto == V5 else 0x80)
    # a filter reaching beyond a read rule is refused too
    assert bob.subscribe("public/#", 1) == (0x87 if proto == V5 else 0x80)
    assert bob.subscribe(f"alice/{uid}", 1) == 1
    assert bob.subscribe("public/+", 0) == 0


def test_acl_rules_before_first_user_apply_to_everyone(auth_clients, uid):
    bob = auth_clients.new("bob", username="bob", password="bob-pw")
    bob.sub("public/+", 1)
    alice = auth_clients.new("alice", username="alice", password="alice-pw")
    assert alice.publish(f"public/{uid}", b"news", qos=1) == 0
    assert bob.expect_one().payload == b"news"
    assert bob.publish(f"public/{uid}", b"no", qos=1) == 0x87  # read-only for bob


def test_acl_pattern_substitutes_client_id(auth_clients, uid):
    alice = auth_clients.new("alice", username="alice", password="alice-pw")
    me = alice.client_id
    alice.sub(f"clients/{me}/in", 1)
    assert alice.subscribe(f"clients/{uid}-other/in", 1) == 0x87
    assert alice.publish(f"clients/{me}/in", b"self", qos=1) == 0
    assert alice.expect_one().payload == b"self"
    assert alice.publish(f"clients/{uid}-other/in", b"x", qos=1) == 0x87


def test_acl_rule_with_multilevel_wildcard_allows_deeper_topics(auth_clients, uid):
    """`topic readwrite bob/#` must allow bob/<anything>/..."""
    bob = auth_clients.new("bob", username="bob", password="bob-pw")
    assert bob.subscribe("bob/#", 1) == 1
    assert bob.publish(f"bob/{uid}/deep/topic", b"d", qos=1) == 0
    assert bob.expect_one().topic == f"bob/{uid}/deep/topic"
