"""A real browser client: MQTT.js (npm `mqtt`, its bundled dist file served
from this test, no CDN) in headless Chromium connects to ringmq over
WebSocket and WebSocket over TLS, subscribes, receives a message paho
publishes over TCP, and publishes one back."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import HOST, TIMEOUT, ClientFactory, _stop_and_check
from test_observability import Chromium
from test_websocket import WsBroker, ws_certs  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
MQTT_JS = ROOT / "tests" / "browser" / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"

PAGE = """<!DOCTYPE html><html><body>
<script src="mqtt.min.js"></script>
<script>
const q = new URLSearchParams(location.search);
const topic = q.get("topic");
const client = mqtt.connect(q.get("url"), {
  clientId: q.get("id"), protocolVersion: Number(q.get("v")), reconnectPeriod: 0,
});
const mark = (k, v) => { document.body.dataset[k] = v; };
client.on("connect", () => {
  mark("connected", "1");
  client.subscribe(topic + "/to-browser", { qos: 1 }, (err) => mark("subscribed", err ? String(err) : "1"));
});
client.on("message", (t, payload) => {
  mark("got", payload.toString());
  client.publish(topic + "/from-browser", "echo: " + payload.toString(), { qos: 1 });
});
client.on("error", (e) => mark("error", String(e)));
</script></body></html>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A static site with the page and MQTT.js, on its own port."""
    assert MQTT_JS.exists(), f"{MQTT_JS} missing (scripts/py-test runs npm ci in tests/browser)"
    d = tmp_path_factory.mktemp("site")
    (d / "index.html").write_text(PAGE)
    shutil.copy(MQTT_JS, d / "mqtt.min.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{HOST}:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.fixture(scope="module")
def wb(tmp_path_factory, ws_certs):  # noqa: F811
    b = WsBroker(tmp_path_factory.mktemp("browser"), ws_certs).start()
    yield b
    _stop_and_check(b)


@pytest.mark.parametrize("kind", ["ws", "wss"])
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_mqtt_js_in_chromium_talks_to_paho_over_tcp(wb, site, tmp_path, uid, kind, version):
    port = wb.ws_port if kind == "ws" else wb.wss_port
    url = f"{kind}://{HOST}:{port}/mqtt"
    f = ClientFactory(wb.port, uid)
    browser = Chromium(tmp_path, "--ignore-certificate-errors")
    try:
        paho = f.new("paho")
        paho.sub(f"{uid}/from-browser", 1)
        browser.call("Page.navigate", url=f"{site}?url={url}&topic={uid}&id={uid}-js&v={version}")
        deadline = time.monotonic() + 15
        while browser.eval("document.body && document.body.dataset.subscribed") != "1":
            error = browser.eval("document.body && document.body.dataset.error")
            assert error is None, error
            assert time.monotonic() < deadline, "MQTT.js did not subscribe"
            time.sleep(0.1)
        assert paho.publish(f"{uid}/to-browser", b"hello browser", qos=1) == 0
        m = paho.expect_one(timeout=10)
        assert (m.topic, m.payload) == (f"{uid}/from-browser", b"echo: hello browser")
        assert browser.eval("document.body.dataset.got") == "hello browser"
    finally:
        browser.close()
        f.close_all()
