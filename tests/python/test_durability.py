"""Durability observed through paho-mqtt: a broker killed with SIGKILL and
started again on the same data directory gives persistent sessions back
every acknowledged QoS 1/2 message, their subscriptions, and the retained
messages. Each test has its own broker (two shards) so that it can kill it.
"""

from __future__ import annotations

import socket
import time

import pytest

from conftest import HOST, Broker, ClientFactory

V311, V5 = 4, 5


def kill_and_restart(broker: Broker) -> Broker:
    """SIGKILL, then a new broker on the same data directory and port."""
    broker.proc.kill()
    broker.proc.wait()
    broker._log.close()
    # A killed broker's io_uring instances let go of its port a moment later.
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, broker.port))
                break
            except OSError:
                assert time.monotonic() < deadline, "port still taken"
                time.sleep(0.01)
    return broker.start()


@pytest.fixture
def durable(tmp_path, request):
    """A broker of its own, with the flush policy of the test's parameter."""
    flush = getattr(request, "param", "interval")
    b = Broker(tmp_path / "broker", config=f'[storage]\nflush = "{flush}"\n').start()
    yield b
    if b.proc.poll() is None:
        b.stop()


@pytest.mark.parametrize("durable", ["interval", "always"], indirect=True)
@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_every_acknowledged_message_of_a_persistent_session_survives_kill_9(durable, uid, proto):
    clients = ClientFactory(durable.port, uid)
    kw = {"clean": False} if proto == V311 else {"clean": False, "session_expiry": 3600}
    sub = clients.new("sub", protocol=proto, **kw)
    sub.sub(f"{uid}/#", 2)
    sub.disconnect()
    pub = clients.new("pub", protocol=proto)
    for i in range(200):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1 + i % 2)  # waits for PUBACK / PUBCOMP
    clients.close_all()

    kill_and_restart(durable)
    assert "recovered" in durable.log()
    back = ClientFactory(durable.port, uid)
    again = back.new("sub", protocol=proto, **kw)
    assert again.session_present is True
    got = again.expect(200, timeout=10)
    # paho hands a QoS 2 message over at PUBREL, so order holds per QoS.
    for qos in (1, 2):
        want = [str(i).encode() for i in range(200) if 1 + i % 2 == qos]
        assert [m.payload for m in got if m.qos == qos] == want
    again.expect_none(0.3)
    back.close_all()


def test_subscriptions_and_retained_messages_survive_kill_9(durable, uid):
    clients = ClientFactory(durable.port, uid)
    sub = clients.new("sub", protocol=V311, clean=False)
    sub.sub(f"{uid}/live/+", 1)
    sub.disconnect()
    pub = clients.new("pub", protocol=V5)
    pub.publish(f"{uid}/kept", b"retained", qos=1, retain=True)
    pub.publish(f"{uid}/gone", b"cleared", qos=1, retain=True)
    pub.publish(f"{uid}/gone", b"", qos=1, retain=True)
    clients.close_all()

    kill_and_restart(durable)
    after = ClientFactory(durable.port, uid)
    pub = after.new("pub", protocol=V5)
    pub.publish(f"{uid}/live/1", b"after restart", qos=1)
    back = after.new("sub", protocol=V311, clean=False)
    assert back.expect_one().payload == b"after restart"
    fresh = after.new("fresh", protocol=V5)
    fresh.sub(f"{uid}/#", 1)
    got = fresh.expect_one()
    assert (got.topic, got.payload, got.retain) == (f"{uid}/kept", b"retained", True)
    fresh.expect_none(0.3)
    after.close_all()
