"""Client helpers for driving a Ham Rahi stack from outside, as the signalling
service, the telephony provider and a police panel would.

Used by the end-to-end tests and by the demo (tests/demo.py). Everything is
read from the stack's env file (.run/env, DESIGN.md section 7).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import queue
import shlex
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import redis
import websockets


def load_env(path=None):
    path = path or os.path.join(os.environ.get("HAMRAHI_RUN_DIR", ".run"), "env")
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("export "):
                continue
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def read_secret(path):
    with open(path, "rb") as f:
        return f.read().rstrip()


def now_ms():
    return int(time.time() * 1000)


def wait_until(predicate, timeout, interval=0.02, what="condition"):
    """Poll predicate until it returns a truthy value; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hook_signature(secret, body, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def panel_token(secret, sub, role, station, ttl=3600, exp=None):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    exp = int(time.time()) + ttl if exp is None else exp
    claims = {"sub": sub, "role": role, "station": station, "exp": exp}
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self):
        return json.loads(self.body)


def http(method, url, body=None, headers=None, timeout=5):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers))


class Stack:
    """One running stack: hooks, sandbox control, Redis and SQL inspection."""

    def __init__(self, env_path=None):
        self.env = load_env(env_path)
        self.url = self.env["HAMRAHI_HTTP_URL"]
        self.sandbox_url = self.env["HAMRAHI_SANDBOX_URL"]
        self.hook_secret = read_secret(self.env["HAMRAHI_HOOK_SECRET_FILE"])
        self.panel_secret = read_secret(self.env["HAMRAHI_PANEL_SECRET_FILE"])
        self.redis = redis.Redis(port=int(self.env["HAMRAHI_REDIS_PORT"]),
                                 decode_responses=True, socket_timeout=5)
        self._pg = None

    # -- signalling hooks
    def post_hook(self, session_id, kind, payload, sign=True, secret=None, raw=None,
                  headers=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        h = {"Content-Type": "application/json"}
        if sign:
            h["X-Hamrahi-Signature"] = hook_signature(secret or self.hook_secret, body)
        h.update(headers or {})
        return http("POST", f"{self.url}/v1/sos/sessions/{session_id}/{kind}", body, h)

    def activate(self, session_id, citizen="cit-1", operator="op-1", station="st-1"):
        r = self.post_hook(session_id, "activated", {
            "citizen_id": citizen, "operator_id": operator, "station_id": station})
        assert r.status == 202, (r.status, r.body)
        return r

    def stream_active(self, session_id):
        r = self.post_hook(session_id, "stream", {"state": "active"})
        assert r.status == 202, (r.status, r.body)
        return r

    # -- sandbox control (DESIGN.md section 7)
    def sandbox_reset(self):
        assert http("POST", f"{self.sandbox_url}/_sandbox/reset", b"{}",
                    {"Content-Type": "application/json"}).status in (200, 204)

    def sandbox_script(self, number, behavior, after_ms=1000, **extra):
        body = json.dumps({"behavior": behavior, "after_ms": after_ms, **extra}).encode()
        r = http("POST", f"{self.sandbox_url}/_sandbox/numbers/{urllib.parse.quote(number)}",
                 body, {"Content-Type": "application/json"})
        assert r.status in (200, 201, 204), (r.status, r.body)

    def sandbox_calls(self, to=None):
        calls = http("GET", f"{self.sandbox_url}/_sandbox/calls").json()
        if isinstance(calls, dict):
            calls = calls.get("calls", [])
        return [c for c in calls if to is None or c["to"] == to]

    # -- inspection
    @property
    def pg(self):
        if self._pg is None or self._pg.closed:
            self._pg = psycopg2.connect(self.env["HAMRAHI_PG_DSN"])
            self._pg.autocommit = True
        return self._pg

    def sql(self, query, *args):
        with self.pg.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def session_row(self, session_id):
        with self.pg.cursor() as cur:
            cur.execute("SELECT * FROM sos_sessions WHERE id = %s", (session_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description], row))

    def stream_len(self, key="hamrahi:events"):
        return self.redis.xlen(key)

    def panel(self, role="operator", station="st-1", sub="op-1", **kw):
        token = panel_token(self.panel_secret, sub, role, station)
        return PanelClient(self.url.replace("http://", "ws://") + "/v1/panel/ws", token, **kw)

    def close(self):
        if self._pg is not None:
            self._pg.close()
        self.redis.close()


class PanelClient:
    """A python3-websockets panel in a background thread; messages land in a
    queue stamped with their arrival time (ms since the epoch)."""

    def __init__(self, url, token, use_header=True, query=""):
        self.url = url + (f"?{query}" if query else "")
        self.headers = {"Authorization": f"Bearer {token}"} if use_header else {}
        if not use_header:
            sep = "&" if "?" in self.url else "?"
            self.url += f"{sep}access_token={token}"
        self.messages = queue.Queue()
        self.ready = threading.Event()
        self.error = None
        self.close_code = None
        self._loop = asyncio.new_event_loop()
        self._stop = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self.ready.wait(5):
            raise AssertionError("panel did not connect within 5 s")
        if self.error:
            raise self.error

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self):
        self._stop = asyncio.Event()
        try:
            async with websockets.connect(self.url, extra_headers=self.headers,
                                          open_timeout=5) as ws:
                self.ready.set()
                reader = asyncio.ensure_future(self._read(ws))
                stopper = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
                stopper.cancel()
                self.close_code = ws.close_code
        except Exception as e:  # surfaced to the test through .error
            self.error = e
            self.ready.set()

    async def _read(self, ws):
        try:
            async for msg in ws:
                self.messages.put((now_ms(), json.loads(msg)))
        except websockets.ConnectionClosed:
            pass
        self.close_code = ws.close_code

    def next(self, timeout, match=None):
        """The next message (arrival_ms, json) for which match(json) holds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no panel message within {timeout}s")
            try:
                at, msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if match is None or match(msg):
                return at, msg

    def close(self):
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
