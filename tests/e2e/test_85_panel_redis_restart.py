"""Redis restarted while panels are connected: updates published during the
outage arrive after it, once each and in order, with no resync (the log
survives a restart: redis runs with appendonly).

Two kinds of such updates: a real session's phone fallback, decided by the
worker while Redis is down (it queues its panel update until Redis is back),
and updates published right after the restart, before the nginx workers
have resubscribed (they catch up from hamrahi:panel:log).

Stops the stack's Redis: sorted late on purpose."""

import time

from conftest import build_sh
from hamrahi import wait_until
from wsraw import Raw, publish_logged, token, unique, update, wait_redis, wait_subscribers

RESYNC = {"type": "resync_required"}


def panels_of(station, n, sub):
    conns = [Raw(token(sub=f"{sub}-{i}", station=station)) for i in range(n)]
    for c in conns:
        assert c.response()[0] == 101
    return conns


def messages_until(c, match, timeout):
    """Every message up to and including the first that matches."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching update within {timeout}s; got {got}"
        (m,) = c.texts(1, timeout=left)
        got.append(m)
        if match(m):
            return got


def test_updates_published_during_a_redis_outage_arrive_after_it(stack, session_id, citizen):
    cid, phone = citizen
    stack.sandbox_script(phone, "no-answer", after_ms=60000)   # rings on: no further news
    r = stack.redis
    wait_subscribers(r, 2)
    own = unique("st-outage")
    real = panels_of("st-1", 4, "outage-op")     # the demo station of the session
    mine = panels_of(own, 4, "outage-own")
    try:
        stack.activate(session_id, citizen=cid)
        for c in real:
            messages_until(c, lambda m: m.get("session_id") == session_id
                           and m.get("state") == "watching", 10)
        publish_logged(r, update(own, n="before"))
        for c in mine:
            assert c.texts(1)[0]["n"] == "before"

        build_sh("svc", "stop", "redis")
        try:
            # the watchdog fires during the outage: the call is placed anyway
            wait_until(lambda: stack.sandbox_calls(to=phone), 10, interval=0.05,
                       what="the fallback call while Redis is down")
        finally:
            build_sh("svc", "start", "redis")

        # published before the nginx workers are back on the channel
        wait_redis(r)
        sent = [publish_logged(r, update(own, n=i)) for i in range(5)]
        print("receivers right after the restart:", [n for _, n in sent])

        for c in real:
            got = messages_until(c, lambda m: m.get("session_id") == session_id
                                 and m.get("state") == "phone_fallback_active"
                                 and "provider_call_ref" in m, 20)
            assert RESYNC not in got, got
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(set(seqs)), seqs
            assert got[-1]["provider_call_ref"] == stack.sandbox_calls(to=phone)[0]["sid"]
        for c in mine:
            got = c.texts(5, timeout=20)
            assert [m.get("n") for m in got] == list(range(5))
            assert [m["seq"] for m in got] == [seq for seq, _ in sent]

        # and live delivery goes on as before
        wait_subscribers(r, 2)
        seq, receivers = publish_logged(r, update(own, n="after"))
        assert receivers >= 2
        for c in mine:
            assert c.texts(1)[0]["seq"] == seq
    finally:
        for c in real + mine:
            c.close()
        stack.post_hook(session_id, "released", {"reason": "test over"})
