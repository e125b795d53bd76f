"""Redis restarted in the middle of scenarios: every event the hooks
acknowledged with 202 is applied, none is lost; the stack is left running."""

import time

import pytest

from hamrahi import wait_until
from worker_scenarios import (WATCHDOG_MS, assert_complete_record, fallback_row,
                              new_citizen, new_session_id, no_call_for, svc)


def post_until_stored(stack, session_id, kind, payload, timeout=15):
    """A hook as the signalling service sends it: retried while it gets 503."""
    end = time.monotonic() + timeout
    while True:
        r = stack.post_hook(session_id, kind, payload)
        if r.status == 202:
            return r
        assert r.status == 503, (r.status, r.body)
        assert time.monotonic() < end, "hook not stored after Redis returned"
        time.sleep(0.1)


@pytest.fixture
def redis_restored(stack):
    yield
    svc("start", "redis")


def test_redis_restart_loses_no_event(stack, redis_restored):
    people = {name: new_citizen(stack) for name in "abcd"}
    sids = {name: new_session_id() for name in "abcd"}
    for name in "abc":
        post_until_stored(stack, sids[name], "activated", {
            "citizen_id": people[name][0], "operator_id": "op-1", "station_id": "st-1"})
    post_until_stored(stack, sids["b"], "stream", {"state": "active"})
    time.sleep(0.5)
    svc("stop", "redis")
    time.sleep(1.0)
    # Posted during the outage: the signalling service retries until 202.
    svc("start", "redis")
    post_until_stored(stack, sids["d"], "activated", {
        "citizen_id": people["d"][0], "operator_id": "op-1", "station_id": "st-1"})
    post_until_stored(stack, sids["c"], "stream", {"state": "active"})
    stack.redis.connection_pool.disconnect()

    # a and d: no stream, one call each; b and c: the stream won, no call.
    for name in "ad":
        phone = people[name][1]
        (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), WATCHDOG_MS / 1000 + 5,
                             what=f"the call of session {name}")
        wait_until(lambda: fallback_row(stack, sids[name]), 5, what=f"record {name}")
        assert_complete_record(stack, sids[name], call)
    no_call_for(stack, people["b"][1], 0.5)
    no_call_for(stack, people["c"][1], 0.5)
    for name in "bc":
        row = wait_until(lambda: (lambda r: r if r and r["webrtc_active_at"] else None)(
            stack.session_row(sids[name])), 5, what=f"webrtc_active_at of {name}")
        assert row["provider_call_ref"] is None
    time.sleep(1)
    for name in "ad":
        assert len(stack.sandbox_calls(to=people[name][1])) == 1
