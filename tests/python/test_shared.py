"""Shared subscriptions (`$share/<ShareName>/<filter>`, MQTT 5.0 §4.8.2, also
accepted from 3.1.1 clients), observed through paho-mqtt 2.x and a raw
socket where a test must leave messages unacknowledged or see the exact
bytes of a refusal.

The broker runs two shards and a client lives on the home shard of its
client id, so the members of a group are placed on chosen shards with
`id_on_shard` (which mirrors the broker's `home_shard`). Topics and client
ids are unique per test; every wait is bounded.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import (
    QUIET,
    TIMEOUT,
    ClientFactory,
    MqttClient,
    Msg,
    RawClient,
    _packet,
    _str,
    _varint,
    read_packet,
)

V311, V5 = 4, 5
BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])


# --------------------------------------------------------------------------
# helpers

_M64 = (1 << 64) - 1
_MULTIPLE = 6364136223846793005
_PI2 = (0x452821E638D01377, 0xBE5466CF34E90C6C, 0xC0AC29B7C97C50DD, 0x3F84D5B5B5470917)
_HOME_SEEDS = (0x7269_6E67, 0x6D71_2D68, 0x6F6D_652D, 0x7368_6172)


def _folded_multiply(s: int, by: int) -> int:
    r = s * by
    return (r & _M64) ^ (r >> 64)


def home_shard(client_id: str, shards: int = 2) -> int:
    """The shard a client id lives on: engine/src/core/connect.rs `home_shard`,
    i.e. ahash 0.8 (portable fallback hasher, as built for a plain x86_64
    target) with the broker's fixed seeds, hashing the id as a `&[u8]`
    (length prefix, then the bytes), modulo the shard count."""
    data = client_id.encode()
    k0, k1, k2, k3 = (seed ^ pi for seed, pi in zip(_HOME_SEEDS, _PI2))
    buffer, pad = k1, k0

    def le(b: bytes) -> int:
        return int.from_bytes(b, "little")

    def large_update(a: int, b: int) -> None:
        nonlocal buffer
        x = ((buffer + pad) & _M64) ^ _folded_multiply(a ^ k2, b ^ k3)
        buffer = ((x << 23) | (x >> 41)) & _M64

    buffer = _folded_multiply(len(data) ^ buffer, _MULTIPLE)  # write_usize(len)
    buffer = ((buffer + len(data)) * _MULTIPLE) & _M64  # write(bytes)
    if len(data) > 16:
        large_update(le(data[-16:-8]), le(data[-8:]))
        while len(data) > 16:
            large_update(le(data[:8]), le(data[8:16]))
            data = data[16:]
    elif len(data) > 8:
        large_update(le(data[:8]), le(data[-8:]))
    elif len(data) >= 4:
        large_update(le(data[:4]), le(data[-4:]))
    elif len(data) >= 2:
        large_update(le(data[:2]), data[-1])
    elif data:
        large_update(data[0], data[0])
    else:
        large_update(0, 0)
    rot = buffer & 63
    h = _folded_multiply(buffer, pad)
    h = ((h << rot) | (h >> (64 - rot))) & _M64 if rot else h
    return h % shards


def id_on_shard(prefix: str, shard: int) -> str:
    """A client id whose home is `shard` of 2 (as engine/tests/support does)."""
    return next(
        cid for cid in (f"{prefix}-{i}" for i in itertools.count()) if home_shard(cid) == shard
    )


def member(clients: ClientFactory, name: str, shard: int, **kw) -> MqttClient:
    """A connected client that lives on `shard`."""
    return clients.new(name, client_id=id_on_shard(f"{clients.prefix}-{name}", shard), **kw)


def receive_all(members: list[MqttClient], n: int, timeout: float = TIMEOUT) -> list[list[bytes]]:
    """The payloads each member receives until together they have `n`, plus
    whatever else arrives within QUIET (so duplicates show)."""
    got: list[list[Msg]] = [[] for _ in members]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < n:
        if time.monotonic() > deadline:
            counts = {m.client_id: len(g) for m, g in zip(members, got)}
            raise AssertionError(f"members got {sum(counts.values())} of {n} within {timeout}s: {counts}")
        for m, g in zip(members, got):
            g += m.drain(0.01)
    time.sleep(QUIET)
    for m, g in zip(members, got):
        g += m.drain(0.01)
    return [[msg.payload for msg in g] for g in got]


def payloads(n: int) -> list[bytes]:
    return [str(i).encode() for i in range(n)]


def publish_all(pub: MqttClient, topic: str, n: int, qos: int = 1) -> None:
    for p in payloads(n):
        assert pub.publish(topic, p, qos=qos) == 0


def recv_publishes(r: RawClient, quiet: float = QUIET) -> list[dict]:
    """Every PUBLISH the raw client receives until the line is quiet; none
    is acknowledged."""
    out = []
    while True:
        try:
            pkt = read_packet(r.sock, timeout=quiet)
        except TimeoutError:
            return out
        assert pkt is not None, "connection closed"
        assert pkt[0] >> 4 == 3, f"expected PUBLISH, got {pkt[0]:#x} {pkt[1]!r}"
        first, body = pkt
        qos = (first >> 1) & 3
        pos = 2 + struct.unpack("!H", body[:2])[0] + (2 if qos else 0)  # topic, packet id
        if r.version == V5:  # skip the properties
            plen, shift = 0, 0
            while True:
                b = body[pos]
                pos += 1
                plen |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            pos += plen
        out.append({"qos": qos, "payload": body[pos:]})


# --------------------------------------------------------------------------
# distribution


def test_each_group_gets_every_message_once_and_plain_subscriber_gets_all(clients, topic):
    """[MQTT §4.8.2]: one copy per matching group, shared among its members;
    a non-shared subscription on the same topic is unaffected."""
    g1 = [member(clients, "g1a", 0), member(clients, "g1b", 1)]
    g2 = [member(clients, "g2a", 1), member(clients, "g2b", 0)]
    for m in g1:
        m.sub(f"$share/one/{topic}/t", 1)
    for m in g2:
        m.sub(f"$share/two/{topic}/+", 1)
    plain = clients.new("plain")
    plain.sub(f"{topic}/t", 1)
    pub = clients.new("pub")
    n = 20

    publish_all(pub, f"{topic}/t", n)

    groups = receive_all(g1 + g2, 2 * n)
    for name, got in (("one", groups[0] + groups[1]), ("two", groups[2] + groups[3])):
        assert sorted(got, key=int) == payloads(n), f"group {name}"
    assert [m.payload for m in plain.expect(n)] == payloads(n)
    plain.expect_none(0.1)


def test_messages_are_spread_over_all_members_on_both_shards(clients, topic):
    members = [member(clients, "m0", 0), member(clients, "m1", 1), member(clients, "m2", 0)]
    for m in members:
        m.sub(f"$share/workers/{topic}/jobs", 1)
    pub = clients.new("pub")
    n = 30

    publish_all(pub, f"{topic}/jobs", n)

    got = receive_all(members, n)
    for m, mine in zip(members, got):
        assert mine, f"{m.client_id} got none of the {n} messages"
        assert len(set(mine)) == len(mine), f"{m.client_id} got duplicates: {mine}"
    assert sorted(itertools.chain(*got), key=int) == payloads(n)


def test_v311_clients_can_share_a_subscription(clients, topic):
    members = [member(clients, "a", 0, protocol=V311), member(clients, "b", 1, protocol=V311)]
    for m in members:
        assert m.subscribe(f"$share/old/{topic}/#", 1) == 1
    pub = clients.new("pub", protocol=V311)
    n = 10

    publish_all(pub, f"{topic}/x", n)

    got = receive_all(members, n)
    assert all(got), got
    assert sorted(got[0] + got[1], key=int) == payloads(n)


def test_shared_message_is_delivered_at_min_of_publish_and_granted_qos(clients, topic):
    """The granted QoS of a shared subscription caps delivery like any other."""
    m = member(clients, "m", 1)
    m.sub(f"$share/g/{topic}/q", 1)
    pub = clients.new("pub")
    pub.publish(f"{topic}/q", b"two", qos=2)
    pub.publish(f"{topic}/q", b"zero", qos=0)
    assert [(x.payload, x.qos) for x in m.expect(2)] == [(b"two", 1), (b"zero", 0)]


# --------------------------------------------------------------------------
# a member leaves with messages in flight

@pytest.mark.parametrize("ending", ["socket_closed", "disconnect"])
@pytest.mark.parametrize(
    "survivor_shard",
    [0, 1],
    ids=["same_shard", "other_shard"],
)
def test_unacknowledged_messages_of_a_leaving_member_go_to_another_member(
    clients, raw, topic, survivor_shard, ending
):
    """[MQTT §4.8.2]: the QoS 1 messages a member received but did not
    acknowledge are sent to another member once its connection ends."""
    leaver = raw(V5)
    assert leaver.connect(id_on_shard(f"{clients.prefix}-leaver", 0)) == (0, False)
    assert leaver.subscribe(1, f"$share/g/{topic}/q", 1) == 1
    survivor = member(clients, "survivor", survivor_shard)
    survivor.sub(f"$share/g/{topic}/q", 1)
    pub = clients.new("pub")
    n = 10

    publish_all(pub, f"{topic}/q", n)

    unacked = recv_publishes(leaver)  # never acknowledged
    assert unacked and all(p["qos"] == 1 for p in unacked), unacked
    held = [p["payload"] for p in unacked]
    own = [m.payload for m in survivor.expect(n - len(held))]
    assert sorted(held + own, key=int) == payloads(n)  # one member each so far

    if ending == "disconnect":
        leaver.send(bytes([0xE0, 0x00]))  # DISCONNECT, Normal disconnection
    else:
        leaver.sock.shutdown(socket.SHUT_RDWR)
    leaver.close()

    again = [m.payload for m in survivor.expect(len(held), timeout=3)]
    survivor.expect_none(0.3)
    assert sorted(again, key=int) == sorted(held, key=int)


# --------------------------------------------------------------------------
# retained messages


@BOTH
def test_retained_message_is_not_sent_on_shared_subscribe_but_is_on_plain_subscribe(
    clients, topic, proto
):
    """[MQTT §4.8.2]: retained messages are not sent to the Session when it
    establishes a new Shared Subscription."""
    pub = clients.new("pub", protocol=proto)
    pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    shared = member(clients, "shared", 0, protocol=proto)
    shared.sub(f"$share/g/{topic}/r", 1)
    shared.expect_none()
    plain = clients.new("plain", protocol=proto)
    plain.sub(f"{topic}/r", 1)
    m = plain.expect_one()
    assert (m.payload, m.retain) == (b"kept", True)

    # the shared subscription is live nonetheless
    pub.publish(f"{topic}/r", b"live", qos=1)
    m = shared.expect_one()
    assert (m.payload, m.retain) == (b"live", False)
    assert plain.expect_one().payload == b"live"
    pub.publish(f"{topic}/r", b"", qos=1, retain=True)


# --------------------------------------------------------------------------
# SUBSCRIBE


@BOTH
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_suback_grants_requested_qos_for_shared_filters(clients, topic, proto, qos):
    c = clients.new("c", protocol=proto)
    assert c.subscribe(f"$share/g/{topic}/a", qos) == qos
    assert c.subscribe(f"$share/g/{topic}/+/b/#", qos) == qos


@BOTH
@pytest.mark.parametrize(
    "bad", ["$share/a+b/x", "$share//x", "$share/a#/x", "$share/grp"],
    ids=["plus_in_name", "empty_name", "hash_in_name", "no_filter"],
)
def test_invalid_share_name_closes_the_connection_without_suback(raw, uid, proto, bad):
    """[MQTT-4.8.2-1] the ShareName is at least one character long;
    [MQTT-4.8.2-2] it contains no '/', '+' or '#' and is followed by '/' and a
    Topic Filter. Such a filter cannot be parsed, so it is a Malformed Packet,
    not a SUBACK failure (0x8F is for a correctly formed filter): the server
    closes the connection [MQTT-4.13.1-1], after DISCONNECT 0x81 in v5.
    3.1.1 knows no ShareName; the broker applies the same rule to the '$share/'
    filters it accepts from 3.1.1 clients and closes the connection, as for any
    protocol violation [MQTT-4.8.0-1]."""
    r = raw(proto)
    r.connect(uid)
    props = _varint(0) if proto == V5 else b""
    r.send(_packet(0x82, struct.pack("!H", 1) + props + _str(bad) + bytes([1])))
    pkt = read_packet(r.sock, timeout=3)
    if proto == V5:
        assert pkt is not None and pkt[0] == 0xE0 and pkt[1][0] == 0x81, pkt
        pkt = read_packet(r.sock, timeout=3)
    assert pkt is None, f"expected the connection closed, got {pkt!r}"


def test_v5_no_local_on_shared_subscription_is_a_protocol_error_0x82(clients, topic):
    """[MQTT-3.8.3-4]: No Local = 1 on a Shared Subscription is a Protocol Error."""
    c = clients.new("c")
    c.c.subscribe(f"$share/g/{topic}/x", options=SubscribeOptions(qos=1, noLocal=True))
    assert c.wait_disconnected() == 0x82
