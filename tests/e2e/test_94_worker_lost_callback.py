"""A connected call whose final status callback is lost (nginx down when the
citizen hangs up): the worker fetches a connected call's status every ring
timeout + backstop margin and closes the session, so it neither stays open in
the record nor in memory. The worker runs with 5 s + 1 s here and is
restarted with the defaults afterwards; nginx is left running."""

import os
import subprocess
import time

import pytest

from hamrahi import wait_until
from worker_scenarios import (ROOT, WATCHDOG_MS, new_citizen, new_session_id,
                              svc)


def start_worker_with(**env):
    subprocess.run([os.path.join(ROOT, "build.sh"), "svc", "start", "worker"], check=True,
                   timeout=120, stdout=subprocess.DEVNULL, env={**os.environ, **env})


@pytest.fixture
def quick_check_worker(stack):
    svc("stop", "worker")
    start_worker_with(HAMRAHI_RING_TIMEOUT_S="5", HAMRAHI_BACKSTOP_MARGIN_S="1")
    yield
    svc("start", "nginx")
    svc("stop", "worker")
    svc("start", "worker")


def test_connected_session_closes_when_its_final_callback_is_lost(stack, quick_check_worker):
    cid, phone = new_citizen(stack)
    stack.sandbox_script(phone, "answer", after_ms=300, hold_ms=2500)
    sid = new_session_id()
    time.sleep(1.0)  # the restarted worker holds the lease
    stack.activate(sid, citizen=cid)
    wait_until(lambda: (lambda r: r if r and r["call_connected_at"] else None)(
        stack.session_row(sid)), WATCHDOG_MS / 1000 + 5, what="the call connected")
    svc("stop", "nginx")
    (call,) = wait_until(lambda: [c for c in stack.sandbox_calls(to=phone)
                                  if c["status"] == "completed"], 10,
                         what="the citizen hanging up")
    svc("start", "nginx")
    row = wait_until(lambda: (lambda r: r if r and r["closed_at"] else None)(
        stack.session_row(sid)), 15, interval=0.2, what="the session closed")
    assert row["state"] == "closed"
    outcome = stack.sql("SELECT outcome FROM call_attempts WHERE session_id = %s "
                        "AND provider_call_ref = %s", sid, call["sid"])
    assert outcome == [("completed",)]
