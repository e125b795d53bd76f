"""Fan-out: updates reach exactly the panels of their station (and role),
across both nginx workers, as the text the worker published; a slow panel is
cut with 1008 and never holds the others up; python3-websockets as a real
client."""

import asyncio
import json
import re
import time

import websockets

from wsraw import (SMALL, WS, Raw, env, publish_logged, token, unique, update, upgraded)

OPEN_LINE = re.compile(r'\] (\d+)#\d+: \*\d+ hamrahi panel: open for "([^"]+)"')


def workers_of(subs, timeout=5):
    """{sub: nginx worker pid} from the panels' open lines in the error log."""
    path = env()["raw"]["HAMRAHI_RUN_DIR"] + "/log/nginx-error.log"
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            found = {m.group(2): m.group(1) for m in OPEN_LINE.finditer(f.read())
                     if m.group(2) in subs}
        if len(found) == len(subs) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def open_panels(specs):
    """Opens all at once (a burst spreads them over the nginx workers)."""
    conns = [Raw(token(sub=sub, role=role, station=st)) for sub, role, st in specs]
    for c in conns:
        assert c.response()[0] == 101
    return conns


def test_station_and_role_routing(stack):
    st1, st2 = unique("st"), unique("st")
    op1, sup1, op2 = open_panels([("op-a", "operator", st1), ("sup-a", "supervisor", st1),
                                  ("op-b", "operator", st2)])
    r = stack.redis
    publish_logged(r, update(st1, n=1))
    publish_logged(r, {"type": "supervisor_escalation", "session_id": "s-x",
                       "station_id": st1, "kind": "citizen_unanswered", "n": 2})
    publish_logged(r, update(st2, n=3))
    publish_logged(r, update(st1, n=4))
    assert [m["n"] for m in op1.texts(2)] == [1, 4]
    assert [m["n"] for m in sup1.texts(3)] == [1, 2, 4]
    assert [m["n"] for m in op2.texts(1)] == [3]
    # nothing else is on its way: the next message is this one
    publish_logged(r, update(st1, n="end"))
    publish_logged(r, update(st2, n="end"))
    for c in (op1, sup1, op2):
        assert c.texts(1)[0]["n"] == "end"
        c.close()


def test_update_text_is_forwarded_byte_for_byte(stack):
    st = unique("st")
    c = upgraded(token(station=st))
    text = json.dumps(update(st, state="phone_fallback_active", mode="phone",
                             reason="timeout", provider_call_ref="CA123", note="ünï"),
                      separators=(",", ":"), ensure_ascii=False)
    stack.redis.publish("hamrahi:panel", text)
    op, fin, payload = c.recv_frame()
    assert (op, fin) == (0x1, True)
    assert payload.decode() == text
    c.close()


def test_updates_without_station_or_not_json_are_dropped(stack):
    st = unique("st")
    c = upgraded(token(station=st))
    stack.redis.publish("hamrahi:panel", "not json")
    stack.redis.publish("hamrahi:panel", json.dumps({"type": "session_update"}))
    publish_logged(stack.redis, update(st, n="good"))
    assert c.texts(1)[0]["n"] == "good"
    c.close()


def test_fifty_panels_of_two_stations_across_both_workers(stack):
    stations = [unique("st-fan"), unique("st-fan")]
    specs, panels = [], []
    for _ in range(10):  # the kernel picks the accepting worker: more until both have some
        batch = [(unique(f"fan{i}"), "operator", stations[i % 2]) for i in range(50)]
        panels += open_panels(batch)
        specs += batch
        pids = workers_of({sub for sub, _, _ in specs})
        assert len(pids) == len(specs), "every panel logs its open line"
        if len(set(pids.values())) == 2:
            break
    by_worker = {}
    for sub, _, st in specs:
        by_worker.setdefault(pids[sub], []).append(st)
    print("panels per nginx worker:", {pid: len(sts) for pid, sts in by_worker.items()})
    assert len(by_worker) == 2, "the panels should span both nginx workers"

    r = stack.redis
    sent = {st: [] for st in stations}
    for i in range(20):
        st = stations[i % 2]
        seq, receivers = publish_logged(r, update(st, n=i))
        assert receivers >= 2, "both nginx workers are subscribed"
        sent[st].append(seq)
    for st in stations:
        publish_logged(r, update(st, n="end"))
    for (sub, _, st), c in zip(specs, panels):
        got = c.texts(11)
        assert [m["seq"] for m in got[:10]] == sent[st], sub
        assert all(m["station_id"] == st for m in got)
        assert got[10]["n"] == "end"
        c.close()


def test_slow_consumer_is_cut_with_1008_while_the_others_keep_receiving(stack):
    st = unique("st-slow")
    # a tiny receive buffer and a 64k send queue: it fills after a few frames
    slow = Raw(token(sub="slow", station=st), path=SMALL, rcvbuf=4096)
    assert slow.response()[0] == 101
    fast = open_panels([(f"fast{i}", "operator", st) for i in range(3)])
    pad = "x" * 16000
    n = 0
    for _ in range(40):                     # at most 40 x 10 x 16 KB
        for _ in range(10):
            n += 1
            stack.redis.publish("hamrahi:panel", json.dumps(update(st, n=n, pad=pad)))
        for c in fast:                      # the others read in step: never cut
            assert [m["n"] for m in c.texts(10)] == list(range(n - 9, n + 1))
    for c in fast:
        c.close()
    reason, received = slow.expect_close(1008, timeout=10)
    assert reason == b"slow consumer"
    assert received < n
    assert slow.eof()


def test_python_websockets_client_happy_path(stack):
    st = unique("st-py")

    async def run():
        url = f"ws://{env()['host']}:{env()['port']}{WS}"
        headers = {"Authorization": "Bearer " + token(station=st)}
        async with websockets.connect(url, extra_headers=headers, open_timeout=5) as ws:
            seq, _ = publish_logged(stack.redis, update(st, n=1))
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (m["seq"], m["n"], m["station_id"]) == (seq, 1, st)
            pong = await ws.ping(b"py")
            await asyncio.wait_for(pong, 5)
        assert ws.close_code == 1000

        # the browser way: the token in the query
        async with websockets.connect(f"{url}?access_token={token(station=st)}",
                                      open_timeout=5) as ws:
            publish_logged(stack.redis, update(st, n=2))
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert m["n"] == 2
            await ws.close(1001, "page unload")
        assert ws.close_code == 1001

    asyncio.run(run())


def test_python_websockets_client_sees_401():
    async def run():
        url = f"ws://{env()['host']}:{env()['port']}{WS}?access_token=bad"
        try:
            async with websockets.connect(url, open_timeout=5):
                raise AssertionError("connected with a bad token")
        except websockets.InvalidStatusCode as e:
            assert e.status_code == 401

    asyncio.run(run())
