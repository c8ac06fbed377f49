"""The admin endpoint, driven by Alibaba's own SDKs and plain HTTP clients:
every OpenAPI action through `alibabacloud-onsmqtt20200420` (ACS3
signature), a few through the older `aliyun-python-sdk-onsmqtt` (RPC v1),
the product's error codes for bad signatures, replays, stale timestamps and
bad requests, and what each action does to real MQTT clients (paho)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from alibabacloud_onsmqtt20200420 import models as m
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi import models as open_api
from alibabacloud_tea_util import models as util_models

from conftest import TIMEOUT, Broker, ClientFactory, _stop_and_check

AK = "LTAI5tAdminKey"
SECRET = "AdminSecret0123456789abcd"
INSTANCE = "mqtt-cn-admin"

CONFIG = f"""profile = "aliyun"
[admin]
requests_concurrent_max = 8
body_bytes_max = 65536
sys_interval_secs = 1
[aliyun]
instance_id = "{INSTANCE}"
parent_topics = ["devices", "alerts"]
group_ids = ["GID_sensor", "GID_app"]
[[aliyun.access_keys]]
id = "{AK}"
secret = "{SECRET}"
"""


@pytest.fixture(scope="module")
def adm(tmp_path_factory) -> Broker:
    b = Broker(tmp_path_factory.mktemp("admin"), config=CONFIG).start()
    yield b
    _stop_and_check(b)


def sdk(b: Broker, key: str = AK, secret: str = SECRET) -> Client:
    """The current SDK, pointed at the broker's admin endpoint."""
    return Client(open_api.Config(access_key_id=key, access_key_secret=secret,
                                  endpoint=f"127.0.0.1:{b.admin_port}", protocol="http"))


def sign(secret: str, message: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()).decode()


def cid(uid: str, group: str = "GID_app") -> str:
    return f"{group}@@@{uid.replace('_', '-')}"[:64]


@pytest.fixture
def clients(adm, uid):
    f = ClientFactory(adm.port, uid)
    yield f
    f.close_all()


def signed_client(f: ClientFactory, client_id: str, **kw):
    return f.new(client_id=client_id, username=f"Signature|{AK}|{INSTANCE}",
                 password=sign(SECRET, client_id), **kw)


def code_of(call) -> tuple[int, str]:
    """The HTTP status and `Code` of an SDK call that must fail."""
    with pytest.raises(Exception) as e:
        call()
    return getattr(e.value, "status_code", None), getattr(e.value, "code", None)


# --------------------------------------------------------------------------
# sessions, messages, connections


def test_session_queries_send_message_and_close_connection(adm, clients, uid):
    api = sdk(adm)
    who = cid(uid)
    sub = signed_client(clients, who)
    sub.sub("devices/#", 1)
    q = api.query_session_by_client_id(m.QuerySessionByClientIdRequest(instance_id=INSTANCE,
                                                                        client_id=who))
    assert q.body.online_status is True
    batch = api.batch_query_session_by_client_ids(m.BatchQuerySessionByClientIdsRequest(
        instance_id=INSTANCE, client_id_list=[who, cid(uid + "x")]))
    assert [(s.client_id, s.online_status) for s in batch.body.online_status_list] == [
        (who, True), (cid(uid + "x"), False)]

    sent = api.send_message(m.SendMessageRequest(instance_id=INSTANCE, mqtt_topic="devices/api",
                                                 payload="from the OpenAPI"))
    assert len(sent.body.msg_id) == 32
    got = sub.expect_one()
    assert (got.topic, got.payload, got.qos) == ("devices/api", b"from the OpenAPI", 1)

    closed = api.close_connection(m.CloseConnectionRequest(instance_id=INSTANCE, client_id=who))
    assert (closed.body.code, closed.body.success) == (200, True)
    assert sub.wait_disconnected() == 0x98  # v5: Administrative action
    q = api.query_session_by_client_id(m.QuerySessionByClientIdRequest(instance_id=INSTANCE,
                                                                        client_id=who))
    assert q.body.online_status is False


def test_send_message_to_a_p2p_topic_reaches_that_client_alone(adm, clients, uid):
    target, other = cid(uid + "t"), cid(uid + "o")
    t = signed_client(clients, target)
    o = signed_client(clients, other)
    o.sub("devices/#", 1)
    sdk(adm).send_message(m.SendMessageRequest(instance_id=INSTANCE,
                                               mqtt_topic=f"devices/p2p/{target}", payload="just you"))
    assert t.expect_one().payload == b"just you"
    o.expect_none()


def test_send_message_outside_the_topic_rules_is_invalid(adm):
    api = sdk(adm)
    for topic in ["nowhere/x", "devices/#", "devices/a b", "$SYS/broker/version"]:
        status, code = code_of(lambda: api.send_message(m.SendMessageRequest(
            instance_id=INSTANCE, mqtt_topic=topic, payload="x")))
        assert (status, code) == (400, "InvalidParameter"), topic


# --------------------------------------------------------------------------
# tokens, credentials, names


def test_revoke_token_tells_its_client_and_disconnects_it(adm, clients, uid):
    api = sdk(adm)
    expire = int(time.time() * 1000) + 3_600_000
    token = api.apply_token(m.ApplyTokenRequest(instance_id=INSTANCE, resources="devices/#",
                                                actions="R", expire_time=expire)).body.token
    status = api.query_token(m.QueryTokenRequest(instance_id=INSTANCE, token=token))
    assert status.body.token_status is True
    c = clients.new(client_id=cid(uid), username=f"Token|{AK}|{INSTANCE}", password=f"R|{token}")
    assert c.subscribe("devices/+/x", 1) == 1
    api.revoke_token(m.RevokeTokenRequest(instance_id=INSTANCE, token=token))
    notice = c.expect_one()
    assert (notice.topic, json.loads(notice.payload)) == ("$SYS/tokenInvalidNotice",
                                                          {"code": 3, "type": "R"})
    c.wait_disconnected()
    status = api.query_token(m.QueryTokenRequest(instance_id=INSTANCE, token=token))
    assert status.body.token_status is False


def test_device_credentials_sign_in_refresh_and_unregister(adm, clients, uid):
    api = sdk(adm)
    who = cid(uid, "GID_sensor")
    reg = api.register_device_credential(m.RegisterDeviceCredentialRequest(
        instance_id=INSTANCE, client_id=who)).body.device_credential
    assert (reg.client_id, reg.instance_id) == (who, INSTANCE)
    got = api.get_device_credential(m.GetDeviceCredentialRequest(
        instance_id=INSTANCE, client_id=who)).body.device_credential
    assert (got.device_access_key_id, got.device_access_key_secret) == (
        reg.device_access_key_id, reg.device_access_key_secret)

    def connect(cred, expect=True):
        c = clients.new(client_id=who, username=f"DeviceCredential|{cred.device_access_key_id}|{INSTANCE}",
                        password=sign(cred.device_access_key_secret, who), connect=False)
        c.connect(expect_success=expect)
        return c

    connect(reg).close_quietly()
    new = api.refresh_device_credential(m.RefreshDeviceCredentialRequest(
        instance_id=INSTANCE, client_id=who)).body.device_credential
    assert new.device_access_key_secret != reg.device_access_key_secret
    assert new.create_time == reg.create_time and new.update_time >= reg.update_time
    assert connect(reg, expect=False).connack_rc == 0x87
    connect(new).close_quietly()
    page = api.list_device_credential_client_id(m.ListDeviceCredentialClientIdRequest(
        instance_id=INSTANCE, group_id="GID_sensor", page_size="100")).body
    assert who in page.device_credential_client_id_list.client_id_list
    api.un_register_device_credential(m.UnRegisterDeviceCredentialRequest(
        instance_id=INSTANCE, client_id=who))
    assert connect(new, expect=False).connack_rc == 0x87
    status, code = code_of(lambda: api.get_device_credential(m.GetDeviceCredentialRequest(
        instance_id=INSTANCE, client_id=who)))
    assert (status, code) == (404, "DeviceCredential.NotFound")


def test_group_ids_are_created_listed_and_deleted(adm, clients, uid):
    api = sdk(adm)
    gid = "GID_" + uuid.uuid4().hex[:8]
    api.create_group_id(m.CreateGroupIdRequest(instance_id=INSTANCE, group_id=gid))
    listed = api.list_group_id(m.ListGroupIdRequest(instance_id=INSTANCE)).body.data
    row = next(d for d in listed if d.group_id == gid)
    assert row.instance_id == INSTANCE and row.create_time > 0
    signed_client(clients, f"{gid}@@@dev").close_quietly()
    status, code = code_of(lambda: api.create_group_id(m.CreateGroupIdRequest(
        instance_id=INSTANCE, group_id=gid)))
    assert (status, code) == (400, "GroupId.AlreadyExists")
    api.delete_group_id(m.DeleteGroupIdRequest(instance_id=INSTANCE, group_id=gid))
    c = clients.new(client_id=f"{gid}@@@dev", username=f"Signature|{AK}|{INSTANCE}",
                    password=sign(SECRET, f"{gid}@@@dev"), connect=False)
    c.connect(expect_success=False)
    assert c.connack_rc == 0x85  # client id of an unknown Group ID


def call_api(api: Client, action: str, query: dict) -> dict:
    """An action the SDK has no method for, signed by the SDK all the same."""
    params = open_api.Params(action=action, version="2020-04-20", protocol="HTTP", pathname="/",
                             method="POST", auth_type="AK", style="RPC", req_body_type="formData",
                             body_type="json")
    request = open_api.OpenApiRequest(query=query)
    return api.call_api(params, request, util_models.RuntimeOptions())["body"]


def test_parent_topics_are_created_listed_and_deleted(adm, clients, uid):
    api = sdk(adm)
    topic = "t" + uuid.uuid4().hex[:8]
    call_api(api, "CreateTopic", {"InstanceId": INSTANCE, "Topic": topic})
    listed = call_api(api, "ListTopic", {"InstanceId": INSTANCE})["Data"]
    assert topic in [d["Topic"] for d in listed]
    c = signed_client(clients, cid(uid))
    c.sub(f"{topic}/#", 1)
    assert c.publish(f"{topic}/a", b"x", qos=1) == 0
    assert c.expect_one().topic == f"{topic}/a"
    call_api(api, "DeleteTopic", {"InstanceId": INSTANCE, "Topic": topic})
    assert c.subscribe(f"{topic}/b", 1) == 0x80


# --------------------------------------------------------------------------
# custom authentication


def test_custom_identities_sign_in_and_permissions_decide(adm, clients, uid):
    api = sdk(adm)
    who, user = cid(uid), "dev-" + uuid.uuid4().hex[:6]
    api.add_custom_auth_identity(m.AddCustomAuthIdentityRequest(
        instance_id=INSTANCE, username=user, identity_type="CLIENT", client_id=who,
        secret="s3cret", sign_mode="SIGNED"))
    for effect, topic, action in [("ALLOW", "devices/#", "ALL"), ("DENY", "devices/secret", "SUB")]:
        r = api.add_custom_auth_permission(m.AddCustomAuthPermissionRequest(
            instance_id=INSTANCE, identity=who, identity_type="CLIENT", topic=topic,
            effect=effect, permit_action=action))
        assert r.body.success is True

    c = clients.new(client_id=who, username=user, password=sign("s3cret", who))
    assert c.subscribe("devices/+/t", 1) == 1
    assert c.subscribe("devices/#", 1) == 0x80, "the DENY on devices/secret touches it"
    assert c.subscribe("alerts/#", 1) == 0x80, "no ALLOW covers it"
    assert c.publish("devices/a/t", b"ok", qos=1) == 0
    assert c.expect_one().payload == b"ok"
    assert c.publish("alerts/x", b"no", qos=1) == 0x87

    found = api.query_custom_auth_identity(m.QueryCustomAuthIdentityRequest(
        instance_id=INSTANCE, client_id=who, size=10)).body.data.results
    assert [(r.username, r.sign_mode, r.identity_type) for r in found] == [(user, "SIGNED", "CLIENT")]
    perms = api.query_custom_auth_permission(m.QueryCustomAuthPermissionRequest(
        instance_id=INSTANCE, identity=who, size=10)).body.data.results
    assert sorted((p.topic, p.effect, p.permit_action) for p in perms) == [
        ("devices/#", "ALLOW", "ALL"), ("devices/secret", "DENY", "SUB")]

    api.update_custom_auth_permission(m.UpdateCustomAuthPermissionRequest(
        instance_id=INSTANCE, identity=who, identity_type="CLIENT", topic="devices/#",
        effect="ALLOW", permit_action="SUB"))
    assert c.publish("devices/a/t", b"no longer", qos=1) == 0x87
    api.update_custom_auth_identity(m.UpdateCustomAuthIdentityRequest(
        instance_id=INSTANCE, username=user, identity_type="CLIENT", client_id=who,
        secret="plain", sign_mode="ORIGIN"))
    c.close_quietly()
    clients.new(client_id=who, username=user, password="plain", name="again").close_quietly()
    api.delete_custom_auth_identity(m.DeleteCustomAuthIdentityRequest(
        instance_id=INSTANCE, username=user, identity_type="CLIENT", client_id=who))
    gone = clients.new(client_id=who, username=user, password="plain", connect=False)
    gone.connect(expect_success=False)
    assert gone.connack_rc == 0x87
    api.delete_custom_auth_permission(m.DeleteCustomAuthPermissionRequest(
        instance_id=INSTANCE, identity=who, identity_type="CLIENT", topic="devices/#"))
    status, code = code_of(lambda: api.delete_custom_auth_permission(
        m.DeleteCustomAuthPermissionRequest(instance_id=INSTANCE, identity=who,
                                            identity_type="CLIENT", topic="devices/#")))
    assert (status, code) == (404, "CustomPermission.NotFound")


def test_a_client_id_with_a_client_identity_signs_in_with_it_alone(adm, clients, uid):
    api = sdk(adm)
    who, owner, other = cid(uid), "own-" + uuid.uuid4().hex[:6], "usr-" + uuid.uuid4().hex[:6]
    api.add_custom_auth_identity(m.AddCustomAuthIdentityRequest(
        instance_id=INSTANCE, username=owner, identity_type="CLIENT", client_id=who,
        secret="mine", sign_mode="ORIGIN"))
    api.add_custom_auth_identity(m.AddCustomAuthIdentityRequest(
        instance_id=INSTANCE, username=other, identity_type="USER", secret="theirs",
        sign_mode="ORIGIN"))
    api.add_custom_auth_permission(m.AddCustomAuthPermissionRequest(
        instance_id=INSTANCE, identity=who, identity_type="CLIENT", topic="devices/#",
        effect="ALLOW", permit_action="ALL"))
    intruder = clients.new(client_id=who, username=other, password="theirs", connect=False)
    intruder.connect(expect_success=False)
    assert intruder.connack_rc == 0x87
    # The USER identity signs in elsewhere, but the CLIENT rules are not its own.
    c = clients.new(client_id=cid(uid + "u"), username=other, password="theirs")
    assert c.publish("devices/x", b"no rule of mine", qos=1) == 0x87
    clients.new(client_id=who, username=owner, password="mine", name="owner").close_quietly()


def test_custom_identity_queries_page_with_next_token(adm):
    api = sdk(adm)
    prefix = "page-" + uuid.uuid4().hex[:6]
    for i in range(5):
        api.add_custom_auth_identity(m.AddCustomAuthIdentityRequest(
            instance_id=INSTANCE, username=f"{prefix}-{i}", identity_type="USER",
            secret="s", sign_mode="ORIGIN"))
    seen, token = [], ""
    for _ in range(10):
        data = api.query_custom_auth_identity(m.QueryCustomAuthIdentityRequest(
            instance_id=INSTANCE, identity_type="USER", size=2, next_token=token)).body.data
        seen += [r.username for r in data.results if r.username.startswith(prefix)]
        token = data.next_token
        if not token:
            break
    assert seen == [f"{prefix}-{i}" for i in range(5)]


# --------------------------------------------------------------------------
# traces


def test_trace_queries_find_the_connections_and_messages_just_made(adm, clients, uid):
    api = sdk(adm)
    who = cid(uid)
    begin = int(time.time() * 1000) - 1000
    sub = signed_client(clients, who)
    sub.sub("devices/trace/#", 1)
    msg_id = api.send_message(m.SendMessageRequest(instance_id=INSTANCE, mqtt_topic="devices/trace/1",
                                                   payload="t")).body.msg_id
    sub.expect_one()
    pub = signed_client(clients, cid(uid + "p"))
    assert pub.publish("devices/trace/2", b"p", qos=1) == 0
    sub.expect_one()
    time.sleep(0.3)
    end = int(time.time() * 1000) + 1000

    dev = api.query_mqtt_trace_device(m.QueryMqttTraceDeviceRequest(
        instance_id=INSTANCE, mqtt_region_id="local", client_id=who, begin_time=begin, end_time=end,
        current_page=1, page_size=10, reverse=False)).body
    assert dev.total >= 1 and dev.device_info_list[0].action == "connect"
    subs = api.query_mqtt_trace_message_subscribe(m.QueryMqttTraceMessageSubscribeRequest(
        instance_id=INSTANCE, mqtt_region_id="local", msg_id=msg_id, begin_time=begin, end_time=end,
        current_page=1, page_size=10, reverse=False)).body
    assert who in [t.client_id for t in subs.message_trace_lists]
    published = api.query_mqtt_trace_message_publish(m.QueryMqttTraceMessagePublishRequest(
        instance_id=INSTANCE, mqtt_region_id="local", msg_id=msg_id, begin_time=begin,
        end_time=end)).body
    assert all(t.msg_id == msg_id for t in published.message_trace_lists)
    of_client = api.query_mqtt_trace_message_of_client(m.QueryMqttTraceMessageOfClientRequest(
        instance_id=INSTANCE, mqtt_region_id="local", client_id=cid(uid + "p"), begin_time=begin,
        end_time=end, current_page=1, page_size=10, reverse=True)).body
    assert of_client.total >= 1 and of_client.message_of_client_list[0].client_id == cid(uid + "p")


# --------------------------------------------------------------------------
# the older SDK (RPC v1 HMAC-SHA1)


def test_the_older_sdk_signs_with_rpc_v1_and_works(adm, clients, uid):
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkonsmqtt.request.v20200420 import (ApplyTokenRequest, QuerySessionByClientIdRequest,
                                                    SendMessageRequest)

    def run(req, secret=SECRET):
        req.set_endpoint(f"127.0.0.1:{adm.admin_port}")
        req.set_protocol_type("http")
        return json.loads(AcsClient(AK, secret, "cn-hangzhou").do_action_with_exception(req))

    who = cid(uid)
    sub = signed_client(clients, who)
    sub.sub("alerts/#", 1)
    q = QuerySessionByClientIdRequest.QuerySessionByClientIdRequest()
    q.set_InstanceId(INSTANCE)
    q.set_ClientId(who)
    assert run(q)["OnlineStatus"] is True
    s = SendMessageRequest.SendMessageRequest()
    s.set_InstanceId(INSTANCE)
    s.set_MqttTopic("alerts/old-sdk")
    s.set_Payload("v1")
    assert len(run(s)["MsgId"]) == 32
    assert sub.expect_one().payload == b"v1"
    t = ApplyTokenRequest.ApplyTokenRequest()
    t.set_InstanceId(INSTANCE)
    t.set_Resources("alerts/#")
    t.set_Actions("W")
    t.set_ExpireTime(int(time.time() * 1000) + 600_000)
    assert run(t)["Token"]
    with pytest.raises(ServerException) as e:
        run(q, secret="not the secret")
    assert (e.value.get_http_status(), e.value.get_error_code()) == (400, "SignatureDoesNotMatch")


# --------------------------------------------------------------------------
# signatures and bad requests


def rpc_url(b: Broker, params: dict, secret: str = SECRET, key: str = AK,
            timestamp: str | None = None, nonce: str | None = None) -> str:
    """A request signed as the older SDKs sign (RPC v1, HMAC-SHA1)."""
    p = {"Version": "2020-04-20", "Format": "JSON", "AccessKeyId": key,
         "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
         "SignatureNonce": nonce or uuid.uuid4().hex,
         "Timestamp": timestamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    p.update(params)
    enc = lambda s: urllib.parse.quote(str(s), safe="~")
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(p.items()))
    to_sign = "POST&%2F&" + enc(canonical)
    p["Signature"] = base64.b64encode(hmac.new((secret + "&").encode(), to_sign.encode(),
                                               hashlib.sha1).digest()).decode()
    return f"http://127.0.0.1:{b.admin_port}/?" + urllib.parse.urlencode(p)


def post(url: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


LIST = {"Action": "ListGroupId", "InstanceId": INSTANCE}


def test_signature_failures_get_the_product_codes(adm):
    assert post(rpc_url(adm, LIST))[0] == 200
    status, body = post(rpc_url(adm, LIST, secret="wrong"))
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "RequestId" in body and body["Message"]
    status, body = post(rpc_url(adm, LIST, key="LTAI5tNobody"))
    assert (status, body["Code"]) == (404, "InvalidAccessKeyId.NotFound")
    url = rpc_url(adm, LIST, nonce="replayed-" + uuid.uuid4().hex)
    assert post(url)[0] == 200
    status, body = post(url)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 16 * 60))
    status, body = post(rpc_url(adm, LIST, timestamp=stale))
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired")
    status, body = post(rpc_url(adm, LIST, timestamp="yesterday"))
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Format")
    status, body = post(f"http://127.0.0.1:{adm.admin_port}/?Action=ListGroupId&InstanceId={INSTANCE}")
    assert (status, body["Code"]) == (400, "MissingSignature")
    # The current SDK with a wrong secret, and an unknown key.
    assert code_of(lambda: sdk(adm, secret="wrong").list_group_id(
        m.ListGroupIdRequest(instance_id=INSTANCE))) == (400, "SignatureDoesNotMatch")
    assert code_of(lambda: sdk(adm, key="LTAI5tNobody").list_group_id(
        m.ListGroupIdRequest(instance_id=INSTANCE))) == (404, "InvalidAccessKeyId.NotFound")


def test_the_current_sdk_is_refused_a_replayed_nonce_and_a_stale_date(adm, monkeypatch):
    """ACS3: the SDK's own nonce and x-acs-date, pinned."""
    from alibabacloud_tea_openapi.utils import Utils
    api, req = sdk(adm), m.ListGroupIdRequest(instance_id=INSTANCE)
    nonce = uuid.uuid4().hex
    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: nonce))
    assert api.list_group_id(req).body.data
    assert code_of(lambda: api.list_group_id(req)) == (400, "SignatureNonceUsed")
    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: uuid.uuid4().hex))
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 16 * 60))
    monkeypatch.setattr(Utils, "get_timestamp", staticmethod(lambda: stale))
    assert code_of(lambda: api.list_group_id(req)) == (400, "InvalidTimeStamp.Expired")


@pytest.mark.parametrize("params, status, code", [
    ({"Action": "NoSuchAction", "InstanceId": INSTANCE}, 404, "InvalidAction.NotFound"),
    ({"Action": "QuerySessionByClientId", "InstanceId": INSTANCE}, 400, "MissingParameter"),
    ({"Action": "ListGroupId"}, 400, "MissingParameter"),
    ({"Action": "ListGroupId", "InstanceId": "mqtt-cn-other"}, 404, "InstanceNotFound"),
    ({"Action": "QueryMqttTraceDevice", "InstanceId": INSTANCE, "ClientId": "c", "BeginTime": "x",
      "EndTime": "1", "CurrentPage": "1", "PageSize": "10"}, 400, "InvalidParameter"),
    ({"Action": "QueryMqttTraceDevice", "InstanceId": INSTANCE, "ClientId": "c", "BeginTime": "0",
      "EndTime": "1", "CurrentPage": "1", "PageSize": "101"}, 400, "InvalidParameter"),
    ({"Action": "BatchQuerySessionByClientIds", "InstanceId": INSTANCE,
      **{f"ClientIdList.{i}": f"c{i}" for i in range(1, 12)}}, 400, "InvalidParameter"),
    ({"Action": "ApplyToken", "InstanceId": INSTANCE, "Resources": "devices/#", "Actions": "X",
      "ExpireTime": str(int(time.time() * 1000) + 600_000)}, 400, "InvalidParameter"),
    ({"Action": "AddCustomAuthIdentity", "InstanceId": INSTANCE, "Username": "u", "Secret": "s",
      "IdentityType": "ROBOT", "SignMode": "ORIGIN"}, 400, "InvalidParameter"),
    ({"Action": "ListGroupId", "InstanceId": INSTANCE, "Version": "2017-01-01"}, 400, "InvalidVersion"),
    ({"Action": "AddCustomAuthIdentity", "InstanceId": INSTANCE, "Username": AK, "Secret": "s",
      "IdentityType": "USER", "SignMode": "ORIGIN"}, 400, "InvalidParameter"),
    ({"Action": "AddCustomAuthPermission", "InstanceId": INSTANCE, "Identity": "dev\nx", "Topic": "#",
      "IdentityType": "USER", "Effect": "ALLOW", "PermitAction": "ALL"}, 400, "InvalidParameter"),
])
def test_bad_requests_get_clear_errors(adm, params, status, code):
    got_status, body = post(rpc_url(adm, params))
    assert (got_status, body["Code"]) == (status, code), body
    assert body["RequestId"] and body["Message"]


def test_the_older_signature_signs_the_action_parameter_not_the_header(adm):
    url = rpc_url(adm, {"InstanceId": INSTANCE})
    status, body = post(url, headers={"x-acs-action": "ListGroupId"})
    assert (status, body["Code"]) == (400, "MissingParameter")


def test_an_oversized_body_gets_413(adm):
    status, body = post(f"http://127.0.0.1:{adm.admin_port}/?Action=ListGroupId", b"x" * 70_000,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["Code"]) == (413, "RequestBodyTooLarge")


def slow_request(port: int) -> socket.socket:
    """An OpenAPI request whose body never finishes: it holds a request slot."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.sendall(b"POST /?Action=ListGroupId HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nA=")
    return s


def test_a_flood_of_requests_is_throttled_while_mqtt_flows(adm, clients, uid):
    """Eight requests that hang (the configured requests_concurrent_max):
    the next is refused at once with Throttling, and MQTT traffic never
    stops. Once they go, requests are served again."""
    sub = signed_client(clients, cid(uid + "s"))
    sub.sub("devices/flood/#", 1)
    pub = signed_client(clients, cid(uid + "p"))
    stop, sent = threading.Event(), []

    def traffic():
        while not stop.is_set():
            assert pub.publish(f"devices/flood/{len(sent)}", b"x", qos=1) == 0
            sent.append(1)
    t = threading.Thread(target=traffic)
    t.start()
    hung = [slow_request(adm.admin_port) for _ in range(8)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            status, body = post(rpc_url(adm, LIST))
            if status == 400 and body["Code"] == "Throttling":
                break
            assert time.monotonic() < deadline, f"never throttled: {status} {body}"
            time.sleep(0.05)
    finally:
        for s in hung:
            s.close()
        time.sleep(0.5)
        stop.set()
        t.join(TIMEOUT)
    assert len(sub.expect(len(sent), timeout=10)) == len(sent) > 0
    deadline = time.monotonic() + TIMEOUT
    while post(rpc_url(adm, LIST))[0] != 200:
        assert time.monotonic() < deadline, "requests are not served again"
        time.sleep(0.1)


def test_the_openapi_is_not_served_in_the_standard_profile(broker):
    status, body = post(rpc_url(broker, LIST))
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")
    assert "aliyun" in body["Message"]
