"""Three ringmq nodes on a three-node NATS cluster, started by
`scripts/cluster` as an operator would: what a paho client publishes on
one node reaches the subscribers of every node (and only the nodes with
subscribers), once, in order; topics NATS could not carry as they are
arrive intact, with their v5 properties; retained messages reach every
node's store; shared groups give each message to one member
cluster-wide; persistent sessions follow their clients; a QoS 1 PUBACK
waits for nodes with persistent subscribers; the aliyun registry is the
same on every node; NATS servers and nodes dying are survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nats
import pytest

from alibabacloud_onsmqtt20200420 import models as m
from conftest import ClientFactory, ringmq_bin
from test_admin import call_api, sdk
from test_aliyun import AK, CONFIG, INSTANCE, SECRET, Devices, unique

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster"


def _ports_free(base: int) -> bool:
    for offset in (1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33, 41, 42, 43):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + offset))
            except OSError:
                return False
    return True


class Cluster:
    def __init__(self, work: Path, extra: str | None = None):
        self.dir = work
        for _ in range(50):
            self.base = random.randrange(20000, 30000, 100)
            if _ports_free(self.base):
                break
        env = dict(os.environ, RINGMQ_BIN=os.environ.get("RINGMQ_BIN", str(ROOT / "target/release/ringmq")))
        self.env = env
        args = ["up", "--base-port", str(self.base)]
        if extra is not None:
            (work / "extra-in.toml").write_text(extra)
            args += ["--extra", str(work / "extra-in.toml")]
        out = self.run(*args)
        self.endpoints = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def run(self, *args: str) -> str:
        done = subprocess.run([str(SCRIPT), *args, "--dir", str(self.dir)], env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    def port(self, node: int) -> int:
        return self.base + 30 + node

    def metric(self, node: int, name: str) -> float:
        url = f"http://127.0.0.1:{self.base + 40 + node}/metrics"
        for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def wait_metric(self, node: int, name: str, at_least: float, timeout: float = 5.0) -> float:
        """The metric once it reaches `at_least` (shards report theirs
        every so often), or its value after `timeout`."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(node, name)) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        return value

    @contextlib.contextmanager
    def stopped(self, node: int):
        """Node `node` frozen (SIGSTOP) for the block: alive to the kernel,
        silent to the cluster."""
        pid = int((self.dir / f"n{node}" / "pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def log(self, name: str) -> str:
        return (self.dir / name / "log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.run("down")


def settle(*clients) -> None:
    """Subscriptions reach the other nodes through NATS: a round trip of
    interest, not a SUBACK. Long enough for it on a busy machine."""
    time.sleep(0.5)


def test_a_message_published_on_one_node_reaches_subscribers_on_every_node(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        local = f.new("local")
        two = f.new("two", port=cluster.port(2))
        three = f.new("three", port=cluster.port(3))
        local.sub(f"fan/{uid}/#", 1)
        two.sub(f"fan/{uid}/+", 1)
        three.sub(f"fan/{uid}/#", 1)
        # Overlapping filters on one node: NATS sends it twice, once arrives.
        three.sub(f"fan/{uid}/+", 1)
        settle()
        for n in range(100):
            assert pub.publish(f"fan/{uid}/t", str(n).encode(), qos=1) == 0
        expected = [str(n).encode() for n in range(100)]
        for c in (local, two, three):
            assert [m.payload for m in c.expect(100)] == expected, c.client_id
            c.expect_none()
    finally:
        f.close_all()


def test_a_node_gets_only_what_it_has_subscribers_for(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        two = f.new("two", port=cluster.port(2))
        two.sub(f"only/{uid}/a", 0)
        settle()
        before3 = cluster.metric(3, "ringmq_cluster_received_total")
        before2 = cluster.metric(2, "ringmq_cluster_received_total")
        pub.publish(f"only/{uid}/a", b"for two", qos=1)
        assert two.expect_one().payload == b"for two"
        two.unsubscribe(f"only/{uid}/a")
        settle()
        pub.publish(f"only/{uid}/a", b"for nobody", qos=1)
        two.expect_none()
        time.sleep(0.3)
        assert cluster.metric(2, "ringmq_cluster_received_total") == before2 + 1
        assert cluster.metric(3, "ringmq_cluster_received_total") == before3, \
            "node 3 subscribes to nothing: NATS sends it nothing"
    finally:
        f.close_all()


def test_topics_nats_cannot_carry_as_they_are_arrive_intact(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    topics = [f"odd/{uid}/a.b c", f"odd/{uid}/*/>", f"odd/{uid}//empty", f"odd/{uid}/温度",
              f"odd/{uid}/x=3D", f"odd/{uid}/"]
    try:
        pub = f.new("pub")
        sub = f.new("sub", port=cluster.port(3))
        sub.sub(f"odd/{uid}/#", 0)
        settle()
        for t in topics:
            pub.publish(t, t.encode(), qos=1)
        got = sub.expect(len(topics))
        assert [(m.topic, m.payload.decode()) for m in got] == [(t, t) for t in topics]
    finally:
        f.close_all()


def test_v5_properties_and_expiry_cross_nodes(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        v5 = f.new("v5", port=cluster.port(2))
        v5.sub(f"props/{uid}", 1)
        old = f.new("v311", port=cluster.port(3), protocol=4)
        old.sub(f"props/{uid}", 1)
        settle()
        props = {
            "UserProperty": [("k", "v"), ("k", "second"), ("ü", "ß")],
            "ContentType": "application/json",
            "ResponseTopic": f"reply/{uid}",
            "CorrelationData": b"\x00\x01corr",
            "PayloadFormatIndicator": 1,
            "MessageExpiryInterval": 60,
        }
        assert pub.publish(f"props/{uid}", b'{"a":1}', qos=1, props=props) == 0
        m = v5.expect_one()
        assert m.payload == b'{"a":1}'
        assert m.prop("UserProperty") == [("k", "v"), ("k", "second"), ("ü", "ß")]
        assert m.prop("ContentType") == "application/json"
        assert m.prop("ResponseTopic") == f"reply/{uid}"
        assert m.prop("CorrelationData") == b"\x00\x01corr"
        assert m.prop("PayloadFormatIndicator") == 1
        assert 55 <= m.prop("MessageExpiryInterval") <= 60, "the time it has left"
        # A 3.1.1 subscriber gets the payload as it was.
        assert old.expect_one().payload == b'{"a":1}'
        # Without properties, a message crosses as it did.
        pub.publish(f"props/{uid}", b"plain", qos=1)
        plain = v5.expect_one()
        assert plain.payload == b"plain" and plain.prop("UserProperty") is None
    finally:
        f.close_all()


def test_a_message_that_expires_before_it_is_delivered_is_not(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"late-{uid}"[:60]
    try:
        late = _persistent(f, "late", cid, cluster.port(2))
        late.sub(f"exp/{uid}", 1)
        late.disconnect()
        settle()
        pub = f.new("pub")
        pub.publish(f"exp/{uid}", b"short", qos=1, props={"MessageExpiryInterval": 1})
        pub.publish(f"exp/{uid}", b"long", qos=1, props={"MessageExpiryInterval": 300})
        time.sleep(2.2)
        back = _persistent(f, "back", cid, cluster.port(2))
        assert [m.payload for m in back.drain(timeout=1.0)] == [b"long"]
    finally:
        f.close_all()


def test_the_brokers_own_sys_topics_stay_on_their_node(cluster, uid):
    f = ClientFactory(cluster.port(2), uid)
    try:
        before = cluster.metric(2, "ringmq_cluster_received_total")
        sub = f.new("sub")
        sub.sub("$SYS/broker/uptime", 0)
        got = sub.expect(1, timeout=15)
        # One node's uptime, not three: only node 2 publishes to node 2 (a
        # retained one and the next can both come in a moment).
        assert len(sub.drain(timeout=1.5)) <= 1
        assert got[0].topic == "$SYS/broker/uptime"
        assert cluster.metric(2, "ringmq_cluster_received_total") == before, \
            "nothing came from the other nodes, whose figures went out meanwhile"
    finally:
        f.close_all()


def test_a_retained_message_reaches_every_nodes_store(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        pub.publish(f"kept/{uid}", b"last value", qos=1, retain=True)
        time.sleep(0.5)
        # Nobody subscribed anywhere when it was published.
        for node in (2, 3):
            late = f.new(f"late{node}", port=cluster.port(node))
            late.sub(f"kept/{uid}", 1)
            msg = late.expect_one()
            assert (msg.payload, msg.retain) == (b"last value", True)
        pub.publish(f"kept/{uid}", b"", qos=1, retain=True)
        time.sleep(0.5)
        cleared = f.new("cleared", port=cluster.port(3))
        cleared.sub(f"kept/{uid}", 1)
        cleared.expect_none()
    finally:
        f.close_all()


def _collect(clients, total: int, timeout: float = 15.0) -> list[list[int]]:
    """What each client got, until `total` in all or `timeout`, then a
    quiet moment to catch any extra copy."""
    got: list[list[int]] = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for c, into in zip(clients, got):
            into += [int(m.payload) for m in c.drain(timeout=0.05)]
    for c, into in zip(clients, got):
        into += [int(m.payload) for m in c.drain(timeout=0.3)]
    return got


def test_a_shared_group_across_nodes_gets_each_message_once(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        # Members on every node, two of them on node 2; and a plain
        # subscriber, which gets everything.
        members = [f.new("m1"), f.new("m2a", port=cluster.port(2)),
                   f.new("m2b", port=cluster.port(2)), f.new("m3", port=cluster.port(3))]
        for m in members:
            m.sub(f"$share/g{uid}/work/{uid}/#", 1)
        # Another group on the same filter gets its own copy of each.
        other = f.new("other", port=cluster.port(3))
        other.sub(f"$share/h{uid}/work/{uid}/#", 1)
        plain = f.new("plain", port=cluster.port(3))
        plain.sub(f"work/{uid}/#", 1)
        settle()
        for n in range(300):
            assert pub.publish(f"work/{uid}/job", str(n).encode(), qos=1) == 0
        got = _collect(members, 300)
        together = sorted(sum(got, []))
        assert together == list(range(300)), "each message to exactly one member"
        busy = [len(v) for v in got]
        assert all(busy), f"every node's members take a share: {busy}"
        assert [int(m.payload) for m in other.expect(300)] == list(range(300))
        assert [int(m.payload) for m in plain.expect(300)] == list(range(300))
        other.expect_none()
        plain.expect_none()
    finally:
        f.close_all()


def test_a_shared_group_goes_on_when_a_nodes_members_leave(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        here = f.new("here")
        there = f.new("there", port=cluster.port(3))
        for m in (here, there):
            m.sub(f"$share/g{uid}/left/{uid}", 1)
        settle()
        for n in range(40):
            pub.publish(f"left/{uid}", str(n).encode(), qos=1)
        first = _collect([here, there], 40)
        assert sorted(first[0] + first[1]) == list(range(40))
        # The publishing node's own member leaves: node 3's takes all.
        here.unsubscribe(f"$share/g{uid}/left/{uid}")
        settle()
        for n in range(40, 80):
            pub.publish(f"left/{uid}", str(n).encode(), qos=1)
        assert [int(m.payload) for m in there.expect(40)] == list(range(40, 80))
        here.expect_none()
        # And node 3's leaves too (disconnects): node 1's new member takes all.
        there.disconnect()
        again = f.new("again")
        again.sub(f"$share/g{uid}/left/{uid}", 1)
        settle()
        for n in range(80, 120):
            pub.publish(f"left/{uid}", str(n).encode(), qos=1)
        assert [int(m.payload) for m in again.expect(40)] == list(range(80, 120))
        again.expect_none()
    finally:
        f.close_all()


def _persistent(f: ClientFactory, name: str, cid: str, node_port: int, clean: bool = False):
    return f.new(name, client_id=cid, port=node_port, clean=clean, session_expiry=3600)


def test_a_persistent_session_moves_with_its_client_to_another_node(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"mover-{uid}"[:60]
    try:
        first = _persistent(f, "first", cid, cluster.port(1))
        first.sub(f"mv/{uid}/#", 1)
        first.disconnect()
        pub = f.new("pub")
        settle()
        for n in range(30):
            assert pub.publish(f"mv/{uid}/q", str(n).encode(), qos=1) == 0
        # Queued on node 1; the client comes back on node 2.
        moved_in = cluster.metric(2, "ringmq_sessions_moved_in_total")
        back = _persistent(f, "back", cid, cluster.port(2))
        assert back.session_present, "the session came with it"
        assert [int(m.payload) for m in back.expect(30)] == list(range(30))
        assert cluster.wait_metric(2, "ringmq_sessions_moved_in_total", moved_in + 1) == moved_in + 1
        assert cluster.wait_metric(1, "ringmq_sessions_moved_out_total", 1) >= 1
        # Its subscription lives on node 2 now, once: a message from node 3
        # arrives once.
        settle()
        f.new("pub3", port=cluster.port(3)).publish(f"mv/{uid}/q", b"after", qos=1)
        assert back.expect_one().payload == b"after"
        back.expect_none()
    finally:
        f.close_all()


def test_a_connected_persistent_session_is_taken_over_with_its_state(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"taken-{uid}"[:60]
    try:
        first = _persistent(f, "first", cid, cluster.port(1))
        first.sub(f"tk/{uid}", 1)
        # Node 1 records itself as the session's home in the registry (a
        # JetStream put) just after the CONNECT: node 3 looks there.
        settle()
        second = _persistent(f, "second", cid, cluster.port(3))
        assert first.wait_disconnected(timeout=10) == 0x8E, "Session taken over"
        assert second.session_present
        settle()
        f.new("pub", port=cluster.port(2)).publish(f"tk/{uid}", b"to node 3", qos=1)
        assert second.expect_one().payload == b"to node 3"
        second.expect_none()
    finally:
        f.close_all()


def test_clean_start_on_another_node_ends_the_session_everywhere(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"cleaned-{uid}"[:60]
    try:
        first = _persistent(f, "first", cid, cluster.port(1))
        first.sub(f"cl/{uid}", 1)
        first.disconnect()
        settle()
        f.new("pub").publish(f"cl/{uid}", b"queued", qos=1)
        # A new session that ends with its connection.
        fresh = f.new("fresh", client_id=cid, port=cluster.port(2), clean=True)
        assert not fresh.session_present
        fresh.expect_none()
        fresh.disconnect()
        time.sleep(0.5)
        # Node 1 ended its copy: nothing to resume there either.
        again = _persistent(f, "again", cid, cluster.port(1))
        assert not again.session_present
        again.expect_none()
    finally:
        f.close_all()


def test_a_session_given_up_but_never_confirmed_comes_back(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"unconfirmed-{uid}"[:60]
    try:
        first = _persistent(f, "first", cid, cluster.port(1))
        first.sub(f"uc/{uid}", 1)
        first.disconnect()
        f.new("pub").publish(f"uc/{uid}", b"kept", qos=1)

        async def ask_and_vanish() -> bytes:
            # A node asking for the session, then gone before it confirms.
            nc = await nats.connect(f"nats://127.0.0.1:{cluster.base + 1}")
            try:
                answer = await nc.request("ringmq.s.n1", cid.encode(), timeout=5)
                return answer.data
            finally:
                await nc.close()

        assert len(asyncio.run(ask_and_vanish())) > 0, "node 1 gave the session up"
        # cluster.session_move_wait_ms (3 s) and a 2-s grace: node 1 takes
        # it back, with its message.
        time.sleep(6)
        back = _persistent(f, "back", cid, cluster.port(1))
        assert back.session_present
        assert back.expect_one().payload == b"kept"
    finally:
        f.close_all()


def test_a_client_whose_node_died_connects_elsewhere_without_waiting_long(cluster, uid):
    f = ClientFactory(cluster.port(3), uid)
    cid = f"orphan-{uid}"[:60]
    try:
        first = _persistent(f, "first", cid, cluster.port(3))
        first.sub(f"or/{uid}", 1)
        first.disconnect()
        time.sleep(0.5)
        cluster.run("kill-node", "3")
        started = time.monotonic()
        again = _persistent(f, "again", cid, cluster.port(2))
        # Nobody answers for node 3: the CONNECT goes on at once with a
        # new session, not after cluster.session_move_wait_ms.
        assert time.monotonic() - started < 2.5
        assert not again.session_present
    finally:
        f.close_all()
        cluster.run("start-node", "3")


def wait_interest(c: Cluster, node: int, filter_token: str, timeout: float = 15.0) -> None:
    """Until node `node`'s persistent interest in a filter (its key in the
    interest bucket) is there for the other nodes to see."""
    async def look() -> bool:
        nc = await nats.connect(f"nats://127.0.0.1:{c.base + 1}")
        try:
            kv = await nc.jetstream().key_value("ringmq-interest")
            await kv.get(f"d.n{node}.{filter_token}")
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(look()):
        assert time.monotonic() < deadline, f"node {node}'s interest never showed"
        time.sleep(0.2)
    time.sleep(0.2)  # the watchers of the other nodes


def _token(filter: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "".join(f"={b:02X}" for b in ch.encode())
                   for ch in filter)


def _offline_on_node_2(cluster: Cluster, f: ClientFactory, cid: str, topic: str) -> None:
    """A persistent session on node 2 subscribed to `topic` at QoS 1, its
    client gone, once the other nodes know node 2 holds the filter."""
    held = _persistent(f, "held", cid, cluster.port(2))
    held.sub(topic, 1)
    held.disconnect()
    wait_interest(cluster, 2, _token(topic))


def test_what_node_3_acknowledged_is_held_by_node_2_for_its_persistent_session(cluster, uid):
    f = ClientFactory(cluster.port(3), uid)
    cid = f"held-{uid}"[:60]
    try:
        _offline_on_node_2(cluster, f, cid, f"e2e/{uid}")
        pub = f.new("pub")  # on node 3
        for n in range(100):
            assert pub.publish(f"e2e/{uid}", str(n).encode(), qos=1) == 0
        # At once after the last PUBACK: node 3 dies. Node 2 has them all.
        cluster.run("kill-node", "3")
        back = _persistent(f, "back", cid, cluster.port(2))
        assert [int(m.payload) for m in back.expect(100)] == list(range(100))
        back.expect_none()
    finally:
        f.close_all()
        cluster.run("start-node", "3")


def _unacknowledged(client, topic: str, payload: bytes) -> None:
    """A node waited for cannot say it holds the message: no PUBACK; after
    cluster.remote_ack_wait_ms the publisher is disconnected
    unacknowledged (0x80) and publishes again."""
    started = time.monotonic()
    client.c.publish(topic, payload, qos=1)
    assert client.wait_disconnected(timeout=10) == 0x80
    assert time.monotonic() - started >= 1.5


def test_a_puback_waits_for_a_node_holding_a_persistent_subscriber(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"stopped-{uid}"[:60]
    try:
        _offline_on_node_2(cluster, f, cid, f"wait/{uid}")
        pub = f.new("pub")
        assert pub.publish(f"wait/{uid}", b"before", qos=1) == 0
        with cluster.stopped(2):
            _unacknowledged(pub, f"wait/{uid}", b"while stopped")
            # Node 2 silent for long: it is no longer waited for.
            time.sleep(4)
            again = f.new("again")
            assert again.publish(f"wait/{uid}", b"node 2 gone", qos=1, timeout=3) == 0
        assert cluster.wait_metric(1, "ringmq_outflow_unconfirmed_total", 1) >= 1
        back = _persistent(f, "back", cid, cluster.port(2))
        got = [m.payload for m in back.drain(timeout=2)]
        assert got[0] == b"before" and b"while stopped" in got and b"node 2 gone" in got
    finally:
        f.close_all()


def test_a_nats_server_dying_moves_its_node_to_another(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    try:
        pub = f.new("pub")
        two = f.new("two", port=cluster.port(2))
        two.sub(f"move/{uid}", 1)
        settle()
        pub.publish(f"move/{uid}", b"before", qos=1)
        assert two.expect_one().payload == b"before"
        cluster.run("stop-nats", "2")
        try:
            # Node 2 reconnects to NATS 1 or 3 and subscribes again.
            deadline = time.monotonic() + 20
            got = []
            while not got and time.monotonic() < deadline:
                pub.publish(f"move/{uid}", b"after", qos=1)
                got = two.drain(timeout=0.5)
            assert got and got[0].payload == b"after", cluster.log("n2")
            assert "NATS bridge disconnected" in cluster.log("n2")
        finally:
            cluster.run("start-nats", "2")
    finally:
        f.close_all()


def test_a_client_connecting_on_another_node_takes_over_its_connection(cluster, uid):
    f = ClientFactory(cluster.port(1), uid)
    cid = f"moving-{uid}"[:60]
    try:
        first = f.new("first", client_id=cid)
        time.sleep(0.3)
        second = f.new("second", client_id=cid, port=cluster.port(3))
        assert first.wait_disconnected(timeout=10) == 0x8E, "Session taken over"
        assert not second.disconnected.is_set(), "the later connection stays"
        assert cluster.wait_metric(1, "ringmq_takeovers_total", 1) >= 1
        # And back: the older one on node 3 goes this time.
        third = f.new("third", client_id=cid, port=cluster.port(2))
        assert second.wait_disconnected(timeout=10) == 0x8E
        third.sub(f"back/{uid}", 0)
        settle()
        f.new("pub").publish(f"back/{uid}", b"to the newest", qos=1)
        assert third.expect_one().payload == b"to the newest"
    finally:
        f.close_all()


def test_a_node_killed_under_qos1_load_its_clients_go_on_on_another(cluster, uid):
    f = ClientFactory(cluster.port(3), uid)
    try:
        sub = f.new("sub", port=cluster.port(2))
        sub.sub(f"load/{uid}", 1)
        pub = f.new("pub")  # on node 3
        settle()
        for n in range(50):
            assert pub.publish(f"load/{uid}", str(n).encode(), qos=1) == 0
        # What node 3 acknowledged has had time to leave it: a message it
        # acknowledged in the last moments before a kill -9 may not have.
        time.sleep(0.5)
        cluster.run("kill-node", "3")
        pub.wait_disconnected()
        # The client connects to another node and goes on.
        again = f.new("again", port=cluster.port(1))
        for n in range(50, 100):
            assert again.publish(f"load/{uid}", str(n).encode(), qos=1) == 0
        got = [int(m.payload) for m in sub.expect(100)]
        assert got == list(range(100)), "nothing lost, nothing twice, in order"
        sub.expect_none()
    finally:
        f.close_all()
        cluster.run("start-node", "3")


ALIYUN = CONFIG[:CONFIG.index("[listeners]")] + CONFIG[CONFIG.index("[aliyun]"):]


@pytest.fixture(scope="module")
def aliyun_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("aliyun-cluster"), extra=ALIYUN)
    yield c
    c.run("down")


def test_p2p_reaches_its_target_on_another_node_and_nobody_else(aliyun_cluster, uid):
    c = aliyun_cluster
    devices = Devices(c.port(1), uid)
    try:
        target = devices.signed(unique(uid, "GID_app"), port=c.port(2))
        other = devices.signed(unique(uid + "x", "GID_sensor"), port=c.port(3))
        other.sub("devices/#", 1)
        sender = devices.signed(unique(uid + "s", "GID_sensor"))
        settle()
        assert sender.publish(f"devices/p2p/{target.client_id}", b"just you", qos=1) == 0
        assert target.expect_one().payload == b"just you"
        other.expect_none()
        assert c.metric(3, "ringmq_p2p_no_target_total") == 0, "not counted on nodes without it"
    finally:
        devices.close_all()


def test_a_p2p_puback_waits_for_the_node_holding_its_targets_session(aliyun_cluster, uid):
    c = aliyun_cluster
    devices = Devices(c.port(1), uid)
    target = unique(uid, "GID_app")
    try:
        # The target's persistent session is on node 2, offline.
        devices.signed(target, port=c.port(2), clean=False, session_expiry=3600).disconnect()
        time.sleep(1)  # the session registry's watch tells node 1
        sender = devices.signed(unique(uid + "s", "GID_sensor"))
        assert sender.publish(f"devices/p2p/{target}", b"before", qos=1) == 0
        with c.stopped(2):
            _unacknowledged(sender, f"devices/p2p/{target}", b"while stopped")
            # A P2P message for a client of no other node does not wait.
            here = unique(uid + "h", "GID_app")
            devices.signed(here, clean=False, session_expiry=3600).disconnect()
            time.sleep(1)
            other = devices.signed(unique(uid + "o", "GID_sensor"))
            assert other.publish(f"devices/p2p/{here}", b"local", qos=1, timeout=1) == 0
        back = devices.signed(target, port=c.port(2), clean=False, session_expiry=3600)
        got = [m.payload for m in back.drain(timeout=2)]
        assert got and got[0] == b"before", got
    finally:
        devices.close_all()


def _sdk(c: Cluster, node: int):
    """Alibaba's OpenAPI SDK on node `node`'s admin endpoint."""
    return sdk(SimpleNamespace(admin_port=c.base + 40 + node), key=AK, secret=SECRET)


def test_the_aliyun_registry_is_the_same_on_every_node(aliyun_cluster, uid):
    c = aliyun_cluster
    devices = Devices(c.port(3), uid)
    gid = f"GID_c{uid[-6:]}".replace("-", "")
    cid = f"{gid}@@@{uid[-8:]}"
    try:
        # A Group ID created through node 1's OpenAPI lets its devices in
        # on node 3.
        api1 = _sdk(c, 1)
        api1.create_group_id(m.CreateGroupIdRequest(instance_id=INSTANCE, group_id=gid))
        deadline = time.monotonic() + 10
        while True:
            ids = [g.group_id for g in _sdk(c, 3).list_group_id(
                m.ListGroupIdRequest(instance_id=INSTANCE)).body.data]
            if gid in ids or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert gid in ids, "listed by node 3"
        device = devices.signed(cid)
        assert device.connack_rc == 0
        # The same Group ID created again through node 2: refused there.
        with pytest.raises(Exception):
            _sdk(c, 2).create_group_id(m.CreateGroupIdRequest(instance_id=INSTANCE, group_id=gid))
        # A token revoked through node 2 stops working on node 1.
        api2 = _sdk(c, 2)
        expire = int(time.time() * 1000) + 3_600_000
        token = api2.apply_token(m.ApplyTokenRequest(
            instance_id=INSTANCE, resources="devices/#", actions="R", expire_time=expire)).body.token
        holder = devices.token(unique(uid + "t", "GID_app"), f"R|{token}", port=c.port(1))
        api2.revoke_token(m.RevokeTokenRequest(instance_id=INSTANCE, token=token))
        notice = holder.expect_one(timeout=10)
        assert notice.topic == "$SYS/tokenInvalidNotice"
        holder.wait_disconnected()
        # Deleted through node 3: its devices are refused on node 1.
        _sdk(c, 3).delete_group_id(m.DeleteGroupIdRequest(instance_id=INSTANCE, group_id=gid))
        time.sleep(0.5)
        late = devices.signed(f"{gid}@@@late", port=c.port(1), connect=False)
        late.connect(expect_success=False)
        assert late.connack_rc not in (None, 0), "the Group ID is gone on node 1 too"
    finally:
        devices.close_all()


def test_a_rule_created_through_one_nodes_openapi_is_in_force_on_every_node(aliyun_cluster, uid):
    c = aliyun_cluster
    subject = f"ext.{uid[-8:]}".replace("-", "")
    loop = asyncio.new_event_loop()
    got: list[bytes] = []
    nc = loop.run_until_complete(nats.connect(f"nats://127.0.0.1:{c.base + 2}"))

    async def on_msg(msg):
        got.append(msg.data)

    loop.run_until_complete(nc.subscribe(subject, cb=on_msg))
    loop.run_until_complete(nc.flush())

    def received(n: int, wait: float) -> list[bytes]:
        deadline = time.monotonic() + wait
        while len(got) < n and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))
        loop.run_until_complete(asyncio.sleep(0.3))
        return list(got)

    devices = Devices(c.port(3), uid)
    query = {"InstanceId": INSTANCE, "RuleName": f"r{uid[-6:]}".replace("-", "")}
    try:
        call_api(_sdk(c, 1), "CreateRule", dict(query, Kind="outflow", Source="devices",
                                                Subject=subject))
        deadline = time.monotonic() + 10
        while query["RuleName"] not in [r["RuleName"] for r in call_api(
                _sdk(c, 3), "ListRule", {"InstanceId": INSTANCE})["Data"]]:
            assert time.monotonic() < deadline, "listed by node 3"
            time.sleep(0.1)
        # Published on node 3: the rule there sends it, once.
        device = devices.signed(unique(uid, "GID_sensor"))
        assert device.publish("devices/ruled", b"from node 3", qos=1) == 0
        assert received(1, 10) == [b"from node 3"]
        # Deleted through node 2: node 3 sends no more.
        call_api(_sdk(c, 2), "DeleteRule", query)
        time.sleep(0.5)
        assert device.publish("devices/ruled", b"after", qos=1) in (0, 0x10)
        assert received(2, 1) == [b"from node 3"]
    finally:
        devices.close_all()
        loop.run_until_complete(nc.close())
        loop.close()


def _loadgen(c: Cluster, scenario: str, out: Path, *extra: str) -> dict:
    """A loadgen run, publishers on node 1 and subscribers on nodes 2 and 3;
    its summary's checks."""
    loadgen = Path(ringmq_bin()).with_name("loadgen")
    assert loadgen.exists(), f"{loadgen} not built (cargo build -p loadgen)"
    done = subprocess.run(
        [str(loadgen), "run", "--scenario", scenario, "--port", str(c.port(1)),
         "--subscriber-ports", f"{c.port(2)},{c.port(3)}", "--qos", "1", "-m", "64",
         "--rate", "2000", "--warmup", "1s", "--duration", "4s", "--quiet", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())["results"]["checks"]


def test_loadgen_fan_out_across_nodes_loses_nothing(cluster, tmp_path):
    checks = _loadgen(cluster, "fanout", tmp_path / "fanout", "-P", "2", "-S", "4")
    assert checks["expected"] > 0
    assert (checks["lost"], checks["duplicated"], checks["out_of_order"]) == (0, 0, 0), checks


def test_loadgen_shared_group_across_nodes_gets_each_message_once(cluster, tmp_path):
    checks = _loadgen(cluster, "shared", tmp_path / "shared", "-P", "2", "-S", "4")
    assert checks["expected"] > 0
    assert (checks["lost"], checks["duplicated"]) == (0, 0), checks
