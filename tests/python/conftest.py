"""Fixtures and helpers for the end-to-end tests of the ringmq binary.

The broker under test is the binary named by $RINGMQ_BIN (default
/work/main/target/release/ringmq). Each broker runs with --shards 2 so that
messages cross shards, on a free port, with a temporary data directory, and
is stopped with SIGTERM; its exit must be clean (code 0 within 5 s).

`MqttClient` wraps a paho-mqtt 2.x client: every call waits for its
acknowledgement with a timeout, and received messages land in a queue that
tests read with `expect*` calls, so no test can hang.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
DEFAULT_BIN = "/work/main/target/release/ringmq"
TIMEOUT = 5.0  # upper bound for anything that should happen "now"
# A PUBLISH the broker took: v5 acknowledges 0x10 (No matching subscribers)
# when no subscription matched it, 0x00 otherwise; 3.1.1 always 0.
ACCEPTED = (0x00, 0x10)
QUIET = 0.5  # how long to listen when asserting that nothing arrives


def ringmq_bin() -> str:
    """The broker binary; waits a while if it is being rebuilt right now."""
    path = os.environ.get("RINGMQ_BIN", DEFAULT_BIN)
    deadline = time.monotonic() + 120
    while not (os.path.isfile(path) and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.fail(f"broker binary {path} not found (set RINGMQ_BIN)")
        time.sleep(0.5)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """One ringmq process."""

    def __init__(self, workdir: Path, config: str | None = None, shards: int = 2):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Every broker gets its own admin endpoint (OpenAPI, /metrics).
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.args = [
            "--listen", f"{HOST}:{self.port}",
            "--admin-listen", f"{HOST}:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            "--shards", str(shards),
            "--log-level", "info",
        ]
        if config is not None:
            cfg = workdir / "ringmq.toml"
            cfg.write_text(config)
            self.args = ["--config", str(cfg)] + self.args
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        binary = ringmq_bin()
        self._log = open(self.log_path, "wb")
        for attempt in range(20):
            try:
                self.proc = subprocess.Popen(
                    [binary] + self.args, stdout=self._log, stderr=subprocess.STDOUT
                )
                break
            except OSError:  # e.g. ETXTBSY while the binary is being rewritten
                if attempt == 19:
                    raise
                time.sleep(0.5)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"broker did not accept on port {self.port}:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._log.close()
        self._wait_port_released()
        return rc

    def _wait_port_released(self) -> None:
        """The kernel lets go of an exited broker's listening sockets a
        moment later (its io_uring instances hold them): until then a
        connection to the port is accepted and then reset, and a restart's
        readiness check would take the old listener for the new one."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _stop_and_check(broker: Broker) -> None:
    rc = broker.stop()
    assert rc == 0, (
        f"broker did not exit with code 0 within 5 s of SIGTERM (rc={rc}):\n{broker.log()}"
    )


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Broker:
    b = Broker(tmp_path_factory.mktemp("ringmq")).start()
    yield b
    _stop_and_check(b)


# --------------------------------------------------------------------------
# paho client wrapper


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any = None
    received: float = field(default_factory=time.monotonic)

    def prop(self, name: str, default=None):
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


def _rc(value) -> int:
    if isinstance(value, ReasonCode):
        return value.value
    return int(value)


class MqttClient:
    """A paho client driven by its own network thread, with blocking helpers."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        protocol: int = 5,
        clean: bool = True,
        session_expiry: int | None = None,
        will: dict | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        connect_props: dict | None = None,
    ):
        self.port = port
        self.client_id = client_id
        self.v5 = protocol == 5
        self.clean = clean
        self.keepalive = keepalive
        kwargs = {}
        if not self.v5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            **kwargs,
        )
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            wprops = None
            if will.get("props"):
                wprops = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will["props"].items():
                    setattr(wprops, k, v)
            self.c.will_set(
                will["topic"], will.get("payload", b""), will.get("qos", 0),
                will.get("retain", False), properties=wprops,
            )
        self.connect_props = None
        if self.v5:
            self.connect_props = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                self.connect_props.SessionExpiryInterval = session_expiry
            for k, v in (connect_props or {}).items():
                setattr(self.connect_props, k, v)

        self.messages: "queue.Queue[Msg]" = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc: int | None = None
        self.connack_props = None
        self.session_present: bool | None = None
        self.disconnect_rc: int | None = None
        self.disconnect_props = None
        self._acks: dict[tuple[str, int], Any] = {}
        self._acks_cv = threading.Condition()

        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish

    # ---- callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_rc = _rc(reason_code)
        self.connack_props = properties
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_rc = _rc(reason_code)
        self.disconnect_props = properties
        self.disconnected.set()
        self.connected.set()  # unblock a connect() waiting on a refused CONNECT

    def _on_message(self, client, userdata, m):
        self.messages.put(
            Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain),
                getattr(m, "properties", None))
        )

    def _ack(self, kind: str, mid: int, value) -> None:
        with self._acks_cv:
            self._acks[(kind, mid)] = value
            self._acks_cv.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._ack("sub", mid, [_rc(r) for r in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._ack("unsub", mid, [_rc(r) for r in reason_codes] if reason_codes else [])

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._ack("pub", mid, _rc(reason_code))

    def _wait_ack(self, kind: str, mid: int, timeout: float):
        deadline = time.monotonic() + timeout
        with self._acks_cv:
            while (kind, mid) not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.client_id}: no {kind} acknowledgement for mid {mid} within {timeout}s"
                    )
                if self.disconnected.is_set():
                    raise AssertionError(
                        f"{self.client_id}: disconnected (rc={self.disconnect_rc}) while waiting for {kind} ack"
                    )
                self._acks_cv.wait(min(left, 0.05))
            return self._acks.pop((kind, mid))

    # ---- actions (test thread)

    def connect(self, timeout: float = TIMEOUT, expect_success: bool = True) -> "MqttClient":
        kwargs = {}
        if self.v5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_props
        self.c.connect(HOST, self.port, keepalive=self.keepalive, **kwargs)
        self.c.loop_start()
        assert self.connected.wait(timeout), f"{self.client_id}: no CONNACK within {timeout}s"
        if expect_success:
            assert self.connack_rc is not None, f"{self.client_id}: closed before any CONNACK"
            assert self.connack_rc == 0, f"{self.client_id}: CONNACK refused with {self.connack_rc:#x}"
            assert not self.disconnected.is_set(), f"{self.client_id}: closed right after CONNACK"
        return self

    def subscribe(
        self, topic: str, qos: int = 0, *, no_local: bool = False,
        retain_as_published: bool = False, retain_handling: int = 0,
        sub_id: int | None = None, timeout: float = TIMEOUT,
    ) -> int:
        """Subscribes to one filter; returns the SUBACK reason code."""
        if self.v5:
            opts = SubscribeOptions(
                qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                retainHandling=retain_handling,
            )
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            rc, mid = self.c.subscribe(topic, options=opts, properties=props)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        codes = self._wait_ack("sub", mid, timeout)
        assert len(codes) == 1, codes
        return codes[0]

    def sub(self, topic: str, qos: int = 0, **kw) -> None:
        """Subscribes and asserts that the requested QoS was granted."""
        code = self.subscribe(topic, qos, **kw)
        assert code == qos, f"SUBACK for {topic!r} at QoS {qos} was {code:#x}"

    def unsubscribe(self, topic: str, timeout: float = TIMEOUT) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait_ack("unsub", mid, timeout)

    def publish(
        self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
        props: dict | None = None, timeout: float = TIMEOUT,
    ) -> int:
        """Publishes and waits for the end of the QoS flow; returns the
        PUBACK/PUBREC reason code (0 for QoS 0)."""
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)
            for k, v in props.items():
                setattr(properties, k, v)
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not sent: {info.rc}"
        return self._wait_ack("pub", info.mid, timeout)

    def expect(self, n: int = 1, timeout: float = TIMEOUT) -> list[Msg]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {n} messages within {timeout}s: {out}"
                ) from None
        return out

    def expect_one(self, timeout: float = TIMEOUT) -> Msg:
        return self.expect(1, timeout)[0]

    def expect_none(self, timeout: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def drain(self, timeout: float = QUIET) -> list[Msg]:
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                return out

    def disconnect(self, reason: int | None = None, props: dict | None = None,
                   timeout: float = TIMEOUT) -> None:
        """A normal DISCONNECT (optionally with a v5 reason code/properties)."""
        kwargs = {}
        if self.v5 and reason is not None:
            kwargs["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
        if self.v5 and props:
            p = Properties(PacketTypes.DISCONNECT)
            for k, v in props.items():
                setattr(p, k, v)
            kwargs["properties"] = p
        self.c.disconnect(**kwargs)
        self.disconnected.wait(timeout)
        self.c.loop_stop()

    def abort(self) -> None:
        """Closes the TCP connection without DISCONNECT (an abnormal close)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.disconnected.wait(TIMEOUT)
        self.c.loop_stop()

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int:
        assert self.disconnected.wait(timeout), f"{self.client_id}: still connected after {timeout}s"
        return self.disconnect_rc

    def close_quietly(self) -> None:
        try:
            if self.connected.is_set() and not self.disconnected.is_set():
                self.c.disconnect()
                self.disconnected.wait(1)
        except Exception:
            pass
        try:
            self.c.loop_stop()
        except Exception:
            pass


class ClientFactory:
    def __init__(self, port: int, prefix: str):
        self.port = port
        self.prefix = prefix
        self.made: list[MqttClient] = []

    def new(self, name: str = "c", *, connect: bool = True, client_id: str | None = None,
            port: int | None = None, **kw) -> MqttClient:
        """A client; its id is unique to the test unless `client_id` is given."""
        cid = client_id if client_id is not None else f"{self.prefix}-{name}"
        c = MqttClient(port or self.port, cid, **kw)
        self.made.append(c)
        if connect:
            c.connect()
        return c

    def close_all(self) -> None:
        for c in self.made:
            c.close_quietly()


def _unique(request) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name)[:40]
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def uid(request) -> str:
    """A string unique to this test run, for client ids and topics."""
    return _unique(request)


@pytest.fixture
def topic(uid) -> str:
    """A topic prefix no other test uses."""
    return f"e2e/{uid}"


@pytest.fixture
def clients(broker, uid):
    f = ClientFactory(broker.port, uid)
    yield f
    f.close_all()


# --------------------------------------------------------------------------
# raw MQTT, for what paho will not send or does not expose exactly


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def prop_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!H", value)


def prop_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!I", value)


def connect_packet(
    client_id: str, *, version: int = 4, clean: bool = True, keepalive: int = 60,
    username: str | None = None, password: str | None = None,
    will: tuple[str, bytes, int] | None = None, props: bytes = b"",
) -> bytes:
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    vh = _str("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        vh += _varint(len(props)) + props
    payload = _str(client_id)
    if will is not None:
        if version == 5:
            payload += _varint(0)
        payload += _str(will[0]) + _str(will[1])
    if username is not None:
        payload += _str(username)
    if password is not None:
        payload += _str(password)
    body = vh + payload
    return bytes([0x10]) + _varint(len(body)) + body


def read_packet(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
    """(first byte, body) of the next packet, or None if the peer closed."""
    sock.settimeout(timeout)

    def recv_exact(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    first = recv_exact(1)
    if first is None:
        return None
    length, mult = 0, 1
    while True:
        b = recv_exact(1)
        if b is None:
            return None
        length += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = recv_exact(length) if length else b""
    if body is None:
        return None
    return first[0], body


def raw_connect(port: int, client_id: str, **kw) -> tuple[socket.socket, int, bool]:
    """Sends CONNECT on a new socket; returns (socket, CONNACK code, session present)."""
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.sendall(connect_packet(client_id, **kw))
    pkt = read_packet(sock)
    assert pkt is not None, "connection closed without CONNACK"
    first, body = pkt
    assert first == 0x20, f"expected CONNACK, got packet type {first >> 4}"
    return sock, body[1], bool(body[0] & 1)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


class RawClient:
    """A hand-driven MQTT connection: nothing is acknowledged unless the test
    does it, so tests can leave messages in flight on purpose."""

    def __init__(self, port: int, version: int = 4):
        self.port = port
        self.version = version
        self.sock: socket.socket | None = None

    def connect(self, client_id: str, **kw) -> tuple[int, bool]:
        self.sock, rc, present = raw_connect(self.port, client_id, version=self.version, **kw)
        return rc, present

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        try:
            pkt = read_packet(self.sock, timeout)
        except socket.timeout:
            raise AssertionError(f"no packet within {timeout}s") from None
        assert pkt is not None, "connection closed"
        return pkt

    def recv_none(self, timeout: float = QUIET) -> None:
        try:
            pkt = read_packet(self.sock, timeout)
        except socket.timeout:
            return
        raise AssertionError(f"unexpected packet {pkt!r}")

    def _props(self) -> bytes:
        return _varint(0) if self.version == 5 else b""

    def subscribe(self, pid: int, topic_filter: str, qos: int) -> int:
        body = struct.pack("!H", pid) + self._props() + _str(topic_filter) + bytes([qos])
        self.send(_packet(0x82, body))
        first, body = self.recv()
        assert first == 0x90, f"expected SUBACK, got {first:#x}"
        assert struct.unpack("!H", body[:2])[0] == pid
        return body[-1]

    def publish(self, topic: str, payload: bytes, qos: int = 0, pid: int = 0,
                dup: bool = False, retain: bool = False) -> None:
        first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + self._props() + payload
        self.send(_packet(first, body))

    def ack(self, kind: int, pid: int) -> None:
        """kind: 0x40 PUBACK, 0x50 PUBREC, 0x62 PUBREL, 0x70 PUBCOMP."""
        self.send(_packet(kind, struct.pack("!H", pid)))

    def recv_publish(self, timeout: float = TIMEOUT) -> dict:
        first, body = self.recv(timeout)
        assert first >> 4 == 3, f"expected PUBLISH, got {first:#x}"
        qos = (first >> 1) & 3
        n = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + n].decode()
        pos = 2 + n
        pid = None
        if qos:
            pid = struct.unpack("!H", body[pos:pos + 2])[0]
            pos += 2
        if self.version == 5:
            plen, mult = 0, 1
            while True:
                b = body[pos]
                pos += 1
                plen += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            pos += plen
        return {"topic": topic, "qos": qos, "pid": pid, "dup": bool(first & 0x08),
                "retain": bool(first & 0x01), "payload": body[pos:]}

    def recv_ack(self, kind: int, pid: int, timeout: float = TIMEOUT) -> int:
        """Receives an acknowledgement of the given kind and id; returns its
        v5 reason code (0 when absent)."""
        first, body = self.recv(timeout)
        assert first == kind, f"expected {kind:#x}, got {first:#x} {body!r}"
        assert struct.unpack("!H", body[:2])[0] == pid
        return body[2] if len(body) > 2 else 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


@pytest.fixture
def raw(broker):
    """Raw-socket clients on the module's broker, closed at the end."""
    made = []

    def new(version: int = 4) -> RawClient:
        r = RawClient(broker.port, version)
        made.append(r)
        return r

    yield new
    for r in made:
        r.close()
