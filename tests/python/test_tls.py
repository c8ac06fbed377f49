"""MQTT over TLS (rustls) with real clients: paho-mqtt (`tls_set`) and
mosquitto_pub/sub (`--cafile`) against a TLS listener, messages and
sessions crossing between TCP and TLS, and what bad input gets (plaintext
on the TLS port, a client that does not trust the certificate): that
connection closed, logged and counted, nothing else touched. Certificates
come from the openssl command line, made fresh for the run."""

from __future__ import annotations

import base64
import hashlib
import hmac
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import (HOST, TIMEOUT, Broker, ClientFactory, MqttClient, _stop_and_check,
                      connect_packet, free_port)

V311, V5 = 4, 5
BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            cwd=d)


def make_server(d: Path, ca: str, name: str, key: tuple[str, ...]) -> None:
    """A server certificate for localhost / 127.0.0.1 signed by `ca`; `key`
    says how its key is made (the arguments of `openssl req -newkey`)."""
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", "/CN=localhost", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_server(d, "ca", "server", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    return d


def tls_config(certs: Path, port: int, cert: str = "server", extra: str = "") -> str:
    return (f'{extra}[listeners]\ntls = ["{HOST}:{port}"]\n'
            f'[tls]\ncert_file = "{certs / (cert + ".pem")}"\nkey_file = "{certs / (cert + ".key")}"\n')


class TlsBroker(Broker):
    def __init__(self, workdir: Path, certs: Path, cert: str = "server", extra: str = ""):
        self.tls_port = free_port()
        super().__init__(workdir, config=tls_config(certs, self.tls_port, cert, extra))
        # --listen sets the TCP listener; the config file the TLS one.


@pytest.fixture(scope="module")
def tb(tmp_path_factory, certs) -> TlsBroker:
    b = TlsBroker(tmp_path_factory.mktemp("tls"), certs).start()
    yield b
    _stop_and_check(b)


class TlsClient(MqttClient):
    """A paho client over TLS, trusting `ca`."""

    def __init__(self, port: int, client_id: str, ca: Path, cert: Path | None = None, **kw):
        super().__init__(port, client_id, **kw)
        key = cert.with_suffix(".key") if cert is not None else None
        self.c.tls_set(ca_certs=str(ca), certfile=cert and str(cert), keyfile=key and str(key))


class Clients(ClientFactory):
    def __init__(self, b: TlsBroker, prefix: str, certs: Path):
        super().__init__(b.port, prefix)
        self.b, self.certs = b, certs

    def tls(self, name: str, *, connect: bool = True, ca: str = "ca", **kw) -> MqttClient:
        c = TlsClient(self.b.tls_port, kw.pop("client_id", f"{self.prefix}-{name}"),
                      self.certs / f"{ca}.pem", **kw)
        self.made.append(c)
        if connect:
            c.connect()
        return c


@pytest.fixture
def clients(tb, uid, certs):
    f = Clients(tb, uid, certs)
    yield f
    f.close_all()


def wait_for_log(b: Broker, text: str) -> None:
    """Waits until the broker's log holds `text`."""
    deadline = time.monotonic() + TIMEOUT
    while text not in b.log():
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.05)


def metrics(b: Broker) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{b.admin_port}/metrics", timeout=TIMEOUT) as r:
        return r.read().decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


@BOTH
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_round_trips_over_tls(clients, uid, proto, qos):
    sub = clients.tls("sub", protocol=proto)
    sub.sub(f"{uid}/#", qos)
    pub = clients.tls("pub", protocol=proto)
    assert pub.publish(f"{uid}/x", b"over tls", qos=qos) in (0, None)
    m = sub.expect_one()
    assert (m.topic, m.payload, m.qos) == (f"{uid}/x", b"over tls", qos)


def test_messages_cross_between_tcp_and_tls(clients, uid):
    tcp = clients.new("tcp")
    tls = clients.tls("tls")
    tcp.sub(f"{uid}/to-tcp", 1)
    tls.sub(f"{uid}/to-tls", 1)
    assert tls.publish(f"{uid}/to-tcp", b"from tls", qos=1) == 0
    assert tcp.publish(f"{uid}/to-tls", b"from tcp", qos=1) == 0
    assert tcp.expect_one().payload == b"from tls"
    assert tls.expect_one().payload == b"from tcp"


def test_many_tls_clients_land_on_their_home_shards(clients, uid):
    """Client ids hash to both shards: a TLS session moves with its
    connection to the client's home shard and goes on working there."""
    subs = [clients.tls(f"s{i}") for i in range(8)]
    for s in subs:
        s.sub(f"{uid}/all", 1)
    assert clients.tls("pub").publish(f"{uid}/all", b"to everyone", qos=1) == 0
    for s in subs:
        assert s.expect_one().payload == b"to everyone"


def test_a_persistent_session_moves_from_tcp_to_tls(clients, uid):
    cid = f"{uid}-moving"
    first = clients.new("first", client_id=cid, clean=False, session_expiry=300)
    first.sub(f"{uid}/queued", 1)
    first.close_quietly()
    assert clients.new("pub").publish(f"{uid}/queued", b"kept for you", qos=1) == 0
    again = clients.tls("again", client_id=cid, clean=False, session_expiry=300, connect=False)
    again.connect()
    assert again.session_present is True
    assert again.expect_one().payload == b"kept for you"


def test_a_tls_connection_takes_over_a_tcp_one(clients, uid):
    cid = f"{uid}-twice"
    old = clients.new("old", client_id=cid)
    clients.tls("new", client_id=cid)
    assert old.wait_disconnected() == 0x8E


def test_mosquitto_clients_over_tls(tb, certs, uid):
    ca = str(certs / "ca.pem")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", HOST, "-p", str(tb.tls_port), "--cafile", ca, "-t", f"{uid}/m",
         "-q", "1", "-C", "1", "-W", "10", "-i", f"{uid}-msub"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(tb.tls_port), "--cafile", ca, "-t",
                    f"{uid}/m", "-q", "1", "-m", "via mosquitto", "-i", f"{uid}-mpub"],
                   check=True, capture_output=True, timeout=20)
    out, err = sub.communicate(timeout=20)
    assert (sub.returncode, out.strip()) == (0, "via mosquitto"), err


def test_plaintext_and_untrusted_certificates_are_closed_and_counted(tb, clients, uid):
    steady = clients.tls("steady")
    steady.sub(f"{uid}/steady", 1)
    before = metric(metrics(tb), "ringmq_transport_errors_total")
    # Plain MQTT on the TLS port: not a TLS record; the broker closes it.
    with socket.create_connection((HOST, tb.tls_port), timeout=TIMEOUT) as s:
        s.sendall(connect_packet("plain-on-tls"))
        assert s.recv(100) == b""
    # A client that does not trust the certificate aborts the handshake.
    wary = clients.tls("wary", ca="other-ca", connect=False)
    with pytest.raises(ssl.SSLError):
        wary.c.connect(HOST, tb.tls_port)
    deadline = time.monotonic() + TIMEOUT
    while metric(metrics(tb), "ringmq_transport_errors_total") < before + 2:
        assert time.monotonic() < deadline, "refusals not counted"
        time.sleep(0.1)
    assert "connection closed before CONNECT" in tb.log()
    assert clients.tls("pub").publish(f"{uid}/steady", b"still here", qos=1) == 0
    assert steady.expect_one().payload == b"still here"


@pytest.mark.parametrize("key", ["rsa", "sec1"])
def test_rsa_and_sec1_ec_keys_are_loaded(tmp_path, certs, uid, key):
    d = tmp_path
    for f in ("ca.pem", "ca.key"):
        (d / f).write_bytes((certs / f).read_bytes())
    if key == "rsa":
        make_server(d, "ca", "server", ("rsa:2048",))
    else:
        make_server(d, "ca", "server", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
        openssl("ec", "-in", "server.key", "-out", "server.key", cwd=d)  # PKCS#8 -> SEC1
        assert b"BEGIN EC PRIVATE KEY" in (d / "server.key").read_bytes()
    b = TlsBroker(d / "broker", d).start()
    try:
        c = TlsClient(b.tls_port, f"{uid}-{key}", d / "ca.pem")
        c.connect()
        c.sub(f"{uid}/k", 1)
        assert c.publish(f"{uid}/k", b"ok", qos=1) == 0
        assert c.expect_one().payload == b"ok"
        c.close_quietly()
    finally:
        _stop_and_check(b)


def test_a_tls_port_without_a_certificate_is_refused_at_start(tmp_path):
    cfg = f'[listeners]\ntls = ["{HOST}:{free_port()}"]\n'
    (tmp_path / "ringmq.toml").write_text(cfg)
    from conftest import ringmq_bin
    out = subprocess.run([ringmq_bin(), "--config", str(tmp_path / "ringmq.toml"), "--listen",
                          f"{HOST}:{free_port()}", "--admin-listen", "", "--data-dir",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "tls.cert_file" in out.stderr, out.stderr


def test_the_aliyun_sign_in_works_over_tls(tmp_path, certs, uid):
    extra = ('profile = "aliyun"\n[aliyun]\ninstance_id = "mqtt-cn-tls"\nparent_topics = ["devices"]\n'
             'group_ids = ["GID_tls"]\n[[aliyun.access_keys]]\nid = "AKtls"\nsecret = "SKtls"\n')
    b = TlsBroker(tmp_path, certs, extra=extra).start()
    try:
        cid = f"GID_tls@@@{uid.replace('_', '-')}"[:64]
        password = base64.b64encode(hmac.new(b"SKtls", cid.encode(), hashlib.sha1).digest()).decode()
        c = TlsClient(b.tls_port, cid, certs / "ca.pem", username="Signature|AKtls|mqtt-cn-tls",
                      password=password)
        c.connect()
        c.sub("devices/tls", 1)
        assert c.publish("devices/tls", b"signed over tls", qos=1) == 0
        assert c.expect_one().payload == b"signed over tls"
        c.close_quietly()
        bad = TlsClient(b.tls_port, cid, certs / "ca.pem", username="Signature|AKtls|mqtt-cn-tls",
                        password="wrong")
        bad.connect(expect_success=False)
        assert bad.connack_rc == 0x87
    finally:
        _stop_and_check(b)


def test_sighup_reloads_the_certificate_and_open_connections_stay(tmp_path, uid):
    d = tmp_path
    make_ca(d, "ca")
    make_ca(d, "ca2")
    make_server(d, "ca", "server", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    make_server(d, "ca2", "next", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    b = TlsBroker(d / "broker", d).start()
    try:
        old = TlsClient(b.tls_port, f"{uid}-old", d / "ca.pem")
        old.connect()
        old.sub(f"{uid}/t", 1)
        (d / "next.pem").replace(d / "server.pem")
        (d / "next.key").replace(d / "server.key")
        b.proc.send_signal(signal.SIGHUP)
        wait_for_log(b, "TLS certificate reloaded")
        fresh = TlsClient(b.tls_port, f"{uid}-new", d / "ca2.pem")
        fresh.connect()
        stale = TlsClient(b.tls_port, f"{uid}-stale", d / "ca.pem")
        with pytest.raises(ssl.SSLError):
            stale.c.connect(HOST, b.tls_port)
        assert fresh.publish(f"{uid}/t", b"old connection still up", qos=1) == 0
        assert old.expect_one().payload == b"old connection still up"
        # A broken file: the reload fails and the certificate in force stays.
        (d / "server.pem").write_text("not a certificate\n")
        b.proc.send_signal(signal.SIGHUP)
        wait_for_log(b, "not reloaded")
        again = TlsClient(b.tls_port, f"{uid}-again", d / "ca2.pem")
        again.connect()
        for c in (old, fresh, again):
            c.close_quietly()
    finally:
        _stop_and_check(b)


def make_client(d: Path, ca: str, name: str, cn: str) -> None:
    """A client certificate with subject CN `cn`, signed by `ca`."""
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "client.ext", cwd=d)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """A broker asking TLS clients for a certificate of `ca`, whose CN is
    the user name its ACL file knows."""
    d = tmp_path_factory.mktemp("mtls")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_server(d, "ca", "server", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    make_client(d, "ca", "alice", "alice")
    make_client(d, "other-ca", "mallory", "alice")
    (d / "acl").write_text("user alice\ntopic readwrite alice/#\n")
    extra = f'[auth]\nacl_file = "{d / "acl"}"\n'
    tls = (f'ca_file = "{d / "ca.pem"}"\nrequire_client_cert = true\ncert_cn_as_username = true\n')
    b = TlsBroker(d / "broker", d, extra=extra)
    cfg = (b.workdir / "ringmq.toml").read_text().replace("[tls]\n", "[tls]\n" + tls)
    (b.workdir / "ringmq.toml").write_text(cfg)
    b.start()
    yield b, d
    _stop_and_check(b)


def mtls_client(b: TlsBroker, d: Path, cid: str, cert: str | None) -> TlsClient:
    return TlsClient(b.tls_port, cid, d / "ca.pem", cert=d / f"{cert}.pem" if cert else None)


def test_a_client_certificate_is_required_and_its_cn_is_the_user_name(mtls, uid):
    b, d = mtls
    alice = mtls_client(b, d, f"{uid}-alice", "alice")
    alice.connect()
    assert alice.subscribe("alice/inbox", 1) == 1
    assert alice.subscribe("bob/inbox", 1) in (0x80, 0x87), "the ACL of user alice (the CN)"
    assert alice.publish("alice/inbox", b"mine", qos=1) == 0
    assert alice.expect_one().payload == b"mine"
    alice.close_quietly()
    assert tls_connack(b, d, "alice").startswith(b"\x20"), "a CONNACK with the certificate"
    for cert in (None, "mallory"):  # no certificate; one of another CA
        assert tls_connack(b, d, cert) in (None, b""), f"{cert}: not refused"


def tls_connack(b: TlsBroker, d: Path, cert: str | None) -> bytes | None:
    """The first bytes the broker answers a CONNECT with over TLS (with
    client certificate `cert`); None or b"" if the connection failed."""
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(d / f"{cert}.pem"), str(d / f"{cert}.key"))
    try:
        with socket.create_connection((HOST, b.tls_port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(connect_packet(f"raw-{cert}"))
                return s.recv(4)
    except (ssl.SSLError, OSError):
        return None
