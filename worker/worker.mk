# Worker part of the top Makefile (included from there).
WORKER_SRCS = worker/main.c worker/config.c worker/log.c worker/session.c \
              worker/engine.c worker/event.c worker/records.c \
              worker/timers.c worker/strmap.c worker/rconn.c worker/rqueue.c \
              worker/stream.c worker/panel_pub.c worker/http_uv.c \
              worker/telephony_twilio.c worker/store_pg.c worker/metrics.c \
              worker/lease.c worker/directory.c worker/spool.c \
              worker/fence.c
WORKER_LIBS = -luv -lhiredis -lcurl -lpq -ljansson -lsystemd -lm

# libpq's header lives in its own directory on Debian.
ALL_CFLAGS += -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)

UNIT_TESTS += test_session test_timers test_worker_event test_config \
              test_strmap

test_session_SRCS = worker/session.c
test_session_LIBS =
test_timers_SRCS = worker/timers.c
test_timers_LIBS = -luv
test_worker_event_SRCS = worker/event.c worker/session.c
test_worker_event_LIBS = -ljansson
test_config_SRCS = worker/config.c
test_config_LIBS =
test_strmap_SRCS = worker/strmap.c
test_strmap_LIBS =
