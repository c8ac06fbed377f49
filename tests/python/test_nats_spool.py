"""The NATS bridge's spool: QoS 1/2 rule messages and status notifications
go to disk (`<data_dir>/nats-spool`) before NATS, and stay until NATS has
them. A NATS outage longer than what memory holds, a broker `kill -9`'d
meanwhile, and a full spool, with real nats-server, paho-mqtt publishers
and a nats-py JetStream consumer.
"""

from __future__ import annotations

import asyncio
import time

from conftest import _stop_and_check
from test_aliyun import Devices, config, unique
from test_nats import (OUTFLOW, RULE, Broker, add_outflow_stream, add_stream, bridged_metrics,  # noqa: F401
                       nats_server, stored, stream_events)

# The outflow rule of test_nats.py without `ack_after_stored`, and memory
# far too small for an outage: 16 messages in the NATS client, 64 in the
# bridge's queue.
SPOOLED = OUTFLOW.replace(
    "[[rules]]", "client_messages_max = 16\noutbox_messages_max = 64\n{extra}\n[[rules]]")


def start(tmp_path, nats_port: int, extra: str = "") -> Broker:
    asyncio.run(add_outflow_stream(nats_port))
    cfg = SPOOLED.format(port=nats_port, extra=extra)
    return Broker(tmp_path / "broker", config=cfg).start()


def publish_all(b: Broker, uid: str, numbers, started_by: float = 20) -> None:
    """Publishes `devices/d/<n>` = n at QoS 1 for each n; every PUBACK
    comes at once (MQTT does not wait for NATS)."""
    devices = Devices(b.port, uid)
    try:
        pub = devices.new("pub", client_id=f"pub-{uid}"[:23])
        started = time.monotonic()
        for n in numbers:
            assert pub.publish(f"devices/d/{n}", str(n).encode(), qos=1) == 0
        assert time.monotonic() - started < started_by
        pub.disconnect()
    finally:
        devices.close_all()


def wait_metric(b: Broker, name: str, value: float, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        metrics = bridged_metrics(b)
        if metrics.get(name) == value or time.monotonic() > deadline:
            assert metrics.get(name) == value, (name, metrics.get(name))
            return metrics
        time.sleep(0.05)


def numbers_in_stream(port: int, n: int) -> tuple[list[int], list]:
    """The first `n` messages of the stream as numbers, in stream order,
    and what follows them within a second (nothing, if none is twice)."""
    got = asyncio.run(stored(port, n, timeout=30))
    extra = asyncio.run(stored(port, 1, timeout=1))
    return [int(d) for _, _, d in got], extra


def kill_and_restart(b: Broker) -> None:
    b.proc.kill()
    b.proc.wait()
    b._log.close()
    b._wait_port_released()
    b.start()


def test_an_outage_longer_than_memory_holds_loses_nothing_and_keeps_the_order(
        tmp_path, nats_server, uid):  # noqa: F811
    b = start(tmp_path, nats_server.port)
    nats_server.stop()
    publish_all(b, uid, range(3000))
    metrics = wait_metric(b, "ringmq_nats_spooled_total", 3000)
    assert metrics["ringmq_outflow_dropped_total"] == 0, "the bridge's queue never filled"
    assert metrics["ringmq_nats_spool_bytes"] > 3000 * 40
    assert list((b.data_dir / "nats-spool").glob("*.seg")), "held on disk"
    nats_server.start()
    got, extra = numbers_in_stream(nats_server.port, 3000)
    assert got == list(range(3000)), "all of them, in the order published"
    assert extra == [], "each once"
    metrics = wait_metric(b, "ringmq_nats_spool_bytes", 0)
    assert metrics["ringmq_nats_spool_sent_total"] == 3000
    _stop_and_check(b)


def test_what_the_spool_holds_survives_a_kill_9_of_the_broker(tmp_path, nats_server, uid):  # noqa: F811
    b = start(tmp_path, nats_server.port)
    try:
        nats_server.stop()
        publish_all(b, uid, range(500))
        wait_metric(b, "ringmq_nats_spooled_total", 500)
        kill_and_restart(b)
        metrics = bridged_metrics(b)
        assert metrics["ringmq_nats_spool_bytes"] > 500 * 40, "found again on disk"
        nats_server.start()
        # What is published after the restart follows what was held.
        publish_all(b, uid, range(500, 510))
        got, extra = numbers_in_stream(nats_server.port, 510)
        assert got == list(range(510))
        assert extra == []
        _stop_and_check(b)
    finally:
        if b.proc.poll() is None:
            b.proc.kill()


def test_a_full_spool_drops_new_messages_counts_them_and_mqtt_goes_on(
        tmp_path, nats_server, uid):  # noqa: F811
    b = start(tmp_path, nats_server.port, extra="spool_bytes_max = 20000")
    nats_server.stop()
    publish_all(b, uid, range(400))
    metrics = bridged_metrics(b)
    deadline = time.monotonic() + 10
    while metrics["ringmq_nats_spooled_total"] + metrics["ringmq_nats_spool_dropped_total"] < 400:
        assert time.monotonic() < deadline, metrics
        time.sleep(0.05)
        metrics = bridged_metrics(b)
    spooled = int(metrics["ringmq_nats_spooled_total"])
    assert 0 < spooled < 400 and metrics["ringmq_nats_spool_bytes"] <= 20000
    assert metrics["ringmq_nats_spool_dropped_total"] == 400 - spooled
    assert "NATS spool full (nats.spool_bytes_max)" in b.log()
    nats_server.start()
    got, extra = numbers_in_stream(nats_server.port, spooled)
    assert got == list(range(spooled)), "the first ones, kept; the later ones dropped"
    assert extra == []
    _stop_and_check(b)


def test_status_notifications_held_while_nats_is_down_survive_a_kill_9(tmp_path, nats_server, uid):  # noqa: F811
    asyncio.run(add_stream(nats_server.port))
    b = Broker(tmp_path / "broker", config=config() + RULE.format(port=nats_server.port)).start()
    try:
        nats_server.stop()
        devices = Devices(b.port, uid)
        cid = unique(uid, "GID_sensor")
        try:
            devices.signed(cid).disconnect()
        finally:
            devices.close_all()
        wait_metric(b, "ringmq_nats_spooled_total", 3)
        kill_and_restart(b)
        nats_server.start()
        deadline = time.monotonic() + 20
        got: list = []
        while time.monotonic() < deadline and len(got) < 3:
            got += asyncio.run(stream_events(nats_server.port, "GID_sensor_MQTT.*"))
            time.sleep(0.2)
        assert [(s, e["clientId"]) for s, e in got] == [
            ("GID_sensor_MQTT.connect", cid),
            ("GID_sensor_MQTT.disconnect", cid),
            ("GID_sensor_MQTT.tcpclean", cid),
        ]
        _stop_and_check(b)
    finally:
        if b.proc.poll() is None:
            b.proc.kill()


def test_with_storage_off_nothing_is_spooled_and_messages_still_flow(tmp_path, nats_server, uid):  # noqa: F811
    asyncio.run(add_outflow_stream(nats_server.port))
    cfg = "[storage]\nenabled = false\n" + SPOOLED.format(port=nats_server.port, extra="")
    b = Broker(tmp_path / "broker", config=cfg).start()
    publish_all(b, uid, range(20))
    got, extra = numbers_in_stream(nats_server.port, 20)
    assert got == list(range(20)) and extra == []
    assert bridged_metrics(b)["ringmq_nats_spooled_total"] == 0
    assert not (b.data_dir / "nats-spool").exists(), "storage off: nothing on disk"
    _stop_and_check(b)


def test_qos0_messages_nats_cannot_take_do_not_hold_up_the_spooled_ones(tmp_path, nats_server, uid):  # noqa: F811
    # Four JetStream acknowledgements awaited at once, 64 publishes waiting.
    b = start(tmp_path, nats_server.port, extra="jetstream_acks_pending_max = 4")
    nats_server.stop()
    devices = Devices(b.port, uid)
    try:
        pub = devices.new("pub", client_id=f"pub-{uid}"[:23])
        # Far more QoS 0 messages than the bridge has room for while NATS
        # is down: dropped and counted by the bridge, never waited for.
        for n in range(300):
            pub.c.publish(f"devices/q0/{n}", b"q0", qos=0)
            time.sleep(0.001)
        for n in range(100):
            assert pub.publish(f"devices/d/{n}", str(n).encode(), qos=1) == 0
        pub.disconnect()
    finally:
        devices.close_all()
    metrics = wait_metric(b, "ringmq_nats_spooled_total", 100)
    assert metrics["ringmq_nats_bridge_dropped_total"] >= 300 - 4 - 64
    assert metrics["ringmq_outflow_dropped_total"] == 0, "the bridge's queue never filled"
    nats_server.start()
    got = asyncio.run(stored(nats_server.port, 168, timeout=20))
    qos1 = [int(d) for _, h, d in got if h.get("qoslevel") == "1"]
    assert qos1 == list(range(100)), "every QoS 1 message, in order"
    _stop_and_check(b)
