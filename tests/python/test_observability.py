"""What an operator watches: /healthz, /metrics (checked by Prometheus's own
promtool), the $SYS topics (read with mosquitto_sub, as dashboards do) and
the status page, loaded in headless Chromium (driven over its DevTools
protocol, in real time) while loadgen drives traffic."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import websocket

from conftest import ACCEPTED, HOST, TIMEOUT, Broker, ClientFactory, _stop_and_check, free_port, ringmq_bin

CONFIG = """[admin]
sys_interval_secs = 1
"""


@pytest.fixture(scope="module")
def obs(tmp_path_factory) -> Broker:
    b = Broker(tmp_path_factory.mktemp("observe"), config=CONFIG).start()
    yield b
    _stop_and_check(b)


def get(b: Broker, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{b.admin_port}{path}", timeout=TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of the exposition."""
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not in /metrics")


def test_healthz_is_ok_once_every_shard_serves(obs):
    status, ctype, body = get(obs, "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    assert json.loads(body) == {"status": "ok", "shards": 2}


def test_metrics_pass_promtool_and_follow_the_traffic(obs, uid):
    f = ClientFactory(obs.port, uid)
    try:
        sub = f.new("sub")
        sub.sub(f"{uid}/#", 1)
        pub = f.new("pub")
        _, _, before = get(obs, "/metrics")
        for i in range(20):
            assert pub.publish(f"{uid}/{i}", b"0123456789", qos=1) == 0
        sub.expect(20)
        bad = f.new("bad", username="x", connect=False, protocol=5, connect_props={"AuthenticationMethod": "nope"})
        bad.connect(expect_success=False)
        # The figures may be up to a quarter second old: wait for these.
        deadline = time.monotonic() + TIMEOUT
        while True:
            status, ctype, text = get(obs, "/metrics")
            fresh = (metric(text, "ringmq_messages_received_total", 'qos="1"')
                     - metric(before, "ringmq_messages_received_total", 'qos="1"'))
            if fresh >= 20 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        f.close_all()
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    received = metric(text, "ringmq_messages_received_total", 'qos="1"')
    assert received - metric(before, "ringmq_messages_received_total", 'qos="1"') >= 20
    assert metric(text, "ringmq_received_payload_bytes_total", 'qos="1"') >= 200
    assert metric(text, "ringmq_messages_sent_total", 'qos="1"') >= 20
    assert metric(text, "ringmq_publish_ack_seconds_count") >= 20
    assert metric(text, "ringmq_connects_refused_total", 'code="0x8c"') >= 1
    # sub and pub were still connected when the figures were taken.
    assert sum(metric(text, "ringmq_connections", f'shard="{s}"') for s in (0, 1)) >= 2
    for family in ["ringmq_dropped_messages_total", "ringmq_offline_messages", "ringmq_log_bytes",
                   "ringmq_log_sync_seconds", "ringmq_mesh_backlog_messages", "ringmq_auth_failures_total",
                   "ringmq_sessions", "ringmq_openapi_requests_total"]:
        assert f"# TYPE {family} " in text, family


def test_sys_topics_are_published_retained_like_mosquittos(obs, uid):
    f = ClientFactory(obs.port, uid)
    try:
        held = f.new("held")
        assert held.publish(f"{uid}/counted", b"0123456789", qos=1) in ACCEPTED
        time.sleep(1.2)  # past the next publication of the figures
        out = subprocess.run(
            ["mosquitto_sub", "-h", HOST, "-p", str(obs.port), "-t", "$SYS/broker/#",
             "-F", "%t\t%p", "-W", "5", "-C", "24"], capture_output=True, text=True, timeout=30)
    finally:
        f.close_all()
    # The retained values first, then those of the next second: the last win.
    lines = out.stdout.splitlines()
    assert len(lines) == 24, out.stdout + out.stderr
    topics = dict(line.split("\t", 1) for line in lines)
    assert topics["$SYS/broker/version"].startswith("ringmq ")
    assert re.fullmatch(r"\d+ seconds", topics["$SYS/broker/uptime"])
    assert int(topics["$SYS/broker/clients/connected"]) >= 1
    assert int(topics["$SYS/broker/messages/received"]) >= 1
    assert int(topics["$SYS/broker/bytes/received"]) >= 10
    for t in ["messages/sent", "bytes/sent", "retained messages/count"]:
        assert int(topics[f"$SYS/broker/{t}"]) >= 0, t


class Attributes(HTMLParser):
    """Every element's attributes, by id (and the body's)."""

    def __init__(self):
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        key = a.get("id") or (tag if tag == "body" else None)
        if key:
            self.by_id[key] = a


class Chromium:
    """Headless Chromium driven over its DevTools protocol, in real time
    (the page polls every second of the wall clock)."""

    def __init__(self, tmp: Path, *flags: str):
        port = free_port()
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
             f"--remote-debugging-port={port}", f"--user-data-dir={tmp / 'chromium'}", *flags,
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/json", timeout=1) as r:
                    tab = next(t for t in json.load(r) if t["type"] == "page")
                break
            except (OSError, StopIteration):
                assert time.monotonic() < deadline, "chromium did not start"
                time.sleep(0.2)
        self.ws = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=30)
        self.seq = 0

    def call(self, method: str, **params) -> dict:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.seq:
                return m.get("result", {})

    def eval(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression)["result"].get("value")

    def dom(self) -> str:
        r = self.call("Runtime.evaluate", expression="document.documentElement.outerHTML")
        return r["result"]["value"]

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(TIMEOUT)


def loadgen_bin() -> str:
    found = Path(ringmq_bin()).with_name("loadgen")
    assert found.exists(), f"{found} not built (cargo build -p loadgen)"
    return str(found)


def test_the_status_page_shows_live_traffic_in_a_real_browser(obs, tmp_path):
    status, ctype, page = get(obs, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert "http://" not in page and "https://" not in page, "everything is served by ringmq"
    load = subprocess.Popen(
        [loadgen_bin(), "run", "--scenario", "fanout", "--port", str(obs.port), "-P", "2", "-S", "4",
         "--qos", "1", "--rate", "2000", "--duration", "20s", "--warmup", "0s", "--quiet",
         "--out", str(tmp_path / "run")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while json.loads(get(obs, "/api/status")[2])["messages_received"] == 0:
            assert time.monotonic() < deadline, "no traffic from loadgen"
            time.sleep(0.2)
        browser = Chromium(tmp_path)
        try:
            browser.call("Page.navigate", url=f"http://{HOST}:{obs.admin_port}/")
            time.sleep(4.5)
            dom = browser.dom()
            shot = tmp_path / "status.png"
            browser.screenshot(shot)
        finally:
            browser.close()
    finally:
        load.terminate()
        load.wait(TIMEOUT)
    a = Attributes()
    a.feed(dom)
    assert int(a.by_id["body"]["data-samples"]) >= 3, dom[:2000]
    rates = a.by_id["chart-rates"]
    assert float(rates["data-last-in"]) > 0 and float(rates["data-last-out"]) > 0, rates
    assert float(a.by_id["chart-connections"]["data-last"]) >= 6
    assert int(a.by_id["chart-latency"]["data-points"]) >= 1
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("RINGMQ_SCREENSHOT"):
        shutil.copy(shot, os.environ["RINGMQ_SCREENSHOT"])
