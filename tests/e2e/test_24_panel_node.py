"""The happy path with a second, independent client: Node's `ws`
(tests/e2e/node/panel_client.js). Needs `node` and `npm ci` in
tests/e2e/node (build.sh deps); skipped, saying why, without them."""

import json
import os
import select
import shutil
import subprocess
import time

import pytest

from wsraw import WS, env, publish_logged, token, unique, update

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
NODE = shutil.which("node") or shutil.which("nodejs")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")),
                       reason="npm ci has not been run in tests/e2e/node"),
]


class NodePanel:
    def __init__(self, station, count, mode):
        url = f"ws://{env()['host']}:{env()['port']}{WS}"
        self.proc = subprocess.Popen(
            [NODE, os.path.join(NODE_DIR, "panel_client.js"), url, str(count), mode],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PANEL_TOKEN": token(sub="node-op", station=station)})

    def event(self, timeout=10):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"node said nothing within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"node exited: {self.proc.wait(5)} {self.proc.stderr.read()}")
        return json.loads(line)

    def finish(self):
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


@pytest.mark.parametrize("mode", ["header", "query"])
def test_node_ws_client_receives_its_stations_updates(stack, mode):
    st = unique("st-node")
    panel = NodePanel(st, 3, mode)
    try:
        assert panel.event() == {"event": "open"}
        sent = []
        for i in range(3):
            publish_logged(stack.redis, update(unique("st-other")))   # not for this panel
            seq, _ = publish_logged(stack.redis, update(st, n=i))
            sent.append(seq)
        started = time.monotonic()
        got = [panel.event() for _ in range(3)]
        assert [e["event"] for e in got] == ["message"] * 3
        assert [e["data"]["seq"] for e in got] == sent
        assert [e["data"]["n"] for e in got] == [0, 1, 2]
        assert all(e["data"]["station_id"] == st for e in got)
        assert time.monotonic() - started < 5
        assert panel.event() == {"event": "pong", "data": "node-ping"}
        assert panel.event() == {"event": "close", "code": 1000}
        assert panel.finish() == 0
    finally:
        panel.finish()
