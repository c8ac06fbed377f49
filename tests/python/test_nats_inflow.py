"""Data inflow rules, end to end: a backend publishes to a JetStream stream
with nats-py, as the product's backend sends `MQ2MQTT` messages, and paho
clients get them on `<topic><mqttSecondTopic>` at the QoS of `qoslevel`.
JetStream's consumer (`ringmq-<rule>`) sees each message acknowledged
once it was delivered or stored, and a refused one terminated.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from conftest import TIMEOUT, Broker, ClientFactory, _stop_and_check
from test_aliyun import Devices, config, unique
from test_nats import bridged_metrics, nats_server  # noqa: F401 (fixture)

INFLOW = """
[nats]
servers = ["nats://127.0.0.1:{port}"]
[[rules]]
name = "commands"
kind = "inflow"
stream = "COMMANDS"
subject = "commands.MQ2MQTT"
topic = "devices"
"""


async def _backend(port: int, *sends: tuple[str, bytes, dict | None]) -> None:
    """Creates the COMMANDS stream if needed and publishes `sends` to it."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    await js.add_stream(name="COMMANDS", subjects=["commands.>"])
    for subject, data, headers in sends:
        await js.publish(subject, data, headers=headers)
    await nc.close()


def backend(port: int, *sends: tuple[str, bytes, dict | None]) -> None:
    asyncio.run(_backend(port, *sends))


async def _consumer(port: int) -> dict:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    info = await nc.jetstream().consumer_info("COMMANDS", "ringmq-commands")
    await nc.close()
    return {"acked": info.ack_floor.stream_seq, "pending": info.num_ack_pending,
            "waiting": info.num_pending, "redelivered": info.num_redelivered}


def settled(port: int, acked: int, timeout: float = TIMEOUT) -> dict:
    """The rule's consumer once it has acknowledged up to stream seq `acked`."""
    deadline = time.monotonic() + timeout
    while True:
        info = asyncio.run(_consumer(port))
        if info["acked"] >= acked and info["pending"] == 0 or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


@pytest.fixture
def inflow(tmp_path, nats_server):  # noqa: F811 (fixture)
    """A broker with the `commands` rule; the stream exists before it starts."""
    backend(nats_server.port)
    b = Broker(tmp_path / "broker", config=INFLOW.format(port=nats_server.port)).start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        _stop_and_check(b)


def test_a_jetstream_message_reaches_subscribers_on_its_topic_at_its_qos(
        inflow, nats_server, uid):  # noqa: F811
    clients = ClientFactory(inflow.port, uid)
    try:
        sub = clients.new("sub")
        sub.sub("devices/#", 2)
        backend(nats_server.port,
                ("commands.MQ2MQTT", b"on", {"mqttSecondTopic": "/d1/led", "qoslevel": "1"}),
                ("commands.MQ2MQTT", b"off", {"mqttSecondTopic": "/d%202/led", "qoslevel": "0"}),
                ("commands.MQ2MQTT", b"plain", None),
                ("commands.other", b"not the rule's subject", None))
        got = [(m.topic, m.payload, m.qos) for m in sub.expect(3)]
        assert got == [("devices/d1/led", b"on", 1), ("devices/d 2/led", b"off", 0),
                       ("devices", b"plain", 1)]
        sub.expect_none()
        info = settled(nats_server.port, acked=3)
        assert info["pending"] == 0 and info["redelivered"] == 0, info
        assert info["waiting"] == 0, "commands.other is outside the consumer's filter"
        assert bridged_metrics(inflow)["ringmq_inflow_published_total"] == 3
    finally:
        clients.close_all()


def test_a_message_the_broker_refuses_is_terminated_not_redelivered(inflow, nats_server, uid):  # noqa: F811
    clients = ClientFactory(inflow.port, uid)
    try:
        sub = clients.new("sub")
        sub.sub("#", 1)
        backend(nats_server.port,
                ("commands.MQ2MQTT", b"bad qos", {"mqttSecondTopic": "/x", "qoslevel": "7"}),
                ("commands.MQ2MQTT", b"wildcard", {"mqttSecondTopic": "/+/x"}),
                ("commands.MQ2MQTT", b"fine", {"mqttSecondTopic": "/ok"}))
        assert [(m.topic, m.payload) for m in sub.expect(1)] == [("devices/ok", b"fine")]
        sub.expect_none()
        info = settled(nats_server.port, acked=3)
        assert info["pending"] == 0 and info["redelivered"] == 0, info
        metrics = bridged_metrics(inflow)
        assert metrics["ringmq_inflow_refused_total"] == 2
        assert metrics["ringmq_inflow_published_total"] == 1
        assert "inflow: message refused and terminated" in inflow.log()
    finally:
        clients.close_all()


def test_inflow_for_an_offline_session_is_stored_and_survives_a_restart(
        inflow, nats_server, uid):  # noqa: F811
    clients = ClientFactory(inflow.port, uid)
    cid = f"inflow-{uid}"[:23]
    try:
        sub = clients.new("sub", client_id=cid, clean=False, session_expiry=3600)
        sub.sub("devices/#", 1)
        sub.disconnect()
        backend(nats_server.port, *[("commands.MQ2MQTT", str(n).encode(), {"mqttSecondTopic": f"/d/{n}"})
                                    for n in range(5)])
        # Acknowledged to JetStream: the broker holds them for the session.
        info = settled(nats_server.port, acked=5)
        assert info["pending"] == 0 and info["waiting"] == 0, info
    finally:
        clients.close_all()
    _stop_and_check(inflow)
    inflow.start()
    clients = ClientFactory(inflow.port, uid)
    try:
        back = clients.new("back", client_id=cid, clean=False, session_expiry=3600)
        assert [m.payload for m in back.expect(5)] == [str(n).encode() for n in range(5)]
    finally:
        clients.close_all()


def test_inflow_sent_while_the_broker_was_down_arrives_once_it_is_up(
        inflow, nats_server, uid):  # noqa: F811
    clients = ClientFactory(inflow.port, uid)
    cid = f"inflow-{uid}"[:23]
    sub = clients.new("sub", client_id=cid, clean=False, session_expiry=3600)
    sub.sub("devices/#", 1)
    clients.close_all()
    _stop_and_check(inflow)
    backend(nats_server.port, ("commands.MQ2MQTT", b"while down", {"mqttSecondTopic": "/d"}))
    inflow.start()
    clients = ClientFactory(inflow.port, uid)
    try:
        back = clients.new("back", client_id=cid, clean=False, session_expiry=3600)
        assert back.expect_one().payload == b"while down"
        assert settled(nats_server.port, acked=1)["pending"] == 0
    finally:
        clients.close_all()


def test_inflow_resumes_after_nats_restarts(inflow, nats_server, uid):  # noqa: F811
    clients = ClientFactory(inflow.port, uid)
    try:
        sub = clients.new("sub")
        sub.sub("devices/#", 1)
        backend(nats_server.port, ("commands.MQ2MQTT", b"before", {"mqttSecondTopic": "/a"}))
        assert sub.expect_one().payload == b"before"
        nats_server.stop()
        # MQTT goes on while NATS is down.
        sub.publish("devices/local", b"local", qos=1)
        assert sub.expect_one().payload == b"local"
        time.sleep(2)  # long enough for the client to give up a reconnect or two
        nats_server.start()
        backend(nats_server.port, ("commands.MQ2MQTT", b"after", {"mqttSecondTopic": "/b"}))
        msg = sub.expect_one(timeout=15)
        assert (msg.topic, msg.payload) == ("devices/b", b"after")
    finally:
        clients.close_all()


def test_inflow_p2p_reaches_its_device_alone(tmp_path, nats_server, uid):  # noqa: F811
    backend(nats_server.port)
    b = Broker(tmp_path / "broker", config=config() + INFLOW.format(port=nats_server.port)).start()
    devices = Devices(b.port, uid)
    try:
        target = devices.signed(unique(uid, "GID_app"))
        other = devices.signed(unique(uid, "GID_sensor"))
        other.sub("devices/#", 1)
        backend(nats_server.port, ("commands.MQ2MQTT", b"just you",
                                   {"mqttSecondTopic": f"/p2p/{target.client_id}"}))
        msg = target.expect_one()
        assert msg.payload == b"just you"
        other.expect_none()
    finally:
        devices.close_all()
    _stop_and_check(b)


def test_a_rule_whose_stream_comes_later_reads_it_once_it_exists(tmp_path, nats_server, uid):  # noqa: F811
    b = Broker(tmp_path / "broker", config=INFLOW.format(port=nats_server.port)).start()
    clients = ClientFactory(b.port, uid)
    try:
        sub = clients.new("sub")
        sub.sub("devices/#", 1)
        time.sleep(0.5)
        assert "inflow: cannot read the stream, retrying" in b.log()
        backend(nats_server.port, ("commands.MQ2MQTT", b"late", {"mqttSecondTopic": "/x"}))
        assert sub.expect_one(timeout=10).payload == b"late"
        assert "inflow: reading the stream again" in b.log()
    finally:
        clients.close_all()
    _stop_and_check(b)
