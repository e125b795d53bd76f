#!/usr/bin/env bash
# Panel WebSocket benchmark: a private Ham Rahi stack and nchan (Debian's
# libnginx-mod-nchan, Redis-backed, its own nginx and redis), the same client
# against both. Prints one line per server and panel count, then the ratios.
#
#   tests/bench/bench_panel.sh [bench_panel.py options, e.g. --panels 1000,5000]
#
# Ports (loopback): BENCH_HTTP_PORT (29500) and the three after it for the
# stack's redis, PostgreSQL and sandbox; BENCH_NCHAN_PORT (29510) and the
# port after it for nchan's redis. State in BENCH_DIR (/tmp/hamrahi-bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/hamrahi-bench}"
HTTP_PORT="${BENCH_HTTP_PORT:-29500}"
NCHAN_PORT="${BENCH_NCHAN_PORT:-29510}"

# every panel is a socket on both ends: 5,000 panels need > 10,000 files
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "# open files limit: $(ulimit -n)"

mkdir -p "$BENCH_DIR"
cc -O2 -std=gnu11 -Wall -Wextra -Werror -o "$BENCH_DIR/panel_load" "$ROOT/tests/bench/panel_load.c"

export HAMRAHI_RUN_DIR="$BENCH_DIR/run"
export HAMRAHI_HTTP_PORT="$HTTP_PORT"
export HAMRAHI_REDIS_PORT=$((HTTP_PORT + 1))
export HAMRAHI_PG_PORT=$((HTTP_PORT + 2))
export HAMRAHI_SANDBOX_PORT=$((HTTP_PORT + 3))

cleanup() { "$ROOT/build.sh" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$ROOT/build.sh" up

/usr/bin/python3 "$ROOT/tests/bench/bench_panel.py" --env "$HAMRAHI_RUN_DIR/env" \
    --client "$BENCH_DIR/panel_load" --workdir "$BENCH_DIR" \
    --nchan-port "$NCHAN_PORT" --nchan-redis-port $((NCHAN_PORT + 1)) "$@"
