#!/usr/bin/env bash
# Ham Rahi: build, run and test the SOS phone fallback on one Debian 12 machine.
#
#   ./build.sh deps        install the Debian packages the project needs (no-op when present)
#   ./build.sh [build]     build the nginx module and the worker (-Werror)
#   ./build.sh up          start redis, PostgreSQL, the sandbox, nginx and the worker on 127.0.0.1
#   ./build.sh down        stop exactly the processes `up` started
#   ./build.sh run         up, run the demo scenario and print its timeline, wait for Ctrl-C, down
#   ./build.sh test        private stack in a temporary directory, unit + end-to-end tests, summary line
#   ./build.sh svc start|stop NAME   one service of a running stack (redis, postgres, nginx, worker, worker-2, sandbox)
#
# State lives in $HAMRAHI_RUN_DIR (default .run/). Ports: HAMRAHI_HTTP_PORT (8080), HAMRAHI_REDIS_PORT (6380),
# HAMRAHI_PG_PORT (5433), HAMRAHI_SANDBOX_PORT (8090). HAMRAHI_WORKERS=2 starts a standby worker.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
PGBIN=/usr/lib/postgresql/15/bin
NGX_SRC=/usr/share/nginx/src
MODULE_SO="$ROOT/build/nginx/ngx_http_hamrahi_module.so"
WORKER_BIN="$ROOT/build/hamrahi-worker"
# HAMRAHI_SANITIZE=1: the stack runs the module and the worker built with
# AddressSanitizer and UBSan (build-asan/); reports go to $RUN/log/*san-*.
if [ "${HAMRAHI_SANITIZE:-0}" = 1 ]; then
    MODULE_SO="$ROOT/build-asan/nginx/ngx_http_hamrahi_module.so"
    WORKER_BIN="$ROOT/build-asan/hamrahi-worker"
fi
FROM_NUMBER="+15550009999"

PACKAGES=(
    build-essential clang libclang-rt-14-dev valgrind pkg-config ca-certificates curl
    nginx nginx-dev libnginx-mod-nchan
    libhiredis-dev libjansson-dev libcurl4-openssl-dev libpq-dev libssl-dev
    libuv1-dev libsystemd-dev libcmocka-dev
    redis-server postgresql-15 postgresql-client-15
    python3 python3-pytest python3-websockets python3-redis python3-psycopg2 python3-twilio
    wrk
)

log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- deps

cmd_deps() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    # Node runs the second, independent WebSocket client of the tests (ws from
    # npm); any Node >= 18 will do, Debian's own when none is installed.
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    if [ ${#missing[@]} -gt 0 ]; then
        install_packages "${missing[@]}"
    fi
    node_deps
}

install_packages() {
    log "installing: $*"
    as_root apt-get update -qq
    # Debian's nginx/redis/postgresql packages start their services on
    # install; this project runs its own on loopback, so a temporary
    # policy-rc.d (the Debian way) keeps the system ones from starting.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        own_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null || {
        [ $own_policy = 1 ] && as_root rm -f "$policy"
        die "apt-get install failed"
    }
    [ $own_policy = 1 ] && as_root rm -f "$policy"
    return 0
}

node_deps() {
    local dir="$ROOT/tests/e2e/node"
    [ -d "$dir/node_modules/ws" ] && return 0
    log "installing the Node test client's packages (npm ci)"
    # Trust the system's CA bundle (it carries any local proxy's CA too).
    local ca=/etc/ssl/certs/ca-certificates.crt cafile=()
    [ -f "$ca" ] && cafile=(--cafile "$ca")
    (cd "$dir" && npm ci "${cafile[@]}" --no-audit --no-fund --loglevel=error >/dev/null) \
        || log "warning: npm ci failed in $dir; the Node client test will be skipped"
}

# ---------------------------------------------------------------- build

cmd_build() {
    mkdir -p "$ROOT/build"
    # Several stacks (a developer's `up` and a `test`) may build at once.
    (
        flock 9
        build_module "$ROOT/build/nginx"
        make -C "$ROOT" -s -j2 all
        if [ "${HAMRAHI_SANITIZE:-0}" = 1 ]; then
            build_module "$ROOT/build-asan/nginx" \
                "-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
            make -C "$ROOT" -s -j2 asan
        fi
    ) 9> "$ROOT/build/.lock"
}

# nginx's configure is run once per build dir (it takes ~4 s); `make modules`
# then only recompiles what changed. A new source file or a changed `config`
# needs a re-configure, which the stamp below detects.
# build_module DIR [SANITIZER_FLAGS]
build_module() {
    local bdir="$1" sanitize="${2:-}" stamp
    stamp="$(cd "$ROOT/ngx_module" && ls ./*.c ./*.h config | sha1sum | cut -c1-40)-$(sha1sum < "$ROOT/ngx_module/config" | cut -c1-40)"
    mkdir -p "$bdir"
    if [ ! -f "$bdir/Makefile" ] || [ "$(cat "$bdir/.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "configuring the nginx module against Debian's nginx"
        (cd "$NGX_SRC" && bash -c '. ./conf_flags; ./configure \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS) $3" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC $3" "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$1" --builddir="$2"' _ "$ROOT/ngx_module" "$bdir" "$sanitize") \
            > "$bdir/configure.log" 2>&1 || { tail -20 "$bdir/configure.log"; die "nginx configure failed"; }
        echo "$stamp" > "$bdir/.stamp"
    fi
    make -s -f "$bdir/Makefile" -C "$NGX_SRC" modules > "$bdir/make.log" 2>&1 \
        || { cat "$bdir/make.log"; die "module build failed"; }
}

# ---------------------------------------------------------------- stack

run_dir_defaults() {
    RUN="${HAMRAHI_RUN_DIR:-$ROOT/.run}"
    HTTP_PORT="${HAMRAHI_HTTP_PORT:-8080}"
    REDIS_PORT="${HAMRAHI_REDIS_PORT:-6380}"
    PG_PORT="${HAMRAHI_PG_PORT:-5433}"
    SANDBOX_PORT="${HAMRAHI_SANDBOX_PORT:-8090}"
    NGINX_WORKERS="${HAMRAHI_NGINX_WORKERS:-2}"
    # worker's metrics listen on this port, worker-2's on the next one
    METRICS_PORT="${HAMRAHI_WORKER_METRICS_PORT:-9101}"
    mkdir -p "$RUN"
    RUN="$(cd "$RUN" && pwd)"
    mkdir -p "$RUN/pids" "$RUN/log" "$RUN/secrets" "$RUN/nginx/conf" "$RUN/nginx/tmp"
    PG_DSN="postgresql://postgres@127.0.0.1:$PG_PORT/hamrahi"
}

# Reuse the settings of a running stack (ports live in its env file).
load_run_env() {
    run_dir_defaults
    if [ -f "$RUN/env" ]; then
        # shellcheck disable=SC1091
        . "$RUN/env"
        HTTP_PORT="$HAMRAHI_HTTP_PORT"; REDIS_PORT="$HAMRAHI_REDIS_PORT"
        PG_PORT="$HAMRAHI_PG_PORT"; SANDBOX_PORT="$HAMRAHI_SANDBOX_PORT"
        PG_DSN="$HAMRAHI_PG_DSN"
        METRICS_PORT="$HAMRAHI_WORKER_METRICS_PORT"
    fi
}

make_secrets() {
    local s
    umask 077
    for s in hook_secret panel_secret telephony_token; do
        [ -s "$RUN/secrets/$s" ] || od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$RUN/secrets/$s"
    done
    [ -s "$RUN/secrets/account_sid" ] \
        || { printf 'AC'; od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; } > "$RUN/secrets/account_sid"
    umask 022
}

write_env() {
    cat > "$RUN/env" <<EOF
# Ham Rahi local stack ($(date -u +%FT%TZ)); source me.
export HAMRAHI_RUN_DIR='$RUN'
export HAMRAHI_HTTP_PORT=$HTTP_PORT
export HAMRAHI_REDIS_PORT=$REDIS_PORT
export HAMRAHI_PG_PORT=$PG_PORT
export HAMRAHI_SANDBOX_PORT=$SANDBOX_PORT
export HAMRAHI_HTTP_URL='http://127.0.0.1:$HTTP_PORT'
export HAMRAHI_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
export HAMRAHI_PG_DSN='$PG_DSN'
export HAMRAHI_SANDBOX_URL='http://127.0.0.1:$SANDBOX_PORT'
export HAMRAHI_HOOK_SECRET_FILE='$RUN/secrets/hook_secret'
export HAMRAHI_PANEL_SECRET_FILE='$RUN/secrets/panel_secret'
export HAMRAHI_TELEPHONY_TOKEN_FILE='$RUN/secrets/telephony_token'
export HAMRAHI_TELEPHONY_ACCOUNT_SID='$(cat "$RUN/secrets/account_sid")'
export HAMRAHI_FROM_NUMBER='$FROM_NUMBER'
export HAMRAHI_WORKER_METRICS_PORT=$METRICS_PORT
export HAMRAHI_WORKER_METRICS_URL='http://127.0.0.1:$METRICS_PORT/metrics'
export HAMRAHI_WORKER2_METRICS_URL='http://127.0.0.1:$((METRICS_PORT + 1))/metrics'
EOF
}

pid_of() { cat "$RUN/pids/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll a readiness probe, bounded.
wait_for() {
    local what="$1" secs="$2" i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    die "$what did not become ready within ${secs}s (logs in $RUN/log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PostgreSQL refuses to run as root: run it as the postgres user then.
pg_user_run() {
    # (from /, which the postgres user can always enter)
    if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pg_dirs() {
    PGDATA="$RUN/pg"; PGSOCK="$RUN/pgsock"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$RUN"; then
        # The run dir is not reachable by the postgres user (e.g. under /root):
        # keep the cluster in a directory it can reach, linked from the run dir.
        local alt="/tmp/hamrahi-pg-$(echo "$RUN" | sha1sum | cut -c1-12)"
        mkdir -p "$alt"
        chmod 755 "$alt"
        ln -sfn "$alt" "$RUN/pgroot"
        PGDATA="$alt/pg"; PGSOCK="$alt/pgsock"
    fi
}

start_redis() {
    alive redis && return 0
    port_free "$REDIS_PORT" || die "port $REDIS_PORT (redis) is in use"
    mkdir -p "$RUN/redis"
    # appendfsync always: a hook answered 202 survives even a machine crash
    # (Redis groups the fsyncs of one event-loop turn).
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
        --appendonly yes --appendfsync always --dir "$RUN/redis" \
        --pidfile "$RUN/pids/redis.pid" --logfile "$RUN/log/redis.log"
    wait_for redis 30 redis_ready
}

# `redis-cli ping` exits 0 even while Redis answers LOADING: wait for PONG.
redis_ready() {
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

start_postgres() {
    pg_dirs
    if alive postgres; then return 0; fi
    port_free "$PG_PORT" || die "port $PG_PORT (PostgreSQL) is in use"
    mkdir -p "$PGDATA" "$PGSOCK"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDATA" "$PGSOCK" "$RUN/log"; fi
    chmod 700 "$PGDATA"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        pg_user_run "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 > "$RUN/log/initdb.log" 2>&1 || die "initdb failed"
    fi
    pg_user_run "$PGBIN/pg_ctl" -D "$PGDATA" -l "$RUN/log/pg.log" \
        -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" -w -t 30 start >/dev/null \
        || die "PostgreSQL did not start (see $RUN/log/pg.log)"
    head -1 "$PGDATA/postmaster.pid" > "$RUN/pids/postgres.pid"
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='hamrahi'" | grep -q 1 \
        || psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE hamrahi" >/dev/null
    bash "$ROOT/sql/migrate.sh" --seed "$PG_DSN" >> "$RUN/log/migrate.log" 2>&1 \
        || { tail -20 "$RUN/log/migrate.log"; die "migrations failed"; }
}

start_sandbox() {
    alive sandbox && return 0
    port_free "$SANDBOX_PORT" || die "port $SANDBOX_PORT (sandbox) is in use"
    nohup "$PY" "$ROOT/tests/sandbox/sandbox.py" --host 127.0.0.1 --port "$SANDBOX_PORT" \
        --account-sid "$(cat "$RUN/secrets/account_sid")" \
        --auth-token-file "$RUN/secrets/telephony_token" \
        >> "$RUN/log/sandbox.log" 2>&1 < /dev/null &
    echo $! > "$RUN/pids/sandbox.pid"
    wait_for sandbox 10 curl -sf "http://127.0.0.1:$SANDBOX_PORT/_sandbox/health"
}

render_nginx_conf() {
    local test_include=""
    if [ "${HAMRAHI_TEST_LOCATIONS:-0}" = 1 ]; then
        test_include="include $ROOT/conf/nginx-test-locations.conf;"
    fi
    sed -e "s|@MODULE@|$MODULE_SO|g" -e "s|@RUN@|$RUN|g" \
        -e "s|@TEST_INCLUDE@|$test_include|g" \
        -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@NGINX_WORKERS@|$NGINX_WORKERS|g" \
        "$ROOT/conf/nginx.conf.in" > "$RUN/nginx/conf/nginx.conf"
    mkdir -p "$RUN/nginx/tmp"/{body,proxy,fastcgi,uwsgi,scgi} "$RUN/nginx/logs"
}

# nginx itself is not built with ASan: a sanitized module needs the runtimes
# preloaded into every nginx process that loads it.
run_nginx() {
    if [ "${HAMRAHI_SANITIZE:-0}" = 1 ]; then
        LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS="detect_leaks=0:log_path=$RUN/log/asan-nginx" \
        UBSAN_OPTIONS="print_stacktrace=1:log_path=$RUN/log/ubsan-nginx" \
            nginx -p "$RUN/nginx" -c "$RUN/nginx/conf/nginx.conf" -e "$RUN/log/nginx-error.log" "$@"
    else
        nginx -p "$RUN/nginx" -c "$RUN/nginx/conf/nginx.conf" -e "$RUN/log/nginx-error.log" "$@"
    fi
}

start_nginx() {
    alive nginx && return 0
    port_free "$HTTP_PORT" || die "port $HTTP_PORT (nginx) is in use"
    render_nginx_conf
    run_nginx -t > "$RUN/log/nginx-t.log" 2>&1 \
        || { cat "$RUN/log/nginx-t.log"; die "nginx -t failed"; }
    run_nginx
    wait_for nginx 10 test -s "$RUN/nginx/nginx.pid"
    cp "$RUN/nginx/nginx.pid" "$RUN/pids/nginx.pid"
    wait_for nginx 10 curl -sf "http://127.0.0.1:$HTTP_PORT/healthz"
}

render_worker_conf() {
    sed -e "s|@RUN@|$RUN|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" -e "s|@PG_PORT@|$PG_PORT|g" \
        -e "s|@SANDBOX_PORT@|$SANDBOX_PORT|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
        -e "s|@ACCOUNT_SID@|$(cat "$RUN/secrets/account_sid")|g" \
        -e "s|@FROM_NUMBER@|$FROM_NUMBER|g" \
        "$ROOT/conf/worker.conf.in" > "$RUN/worker.conf"
}

# start_worker NAME: the first worker is `worker`, a standby is `worker-2`.
start_worker() {
    local name="$1" metrics_port="$METRICS_PORT"
    alive "$name" && return 0
    render_worker_conf
    [ "$name" = worker ] || metrics_port=$((METRICS_PORT + 1))
    ASAN_OPTIONS="detect_leaks=1:log_path=$RUN/log/asan-$name" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$RUN/log/ubsan-$name" \
    HAMRAHI_CONSUMER_NAME="$name" HAMRAHI_METRICS_LISTEN="127.0.0.1:$metrics_port" nohup ${HAMRAHI_WORKER_WRAPPER:-} "$WORKER_BIN" \
        -c "$RUN/worker.conf" >> "$RUN/log/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/pids/$name.pid"
    # Ready once it has joined the consumer group (its first XREADGROUP).
    wait_for "$name" 20 worker_joined "$name"
}

worker_joined() {
    alive "$1" || die "$1 exited (see $RUN/log/$1.log)"
    redis-cli -p "$REDIS_PORT" --raw XINFO CONSUMERS hamrahi:events fallback 2>/dev/null \
        | grep -qx "$1"
}

stop_pid() {
    local name="$1" sig="${2:-TERM}" p i
    p="$(pid_of "$name")"
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill "-$sig" "$p" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$p" 2>/dev/null && { log "$name did not stop in 10 s, killing"; kill -9 "$p" 2>/dev/null || true; }
    fi
    rm -f "$RUN/pids/$name.pid"
}

stop_service() {
    case "$1" in
    redis)
        alive redis && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        stop_pid redis ;;
    postgres)
        pg_dirs
        if alive postgres; then
            pg_user_run "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        fi
        stop_pid postgres ;;
    nginx) stop_pid nginx QUIT ;;
    *) stop_pid "$1" ;;
    esac
}

start_service() {
    case "$1" in
    redis) start_redis ;;
    postgres) start_postgres ;;
    sandbox) start_sandbox ;;
    nginx) start_nginx ;;
    worker | worker-*) start_worker "$1" ;;
    *) die "unknown service $1" ;;
    esac
}

cmd_up() {
    cmd_build
    run_dir_defaults
    make_secrets
    write_env
    start_redis
    start_postgres
    start_sandbox
    start_nginx
    start_worker worker
    if [ "${HAMRAHI_WORKERS:-1}" -ge 2 ]; then start_worker worker-2; fi
    log "stack up: $(. "$RUN/env"; echo "$HAMRAHI_HTTP_URL"), env in $RUN/env"
}

cmd_down() {
    load_run_env
    local s
    for s in worker-2 worker nginx sandbox postgres redis; do stop_service "$s"; done
    log "stack down ($RUN)"
}

cmd_svc() {
    [ $# -eq 2 ] || die "usage: build.sh svc start|stop NAME"
    load_run_env
    case "$1" in
    start) start_service "$2" ;;
    stop) stop_service "$2" ;;
    kill) stop_pid "$2" KILL ;;
    *) die "usage: build.sh svc start|stop|kill NAME" ;;
    esac
}

cmd_run() {
    cmd_up
    trap 'cmd_down' EXIT
    trap 'exit 0' INT TERM
    "$PY" "$ROOT/tests/demo.py" --env "$RUN/env"
    log "the stack keeps running; Ctrl-C stops it"
    while true; do sleep 3600; done
}

# ---------------------------------------------------------------- test

free_port_from() {
    local p="$1"
    while ! port_free "$p"; do p=$((p + 1)); done
    echo "$p"
}

cmd_test() {
    cmd_build
    TEST_TMP="$(mktemp -d /tmp/hamrahi-test.XXXXXX)"
    chmod 755 "$TEST_TMP"
    export HAMRAHI_RUN_DIR="$TEST_TMP/run"
    export HAMRAHI_HTTP_PORT="$(free_port_from 28080)"
    export HAMRAHI_REDIS_PORT="$(free_port_from 26380)"
    export HAMRAHI_PG_PORT="$(free_port_from 25433)"
    export HAMRAHI_SANDBOX_PORT="$(free_port_from 28090)"
    export HAMRAHI_WORKER_METRICS_PORT="$(free_port_from 29101)"
    export HAMRAHI_TEST_LOCATIONS=1
    trap 'rc=$?; test_cleanup; exit $rc' EXIT
    trap 'exit 130' INT TERM
    "$PY" "$ROOT/tests/run_tests.py" --root "$ROOT" --tmp "$TEST_TMP" "$@"
}

# Stops the private stack and removes its directory (KEEP_TEST_DIR=1 keeps it).
test_cleanup() {
    (cmd_down) >/dev/null 2>&1 || true
    if [ "${KEEP_TEST_DIR:-0}" = 1 ]; then
        log "test state kept in $TEST_TMP"
        return 0
    fi
    rm -rf "$TEST_TMP" "/tmp/hamrahi-pg-$(echo "$TEST_TMP/run" | sha1sum | cut -c1-12)"
}

# ---------------------------------------------------------------- main

main() {
    local cmd="${1:-build}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
    deps) cmd_deps ;;
    build) cmd_deps; cmd_build ;;
    up) cmd_deps; cmd_up ;;
    down) cmd_down ;;
    run) cmd_deps; cmd_run ;;
    test) cmd_deps; cmd_test "$@" ;;
    svc) cmd_svc "$@" ;;
    *) die "unknown command '$cmd' (deps, build, up, down, run, test, svc)" ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
