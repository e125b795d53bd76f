"""A raw RFC 6455 client for the panel WebSocket tests: exact bytes out,
exact frames in, every read bounded by a timeout. Also panel tokens of any
shape, and publishing panel updates the way the worker does (docs/contracts.md:
INCR hamrahi:panel:seq, XADD hamrahi:panel:log with id 0-<seq>, PUBLISH).

Test locations of conf/nginx.conf.in (same panel secret as /v1/panel/ws):
  /v1/panel/ws-test/fastping   hamrahi_panel_ping_interval 1s
  /v1/panel/ws-test/small      hamrahi_panel_send_queue 64k, max_message 1k
  /v1/panel/ws-test/origin     hamrahi_panel_allow_origin (see ORIGINS)
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import time
import urllib.parse
import uuid

import redis

from hamrahi import load_env, read_secret

WS = "/v1/panel/ws"
FASTPING = "/v1/panel/ws-test/fastping"
SMALL = "/v1/panel/ws-test/small"
ORIGIN = "/v1/panel/ws-test/origin"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

_env = None


def env():
    global _env
    if _env is None:
        e = load_env()
        url = urllib.parse.urlparse(e["HAMRAHI_HTTP_URL"])
        _env = {"host": url.hostname, "port": url.port,
                "secret": read_secret(e["HAMRAHI_PANEL_SECRET_FILE"]),
                "redis_port": int(e["HAMRAHI_REDIS_PORT"]), "raw": e}
    return _env


def unique(prefix):
    """A station or subject name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub="op-1", role="operator", station="st-1", exp_in=600, key=None,
          alg="HS256", **extra):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"sub": sub, "role": role, "station": station,
              "exp": int(time.time()) + exp_in}
    claims.update(extra)
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(key or env()["secret"], f"{header}.{payload}".encode(),
                   hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """A client frame; length= announces another payload size than sent."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


def close_frame(code=1000, reason=b"", **kw):
    return frame(OP_CLOSE, struct.pack("!H", code) + reason, **kw)


class Raw:
    """One raw connection. Sends the upgrade request at once; response()
    reads the status line and headers."""

    def __init__(self, tok=None, path=WS, extra=b"", headers=None, timeout=5,
                 rcvbuf=None, request=None, addr=None):
        e = dict(env())
        if addr:
            e["host"], e["port"] = addr
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect((e["host"], e["port"]))
        self.buf = b""
        self.key = base64.b64encode(os.urandom(16)).decode()
        if request is None:
            h = {"Host": f"{e['host']}:{e['port']}", "Upgrade": "websocket",
                 "Connection": "Upgrade", "Sec-WebSocket-Key": self.key,
                 "Sec-WebSocket-Version": "13"}
            if tok:
                h["Authorization"] = "Bearer " + tok
            h.update(headers or {})
            request = (f"GET {path} HTTP/1.1\r\n"
                       + "".join(f"{k}: {v}\r\n" for k, v in h.items() if v is not None)
                       + "\r\n").encode()
        self.s.sendall(request + extra)

    def _more(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs

    def body(self, n):
        while len(self.buf) < n:
            self._more()
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def json_body(self, hdrs):
        return json.loads(self.body(int(hdrs["content-length"])))

    def send(self, data):
        self.s.sendall(data)

    def _need(self, n):
        while len(self.buf) < n:
            self._more()

    def recv_frame(self, timeout=5):
        """(opcode, fin, payload) of the next server frame."""
        self.s.settimeout(timeout)
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server frame must not be masked"
        assert not b0 & 0x70, "no extension was negotiated: RSV bits must be 0"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def texts(self, n, timeout=5):
        """The next n text messages as JSON, skipping pings."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(out)} of {n} messages within {timeout}s: {out}")
            op, fin, p = self.recv_frame(left)
            if op == OP_TEXT:
                assert fin
                out.append(json.loads(p))
            else:
                assert op in (OP_PING,), f"unexpected frame {op:#x} {p!r}"
        return out

    def expect_close(self, code, timeout=5):
        """Skips data frames up to the server's close frame; returns its
        reason and how many frames came before it."""
        skipped = 0
        deadline = time.monotonic() + timeout
        while True:
            op, fin, p = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                got = struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None
                assert got == code, f"close {got}, expected {code} ({p[2:]!r})"
                return p[2:], skipped
            skipped += 1

    def eof(self, timeout=5):
        """True once the server closed the TCP connection (within timeout)."""
        self.s.settimeout(timeout)
        try:
            while True:
                data = self.s.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def upgraded(tok=None, path=WS, **kw):
    c = Raw(tok or token(), path=path, **kw)
    status, hdrs = c.response()
    assert status == 101, (status, c.buf)
    return c


# The worker's publish step (worker/panel_pub.c): INCR seq, SET NX epoch,
# splice seq and epoch into the JSON, XADD the log with id 0-<seq>, PUBLISH.
# Returns {seq, receivers}: how many subscriptions (nginx workers) got it.
PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local text = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '0-' .. seq, 'data', text)
local n = redis.call('PUBLISH', KEYS[4], text)
return {seq, n}
"""


def publish_logged(r, msg):
    """Publish an update as the worker does; returns (seq, receivers)."""
    text = json.dumps(msg, separators=(",", ":"))
    seq, n = r.eval(PUBLISH_LUA, 4, "hamrahi:panel:seq", "hamrahi:panel:epoch",
                    "hamrahi:panel:log", "hamrahi:panel", text, os.urandom(16).hex())
    return int(seq), int(n)


def update(station, **kw):
    m = {"type": "session_update", "session_id": unique("s"), "station_id": station,
         "state": "watching", "mode": "webrtc", "at_ms": int(time.time() * 1000)}
    m.update(kw)
    return m


def current_epoch(r):
    e = r.get("hamrahi:panel:epoch")
    return e.decode() if isinstance(e, bytes) else e


def wait_subscribers(r, n=2, timeout=15):
    """Until n nginx workers are subscribed to hamrahi:panel (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if r.pubsub_numsub("hamrahi:panel")[0][1] >= n:
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"fewer than {n} nginx workers subscribed within {timeout}s")
        time.sleep(0.05)


def wait_redis(r, timeout=30):
    """Until Redis answers commands: a restarted one answers LOADING while
    it reads its append-only file (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r.get("hamrahi:panel:epoch")
            return
        except redis.exceptions.ConnectionError:   # BusyLoadingError is one
            if time.monotonic() >= deadline:
                raise
            r.connection_pool.disconnect()
            time.sleep(0.05)
