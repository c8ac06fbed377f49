"""Rules managed through the OpenAPI: CreateRule, DeleteRule and ListRule,
signed by Alibaba's SDK like every other action, against a real
nats-server. A rule created is in force at once (outflow to a JetStream
stream, inflow from one, status notifications), kept across a restart,
and gone once deleted; the config file's rules are listed and cannot be
taken or deleted; bad rules get InvalidParameter with the reason.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from conftest import Broker, ClientFactory, _stop_and_check
from test_admin import CONFIG, INSTANCE, call_api, code_of, sdk, signed_client
from test_nats import (FETCH_TIMEOUTS, Events, add_outflow_stream, nats_server,  # noqa: F401
                       stored)

RULES = CONFIG + """
[nats]
servers = ["nats://127.0.0.1:{port}"]
[[rules]]
name = "from-config"
kind = "outflow"
source = "alerts"
subject = "mqtt.alerts"
"""


@pytest.fixture
def ruled(tmp_path, nats_server):  # noqa: F811
    asyncio.run(add_outflow_stream(nats_server.port))
    b = Broker(tmp_path / "broker", config=RULES.format(port=nats_server.port)).start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def api(b: Broker, action: str, **params) -> dict:
    return call_api(sdk(b), action, {"InstanceId": INSTANCE, **params})


def signed(b: Broker, uid: str, group: str = "GID_sensor"):
    return signed_client(ClientFactory(b.port, uid), f"{group}@@@{uid[-10:]}")


def test_an_outflow_rule_created_through_the_api_sends_at_once_and_after_a_restart(
        ruled, nats_server, uid):  # noqa: F811
    b = ruled
    api(b, "CreateRule", RuleName="devices-out", Kind="outflow", Source="devices",
        Subject="mqtt.devices", JetStream="true")
    rows = {r["RuleName"]: r for r in api(b, "ListRule")["Data"]}
    assert rows["devices-out"]["FromConfig"] is False and rows["devices-out"]["CreateTime"] > 0
    assert rows["devices-out"]["Kind"] == "outflow" and rows["devices-out"]["JetStream"] is True
    assert rows["from-config"]["FromConfig"] is True
    c = signed(b, uid)
    assert c.publish("devices/d1/temp", b"21.5", qos=1) == 0
    c.close_quietly()
    (subject, headers, data), = asyncio.run(stored(nats_server.port, 1))
    assert (subject, data, headers["mqttSecondTopic"]) == ("mqtt.devices", b"21.5", "/d1/temp")
    # Kept across a restart.
    _stop_and_check(b)
    b.start()
    c = signed(b, uid)
    assert c.publish("devices/d1/temp", b"22.0", qos=1) == 0
    assert [d for _, _, d in asyncio.run(stored(nats_server.port, 1))] == [b"22.0"]
    # Deleted: the next message stays in MQTT.
    api(b, "DeleteRule", RuleName="devices-out")
    assert "devices-out" not in [r["RuleName"] for r in api(b, "ListRule")["Data"]]
    assert c.publish("devices/d1/temp", b"gone", qos=1) == 0x10, "no rule, no subscriber"
    c.close_quietly()
    assert asyncio.run(stored(nats_server.port, 1, timeout=1)) == []
    _stop_and_check(b)


async def publish_command(port: int, second: str, payload: bytes) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    try:
        await js.stream_info("COMMANDS")
    except nats.js.errors.NotFoundError:
        await js.add_stream(name="COMMANDS", subjects=["commands.>"])
    await js.publish("commands.MQ2MQTT", payload, headers={"mqttSecondTopic": second})
    await nc.close()


def test_an_inflow_rule_created_through_the_api_reads_its_stream_until_deleted(
        ruled, nats_server, uid):  # noqa: F811
    b = ruled
    asyncio.run(publish_command(nats_server.port, "/cmd/1", b"first"))
    c = signed(b, uid, "GID_app")
    c.sub("devices/cmd/#", 1)
    api(b, "CreateRule", RuleName="commands", Kind="inflow", Stream="COMMANDS",
        Subject="commands.MQ2MQTT", Topic="devices")
    m = c.expect_one(timeout=10)
    assert (m.topic, m.payload) == ("devices/cmd/1", b"first")
    api(b, "DeleteRule", RuleName="commands")
    asyncio.run(publish_command(nats_server.port, "/cmd/2", b"after the delete"))
    c.expect_none(timeout=2)
    # Created again under its name: its consumer resumes where it stopped.
    api(b, "CreateRule", RuleName="commands", Kind="inflow", Stream="COMMANDS",
        Subject="commands.MQ2MQTT", Topic="devices")
    m = c.expect_one(timeout=10)
    assert (m.topic, m.payload) == ("devices/cmd/2", b"after the delete")
    # Created again under its name for other subjects: its consumer would
    # take the old ones, so it is not read, and the log says why.
    api(b, "DeleteRule", RuleName="commands")
    api(b, "CreateRule", RuleName="commands", Kind="inflow", Stream="COMMANDS",
        Subject="commands.other", Topic="devices")
    asyncio.run(publish_command(nats_server.port, "/cmd/3", b"old subject"))
    c.expect_none(timeout=2)
    assert "takes subject \"commands.MQ2MQTT\", the rule says \"commands.other\"" in b.log()
    c.close_quietly()
    _stop_and_check(b)


def test_a_status_rule_created_through_the_api_sends_the_groups_events(ruled, nats_server, uid):  # noqa: F811
    b = ruled
    events = Events(nats_server.port)
    try:
        signed(b, uid).close_quietly()
        assert events.quiet(0.5) == [], "no status rule yet"
        api(b, "CreateRule", RuleName="online", Kind="status", **{"GroupId.1": "GID_sensor"})
        c = signed(b, uid)
        (subject, event), = events.expect(1)
        assert (subject, event["clientId"]) == ("GID_sensor_MQTT.connect", c.client_id)
        c.close_quietly()
    finally:
        events.close()
    _stop_and_check(b)


@pytest.mark.parametrize("params, status, code, says", [
    ({"RuleName": "from-config", "Kind": "outflow", "Source": "devices", "Subject": "a.b"},
     400, "Rule.AlreadyExists", "from-config"),
    ({"RuleName": "r", "Kind": "sideways"}, 400, "InvalidParameter", "Kind"),
    ({"RuleName": "r", "Kind": "outflow", "Source": "devices", "Subject": "a.*"},
     400, "InvalidParameter", "subject: a NATS subject"),
    ({"RuleName": "r", "Kind": "inflow", "Stream": "S", "Topic": "devices/#"},
     400, "InvalidParameter", "topic: an MQTT topic without wildcards"),
    ({"RuleName": "r", "Kind": "status"}, 400, "InvalidParameter", "group_ids: at least one"),
    ({"Kind": "outflow"}, 400, "MissingParameter", "RuleName"),
])
def test_a_bad_rule_is_refused_with_the_reason(ruled, params, status, code, says):
    with pytest.raises(Exception) as e:
        api(ruled, "CreateRule", **params)
    assert (getattr(e.value, "status_code", None), getattr(e.value, "code", None)) == (status, code)
    assert says in str(e.value)
    assert [r["RuleName"] for r in api(ruled, "ListRule")["Data"]] == ["from-config"]


def test_only_rules_created_through_the_api_can_be_deleted(ruled):
    with pytest.raises(Exception) as e:
        api(ruled, "DeleteRule", RuleName="from-config")
    assert getattr(e.value, "code", None) == "InvalidParameter"
    assert "config file" in str(e.value)
    status, code = code_of(lambda: api(ruled, "DeleteRule", RuleName="never-made"))
    assert (status, code) == (404, "Rule.NotFound")


def test_without_nats_a_rule_cannot_be_created(tmp_path):
    b = Broker(tmp_path / "broker", config=CONFIG).start()
    try:
        with pytest.raises(Exception) as e:
            api(b, "CreateRule", RuleName="r", Kind="outflow", Source="devices", Subject="a.b")
        assert getattr(e.value, "code", None) == "InvalidParameter"
        assert "needs [nats] servers" in str(e.value)
    finally:
        _stop_and_check(b)
