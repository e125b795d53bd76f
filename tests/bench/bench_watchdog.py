#!/usr/bin/python3
"""Watchdog benchmark (prints figures, no pass/fail).

10,000 concurrent sessions armed in the worker, 1,000 of them expiring
within the same second: watchdog lateness (the worker's histogram
hamrahi_worker_watchdog_lateness_seconds, plus the exact deadline -> "call
request received by the sandbox" times), worker CPU during the burst (from
/proc/PID/stat) and memory per armed session (VmRSS).

Runs against a stack started with ./build.sh up (reads $HAMRAHI_RUN_DIR/env):
    HAMRAHI_RUN_DIR=/tmp/x/run HAMRAHI_HTTP_PORT=... ./build.sh up
    HAMRAHI_RUN_DIR=/tmp/x/run tests/bench/bench_watchdog.py [--total 10000 --burst 1000]
The sessions are written straight to hamrahi:events (as the hooks would):
the benchmark measures the worker, not nginx. The idle sessions' deadlines
lie beyond the run; stop the stack afterwards (./build.sh down).
"""

import argparse
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from hamrahi import Stack, now_ms, wait_until  # noqa: E402
from worker_scenarios import metrics, pid_of  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def histogram_quantile(m, q):
    """Upper bound of the bucket holding quantile q (Prometheus-style)."""
    prefix = "hamrahi_worker_watchdog_lateness_seconds_bucket{le=\""
    buckets = sorted((float(k[len(prefix):-2]), v) for k, v in m.items()
                     if k.startswith(prefix) and "+Inf" not in k)
    total = m.get("hamrahi_worker_watchdog_lateness_seconds_count", 0)
    for le, count in buckets:
        if count >= q * total:
            return le * 1000
    return float("inf")


def add_sessions(stack, items):
    pipe = stack.redis.pipeline(transaction=False)
    for i, (sid, cid, at) in enumerate(items):
        pipe.xadd("hamrahi:events", {
            "type": "activated", "session_id": sid, "at_ms": str(at),
            "payload": json.dumps({"citizen_id": cid, "operator_id": "op-1",
                                   "station_id": "st-1"})})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", type=int, default=10000)
    ap.add_argument("--burst", type=int, default=1000)
    args = ap.parse_args()
    stack = Stack()
    pid = pid_of(stack, "worker")
    murl = stack.env["HAMRAHI_WORKER_METRICS_URL"]
    tag = uuid.uuid4().hex[:6]

    # The burst's citizens, each with a phone of its own.
    with stack.pg.cursor() as cur:
        for i in range(args.burst):
            cur.execute("INSERT INTO citizens (id, verified_phone) VALUES (%s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET verified_phone = EXCLUDED.verified_phone",
                        (f"bench-{tag}-{i}", "+1558%07d" % (i + 1)))
    stack.sandbox_reset()
    rss0 = rss_bytes(pid)
    sessions0 = metrics(murl)["hamrahi_worker_sessions"]

    idle = args.total - args.burst
    far = now_ms() + 3600 * 1000  # deadlines beyond the run
    # In two halves: the second half's growth is the marginal cost of a
    # session (the first also grows malloc's arenas for the write queue).
    half = idle // 2
    rss_half = None
    for part in (range(half), range(half, idle)):
        add_sessions(stack, [(f"bench-{tag}-idle-{i}", "cit-1", far) for i in part])
        wait_until(lambda: metrics(murl)["hamrahi_worker_sessions"] >= sessions0 + part.stop,
                   120, interval=0.2, what="the sessions in the worker")
        wait_until(lambda: metrics(murl)["hamrahi_worker_pg_queue"] == 0, 60, interval=0.2,
                   what="the records of the activations written")
        if rss_half is None:
            rss_half = rss_bytes(pid)
    rss_idle = rss_bytes(pid)
    # The burst: deadlines spread over one second, 15 s from now.
    first = now_ms() + 15000
    burst = [(f"bench-{tag}-{i}", f"bench-{tag}-{i}", first - 5000 + i * 1000 // args.burst)
             for i in range(args.burst)]
    add_sessions(stack, burst)
    deadlines = {sid: at + 5000 for sid, _, at in burst}
    wait_until(lambda: metrics(murl)["hamrahi_worker_sessions"] >= sessions0 + args.total,
               120, interval=0.5, what="all sessions in the worker")
    wait_until(lambda: metrics(murl)["hamrahi_worker_sessions"] >= sessions0 + args.total,
               120, interval=0.2, what="all sessions in the worker")
    m = metrics(murl)
    print(f"sessions armed: {int(m['hamrahi_worker_sessions'] - sessions0)}, "
          f"timers armed: {int(m['hamrahi_worker_timers_armed'])}")
    print(f"RSS: {rss0 / 1048576:.1f} MiB before, {rss_idle / 1048576:.1f} MiB with {idle} "
          f"sessions: {(rss_idle - rss0) / idle:.0f} bytes per session overall, "
          f"{(rss_idle - rss_half) / (idle - half):.0f} bytes per session at the margin")
    if now_ms() > first - 500:
        print("warning: setup took longer than planned; the burst started early")
    time.sleep(max(0, (first - now_ms() - 300) / 1000))
    before = metrics(murl)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(1.6)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    print(f"worker CPU during the burst second: {(cpu1 - cpu0) / (t1 - t0) * 100:.0f}% "
          f"of one core ({(cpu1 - cpu0) * 1000 / args.burst:.2f} ms CPU per fallback)")

    phones = {"+1558%07d" % (i + 1): f"bench-{tag}-{i}" for i in range(args.burst)}
    calls = wait_until(lambda: (lambda c: c if len(c) >= args.burst else None)(
        [c for c in stack.sandbox_calls() if c["to"] in phones]), 60, interval=0.5,
        what="every burst call at the sandbox")
    after = metrics(murl)
    fired = after["hamrahi_worker_watchdogs_fired_total"] - before["hamrahi_worker_watchdogs_fired_total"]
    delays = [(c.get("received_at_ms") or c["created_at_ms"]) - deadlines[phones[c["to"]]]
              for c in calls]
    print(f"watchdogs fired: {int(fired)}; calls received by the sandbox: {len(calls)}")
    print("watchdog lateness (histogram bucket upper bounds): "
          f"p50 <= {histogram_quantile(after, 0.5):g} ms, p99 <= {histogram_quantile(after, 0.99):g} ms, "
          f"mean {after['hamrahi_worker_watchdog_lateness_seconds_sum'] / max(1, after['hamrahi_worker_watchdog_lateness_seconds_count']) * 1000:.2f} ms")
    print(f"deadline -> provider request received: p50 {pct(delays, 50)} ms, "
          f"p99 {pct(delays, 99)} ms, max {max(delays)} ms")
    sent = worker_send_delays(stack, tag)
    if sent:
        print(f"deadline -> first create request sent by the worker: p50 {pct(sent, 50)} ms, "
              f"p99 {pct(sent, 99)} ms, max {max(sent)} ms")


def worker_send_delays(stack, tag):
    """From the worker's log: 'calling citizen ... (N ms after the failure
    was detected)', the first attempt of each burst session."""
    seen, out = set(), []
    path = os.path.join(stack.env["HAMRAHI_RUN_DIR"], "log", "worker.log")
    with open(path, errors="replace") as f:
        for line in f:
            if f"session=bench-{tag}-" not in line or "calling citizen" not in line:
                continue
            sid = line.split("session=", 1)[1].split()[0]
            if sid in seen:
                continue
            seen.add(sid)
            out.append(int(line.rsplit("(", 1)[1].split()[0]))
    return out


if __name__ == "__main__":
    main()
