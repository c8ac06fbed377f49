"""Outflow rules with `ack_after_stored`: a QoS 1 publisher's PUBACK waits
until the JetStream stream stored the message (at least once). While NATS
is down only that rule's publishers wait; everyone else goes on. When the
bridge cannot hold more, the publisher is disconnected unacknowledged
(v5 0x80) and publishes again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import ClientFactory, _stop_and_check
from test_nats import Broker, bridged_metrics, nats_server, stored  # noqa: F401 (fixture)
from test_nats import OUTFLOW, add_outflow_stream

# test_nats.py's outflow rule, its PUBACK waiting for the stream.
ACKED_OUTFLOW = OUTFLOW.replace("[[rules]]", "{extra}\n[[rules]]") + "ack_after_stored = true\n"


def broker(tmp_path, nats_port: int, extra: str = "") -> Broker:
    asyncio.run(add_outflow_stream(nats_port))
    cfg = ACKED_OUTFLOW.format(port=nats_port, extra=extra)
    return Broker(tmp_path / "broker", config=cfg).start()


def send(client, topic: str, payload: bytes) -> int:
    """Publishes at QoS 1 without waiting; returns the message id."""
    info = client.c.publish(topic, payload, qos=1)
    return info.mid


def test_the_puback_waits_for_the_stream_and_only_that_rules_publishers_wait(
        tmp_path, nats_server, uid):  # noqa: F811
    b = broker(tmp_path, nats_server.port)
    clients = ClientFactory(b.port, uid)
    try:
        pub, other = clients.new("pub"), clients.new("other")
        assert pub.publish("devices/d1/t", b"first", qos=1) == 0
        assert [d for _, _, d in asyncio.run(stored(nats_server.port, 1))] == [b"first"]
        nats_server.stop()
        mid = send(pub, "devices/d1/t", b"during the outage")
        with pytest.raises(AssertionError, match="no pub acknowledgement"):
            pub._wait_ack("pub", mid, 1.5)
        # Not the rule's topic: acknowledged at once, NATS or not.
        other.sub("elsewhere/#", 1)
        assert other.publish("elsewhere/x", b"mqtt goes on", qos=1) == 0
        assert other.expect_one().payload == b"mqtt goes on"
        nats_server.start()
        assert pub._wait_ack("pub", mid, 20) == 0
        # The backend's durable consumer read "first" above.
        got = [d for _, _, d in asyncio.run(stored(nats_server.port, 2, timeout=2))]
        assert got == [b"during the outage"], "stored before the PUBACK, once"
    finally:
        clients.close_all()
    _stop_and_check(b)


def test_a_publisher_the_bridge_cannot_hold_is_disconnected_unacknowledged(
        tmp_path, nats_server, uid):  # noqa: F811
    # One JetStream acknowledgement awaited at once, one publish waiting.
    b = broker(tmp_path, nats_server.port,
               extra="outbox_messages_max = 1\njetstream_acks_pending_max = 1")
    clients = ClientFactory(b.port, uid)
    try:
        pubs = [clients.new(f"p{n}") for n in range(3)]
        nats_server.stop()
        mids = []
        for n, p in enumerate(pubs):
            mids.append(send(p, f"devices/d{n}", str(n).encode()))
            time.sleep(0.3)
        # The first is retried by the bridge in its window, the second
        # waits for the window; the third has no room.
        assert pubs[2].wait_disconnected() == 0x80
        assert "did not confirm a QoS 1/2 message" in b.log()
        nats_server.start()
        for p, mid in zip(pubs[:2], mids):
            assert p._wait_ack("pub", mid, 20) == 0
        got = asyncio.run(stored(nats_server.port, 2, timeout=5))
        assert sorted(d for _, _, d in got) == [b"0", b"1"]
        metrics = bridged_metrics(b)
        assert metrics["ringmq_outflow_unconfirmed_total"] == 1
        assert metrics["ringmq_nats_bridge_dropped_total"] == 1
    finally:
        clients.close_all()
    _stop_and_check(b)
