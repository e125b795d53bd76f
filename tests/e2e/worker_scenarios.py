"""Helpers shared by the worker's end-to-end tests (test_40_worker_*,
test_9x_*): scenario steps, record checks and control of the stack's
services. Not a test module itself."""

import os
import random
import subprocess
import time
import uuid

from hamrahi import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WATCHDOG_MS = 5000
LEASE_KEY = "hamrahi:lease:hamrahi:events"


def svc(action, name):
    """./build.sh svc start|stop|kill NAME on the test stack."""
    subprocess.run([os.path.join(ROOT, "build.sh"), "svc", action, name],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)


def pid_of(stack, name):
    try:
        with open(os.path.join(stack.env["HAMRAHI_RUN_DIR"], "pids", f"{name}.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def new_citizen(stack):
    cid = "cit-" + uuid.uuid4().hex[:10]
    phone = "+1556%07d" % random.randrange(10**6, 10**7)
    stack.sql("INSERT INTO citizens (id, verified_phone) VALUES (%s, %s) RETURNING id", cid, phone)
    return cid, phone


def new_session_id():
    return "w5-" + uuid.uuid4().hex[:16]


def activate(stack, session_id, citizen_id, timeout=15):
    """The activation hook as the signalling service sends it: retried while
    the stack answers 503 (e.g. Redis still loading after an earlier test
    restarted it)."""
    end = time.monotonic() + timeout
    while True:
        r = stack.post_hook(session_id, "activated", {
            "citizen_id": citizen_id, "operator_id": "op-1", "station_id": "st-1"})
        if r.status == 202:
            return r
        assert r.status == 503 and time.monotonic() < end, (r.status, r.body)
        time.sleep(0.1)


def stream_at_ms(stack, response):
    """The at_ms the module stamped on the event a hook stored."""
    stream_id = response.json()["id"]
    (entry,) = stack.redis.xrange("hamrahi:events", stream_id, stream_id)
    return int(entry[1]["at_ms"])


def call_request_ms(call):
    return call.get("received_at_ms") or call["created_at_ms"]


def fallback_row(stack, session_id):
    """The session's row once its AC4 fields are written, else None."""
    row = stack.session_row(session_id)
    if row and row["provider_call_ref"] and row["call_initiated_at"]:
        return row
    return None


def assert_complete_record(stack, session_id, call, reason="timeout"):
    row = stack.session_row(session_id)
    assert row is not None, session_id
    assert row["provider_call_ref"] == call["sid"], (row, call["sid"])
    assert row["fallback_reason"] == reason
    assert row["webrtc_failed_at"] is not None
    assert row["call_initiated_at"] is not None
    assert row["call_initiated_at"] >= row["webrtc_failed_at"]
    assert row["webrtc_active_at"] is None
    attempts = stack.sql("SELECT leg, provider_call_ref FROM call_attempts "
                         "WHERE session_id = %s AND leg = 'citizen'", session_id)
    assert [a[1] for a in attempts] == [call["sid"]], attempts
    return row


def no_call_for(stack, phone, seconds):
    """Watch the sandbox for `seconds`: no call to `phone` may appear."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert stack.sandbox_calls(to=phone) == [], "unexpected call"
        time.sleep(0.1)


def lease_owner(stack):
    """Name of the worker holding the shard's lease (None when free)."""
    value = stack.redis.get(LEASE_KEY)
    return value.rsplit(":", 1)[0] if value else None


def wait_active(stack, timeout=10):
    return wait_until(lambda: lease_owner(stack), timeout, what="a worker holding the lease")
