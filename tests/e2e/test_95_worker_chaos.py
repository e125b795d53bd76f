"""Chaos: an active worker and a standby; across N runs
(HAMRAHI_CHAOS_RUNS, default 20; the issue asks for 200 outside CI) the
active one is killed with SIGKILL at a random moment while sessions are in
every phase (watching, calling, ringing). Every activated session without a
stream gets exactly one citizen call and a complete record; the standby takes
over within 2 s. Runs overlap: the next one starts while the previous
one's sessions are still settling. Both workers are left running."""

import os
import random
import time

import pytest

from hamrahi import wait_until
from worker_scenarios import (activate, assert_complete_record, fallback_row,
                              lease_owner, new_citizen, new_session_id, pid_of, svc,
                              wait_active)

RUNS = int(os.environ.get("HAMRAHI_CHAOS_RUNS", "20"))
SESSIONS_PER_RUN = 4
TAKEOVER_MAX_S = 2.0


@pytest.fixture
def two_workers(stack):
    svc("start", "worker")
    svc("start", "worker-2")
    wait_active(stack)
    yield
    svc("start", "worker")
    svc("start", "worker-2")


def kill_active(stack):
    """SIGKILL the lease holder; returns (killed name, takeover seconds)."""
    victim = wait_active(stack)
    os.kill(pid_of(stack, victim), 9)
    killed = time.monotonic()
    new = wait_until(lambda: (lambda o: o if o and o != victim else None)(lease_owner(stack)),
                     5, interval=0.01, what="the standby taking the lease")
    assert new != victim
    return victim, time.monotonic() - killed


def test_kill_the_active_worker_at_random_moments(stack, two_workers):
    rng = random.Random(int(os.environ.get("HAMRAHI_CHAOS_SEED", time.time())))
    sessions = []  # (session id, phone)
    takeovers = []
    for run in range(RUNS):
        for _ in range(SESSIONS_PER_RUN):
            cid, phone = new_citizen(stack)
            sid = new_session_id()
            activate(stack, sid, cid)
            sessions.append((sid, phone))
            time.sleep(rng.uniform(0, 0.4))
        # Somewhere between the last activation and a while after its
        # deadline, so kills land in every phase of some session.
        time.sleep(rng.uniform(0, 3.0))
        victim, took = kill_active(stack)
        takeovers.append(took)
        svc("kill", victim)  # forget its pid file
        svc("start", victim)  # the new standby
    print(f"chaos: {RUNS} kills, {len(sessions)} sessions; takeover "
          f"max {max(takeovers) * 1000:.0f} ms, "
          f"mean {sum(takeovers) / len(takeovers) * 1000:.0f} ms")

    missing = []
    for sid, phone in sessions:
        try:
            wait_until(lambda: stack.sandbox_calls(to=phone), 20, what=f"call of {sid}")
            wait_until(lambda: fallback_row(stack, sid), 20, what=f"record of {sid}")
        except AssertionError as e:
            missing.append(str(e))
    assert not missing, missing
    time.sleep(2)
    for sid, phone in sessions:
        calls = stack.sandbox_calls(to=phone)
        assert len(calls) == 1, (sid, [c["sid"] for c in calls])
        assert_complete_record(stack, sid, calls[0])
    assert max(takeovers) <= TAKEOVER_MAX_S, takeovers


def test_a_paused_active_worker_does_not_call_after_the_takeover(stack, two_workers):
    """SIGSTOP the active worker across a deadline: the standby takes over
    and calls; when the paused one resumes, its overdue watchdog must not
    place a second call (it has to confirm its lease first, finds it lost
    and exits)."""
    victim = wait_active(stack)
    pid = pid_of(stack, victim)
    cid, phone = new_citizen(stack)
    sid = new_session_id()
    activate(stack, sid, cid)
    time.sleep(1.0)
    os.kill(pid, 19)  # SIGSTOP
    try:
        (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), 10,
                             what="the standby's call")
        assert lease_owner(stack) != victim
    finally:
        os.kill(pid, 18)  # SIGCONT
    time.sleep(2.0)
    assert len(stack.sandbox_calls(to=phone)) == 1, stack.sandbox_calls(to=phone)
    wait_until(lambda: fallback_row(stack, sid), 10, what="the record")
    assert_complete_record(stack, sid, call)
