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
        n = struct.unpack("!H", pkt[1][:2])[0]
        pos = 2 + n + 2  # topic, packet id (QoS 1)
        if r.version == V5:
            pos += 1  # property length: the broker sends none here
            assert pkt[1][pos - 1] == 0, pkt
        out.append({"qos": (pkt[0] >> 1) & 3, "payload": pkt[1][pos:]})


@pytest.fixture
def raw(broker):
    made = []

    def new(version: int = 4) -> RawClient:
        r = RawClient(broker.port, version)
        made.append(r)
        return r

    yield new
    for r in made:
        r.close()


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

    assert sorted(plain.expect(n) and [], key=int) == []  # placeholder replaced below
