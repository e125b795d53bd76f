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


# -- telephony (issue 6): sandbox control, worker metrics, per-session views

DEFAULT_SCRIPT = {"behavior": "answer", "after_ms": 1000}


def event_at_ms(stack, response):
    """at_ms that nginx stamped on the event a hook stored (its receive time)."""
    stream_id = response.json()["id"]
    (entry,) = stack.redis.xrange("hamrahi:events", stream_id, stream_id)
    return int(entry[1]["at_ms"])


def sandbox_post(stack, path, spec=None):
    r = http("POST", f"{stack.sandbox_url}{path}", json.dumps(spec or {}).encode(),
             {"Content-Type": "application/json"})
    assert r.status == 200, (path, r.status, r.body)
    return r.json()


def sandbox_faults(stack, **spec):
    """{"status": 429|500|503, "count": N} or {"drop_callbacks": bool}."""
    return sandbox_post(stack, "/_sandbox/faults", spec)


def sandbox_hangup(stack, call_sid):
    """The party on an in-progress leg hangs up."""
    return sandbox_post(stack, f"/_sandbox/calls/{call_sid}/hangup")


class Scripts:
    """Scripts sandbox numbers for one test and puts every one of them back to
    the sandbox's default (answer after 1 s) afterwards, without a reset, which
    would also forget the calls other assertions may still read."""

    def __init__(self, stack):
        self.stack = stack
        self.numbers = set()

    def __call__(self, number, behavior, after_ms=1000, **extra):
        self.numbers.add(number)
        self.stack.sandbox_script(number, behavior, after_ms, **extra)

    def restore(self):
        for number in self.numbers:
            self.stack.sandbox_script(number, **DEFAULT_SCRIPT)


def session_calls(stack, session_id):
    """The sandbox's legs of one session, oldest first: the citizen's call
    (its status callback names the session) and the legs it dialled."""
    calls = stack.sandbox_calls()
    mark = f"session={session_id}&"
    roots = {c["sid"] for c in calls
             if c.get("status_callback") and mark in c["status_callback"]}
    return [c for c in calls if c["sid"] in roots or c.get("parent_sid") in roots]


def citizen_call(stack, session_id):
    roots = [c for c in session_calls(stack, session_id) if not c.get("parent_sid")]
    return roots[0] if roots else None


def child_calls(stack, session_id):
    return [c for c in session_calls(stack, session_id) if c.get("parent_sid")]


def rows(stack, query, *args):
    with stack.pg.cursor() as cur:
        cur.execute(query, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def call_attempts(stack, session_id):
    return rows(stack, "SELECT * FROM call_attempts WHERE session_id = %s "
                "ORDER BY started_at, step", session_id)


def escalations(stack, session_id):
    return rows(stack, "SELECT * FROM escalations WHERE session_id = %s ORDER BY id",
                session_id)


def session_state(stack, session_id):
    row = stack.session_row(session_id)
    return row["state"] if row else None


def event_applied(stack, response):
    """True once the worker committed the effects of the event a hook stored."""
    stream_id = response.json()["id"]
    return bool(stack.sql("SELECT 1 FROM processed_events WHERE stream_id = %s", stream_id))


def prometheus(url):
    """A Prometheus text page as {'name{labels}': value}."""
    r = http("GET", url)
    assert r.status == 200, r.status
    metrics = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    return metrics


def worker_metrics(stack, url_key="HAMRAHI_WORKER_METRICS_URL"):
    """The worker's metrics."""
    return prometheus(stack.env[url_key])


def pending_entries_of(stack, session_id, key="hamrahi:events", group="fallback"):
    """Entries of the session still pending (delivered, not acknowledged)."""
    pending = stack.redis.xpending_range(key, group, min="-", max="+", count=10000)
    left = []
    for p in pending:
        entry = stack.redis.xrange(key, p["message_id"], p["message_id"])
        if entry and entry[0][1].get("session_id") == session_id:
            left.append(p["message_id"])
    return left


def abandon_entries(stack, session_id):
    return [fields for _, fields in stack.redis.xrange("hamrahi:signalling")
            if fields.get("session_id") == session_id]


def twiml_keys(stack, session_id):
    return stack.redis.keys(f"hamrahi:twiml:{session_id}:*")


# -- hooks (tests/e2e/test_10_hooks_*.py, test_80_hooks_redis_chaos.py)

def events_of(stack, session_id, count=5000):
    """The newest `count` hamrahi:events entries of one session, newest first."""
    return [e for e in stack.redis.xrevrange("hamrahi:events", count=count)
            if e[1].get("session_id") == session_id]


def telephony_token(stack):
    return read_secret(stack.env["HAMRAHI_TELEPHONY_TOKEN_FILE"]).decode()


def twilio_signature(token, url, params):
    """X-Twilio-Signature as Twilio computes it, by its own helper library."""
    from twilio.request_validator import RequestValidator
    return RequestValidator(token).compute_signature(url, params)


def post_telephony(stack, kind, query, params, signed_url=None, signature=None,
                   sign=True, headers=None, base_url=None, token=None):
    """POST a form callback to /v1/telephony/{kind}?{query}, signed over
    signed_url (default: the URL it is sent to) unless signature is given."""
    base_url = base_url or stack.url
    path = f"/v1/telephony/{kind}?{urllib.parse.urlencode(query)}"
    body = urllib.parse.urlencode(params).encode()
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    if sign:
        h["X-Twilio-Signature"] = signature or twilio_signature(
            token or telephony_token(stack), signed_url or stack.url + path, params)
    h.update(headers or {})
    return http("POST", base_url + path, body, h)


def hook_metrics(stack):
    """The module's hamrahi_status page."""
    return prometheus(stack.url + "/metrics")


# valgrind memcheck as the valgrind tests run it (test_97, test_98); each
# adds which leaks count as errors and where the report goes.
VALGRIND_MEMCHECK = ["valgrind", "--tool=memcheck", "--leak-check=full",
                     "--show-leak-kinds=definite,indirect", "--track-origins=yes",
                     "--num-callers=40"]


class PrivateNginx:
    """A second nginx with the module and a configuration of a test's own
    (same Redis and secrets as the stack), for what the stack's nginx.conf
    cannot show. Loopback, a free port, state in a temporary directory."""

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    MODULE = os.path.join(ROOT, "build/nginx/ngx_http_hamrahi_module.so")

    def __init__(self, stack, directory, http_directives, locations, redis=True,
                 wrapper=None):
        import socket
        self.dir = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # wrapper: a command (e.g. valgrind) nginx runs under, in the foreground
        self.wrapper = wrapper
        self.proc = None
        http_directives = http_directives.replace("@URL@", self.url)
        subs = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        for sub in subs:
            os.makedirs(os.path.join(directory, "tmp", sub), exist_ok=True)
        temp = "".join(f"    {sub}_temp_path {directory}/tmp/{sub};\n" for sub in subs)
        self.conf = os.path.join(directory, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"load_module {self.MODULE};\nworker_processes 1;\n"
                    f"pid {directory}/nginx.pid;\nerror_log {directory}/error.log info;\n"
                    "events { worker_connections 64; }\nhttp {\n    access_log off;\n"
                    + temp
                    + (f"    hamrahi_redis 127.0.0.1:{stack.env['HAMRAHI_REDIS_PORT']};\n"
                       if redis else "")
                    + f"{http_directives}\n    server {{\n"
                    f"        listen 127.0.0.1:{self.port};\n{locations}\n    }}\n}}\n")
        self.pid = None

    def _nginx(self, *args):
        import subprocess
        return subprocess.run(["nginx", "-p", self.dir, "-c", self.conf, "-e",
                               os.path.join(self.dir, "error.log"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=30)

    def check(self):
        """`nginx -t`: (exit code, output)."""
        proc = self._nginx("-t")
        return proc.returncode, proc.stdout

    def start(self, timeout=10):
        pid_file = os.path.join(self.dir, "nginx.pid")
        if self.wrapper:
            import subprocess
            self.proc = subprocess.Popen(
                [*self.wrapper, "nginx", "-p", self.dir, "-c", self.conf, "-e",
                 os.path.join(self.dir, "error.log"), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            proc = self._nginx()
            assert proc.returncode == 0, proc.stdout
        wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), timeout,
                   what="nginx pid file")
        self.pid = int(open(pid_file).read())
        wait_until(self._answers, timeout, what="nginx answering")
        return self

    def _answers(self):
        try:
            return http("GET", self.url + "/", timeout=1).status > 0
        except OSError:
            return False

    def stop(self, timeout=10):
        if self.pid is None:
            return
        import signal
        try:
            os.kill(self.pid, signal.SIGQUIT)
            if self.proc is not None:
                self.proc.wait(timeout)
            wait_until(lambda: not os.path.exists(f"/proc/{self.pid}"), timeout,
                       what="nginx exit")
        except ProcessLookupError:
            pass
        self.pid = None


def fail_stream(stack, session_id):
    """Signalling reports a fatal error: the fallback starts at once."""
    r = stack.post_hook(session_id, "stream", {"state": "failed", "reason": "ice_failed"})
    assert r.status == 202, r.body
    return r
