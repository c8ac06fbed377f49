"""MQTT over WebSocket and WebSocket over TLS with real clients (paho-mqtt,
`transport="websockets"`), messages crossing between transports, MQTT
packets split across frames or packed in one (a hand-written WebSocket
client), and what bad input gets: an HTTP request that is no upgrade, a
wrong path, a text frame, garbage — that connection closed and counted,
nothing else touched."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import HOST, TIMEOUT, Broker, ClientFactory, MqttClient, _stop_and_check, connect_packet, free_port
from test_tls import make_ca, make_server, metric, metrics

V311, V5 = 4, 5


@pytest.fixture(scope="module")
def ws_certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ws-certs")
    make_ca(d, "ca")
    make_server(d, "ca", "server", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    return d


class WsBroker(Broker):
    def __init__(self, workdir: Path, certs: Path):
        self.ws_port, self.wss_port = free_port(), free_port()
        cfg = (f'[listeners]\nws = ["{HOST}:{self.ws_port}"]\nwss = ["{HOST}:{self.wss_port}"]\n'
               f'[tls]\ncert_file = "{certs / "server.pem"}"\nkey_file = "{certs / "server.key"}"\n')
        super().__init__(workdir, config=cfg)


@pytest.fixture(scope="module")
def wb(tmp_path_factory, ws_certs) -> WsBroker:
    b = WsBroker(tmp_path_factory.mktemp("ws"), ws_certs).start()
    yield b
    _stop_and_check(b)


class WsClient(MqttClient):
    """paho over WebSocket (path /mqtt), over TLS too if `ca` is given."""

    def __init__(self, port: int, client_id: str, ca: Path | None = None, **kw):
        super().__init__(port, client_id, **kw)
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311, transport="websockets",
            reconnect_on_failure=False, **({} if self.v5 else {"clean_session": self.clean}))
        self.c.ws_set_options(path="/mqtt")
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca))
        for name in ("connect", "disconnect", "message", "subscribe", "unsubscribe", "publish"):
            setattr(self.c, f"on_{name}", getattr(self, f"_on_{name}"))


class Clients(ClientFactory):
    def __init__(self, b: WsBroker, prefix: str, certs: Path):
        super().__init__(b.port, prefix)
        self.b, self.certs = b, certs

    def ws(self, name: str, kind: str = "ws", **kw) -> MqttClient:
        port, ca = (self.b.ws_port, None) if kind == "ws" else (self.b.wss_port, self.certs / "ca.pem")
        c = WsClient(port, kw.pop("client_id", f"{self.prefix}-{name}"), ca, **kw)
        self.made.append(c)
        c.connect()
        return c


@pytest.fixture
def clients(wb, uid, ws_certs):
    f = Clients(wb, uid, ws_certs)
    yield f
    f.close_all()


@pytest.mark.parametrize("kind", ["ws", "wss"])
@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_round_trips_over_websocket(clients, uid, kind, proto, qos):
    sub = clients.ws("sub", kind, protocol=proto)
    sub.sub(f"{uid}/#", qos)
    pub = clients.ws("pub", kind, protocol=proto)
    assert pub.publish(f"{uid}/x", b"over " + kind.encode(), qos=qos) in (0, None)
    m = sub.expect_one()
    assert (m.topic, m.payload, m.qos) == (f"{uid}/x", b"over " + kind.encode(), qos)


def test_messages_cross_between_tcp_ws_and_wss(clients, uid):
    tcp, ws, wss = clients.new("tcp"), clients.ws("ws"), clients.ws("wss", "wss")
    for c in (tcp, ws, wss):
        c.sub(f"{uid}/all", 1)
    assert wss.publish(f"{uid}/all", b"x" * 200_000, qos=1) == 0
    for c in (tcp, ws, wss):
        assert c.expect_one().payload == b"x" * 200_000


def ws_open(port: int, path: str = "/mqtt", protocol: str | None = "mqtt") -> tuple[socket.socket, bytes]:
    """A WebSocket opened by hand; returns the socket and the 101 answer's head."""
    s = socket.create_connection((HOST, port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if protocol:
        head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    s.sendall((head + "\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    return s, answer


def frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_binary(s: socket.socket) -> bytes:
    """The payload of the next server frame."""
    h = s.recv(2, socket.MSG_WAITALL)
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL) if n else b""


def test_the_mqtt_subprotocol_is_answered_and_packets_split_or_packed_are_read(wb):
    s, answer = ws_open(wb.ws_port)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    assert b"sec-websocket-protocol: mqtt" in answer.lower()
    connect = connect_packet("split-and-packed")
    s.sendall(frame(connect[:5]) + frame(connect[5:]))  # CONNECT in two frames
    assert read_binary(s)[:2] == b"\x20\x02"  # CONNACK
    pingreq = b"\xc0\x00"
    s.sendall(frame(pingreq + pingreq))  # two packets in one frame
    got = read_binary(s)
    got += b"" if len(got) >= 4 else read_binary(s)
    assert got == b"\xd0\x00\xd0\x00"  # two PINGRESPs
    s.close()


@pytest.mark.parametrize("case", ["no upgrade", "wrong path", "text frame", "garbage", "other subprotocol"])
def test_bad_websocket_input_is_closed_and_counted(wb, clients, uid, case):
    steady = clients.ws("steady")
    steady.sub(f"{uid}/steady", 1)
    before = metric(metrics(wb), "ringmq_transport_errors_total")
    if case == "no upgrade":
        s = socket.create_connection((HOST, wb.ws_port), timeout=TIMEOUT)
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
    elif case == "garbage":
        s = socket.create_connection((HOST, wb.ws_port), timeout=TIMEOUT)
        s.sendall(connect_packet("raw-mqtt-on-ws-port"))
    elif case == "wrong path":
        s, _ = ws_open(wb.ws_port, path="/elsewhere")
    elif case == "other subprotocol":
        s, _ = ws_open(wb.ws_port, protocol="chat")
    else:
        s, answer = ws_open(wb.ws_port)
        assert answer.startswith(b"HTTP/1.1 101")
        s.sendall(frame(b"hello", opcode=1))
    s.settimeout(TIMEOUT)
    while True:  # the broker closes the connection (whatever it sent first)
        if not s.recv(4096):
            break
    s.close()
    deadline = time.monotonic() + TIMEOUT
    while metric(metrics(wb), "ringmq_transport_errors_total") < before + 1:
        assert time.monotonic() < deadline, "not counted"
        time.sleep(0.1)
    assert clients.ws("pub").publish(f"{uid}/steady", b"still here", qos=1) == 0
    assert steady.expect_one().payload == b"still here"


def test_a_session_moves_from_websocket_to_tcp(clients, uid):
    cid = f"{uid}-moving"
    first = clients.ws("first", client_id=cid, clean=False, session_expiry=300)
    first.sub(f"{uid}/queued", 1)
    first.close_quietly()
    assert clients.new("pub").publish(f"{uid}/queued", b"kept", qos=1) == 0
    again = clients.new("again", client_id=cid, clean=False, session_expiry=300)
    assert again.session_present is True
    assert again.expect_one().payload == b"kept"
