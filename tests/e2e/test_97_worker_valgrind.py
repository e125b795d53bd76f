"""The worker under valgrind (memcheck) through the main paths: a fallback
call bridged to the operator and hung up, a provider error retried, the
stream winning, an early release, then SIGTERM. Any invalid read or write,
use of uninitialised memory, or definitely/indirectly lost block fails the
test. The stack's worker is restored afterwards."""

import os
import re
import subprocess

import pytest

from hamrahi import (VALGRIND_MEMCHECK, child_calls, citizen_call, fail_stream, sandbox_faults,
                     sandbox_hangup, session_state, wait_until)
from worker_scenarios import ROOT, WATCHDOG_MS, svc, wait_active

OP1 = "+15550000101"
VALGRIND = " ".join([*VALGRIND_MEMCHECK, "--errors-for-leak-kinds=definite,indirect",
                     "--log-file={log}"])


@pytest.fixture
def worker_under_valgrind(stack):
    log = os.path.join(stack.env["HAMRAHI_RUN_DIR"], "log", "valgrind-worker.log")
    if os.path.exists(log):
        os.unlink(log)
    svc("stop", "worker-2")
    svc("stop", "worker")
    subprocess.run([os.path.join(ROOT, "build.sh"), "svc", "start", "worker"], check=True,
                   timeout=120, stdout=subprocess.DEVNULL,
                   env={**os.environ, "HAMRAHI_WORKER_WRAPPER": VALGRIND.format(log=log)})
    try:
        wait_active(stack, timeout=20)
        yield log
    finally:
        svc("stop", "worker")
        svc("start", "worker")


def closed(stack, session_id, timeout=20):
    wait_until(lambda: session_state(stack, session_id) == "closed", timeout,
               what=f"session {session_id} closed")


def test_worker_paths_are_clean_under_valgrind(stack, worker_under_valgrind, script, citizen):
    cid, phone = citizen
    script(phone, "answer", after_ms=300)
    script(OP1, "answer", after_ms=300)

    # a fallback bridged to the operator, then hung up
    bridged = "vg-bridge-" + os.urandom(4).hex()
    stack.activate(bridged, citizen=cid, operator="op-1")
    call = wait_until(lambda: (lambda c: c if c and c["status"] == "in-progress" else None)(
        citizen_call(stack, bridged)), WATCHDOG_MS / 1000 + 15, what="the citizen answering")
    wait_until(lambda: [c for c in child_calls(stack, bridged) if c["status"] == "in-progress"],
               15, what="the operator answering")
    wait_until(lambda: session_state(stack, bridged) == "phone_connected", 15,
               what="phone_connected")
    sandbox_hangup(stack, call["sid"])
    closed(stack, bridged)

    # a provider error retried into one call; the stream wins; an early release
    retried = "vg-retry-" + os.urandom(4).hex()
    stack.activate(retried, citizen=cid, operator="op-1")
    sandbox_faults(stack, status=500, count=1)
    fail_stream(stack, retried)
    wait_until(lambda: citizen_call(stack, retried), 15, what="the retried call")
    won = "vg-won-" + os.urandom(4).hex()
    stack.activate(won, citizen=cid)
    stack.stream_active(won)
    released = "vg-released-" + os.urandom(4).hex()
    stack.activate(released, citizen=cid)
    assert stack.post_hook(released, "released", {"reason": "early"}).status == 202
    wait_until(lambda: session_state(stack, won) == "webrtc_active"
               and session_state(stack, released) == "released", 15,
               what="the stream-won and released sessions recorded")

    svc("stop", "worker")  # SIGTERM: drain and exit; valgrind then writes its summary
    with open(worker_under_valgrind, errors="replace") as f:
        report = f.read()
    summary = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert summary, report[-3000:]
    leaks = re.search(r"definitely lost: ([\d,]+) bytes", report)
    print(f"valgrind: {summary.group(0)}; "
          f"definitely lost: {leaks.group(1) if leaks else 0} bytes")
    assert summary.group(1) == "0", report[-6000:]
