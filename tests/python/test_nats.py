"""Status-notification rules to NATS, end to end: a real nats-server
(Debian's package), ringmq in the aliyun profile with `[nats]` and a
`[[rules]]` entry of kind "status", devices signing in with paho-mqtt, and
a backend in nats-py keeping the online table from the subjects
`GID_x_MQTT.connect|disconnect|tcpclean`, as the product's Java sample does
from its `GID_x_MQTT` topic with tags. NATS stopped while devices come and
go: MQTT goes on, and the events reach a JetStream stream once NATS is back.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nats
import pytest

from conftest import TIMEOUT, Broker, _stop_and_check, free_port, ringmq_bin
from test_aliyun import Devices, OnlineTable, config, unique

# A fetch that times out: nats-py's own error, or asyncio's when JetStream
# is not answering yet (just after nats-server restarted).
FETCH_TIMEOUTS = (nats.errors.TimeoutError, asyncio.TimeoutError)

# Debian installs it in /usr/sbin, which a non-root PATH may lack.
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

RULE = """
[nats]
servers = ["nats://127.0.0.1:{port}"]
[[rules]]
name = "online-table"
kind = "status"
group_ids = ["GID_sensor"]
"""


class NatsServer:
    """nats-server on loopback with JetStream, its store in `store`."""

    def __init__(self, store: Path):
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NatsServer":
        # scripts/py-test installs it (Debian's nats-server): not skipped.
        log = open(self.store.parent / "nats.log", "ab")
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop()


@pytest.fixture
def bridged(tmp_path, nats_server):
    """The aliyun broker of test_aliyun.py with the status rule for GID_sensor."""
    work = tmp_path / "broker"
    work.mkdir()
    b = Broker(work, config=config() + RULE.format(port=nats_server.port)).start()
    yield b
    _stop_and_check(b)


class Events:
    """A nats-py subscriber to `GID_*_MQTT.*`, on its own event loop."""

    def __init__(self, port: int):
        self.loop = asyncio.new_event_loop()
        self.msgs: list[tuple[str, dict]] = []
        self.nc = self.loop.run_until_complete(nats.connect(f"nats://127.0.0.1:{port}"))

        async def on_msg(m):
            self.msgs.append((m.subject, json.loads(m.data)))

        self.loop.run_until_complete(self.nc.subscribe("*.*", cb=on_msg))
        self.loop.run_until_complete(self.nc.flush())

    def expect(self, n: int, timeout: float = TIMEOUT) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.msgs) < n and time.monotonic() < deadline:
            self.loop.run_until_complete(asyncio.sleep(0.02))
        got, self.msgs = self.msgs[:n], self.msgs[n:]
        assert len(got) == n, f"expected {n} events, got {got}"
        return got

    def quiet(self, wait: float = 0.5) -> list[tuple[str, dict]]:
        self.loop.run_until_complete(asyncio.sleep(wait))
        return self.msgs

    def close(self) -> None:
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


class Msg:
    """What OnlineTable reads: a topic and a payload."""

    def __init__(self, subject: str, event: dict):
        self.topic = subject.replace(".", "/")
        self.payload = json.dumps(event).encode()


def test_the_online_table_of_a_nats_backend_follows_devices(bridged, nats_server, uid):
    events = Events(nats_server.port)
    devices = Devices(bridged.port, uid)
    try:
        table = OnlineTable()
        cid = unique(uid, "GID_sensor")
        c = devices.signed(cid)
        (subject, event), = events.expect(1)
        assert subject == "GID_sensor_MQTT.connect"
        assert event["clientId"] == cid and event["eventType"] == "connect"
        table.feed([Msg(subject, event)])
        assert table.online(cid)
        c.disconnect()
        got = events.expect(2)
        assert [s for s, _ in got] == ["GID_sensor_MQTT.disconnect", "GID_sensor_MQTT.tcpclean"]
        table.feed([Msg(s, e) for s, e in got])
        assert not table.online(cid)
        # Another Group ID has no rule: nothing on NATS for it.
        other = devices.signed(unique(uid, "GID_app"))
        other.disconnect()
        assert events.quiet() == []
    finally:
        devices.close_all()
        events.close()
    metrics = bridged_metrics(bridged)
    assert metrics.get("ringmq_outflow_sent_total") == 3
    assert metrics.get("ringmq_outflow_dropped_total") == 0


def bridged_metrics(broker: Broker) -> dict[str, float]:
    import urllib.request
    url = f"http://127.0.0.1:{broker.admin_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


async def stream_events(port: int, subject: str) -> list[tuple[str, dict]]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable="backend", stream="STATUS")
    out = []
    while True:
        try:
            msgs = await sub.fetch(10, timeout=1)
        except FETCH_TIMEOUTS:
            break
        for m in msgs:
            out.append((m.subject, json.loads(m.data)))
            await m.ack()
    await nc.close()
    return out


async def add_stream(port: int) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    await nc.jetstream().add_stream(name="STATUS", subjects=["GID_sensor_MQTT.*"])
    await nc.close()


def test_events_while_nats_is_down_reach_it_once_it_is_back(bridged, nats_server, uid):
    asyncio.run(add_stream(nats_server.port))
    devices = Devices(bridged.port, uid)
    try:
        nats_server.stop()
        time.sleep(0.5)
        # MQTT goes on: a device signs in, talks to itself, and leaves.
        cid = unique(uid, "GID_sensor")
        c = devices.signed(cid)
        c.sub("devices/outage", 1)
        c.publish("devices/outage", b"still here", qos=1)
        assert c.expect_one().payload == b"still here"
        c.disconnect()
        nats_server.start()
        deadline = time.monotonic() + 15
        got: list[tuple[str, dict]] = []
        while time.monotonic() < deadline:
            got += asyncio.run(stream_events(nats_server.port, "GID_sensor_MQTT.*"))
            if len([g for g in got if g[1]["clientId"] == cid]) >= 3:
                break
            time.sleep(0.5)
        mine = [(s, e["eventType"]) for s, e in got if e["clientId"] == cid]
        assert mine == [("GID_sensor_MQTT.connect", "connect"),
                        ("GID_sensor_MQTT.disconnect", "disconnect"),
                        ("GID_sensor_MQTT.tcpclean", "tcpclean")], got
        assert "NATS bridge disconnected" in bridged.log()
    finally:
        devices.close_all()


@pytest.mark.parametrize("extra, message", [
    ('[[rules]]\nname = "r"\nkind = "status"\ngroup_ids = ["GID_sensor"]\n', "needs [nats] servers"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "r"\nkind = "status"\ngroup_ids = []\n',
     "group_ids: at least one"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "r"\nkind = "sideways"\ngroup_ids = []\n',
     "unknown variant"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "i"\nkind = "inflow"\n'
     'topic = "devices"\n', "stream: a JetStream stream name"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "i"\nkind = "inflow"\n'
     'stream = "S"\ntopic = "devices/#"\n', "topic: an MQTT topic without wildcards"),
    ('[nats]\nservers = ["not a url"]\n', "nats.servers"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "o"\nkind = "outflow"\n'
     'source = "devices"\nsubject = "a.*"\n', "subject: a NATS subject"),
    ('[nats]\nservers = ["nats://127.0.0.1:4222"]\n[[rules]]\nname = "o"\nkind = "outflow"\n'
     'subject = "a.b"\n', "source: a parent topic"),
])
def test_a_bad_rule_or_nats_setting_is_a_config_error(tmp_path, extra, message):
    cfg = tmp_path / "ringmq.toml"
    cfg.write_text(config() + extra)
    done = subprocess.run([ringmq_bin(), "--config", str(cfg), "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr
    assert not (tmp_path / "data").exists(), "nothing starts before the config is checked"


def test_a_status_rule_needs_the_aliyun_profile(tmp_path):
    cfg = tmp_path / "ringmq.toml"
    cfg.write_text('[nats]\nservers = ["nats://127.0.0.1:4222"]\n'
                   '[[rules]]\nname = "r"\nkind = "status"\ngroup_ids = ["GID_x"]\n')
    done = subprocess.run([ringmq_bin(), "--config", str(cfg), "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert 'needs profile = "aliyun"' in done.stderr


def test_a_broker_stopping_sends_its_last_events_before_it_exits(tmp_path, nats_server, uid):
    events = Events(nats_server.port)
    b = Broker(tmp_path / "broker", config=config() + RULE.format(port=nats_server.port)).start()
    devices = Devices(b.port, uid)
    try:
        cid = unique(uid, "GID_sensor")
        devices.signed(cid)
        assert [s for s, _ in events.expect(1)] == ["GID_sensor_MQTT.connect"]
        assert b.stop() == 0
        # Shutdown closes the device's connection: its tcpclean goes out
        # before the process ends.
        (subject, event), = events.expect(1)
        assert (subject, event["clientId"]) == ("GID_sensor_MQTT.tcpclean", cid)
    finally:
        devices.close_all()
        events.close()


def test_a_broker_stops_in_time_while_nats_is_down(tmp_path, nats_server, uid):
    b = Broker(tmp_path / "broker", config=config() + RULE.format(port=nats_server.port)).start()
    devices = Devices(b.port, uid)
    try:
        nats_server.stop()
        for n in range(3):
            devices.signed(unique(f"{uid}-{n}", "GID_sensor")).disconnect()
    finally:
        devices.close_all()
    started = time.monotonic()
    assert b.stop() == 0, b.log()
    assert time.monotonic() - started < 4.5, "the bridge waits at most 2 s for NATS when stopping"


# --------------------------------------------------------------------------
# data outflow: MQTT messages on a parent topic → a JetStream stream

OUTFLOW = """
[nats]
servers = ["nats://127.0.0.1:{port}"]
[[rules]]
name = "devices-out"
kind = "outflow"
source = "devices"
subject = "mqtt.devices"
jetstream = true
"""


async def add_outflow_stream(port: int) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    await nc.jetstream().add_stream(name="DEVICES", subjects=["mqtt.devices"])
    await nc.close()


async def stored(port: int, n: int, timeout: float = TIMEOUT) -> list:
    """The first `n` messages of the DEVICES stream (subject, headers, data)."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    sub = await nc.jetstream().pull_subscribe("mqtt.devices", durable="backend", stream="DEVICES")
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            for m in await sub.fetch(n - len(out), timeout=1):
                out.append((m.subject, dict(m.headers or {}), m.data))
                await m.ack()
        except FETCH_TIMEOUTS:
            pass
    await nc.close()
    return out


@pytest.fixture
def outflow(tmp_path, nats_server, uid):
    """The DEVICES stream on `mqtt.devices`, a broker whose rule sends
    `devices/#` there (stopped and checked by the test), and a v5 client."""
    asyncio.run(add_outflow_stream(nats_server.port))
    b = Broker(tmp_path / "broker", config=OUTFLOW.format(port=nats_server.port)).start()
    devices = Devices(b.port, uid)
    yield b, devices.new("pub", client_id=f"pub-{uid}"[:23])
    devices.close_all()
    if b.proc is not None and b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def test_outflow_sends_a_parent_topics_messages_to_jetstream_with_the_products_headers(
        outflow, nats_server, uid):
    b, pub = outflow
    # Nobody subscribes over MQTT: the rule took it, so v5 says 0x00, not 0x10.
    assert pub.publish("devices/d1/temp", b"21.5", qos=1) == 0
    assert pub.publish("devices/d2 x/hum", b"\x00\xff", qos=0) == 0
    assert pub.publish("other/topic", b"not mine", qos=1) == 0x10
    got = asyncio.run(stored(nats_server.port, 2))
    pub.close_quietly()
    assert [(s, d) for s, _, d in got] == [("mqtt.devices", b"21.5"), ("mqtt.devices", b"\x00\xff")]
    first, second = got[0][1], got[1][1]
    assert first["mqttSecondTopic"] == "/d1/temp" and first["qoslevel"] == "1"
    assert first["clientId"] == f"pub-{uid}"[:23]
    assert len(first["mqttMessageId"]) == 32 and first["Nats-Msg-Id"] == first["mqttMessageId"]
    assert second["mqttSecondTopic"] == "/d2%20x/hum" and second["qoslevel"] == "0"
    assert first["mqttMessageId"] != second["mqttMessageId"]
    _stop_and_check(b)
    assert asyncio.run(stored(nats_server.port, 1, timeout=1)) == [], "other/topic is not the rule's"


def test_outflow_during_a_nats_outage_is_stored_once_nats_is_back_without_duplicates(
        outflow, nats_server):
    b, pub = outflow
    nats_server.stop()
    started = time.monotonic()
    for n in range(20):
        # MQTT does not wait for NATS: every PUBACK comes at once.
        assert pub.publish(f"devices/d/{n}", str(n).encode(), qos=1) == 0
    assert time.monotonic() - started < 2
    nats_server.start()
    got = asyncio.run(stored(nats_server.port, 20, timeout=20))
    extra = asyncio.run(stored(nats_server.port, 1, timeout=1))
    pub.close_quietly()
    assert sorted(int(d) for _, _, d in got) == list(range(20)), "each message stored"
    assert extra == [], "and once: a retry has the same Nats-Msg-Id"
    _stop_and_check(b)
