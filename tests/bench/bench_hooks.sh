#!/usr/bin/env bash
# Hook benchmark (issue 3): wrk against POST /v1/sos/sessions/{id}/activated with
# distinct pre-signed activations, and against the `return 204` /healthz of
# the same nginx, at the same concurrency. Prints figures, not pass/fail:
# req/s and p99 of both, their ratio, and nginx workers' CPU per request.
#
#   tests/bench/bench_hooks.sh   (BENCH_SECONDS=10 BENCH_CONNECTIONS=64, then
#                                  the same at BENCH_LOW_CONNECTIONS=4)
#
# A private stack (./build.sh up/down) with state in BENCH_DIR
# (/tmp/hamrahi-bench-hooks) on loopback ports BENCH_HTTP_PORT (19200) and the
# four after it (redis, PostgreSQL, sandbox, worker metrics). The worker is
# stopped during the runs: it is not on the hook path, and on a small machine
# it would take CPU from nginx and Redis (events stay in the stream).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/hamrahi-bench-hooks}"
HTTP_PORT="${BENCH_HTTP_PORT:-19200}"
SECONDS_RUN="${BENCH_SECONDS:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
LOW_CONNECTIONS="${BENCH_LOW_CONNECTIONS:-4}"
THREADS="${BENCH_THREADS:-2}"
# bodies to sign: each serves 1,000 sessions per wrk thread
SIGNED="${BENCH_SIGNED:-$((SECONDS_RUN * 100))}"

export HAMRAHI_RUN_DIR="$BENCH_DIR/run"
export HAMRAHI_HTTP_PORT="$HTTP_PORT"
export HAMRAHI_REDIS_PORT=$((HTTP_PORT + 1))
export HAMRAHI_PG_PORT=$((HTTP_PORT + 2))
export HAMRAHI_SANDBOX_PORT=$((HTTP_PORT + 3))
export HAMRAHI_WORKER_METRICS_PORT=$((HTTP_PORT + 4))

cleanup() { "$ROOT/build.sh" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
mkdir -p "$BENCH_DIR"
"$ROOT/build.sh" up >/dev/null
"$ROOT/build.sh" svc stop worker >/dev/null

URL="http://127.0.0.1:$HTTP_PORT"
CLK_TCK="$(getconf CLK_TCK)"
MASTER="$(cat "$HAMRAHI_RUN_DIR/pids/nginx.pid")"
REDIS_PID="$(cat "$HAMRAHI_RUN_DIR/pids/redis.pid")"

# sign the activations now (signatures are accepted for 300 s)
/usr/bin/python3 - "$HAMRAHI_RUN_DIR/secrets/hook_secret" "$BENCH_DIR/signed.txt" "$SIGNED" <<'PY'
import hashlib, hmac, json, sys, time
secret = open(sys.argv[1], "rb").read().rstrip()
t = str(int(time.time()))
with open(sys.argv[2], "w") as out:
    for n in range(int(sys.argv[3])):
        body = json.dumps({"citizen_id": "cit-bench", "operator_id": "op-1",
                           "station_id": "st-bench", "n": n}, separators=(",", ":"))
        mac = hmac.new(secret, f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
        out.write(f"t={t},v1={mac}\t{body}\n")
PY

# CPU ticks (user + system) of the given pids
ticks() {
    local total=0 pid f
    for pid in "$@"; do
        f=($(sed 's/^.*) //' "/proc/$pid/stat"))
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# run NAME CONNECTIONS URL [signed-file]: wrk's RESULT line plus CPU per request
run() {
    local name="$1" conns="$2" url="$3" file="${4:-}" workers before_n before_r out n_ticks r_ticks reqs
    workers=($(pgrep -P "$MASTER"))
    before_n="$(ticks "${workers[@]}")"
    before_r="$(ticks "$REDIS_PID")"
    out="$(BENCH_SIGNED_FILE="$file" BENCH_RUN_TAG="$name" wrk -t"$THREADS" -c"$conns" -d"${SECONDS_RUN}s" \
        --timeout 5s -s "$ROOT/tests/bench/bench_hooks.lua" "$url")"
    n_ticks=$(($(ticks "${workers[@]}") - before_n))
    r_ticks=$(($(ticks "$REDIS_PID") - before_r))
    reqs="$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' <<<"$out")"
    echo "$name $(grep '^RESULT' <<<"$out" | cut -d' ' -f2-)" \
        "nginx_cpu_us_per_req=$(( reqs > 0 ? n_ticks * 1000000 / CLK_TCK / reqs : 0 ))" \
        "redis_cpu_us_per_req=$(( reqs > 0 ? r_ticks * 1000000 / CLK_TCK / reqs : 0 ))"
}

echo "# $(nproc) cores; wrk -t$THREADS -d${SECONDS_RUN}s on the same machine; nginx $(nginx -v 2>&1 | cut -d/ -f2), 2 workers"
HEALTH="$(run healthz "$CONNECTIONS" "$URL/healthz")"
# this private stream only: the count below is then exact (no MAXLEN trim)
redis-cli -p "$HAMRAHI_REDIS_PORT" DEL hamrahi:events >/dev/null
HOOKS="$(run activated "$CONNECTIONS" "$URL/" "$BENCH_DIR/signed.txt")"
stored="$(redis-cli -p "$HAMRAHI_REDIS_PORT" XLEN hamrahi:events)"
# the same at low concurrency: latency without a saturated machine
HEALTH_LOW="$(run healthz-low "$LOW_CONNECTIONS" "$URL/healthz")"
HOOKS_LOW="$(run activated-low "$LOW_CONNECTIONS" "$URL/" "$BENCH_DIR/signed.txt")"
printf '%s\n' "$HEALTH" "$HOOKS" "$HEALTH_LOW" "$HOOKS_LOW"
/usr/bin/python3 - "$CONNECTIONS" "$LOW_CONNECTIONS" "$stored" "$HEALTH" "$HOOKS" "$HEALTH_LOW" "$HOOKS_LOW" <<'PY'
import sys
def parse(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
conns, low, stored = sys.argv[1], sys.argv[2], int(sys.argv[3])
h, a, hl, al = (parse(x) for x in sys.argv[4:8])
def show(name, r):
    redis = f"  redis CPU {r['redis_cpu_us_per_req']:.0f} us/req" if "activated" in name else ""
    print(f"{name:22s} {r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:6.3f} ms"
          f"  p99 {r['p99_us'] / 1000:6.3f} ms  nginx CPU {r['nginx_cpu_us_per_req']:.0f} us/req{redis}")
show(f"healthz   -c{conns}", h)
show(f"activated -c{conns}", a)
show(f"healthz   -c{low}", hl)
show(f"activated -c{low}", al)
print(f"ratio activated/healthz req/s at {conns} connections: {a['rps'] / h['rps']:.2f} (goal >= 0.5); "
      f"activated p99 {a['p99_us'] / 1000:.3f} ms (goal <= 2 ms)")
bad = a["unexpected_status"] + al["unexpected_status"]
print(f"non-202 answers: {bad:.0f}; socket errors: {a['socket_errors'] + al['socket_errors']:.0f}; "
      f"replays sent for want of signatures: {a['replays_sent'] + al['replays_sent']:.0f}; "
      f"events added to the stream by the -c{conns} run: {stored} "
      f"(202s counted by wrk: {a['requests'] - a['unexpected_status']:.0f})")
PY
