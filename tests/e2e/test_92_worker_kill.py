"""kill -9 of the only worker between an activation and its deadline: the
restarted worker reloads the deadline from PostgreSQL and calls once, on
time. The worker is left running."""

import time

import pytest

from hamrahi import wait_until
from worker_scenarios import (WATCHDOG_MS, activate, assert_complete_record,
                              call_request_ms, fallback_row, new_citizen, new_session_id,
                              stream_at_ms, svc)


@pytest.fixture
def worker_restored(stack):
    yield
    svc("start", "worker")


def test_kill_between_activation_and_deadline_calls_once(stack, worker_restored):
    people = [new_citizen(stack) for _ in range(3)]
    sids = [new_session_id() for _ in people]
    ats = [stream_at_ms(stack, activate(stack, sid, cid))
           for sid, (cid, _) in zip(sids, people)]
    time.sleep(2.0)
    svc("kill", "worker")
    svc("start", "worker")
    for sid, (_, phone), at in zip(sids, people, ats):
        (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), WATCHDOG_MS / 1000 + 5,
                             what="the call after the restart")
        late = call_request_ms(call) - (at + WATCHDOG_MS)
        assert 0 <= late <= 2000, late
        wait_until(lambda: fallback_row(stack, sid), 5, what="the record")
        assert_complete_record(stack, sid, call)
    time.sleep(1.5)
    for _, phone in people:
        assert len(stack.sandbox_calls(to=phone)) == 1


def test_kill_just_after_the_deadline_calls_once(stack, worker_restored):
    """The kill lands while the call is being created or just after: the
    restarted worker finds the call at the provider instead of placing a
    second one."""
    people = [new_citizen(stack) for _ in range(4)]
    sids = [new_session_id() for _ in people]
    for sid, (cid, _) in zip(sids, people):
        activate(stack, sid, cid)
        time.sleep(0.01)
    wait_until(lambda: stack.sandbox_calls(to=people[0][1]), WATCHDOG_MS / 1000 + 3,
               interval=0.005, what="the first call")
    svc("kill", "worker")
    svc("start", "worker")
    for sid, (_, phone) in zip(sids, people):
        (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), 10, what="a call")
        wait_until(lambda: fallback_row(stack, sid), 10, what="the record")
        assert_complete_record(stack, sid, call)
    time.sleep(1.5)
    for _, phone in people:
        assert len(stack.sandbox_calls(to=phone)) == 1
