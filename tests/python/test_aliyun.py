"""The Alibaba Cloud profile, end to end with paho-mqtt: the issue's config
file as written (ports aside), device code written for the product
(Signature / Token / legacy sign-in, GID client ids, P2P, online/offline
notifications, $SYS token topics), and every refusal with its code.

The broker runs with two shards; the P2P ids below were picked so that one
pair crosses shards (a Rust test, p2p_test_ids_sit_where_the_python_tests_say,
keeps that true).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import (ACCEPTED, TIMEOUT, Broker, ClientFactory, _stop_and_check, free_port, raw_connect,
                      ringmq_bin)

V311, V5 = 4, 5
BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])

AK = "LTAI5tLocalKey"
SECRET = "LocalSecret0123456789abcd"
INSTANCE = "mqtt-cn-local"

# The config file of the issue, as written; only the admin port is made free
# (the MQTT listener is set by --listen).
CONFIG = """profile = "aliyun"
[listeners]
tcp = ["127.0.0.1:1883"]
[admin]
listen = "127.0.0.1:{admin}"   # used by the next issue; accept it now
[aliyun]
instance_id = "mqtt-cn-local"
parent_topics = ["devices", "alerts"]
group_ids = ["GID_sensor", "GID_app"]
[[aliyun.access_keys]]
id = "LTAI5tLocalKey"
secret = "LocalSecret0123456789abcd"
"""

# Home shards (of 2): target-1 on 0, sender-1 on 1 (crossing); target-2 and
# sender-2 both on 1.
CROSS = ("GID_sensor@@@p2p-sender-1", "GID_app@@@p2p-target-1")
SAME = ("GID_sensor@@@p2p-sender-2", "GID_app@@@p2p-target-2")

NOT_AUTHORIZED = {V311: 5, V5: 0x87}
BAD_CLIENT_ID = {V311: 2, V5: 0x85}


def config(extra: str = "") -> str:
    """The issue's config; `extra` lines go into its [aliyun] table."""
    return CONFIG.format(admin=free_port()).replace("[aliyun]\n", "[aliyun]\n" + extra)


@pytest.fixture(scope="module")
def ali(tmp_path_factory) -> Broker:
    b = Broker(tmp_path_factory.mktemp("aliyun"), config=config()).start()
    yield b
    _stop_and_check(b)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the broker binds: connections in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture
def own_broker(tmp_path):
    """Starts brokers of a test's own; whatever still runs at the end (a
    test that failed half-way) is killed, so nothing outlives the test."""
    made: list[Broker] = []

    def start(cfg: str | None = None) -> Broker:
        b = Broker(tmp_path, config=cfg if cfg is not None else config()).start()
        made.append(b)
        return b

    yield start
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def sign(secret: str, message: str) -> str:
    """What the product's samples compute: base64(HMAC-SHA1(secret, message))."""
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()).decode()


class Devices(ClientFactory):
    """Clients that sign in like the product's device samples."""

    def signed(self, client_id: str, **kw):
        return self.new(client_id=client_id, username=f"Signature|{AK}|{INSTANCE}",
                        password=sign(SECRET, client_id), **kw)

    def token(self, client_id: str, password: str, **kw):
        return self.new(client_id=client_id, username=f"Token|{AK}|{INSTANCE}",
                        password=password, **kw)


@pytest.fixture
def devices(ali, uid):
    f = Devices(ali.port, uid)
    yield f
    f.close_all()


def unique(uid: str, group: str = "GID_app") -> str:
    """A client id of `group` unique to the test (the product allows 64 chars)."""
    return f"{group}@@@{uid.replace('_', '-')}"[:64]


def mint(broker: Broker, resources: str, actions: str, secs: int = 3600) -> str:
    """A token from `ringmq token` with the broker's config."""
    out = subprocess.run(
        [ringmq_bin(), "--config", str(broker.workdir / "ringmq.toml"), "token",
         "--access-key", AK, "--resources", resources, "--actions", actions,
         "--expire-secs", str(secs)],
        check=True, capture_output=True, text=True, timeout=30,
    )
    return out.stdout.strip()


def suback_codes(client, filters: list[str], qos: int = 1) -> list[int]:
    """One SUBSCRIBE of several filters; the SUBACK's codes."""
    if client.v5:
        rc, mid = client.c.subscribe([(f, SubscribeOptions(qos=qos)) for f in filters])
    else:
        rc, mid = client.c.subscribe([(f, qos) for f in filters])
    assert rc == mqtt.MQTT_ERR_SUCCESS
    return client._wait_ack("sub", mid, TIMEOUT)


# --------------------------------------------------------------------------
# sign-in and names


@BOTH
def test_a_product_device_signs_in_and_exchanges_messages(devices, uid, proto):
    sub = devices.signed(unique(uid + "s"), protocol=proto)
    sub.sub("devices/+/temperature", 1)
    pub = devices.signed(unique(uid + "p", "GID_sensor"), protocol=proto)
    assert pub.publish("devices/room1/temperature", b"21.5", qos=1) == 0
    m = sub.expect_one()
    assert (m.topic, m.payload, m.qos) == ("devices/room1/temperature", b"21.5", 1)


@BOTH
def test_the_legacy_mode_signs_the_group_id(devices, uid, proto):
    cid = unique(uid)
    c = devices.new(client_id=cid, username=AK, password=sign(SECRET, "GID_app"), protocol=proto)
    c.sub("alerts/#", 1)


@BOTH
@pytest.mark.parametrize("case", ["bad signature", "unknown key", "wrong instance", "anonymous",
                                  "signed for another client"])
def test_a_failed_sign_in_is_not_authorized_without_saying_why(devices, uid, proto, case):
    cid = unique(uid)
    user, password = f"Signature|{AK}|{INSTANCE}", sign(SECRET, cid)
    if case == "bad signature":
        password = sign("not the secret", cid)
    elif case == "unknown key":
        user = f"Signature|LTAI5tNobody|{INSTANCE}"
    elif case == "wrong instance":
        user = f"Signature|{AK}|mqtt-cn-other"
    elif case == "signed for another client":
        password = sign(SECRET, "GID_app@@@someone-else")
    kw = {} if case == "anonymous" else {"username": user, "password": password}
    # A raw CONNECT: paho reports a 3.1.1 return code as its v5 equivalent.
    sock, rc, _ = raw_connect(devices.port, cid, version=proto, **kw)
    sock.close()
    assert rc == NOT_AUTHORIZED[proto]
    # And paho-mqtt sees a refusal.
    c = devices.new(client_id=cid, protocol=proto, connect=False, **kw)
    c.connect(expect_success=False)
    assert c.connack_rc == 0x87


@BOTH
@pytest.mark.parametrize("cid", ["plain-client", "GID_nobody@@@dev", "GID_app@dev", "GID_app@@@",
                                 "GID_app@@@" + "d" * 55])
def test_a_client_id_outside_the_rules_is_refused(devices, proto, cid):
    sock, rc, _ = raw_connect(devices.port, cid, version=proto,
                              username=f"Signature|{AK}|{INSTANCE}", password=sign(SECRET, cid))
    sock.close()
    assert rc == BAD_CLIENT_ID[proto]


# --------------------------------------------------------------------------
# topics and limits


def test_a_bad_topic_closes_a_311_connection_and_is_never_delivered(devices, uid):
    watcher = devices.signed(unique(uid + "w"))
    watcher.sub("devices/#", 1)
    for topic in ["nope/x", "devices/a.b", "devices/with space"]:
        c = devices.signed(unique(uid + "p", "GID_sensor"), protocol=V311)
        c.c.publish(topic, b"bad", qos=1)
        c.wait_disconnected()
        c.close_quietly()
    watcher.expect_none()


def test_a_bad_topic_gets_puback_0x90_or_disconnect_0x90_in_v5(devices, uid):
    watcher = devices.signed(unique(uid + "w"))
    watcher.sub("devices/#", 1)
    c = devices.signed(unique(uid + "p", "GID_sensor"), protocol=V5)
    assert c.publish("nope/x", b"bad", qos=1) == 0x90
    assert c.publish("devices/a.b", b"bad", qos=1) == 0x90
    assert c.publish("devices/" + "x" * 60, b"too long", qos=1) == 0x90
    assert c.publish("devices/ok", b"fine", qos=1) == 0, "still connected"
    c.c.publish("nope/x", b"bad", qos=0)
    assert c.wait_disconnected() == 0x90
    assert watcher.expect_one().payload == b"fine"
    watcher.expect_none()


@BOTH
def test_a_payload_over_64_kib_is_refused_and_never_half_delivered(devices, uid, proto):
    watcher = devices.signed(unique(uid + "w"))
    watcher.sub("devices/#", 1)
    c = devices.signed(unique(uid + "p", "GID_sensor"), protocol=proto)
    assert c.publish("devices/blob", b"x" * 65536, qos=1) == 0
    assert len(watcher.expect_one().payload) == 65536
    c.c.publish("devices/blob", b"x" * 65537, qos=1)
    rc = c.wait_disconnected()
    if proto == V5:
        assert rc == 0x95
    watcher.expect_none()


@BOTH
def test_subscribe_refuses_each_bad_filter_with_0x80_and_grants_the_others(devices, uid, proto):
    c = devices.signed(unique(uid), protocol=proto)
    codes = suback_codes(c, ["devices/+/t", "#", "nope/#", "devices/a.b", "GID_sensor_MQTT/+",
                             "devices/p2p/", "alerts/#"])
    assert codes == [1, 0x80, 0x80, 0x80, 1, 1, 1]


@BOTH
def test_a_client_holds_30_subscriptions_and_the_31st_gets_0x80(devices, uid, proto):
    c = devices.signed(unique(uid), protocol=proto)
    assert suback_codes(c, [f"devices/{i}" for i in range(30)]) == [1] * 30
    assert c.subscribe("devices/one-more", 1) == 0x80
    assert c.subscribe("devices/7", 1) == 1, "subscribing again is no new subscription"


def test_a_parent_topic_holds_100_wildcard_filters_across_the_instance(own_broker, uid):
    # A broker of its own: the count is the instance's.
    b = own_broker()
    f = Devices(b.port, uid)
    try:
        for k in range(4):
            n = min(30, 100 - 30 * k)
            c = f.signed(unique(f"{uid}{k}"))
            assert suback_codes(c, [f"alerts/{k}-{i}/+" for i in range(n)]) == [1] * n
        late = f.signed(unique(uid + "late"))
        assert late.subscribe("alerts/new/#", 1) == 0x80
        assert late.subscribe("alerts/0-0/+", 1) == 1, "an existing filter is no new one"
        assert late.subscribe("devices/+/x", 1) == 1, "another parent topic has room"
        assert late.subscribe("alerts/plain", 1) == 1, "a plain filter has room"
    finally:
        f.close_all()
    _stop_and_check(b)


# --------------------------------------------------------------------------
# P2P


@BOTH
@pytest.mark.parametrize("pair", [CROSS, SAME], ids=["across-shards", "same-shard"])
def test_p2p_reaches_its_target_without_a_subscription_and_nobody_else(devices, uid, proto, pair):
    sender_id, target_id = pair
    target = devices.signed(target_id, protocol=proto)
    target.sub("devices/p2p/", 1)  # old clients do this: accepted, changes nothing
    snoop = devices.signed(unique(uid + "snoop"), protocol=proto)
    snoop.sub("devices/#", 1)
    sender = devices.signed(sender_id, protocol=proto)
    topic = f"devices/p2p/{target_id}"
    for qos in (0, 1, 2):
        assert sender.publish(topic, f"q{qos}".encode(), qos=qos) == 0
    got = target.expect(3)
    assert [(m.topic, m.payload, m.qos) for m in got] == [(topic, b"q0", 0), (topic, b"q1", 1),
                                                          (topic, b"q2", 2)]
    snoop.expect_none()


def test_p2p_to_an_offline_persistent_client_waits_for_it_at_qos_1(devices, uid):
    sender_id, target_id = CROSS
    target = devices.signed(target_id, protocol=V311, clean=False)
    target.disconnect()
    sender = devices.signed(sender_id)
    topic = f"devices/p2p/{target_id}"
    assert sender.publish(topic, b"kept", qos=1) == 0
    assert sender.publish(topic, b"qos 2: not kept", qos=2) == 0
    back = devices.signed(target_id, protocol=V311, clean=False)
    m = back.expect_one()
    assert (m.topic, m.payload, m.qos) == (topic, b"kept", 1)
    back.expect_none()
    back.disconnect()
    devices.signed(target_id, protocol=V311, clean=True).disconnect()


def test_only_qos_1_subscriptions_of_persistent_sessions_keep_offline_messages(devices, uid):
    one, two = unique(uid + "1"), unique(uid + "2")
    for cid, qos in ((one, 1), (two, 2)):
        c = devices.signed(cid, protocol=V311, clean=False)
        c.sub(f"alerts/{uid[:30]}", qos)
        c.disconnect()
    pub = devices.signed(unique(uid + "p", "GID_sensor"))
    for qos in (0, 1, 2):
        assert pub.publish(f"alerts/{uid[:30]}", f"q{qos}".encode(), qos=qos) == 0
    got = [m.payload for m in devices.signed(one, protocol=V311, clean=False).drain(1.0)]
    assert got == [b"q1", b"q2"], "QoS 1 and 2 messages, as QoS 1 copies"
    assert devices.signed(two, protocol=V311, clean=False).drain(1.0) == [], \
        "a QoS 2 subscription keeps nothing offline"


# --------------------------------------------------------------------------
# online/offline notifications


class OnlineTable:
    """The product's sample logic: a client is online while some channel has
    `connect` and neither `disconnect` nor `tcpclean`."""

    def __init__(self):
        self.channels: dict[str, set[str]] = {}
        self.events: list[dict] = []

    def feed(self, msgs):
        for m in msgs:
            e = json.loads(m.payload)
            assert m.topic == f"GID_sensor_MQTT/{e['eventType']}"
            assert set(e) == {"clientId", "channelId", "clientIp", "eventType", "time"}
            self.events.append(e)
            chans = self.channels.setdefault(e["clientId"], set())
            if e["eventType"] == "connect":
                chans.add(e["channelId"])
            else:
                chans.discard(e["channelId"])

    def online(self, cid: str) -> bool:
        return bool(self.channels.get(cid))


def test_an_online_table_from_notifications_follows_every_way_of_leaving(devices, uid):
    watcher = devices.signed(unique(uid + "w"))
    watcher.sub("GID_sensor_MQTT/+", 1)
    table = OnlineTable()
    cid = unique(uid, "GID_sensor")

    def settle(n):
        table.feed(watcher.expect(n))

    c = devices.signed(cid)
    settle(1)
    assert table.online(cid)
    assert table.events[-1]["clientIp"].startswith("127.0.0.1:")
    c.disconnect()
    settle(2)
    assert [e["eventType"] for e in table.events[-2:]] == ["disconnect", "tcpclean"]
    assert not table.online(cid)

    c = devices.signed(cid)
    settle(1)
    c.abort()  # no DISCONNECT: the TCP connection just goes
    settle(1)
    assert table.events[-1]["eventType"] == "tcpclean"
    assert not table.online(cid)

    first = devices.signed(cid)
    settle(1)
    second = devices.signed(cid)  # take-over
    settle(2)
    assert [e["eventType"] for e in table.events[-2:]] == ["tcpclean", "connect"]
    assert table.online(cid), "the newer channel is online"
    first.wait_disconnected()
    second.close_quietly()
    settle(2)
    assert not table.online(cid)

    sleepy = devices.signed(cid, keepalive=1, connect=False)
    sleepy.connect()
    settle(1)
    sleepy.c.loop_stop()  # stops answering: no PINGREQ
    table.feed(watcher.expect(1, timeout=5))
    assert table.events[-1]["eventType"] == "tcpclean"
    assert not table.online(cid)
    channels = [e["channelId"] for e in table.events if e["eventType"] == "connect"]
    assert len(set(channels)) == len(channels), "one channelId per TCP connection"
    times = [e["time"] for e in table.events]
    assert times == sorted(times)


# --------------------------------------------------------------------------
# tokens


@BOTH
def test_a_token_allows_only_its_topics_and_actions(ali, devices, uid, proto):
    r = mint(ali, "devices/#", "R")
    c = devices.token(unique(uid), f"R|{r}", protocol=proto)
    assert c.subscribe("devices/+/x", 1) == 1
    assert c.subscribe("alerts/#", 1) == 0x80
    if proto == V5:
        assert c.publish("devices/a", b"no W token", qos=1) == 0x87
    else:
        c.c.publish("devices/a", b"no W token", qos=1)
        notice = c.expect_one()
        assert (notice.topic, json.loads(notice.payload)) == ("$SYS/tokenInvalidNotice",
                                                              {"code": 5, "type": "W"})
        c.wait_disconnected()
    w = mint(ali, "alerts/#", "W")
    both = devices.token(unique(uid + "b"), f"R|{r}|W|{w}", protocol=proto)
    assert both.publish("alerts/fire", b"ok", qos=1) in ACCEPTED
    assert both.subscribe("devices/#", 1) == 1
    rw = mint(ali, "devices/#,alerts/#", "R,W")
    devices.token(unique(uid + "rw"), f"RW|{rw}", protocol=proto).sub("alerts/#", 1)


@BOTH
def test_a_bad_token_is_not_authorized(ali, devices, uid, proto):
    r = mint(ali, "devices/#", "R")
    for password in [f"R|{r}x", "R|garbage", f"W|{r}", f"R|{r}|W"]:
        sock, rc, _ = raw_connect(ali.port, unique(uid), version=proto,
                                  username=f"Token|{AK}|{INSTANCE}", password=password)
        sock.close()
        assert rc == NOT_AUTHORIZED[proto], password


def test_upload_token_replaces_the_token_of_a_connected_client(ali, devices, uid):
    c = devices.token(unique(uid), f"R|{mint(ali, 'devices/#', 'R')}")
    assert c.subscribe("alerts/#", 1) == 0x80
    body = json.dumps({"token": mint(ali, "alerts/#", "R"), "type": "R"})
    assert c.publish("$SYS/uploadToken", body, qos=1) == 0
    assert c.subscribe("alerts/#", 1) == 1
    c.c.publish("$SYS/uploadToken", json.dumps({"token": "forged.token", "type": "R"}), qos=1)
    notice = c.expect_one()
    assert notice.topic == "$SYS/tokenInvalidNotice"
    assert json.loads(notice.payload)["code"] in (1, 8)
    c.wait_disconnected()


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory) -> Broker:
    """A broker that accepts tokens living only seconds."""
    b = Broker(tmp_path_factory.mktemp("tokens"),
               config=config("token_life_secs_min = 1\n")).start()
    yield b
    _stop_and_check(b)


@BOTH
def test_a_short_token_gets_the_expiry_notice_then_the_invalid_notice_and_is_closed(
        short_tokens, uid, proto):
    f = Devices(short_tokens.port, uid)
    try:
        t = mint(short_tokens, "devices/#", "R", secs=3)
        c = f.token(unique(uid), f"R|{t}", protocol=proto)
        notice = c.expect_one(timeout=2)
        body = json.loads(notice.payload)
        assert notice.topic == "$SYS/tokenExpireNotice"
        assert body["type"] == "R" and body["expireTime"] > time.time() * 1000
        notice = c.expect_one(timeout=5)
        assert (notice.topic, json.loads(notice.payload)) == ("$SYS/tokenInvalidNotice",
                                                              {"code": 2, "type": "R"})
        rc = c.wait_disconnected()
        if proto == V5:
            assert rc == 0x87
    finally:
        f.close_all()


# --------------------------------------------------------------------------
# the registry


def test_names_created_from_the_config_survive_kill_9(own_broker, tmp_path):
    b = own_broker()
    port = b.port
    c = ClientFactory(port, "k9")
    try:
        c.new(client_id="GID_app@@@before", username=f"Signature|{AK}|{INSTANCE}",
              password=sign(SECRET, "GID_app@@@before")).disconnect()
    finally:
        c.close_all()
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    b._log.close()
    # The same data, a config that names no Group ID or parent topic at all.
    (tmp_path / "ringmq.toml").write_text(config().split("parent_topics")[0] + "\n" + """
[[aliyun.access_keys]]
id = "LTAI5tLocalKey"
secret = "LocalSecret0123456789abcd"
""")
    # A killed process's io_uring lets go of its listening socket a moment
    # after the process is gone.
    deadline = time.monotonic() + 10
    while not port_free(port):
        assert time.monotonic() < deadline, f"port {port} still taken"
        time.sleep(0.05)
    b.start()
    f = Devices(port, "k9b")
    try:
        c = f.signed("GID_app@@@after")
        c.sub("devices/#", 1)
        assert c.publish("alerts/x", b"still here", qos=1) in ACCEPTED
    finally:
        f.close_all()
    _stop_and_check(b)
