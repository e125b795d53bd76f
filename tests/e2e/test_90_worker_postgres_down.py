"""Safety before bookkeeping: PostgreSQL down never delays or prevents a
fallback call; the records wait and are written when it returns. These tests
stop and start PostgreSQL and leave it running."""

import time

import psycopg2
import pytest

from hamrahi import wait_until
from worker_scenarios import (WATCHDOG_MS, activate, assert_complete_record,
                              call_request_ms, new_citizen, new_session_id, stream_at_ms,
                              svc)


def row_when_up(stack, session_id):
    """The session's fallback row, or None (also while PostgreSQL is away)."""
    try:
        row = stack.session_row(session_id)
    except psycopg2.Error:
        stack._pg = None
        return None
    return row if row and row["provider_call_ref"] and row["call_initiated_at"] else None


@pytest.fixture
def postgres_restored(stack):
    yield
    svc("start", "postgres")
    stack._pg = None


def test_postgres_down_around_the_deadline(stack, postgres_restored):
    cid, phone = new_citizen(stack)
    sid = new_session_id()
    at = stream_at_ms(stack, activate(stack, sid, cid))
    time.sleep(1.0)
    svc("stop", "postgres")
    stopped = time.monotonic()
    (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), WATCHDOG_MS / 1000 + 3,
                         what="the fallback call while PostgreSQL is down")
    late = call_request_ms(call) - (at + WATCHDOG_MS)
    print(f"call request {late} ms after the deadline, PostgreSQL down")
    assert 0 <= late <= 2000, late
    assert row_when_up(stack, sid) is None  # still down
    time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    svc("start", "postgres")
    stack._pg = None
    wait_until(lambda: row_when_up(stack, sid), 15, interval=0.2,
               what="the record after PostgreSQL returned")
    assert_complete_record(stack, sid, call)
    assert len(stack.sandbox_calls(to=phone)) == 1


def directory_knows(stack, citizen_id):
    mirror = stack.redis.get("hamrahi:directory") or ""
    return f'"{citizen_id}"' in mirror


def test_postgres_down_at_activation_still_calls_on_time(stack, postgres_restored):
    """The phones come from the worker's directory copy (refreshed from
    PostgreSQL, mirrored in Redis) when PostgreSQL cannot answer."""
    cid, phone = new_citizen(stack)
    wait_until(lambda: directory_knows(stack, cid), 25, interval=0.2,
               what="the directory copy to include the new citizen")
    svc("stop", "postgres")
    sid = new_session_id()
    at = stream_at_ms(stack, activate(stack, sid, cid))
    (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), WATCHDOG_MS / 1000 + 3,
                         what="the fallback call while PostgreSQL is down")
    late = call_request_ms(call) - (at + WATCHDOG_MS)
    print(f"call request {late} ms after the deadline, PostgreSQL down since before activation")
    assert 0 <= late <= 2000, late
    # The bridge goes to op-1 as routed by the directory (AC3).
    wait_until(lambda: stack.sandbox_calls(to="+15550000101") and [
        c for c in stack.sandbox_calls(to="+15550000101") if c.get("parent_sid") == call["sid"]],
        5, what="the operator leg")
    svc("start", "postgres")
    stack._pg = None
    wait_until(lambda: row_when_up(stack, sid), 15, interval=0.2,
               what="the record after PostgreSQL returned")
    assert_complete_record(stack, sid, call)


@pytest.fixture
def worker_restored(stack):
    yield
    svc("start", "worker")


def test_records_survive_a_worker_restart_while_postgres_is_down(
        stack, postgres_restored, worker_restored):
    """The writes waiting for PostgreSQL are spooled in Redis
    (hamrahi:pgspool); a worker killed meanwhile loses none of them: its
    successor replays them when PostgreSQL returns."""
    cid, phone = new_citizen(stack)
    stack.sandbox_script(phone, "no-answer", after_ms=500)
    wait_until(lambda: directory_knows(stack, cid), 25, interval=0.2,
               what="the directory copy to include the new citizen")
    sid = new_session_id()
    activate(stack, sid, cid)
    time.sleep(0.5)
    svc("stop", "postgres")
    (call,) = wait_until(lambda: [c for c in stack.sandbox_calls(to=phone)
                                  if c["status"] == "no-answer"],
                         WATCHDOG_MS / 1000 + 5, what="the unanswered call")
    wait_until(lambda: stack.redis.hlen("hamrahi:pgspool") > 0, 5,
               what="writes spooled in Redis")
    time.sleep(1.0)  # the no-answer callback is applied: outcome + escalation
    svc("kill", "worker")
    svc("start", "worker")
    time.sleep(1.0)
    svc("start", "postgres")
    stack._pg = None
    wait_until(lambda: row_when_up(stack, sid), 15, interval=0.2,
               what="the record after PostgreSQL returned")
    assert_complete_record(stack, sid, call)
    wait_until(lambda: stack.sql("SELECT kind FROM escalations WHERE session_id = %s", sid),
               10, what="the citizen_unanswered escalation")
    assert stack.sql("SELECT kind FROM escalations WHERE session_id = %s", sid) == [
        ("citizen_unanswered",)]
    wait_until(lambda: stack.sql("SELECT outcome FROM call_attempts WHERE session_id = %s "
                                 "AND leg = 'citizen'", sid) == [("no-answer",)],
               10, what="the attempt's outcome")
    wait_until(lambda: stack.redis.hlen("hamrahi:pgspool") == 0, 15,
               what="the spool to empty")
    assert len(stack.sandbox_calls(to=phone)) == 1
