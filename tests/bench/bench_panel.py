#!/usr/bin/python3
"""Panel WebSocket benchmark: Ham Rahi's module against nchan, same client.

For each N (panels) and each server: a fresh nginx, N WebSocket subscribers
spread over S stations (nchan: channels) opened by tests/bench/panel_load.c,
then
  idle     nginx worker RSS growth per connected, idle panel
  rate     M updates at R per second, round-robin over the stations:
           publish->receive latency p50/p99/max, delivered/expected
  burst    every panel on one station, updates as fast as one publisher
           goes: deliveries per second, delivered/expected
Every update carries "t", the publisher's clock in microseconds; the client
runs on the same host. The client's own CPU use is printed: near 100 % of a
core it, not the server, is the limit.

Ham Rahi updates go in as the worker publishes them (EVAL: INCR seq, XADD
hamrahi:panel:log, PUBLISH hamrahi:panel); nchan's through its HTTP publisher,
which stores them in Redis and fans out over Redis pub/sub to its workers.

Run through tests/bench/bench_panel.sh (it starts the stack, compiles the
client and raises the open-files limit).
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from hamrahi import load_env, read_secret  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")

PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local text = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '0-' .. seq, 'data', text)
redis.call('PUBLISH', KEYS[4], text)
return seq
"""

NCHAN_CONF = """
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp;
    upstream bench_redis {{
        nchan_redis_server redis://127.0.0.1:{redis_port};
    }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/sub/([\\w-]+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }}
        location ~ ^/pub/([\\w-]+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }}
    }}
}}
"""


def now_us():
    return time.time_ns() // 1000


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def panel_token(secret, sub, station):
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64url(json.dumps({"sub": sub, "role": "operator", "station": station,
                                 "exp": int(time.time()) + 86400}).encode())
    sig = b64url(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def worker_pids(master):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                kids.append(int(entry))
    return kids


def rss_kib(pids, field="VmRSS"):
    """VmRSS: all resident pages; RssAnon: the heap and other anonymous
    memory only (no code pages faulted in by the first requests)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


class HamRahi:
    name = "hamrahi"

    def __init__(self, env_path):
        self.env_path = env_path
        self.env = load_env(env_path)
        self.secret = read_secret(self.env["HAMRAHI_PANEL_SECRET_FILE"])
        self.port = int(self.env["HAMRAHI_HTTP_PORT"])
        self.r = redis.Redis(port=int(self.env["HAMRAHI_REDIS_PORT"]))
        self.sha = self.r.script_load(PUBLISH_LUA)
        self.epoch = os.urandom(16).hex()

    def restart(self):
        env = dict(os.environ, HAMRAHI_RUN_DIR=self.env["HAMRAHI_RUN_DIR"])
        for verb in ("stop", "start"):
            subprocess.run([os.path.join(ROOT, "build.sh"), "svc", verb, "nginx"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
        # the fan-out subscriptions come up right after the workers
        deadline = time.monotonic() + 10
        while self.r.pubsub_numsub("hamrahi:panel")[0][1] < 2:
            assert time.monotonic() < deadline, "nginx workers did not subscribe"
            time.sleep(0.05)

    def master(self):
        with open(os.path.join(self.env["HAMRAHI_RUN_DIR"], "pids", "nginx.pid")) as f:
            return int(f.read())

    def plan_line(self, i, station):
        return f"/v1/panel/ws\tBearer {panel_token(self.secret, f'bench-{i}', station)}"

    def publish(self, station, t):
        text = json.dumps({"type": "session_update", "station_id": station,
                           "session_id": "bench", "state": "watching", "t": t},
                          separators=(",", ":"))
        self.r.evalsha(self.sha, 4, "hamrahi:panel:seq", "hamrahi:panel:epoch",
                       "hamrahi:panel:log", "hamrahi:panel", text, self.epoch)

    def close(self):
        self.r.close()


class Nchan:
    name = "nchan"

    def __init__(self, base, port, redis_port):
        self.dir = os.path.join(base, "nchan")
        self.port = port
        self.redis_port = redis_port
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        subprocess.run(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                        "--daemonize", "yes", "--save", "", "--appendonly", "no",
                        "--dir", self.dir, "--pidfile", os.path.join(self.dir, "redis.pid"),
                        "--logfile", os.path.join(self.dir, "redis.log")], check=True)
        self.r = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "nchan's redis did not start"
                time.sleep(0.05)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(NCHAN_CONF.format(dir=self.dir, port=port, redis_port=redis_port))
        self.http = None

    def nginx(self, *args):
        subprocess.run(["nginx", "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                        "-e", os.path.join(self.dir, "error.log"), *args], check=True)

    def master(self):
        with open(os.path.join(self.dir, "nginx.pid")) as f:
            return int(f.read())

    def restart(self):
        self.stop_nginx()
        self.r.flushall()
        self.nginx()
        deadline = time.monotonic() + 10
        while len(worker_pids(self.master())) < 2:
            assert time.monotonic() < deadline, "nchan's nginx did not start"
            time.sleep(0.05)
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        # nchan answers 503 until each worker's Redis connection is up
        deadline = time.monotonic() + 20
        while not self.subscribers_accepted():
            assert time.monotonic() < deadline, "nchan did not get ready"
            time.sleep(0.1)

    def subscribers_accepted(self, probes=20):
        import socket
        for _ in range(probes):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /sub/probe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                if not s.recv(64).startswith(b"HTTP/1.1 101"):
                    return False
        return True

    def stop_nginx(self):
        if self.http:
            self.http.close()
            self.http = None
        pidfile = os.path.join(self.dir, "nginx.pid")
        if not os.path.exists(pidfile):
            return
        master = self.master()
        self.nginx("-s", "quit")
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{master}") and time.monotonic() < deadline:
            time.sleep(0.05)

    def plan_line(self, i, station):
        return f"/sub/{station}\t-"

    def publish(self, station, t):
        body = json.dumps({"type": "session_update", "station_id": station,
                           "session_id": "bench", "state": "watching", "t": t},
                          separators=(",", ":"))
        self.http.request("POST", f"/pub/{station}", body,
                          {"Content-Type": "application/json"})
        resp = self.http.getresponse()
        resp.read()
        assert resp.status in (200, 201, 202), resp.status

    def close(self):
        self.stop_nginx()
        try:
            self.r.shutdown(nosave=True)
        except redis.ConnectionError:
            pass


class Client:
    def __init__(self, binary, port, plan):
        self.proc = subprocess.Popen([binary, "127.0.0.1", str(port), plan],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)

    def line(self, timeout):
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the client said nothing within {timeout}s"
        return self.proc.stdout.readline().split()

    def ready(self, timeout=180):
        words = self.line(timeout)
        assert words[0] == "ready", words
        return int(words[1]), int(words[2])

    def cmd(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def report(self):
        self.cmd("report")
        words = self.line(30)
        assert words[0] == "report", words
        return {k: int(v) for k, v in (w.split("=") for w in words[1:])}

    def wait_delivered(self, expected, timeout):
        deadline = time.monotonic() + timeout
        while True:
            rep = self.report()
            if rep["delivered"] >= expected or time.monotonic() > deadline:
                return rep
            time.sleep(0.1)

    def quit(self):
        self.cmd("quit")
        self.proc.wait(30)


def percent(a, b):
    return 100.0 * a / b if b else 0.0


def run_one(server, n, args, binary, workdir):
    server.restart()
    stations = [f"bench-st-{k}" for k in range(args.stations)]
    plan = os.path.join(workdir, f"plan-{server.name}-{n}.txt")
    with open(plan, "w") as f:
        for i in range(n):
            f.write(server.plan_line(i, stations[i % len(stations)]) + "\n")
    per_station = {st: sum(1 for i in range(n) if i % len(stations) == k)
                   for k, st in enumerate(stations)}
    pids = worker_pids(server.master())

    # warm up: code paths, the stations, the allocator's first growth
    warm = os.path.join(workdir, f"warm-{server.name}.txt")
    with open(warm, "w") as f:
        for i in range(args.warmup):
            f.write(server.plan_line(i, stations[i % len(stations)]) + "\n")
    client = Client(binary, server.port, warm)
    assert client.ready() == (args.warmup, 0)
    client.quit()
    time.sleep(args.settle)
    rss_before = rss_kib(pids), rss_kib(pids, "RssAnon")

    client = Client(binary, server.port, plan)
    result = {"server": server.name, "panels": n}
    try:
        ok, failed = client.ready()
        result["connected"] = ok
        assert failed == 0, f"{failed} of {n} handshakes failed"
        time.sleep(args.settle)       # let the handshakes' allocations settle
        result["rss_kib_per_panel"] = (rss_kib(pids) - rss_before[0]) / n
        result["anon_kib_per_panel"] = (rss_kib(pids, "RssAnon") - rss_before[1]) / n

        # rate: fixed publish rate, latency
        client.cmd("reset")
        expected = 0
        cpu0, nginx0, t0 = client.report()["cpu_us"], cpu_ticks(pids), time.monotonic()
        client.cmd("reset")
        interval = 1.0 / args.rate
        start = time.monotonic()
        for k in range(args.updates):
            st = stations[k % len(stations)]
            target = start + k * interval
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            server.publish(st, now_us())
            expected += per_station[st]
        rep = client.wait_delivered(expected, 30)
        wall = time.monotonic() - t0
        result.update(rate_expected=expected, rate_delivered=rep["delivered"],
                      p50_ms=rep["p50_us"] / 1000, p99_ms=rep["p99_us"] / 1000,
                      max_ms=rep["max_us"] / 1000,
                      rate_client_cpu=percent(rep["cpu_us"] - cpu0, wall * 1e6),
                      rate_nginx_cpu=percent((cpu_ticks(pids) - nginx0) / TICK, wall),
                      closes=rep["closes"])

    finally:
        client.quit()

    # burst: every panel on one station, updates as fast as one publisher
    # goes; few publishes make many deliveries, so the servers are measured,
    # not the publisher (nchan's HTTP publisher is far slower than EVAL)
    plan = os.path.join(workdir, f"plan-{server.name}-{n}-all.txt")
    with open(plan, "w") as f:
        for i in range(n):
            f.write(server.plan_line(i, "bench-all") + "\n")
    updates = max(10, args.burst_deliveries // n)
    client = Client(binary, server.port, plan)
    try:
        assert client.ready() == (n, 0)
        client.cmd("reset")
        cpu0, nginx0 = client.report()["cpu_us"], cpu_ticks(pids)
        client.cmd("reset")
        first_pub = now_us()
        for k in range(updates):
            server.publish("bench-all", now_us())
        pub_done = now_us()
        expected = updates * n
        rep = client.wait_delivered(expected, 120)
        span_s = max(1, rep["last_rx_us"] - first_pub) / 1e6
        result.update(burst_updates=updates, burst_expected=expected,
                      burst_delivered=rep["delivered"],
                      deliveries_per_s=rep["delivered"] / span_s,
                      burst_publish_s=(pub_done - first_pub) / 1e6,
                      burst_p99_ms=rep["p99_us"] / 1000,
                      burst_client_cpu=percent(rep["cpu_us"] - cpu0, span_s * 1e6),
                      burst_nginx_cpu=percent((cpu_ticks(pids) - nginx0) / TICK, span_s))
    finally:
        client.quit()
    return result


def print_result(r):
    print(f"{r['server']:8} panels={r['panels']:5}  idle: RSS {r['rss_kib_per_panel']:.2f} "
          f"KiB/panel (anonymous {r['anon_kib_per_panel']:.2f})  "
          f"| rate: delivered {r['rate_delivered']}/{r['rate_expected']}  "
          f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms  "
          f"(client cpu {r['rate_client_cpu']:.0f}%, nginx cpu {r['rate_nginx_cpu']:.0f}%)  "
          f"| burst of {r['burst_updates']} to all: delivered {r['burst_delivered']}/"
          f"{r['burst_expected']}  {r['deliveries_per_s']:.0f} deliveries/s  "
          f"p99 {r['burst_p99_ms']:.1f} ms  published in {r['burst_publish_s']:.2f} s  "
          f"(client cpu {r['burst_client_cpu']:.0f}%, nginx cpu {r['burst_nginx_cpu']:.0f}%)",
          flush=True)
    if r["burst_client_cpu"] > 85:
        print("         ^ burst: the client used most of a core: it, not the server, "
              "may be the limit", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True, help="the Ham Rahi stack's env file")
    ap.add_argument("--client", required=True, help="the compiled panel_load")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--nchan-port", type=int, default=0, help="0: no nchan run")
    ap.add_argument("--nchan-redis-port", type=int, default=0)
    ap.add_argument("--panels", default="1000,5000")
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument("--updates", type=int, default=500, help="updates of the rate phase")
    ap.add_argument("--rate", type=float, default=100.0, help="updates per second")
    ap.add_argument("--burst-deliveries", type=int, default=200000,
                    help="deliveries of the burst phase (updates = this / panels)")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=20,
                    help="panels opened and closed before the idle measurement")
    args = ap.parse_args()

    servers = [HamRahi(args.env)]
    if args.nchan_port:
        servers.append(Nchan(args.workdir, args.nchan_port, args.nchan_redis_port))
    print(f"# rate phase: {args.stations} stations, {args.updates} updates at {args.rate:g}/s; "
          f"burst phase: one station, {args.burst_deliveries} deliveries", flush=True)
    results = []
    try:
        for n in (int(x) for x in args.panels.split(",")):
            for server in servers:
                r = run_one(server, n, args, args.client, args.workdir)
                print_result(r)
                results.append(r)
    finally:
        for server in servers:
            server.close()

    by = {(r["server"], r["panels"]): r for r in results}
    for n in sorted({r["panels"] for r in results}):
        h, c = by.get(("hamrahi", n)), by.get(("nchan", n))
        if h and c:
            print(f"ratio hamrahi/nchan panels={n}: "
                  f"RSS/panel {h['rss_kib_per_panel'] / max(c['rss_kib_per_panel'], 0.001):.2f}  "
                  f"anonymous/panel {h['anon_kib_per_panel'] / max(c['anon_kib_per_panel'], 0.001):.2f}  "
                  f"p50 {h['p50_ms'] / max(c['p50_ms'], 0.001):.2f}  "
                  f"p99 {h['p99_ms'] / max(c['p99_ms'], 0.001):.2f}  "
                  f"deliveries/s {h['deliveries_per_s'] / max(c['deliveries_per_s'], 1):.2f}",
                  flush=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    failed = [r for r in results if r["rate_delivered"] != r["rate_expected"]
              or r["burst_delivered"] != r["burst_expected"]]
    for r in failed:
        print(f"NOT ALL DELIVERED: {r['server']} panels={r['panels']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
