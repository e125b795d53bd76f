"""Resume without gaps (docs/contracts.md "Panel WebSocket"): a panel that
reconnects with ?since=<seq>&epoch=<epoch> gets what it missed, in order,
then live updates, each once; {"type":"resync_required"} first whenever that
cannot be promised.

The log is the stack's own hamrahi:panel:log, shared with the worker: each
test uses stations of its own, so other updates in the log never reach it."""

import threading
import time

import redis

from wsraw import SMALL, WS, Raw, current_epoch, env, publish_logged, token, unique, update

RESYNC = {"type": "resync_required"}


def connect(station, query="", role="operator", path=WS, **kw):
    c = Raw(token(station=station, role=role), path=path + query, **kw)
    status, _ = c.response()
    assert status == 101, c.buf
    return c


def resume(station, seq, epoch, **kw):
    return connect(station, f"?since={seq}&epoch={epoch}", **kw)


def sentinel(r, conns, station):
    """Nothing else is queued for these panels of station: the next message
    each gets is a fresh one."""
    seq, _ = publish_logged(r, update(station, n="sentinel"))
    for c in conns if isinstance(conns, list) else [conns]:
        (m,) = c.texts(1)
        assert (m.get("n"), m.get("seq")) == ("sentinel", seq), m


def test_disconnect_publish_20_reconnect_gets_exactly_those_20_in_order(stack):
    r = stack.redis
    st, other = unique("st-r"), unique("st-o")
    c = connect(st)
    publish_logged(r, update(st, n="first"))
    (first,) = c.texts(1)
    c.close()
    sent = []
    for i in range(20):
        sent.append(publish_logged(r, update(st, n=i))[0])
        publish_logged(r, update(other, n=i))      # not this panel's station
    c = resume(st, first["seq"], first["epoch"])
    got = c.texts(20)
    assert [m["n"] for m in got] == list(range(20))
    assert [m["seq"] for m in got] == sent
    assert all(m["epoch"] == first["epoch"] for m in got)
    sentinel(r, c, st)
    c.close()


def test_resume_from_the_newest_seq_replays_nothing(stack):
    r = stack.redis
    st = unique("st-r")
    for i in range(5):
        seq, _ = publish_logged(r, update(st, n=i))
    c = resume(st, seq, current_epoch(r))
    sentinel(r, c, st)
    c.close()


def test_replay_of_several_pages_with_live_updates_meanwhile(stack):
    """300 missed (three pages of the log read) while 300 more are
    published during the replay: every one once, in seq order."""
    r = stack.redis
    st = unique("st-r")
    start, _ = publish_logged(r, update(st, n=-1))
    epoch = current_epoch(r)
    for i in range(300):
        publish_logged(r, update(st, n=i))
    go = threading.Event()

    def writer():
        r2 = redis.Redis(port=env()["redis_port"])
        go.wait(5)
        for i in range(300, 600):
            publish_logged(r2, update(st, n=i))
        r2.close()

    t = threading.Thread(target=writer)
    t.start()
    c = resume(st, start, epoch)
    go.set()
    got = c.texts(600, timeout=30)
    t.join(10)
    assert [m["n"] for m in got] == list(range(600))
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 600
    sentinel(r, c, st)
    c.close()


def test_another_epoch_gives_resync_then_the_stations_history(stack):
    r = stack.redis
    st = unique("st-r")
    publish_logged(r, update(st, n=0))
    publish_logged(r, update(st, n=1))
    c = resume(st, 1, "an-epoch-long-gone")
    got = c.texts(3)
    assert got[0] == RESYNC
    assert [m["n"] for m in got[1:]] == [0, 1]
    sentinel(r, c, st)
    c.close()


def test_trimmed_log_gives_resync_then_what_is_left(stack):
    r = stack.redis
    st = unique("st-r")
    seqs = [publish_logged(r, update(st, n=i))[0] for i in range(30)]
    epoch = current_epoch(r)
    # the log loses everything before the 21st of ours (cap reached)
    r.xtrim("hamrahi:panel:log", minid=f"0-{seqs[20]}", approximate=False)
    c = resume(st, seqs[4], epoch)
    got = c.texts(11)
    assert got[0] == RESYNC
    assert [m["n"] for m in got[1:]] == list(range(20, 30))
    sentinel(r, c, st)
    c.close()
    # resuming from what the log still holds needs no resync
    c = resume(st, seqs[19], epoch)
    assert [m["n"] for m in c.texts(11)] == list(range(20, 30)) + ["sentinel"]
    sentinel(r, c, st)
    c.close()


def test_supervisor_replay_includes_escalations_operator_replay_not(stack):
    r = stack.redis
    st = unique("st-r")
    start, _ = publish_logged(r, update(st, n=0))
    publish_logged(r, {"type": "supervisor_escalation", "session_id": "s-1",
                       "station_id": st, "kind": "citizen_unanswered"})
    publish_logged(r, update(st, n=1))
    epoch = current_epoch(r)
    sup = resume(st, start, epoch, role="supervisor")
    op = resume(st, start, epoch)
    assert [m["type"] for m in sup.texts(2)] == ["supervisor_escalation", "session_update"]
    assert [m["n"] for m in op.texts(1)] == [1]
    sentinel(r, [op, sup], st)
    op.close()
    sup.close()


def test_a_replay_larger_than_the_send_queue_is_paced_not_cut(stack):
    """800 KB of history through a 64 KB send queue to a slow reader."""
    r = stack.redis
    st = unique("st-r")
    start, _ = publish_logged(r, update(st, n=-1))
    pad = "x" * 4000
    for i in range(200):
        publish_logged(r, update(st, n=i, pad=pad))
    c = resume(st, start, current_epoch(r), path=SMALL, rcvbuf=8192)
    assert [m["n"] for m in c.texts(200, timeout=20)] == list(range(200))
    sentinel(r, c, st)
    c.close()


def test_lost_subscription_is_caught_up_from_the_log(stack):
    """Redis drops the workers' subscriptions: what is published before they
    resubscribe reaches every panel once, in order, with no resync."""
    r = stack.redis
    st = unique("st-r")
    panels = [connect(st) for _ in range(6)]
    publish_logged(r, update(st, n=0))
    for c in panels:
        assert c.texts(1)[0]["n"] == 0
    workers = r.client_kill_filter(_type="pubsub")
    assert workers >= 2
    unheard = 0
    for i in range(1, 6):
        unheard += publish_logged(r, update(st, n=i))[1] == 0
    print(f"{unheard} of 5 updates were published while no nginx worker was subscribed")
    for c in panels:
        assert [m.get("n") for m in c.texts(5)] == [1, 2, 3, 4, 5]
    sentinel(r, panels, st)
    for c in panels:
        c.close()
    wait_until_subscribed(r, workers)


def wait_until_subscribed(r, workers, timeout=5):
    """Every nginx worker is subscribed again and has caught up. The panels
    above may all be on one worker: another one still away would catch up
    later, across what the next tests do to the log (a new epoch, a seq
    going back), and rightly tell its panels of those tests to resync."""
    deadline = time.monotonic() + timeout
    while r.pubsub_numsub("hamrahi:panel")[0][1] < workers:
        assert time.monotonic() < deadline, "the nginx workers did not resubscribe"
        time.sleep(0.02)
    # the catch-up after the SUBSCRIBE: a GET and an XRANGE on local Redis
    time.sleep(0.3)


def test_epoch_change_on_a_live_connection_gives_resync(stack):
    """The log was reset (its epoch changed): live panels are told to
    rebuild. (Resuming in an old epoch: test_another_epoch_gives_resync...)"""
    r = stack.redis
    st = unique("st-r")
    c = connect(st)
    publish_logged(r, update(st, n="old"))
    assert c.texts(1)[0]["n"] == "old"
    old_epoch = current_epoch(r)
    r.set("hamrahi:panel:epoch", unique("test-epoch"))
    publish_logged(r, update(st, n="new"))
    got = c.texts(2)
    assert got[0] == RESYNC
    assert got[1]["n"] == "new" and got[1]["epoch"] != old_epoch
    sentinel(r, c, st)
    c.close()


def test_seq_going_back_in_the_same_epoch_gives_resync(stack):
    """Redis lost its newest writes (a crash under appendfsync everysec): the
    counter and the log went back, and seqs the panels saw come again with
    other updates. The panels must not drop those as repeats."""
    r = stack.redis
    st = unique("st-r")
    c = connect(st)
    seqs = [publish_logged(r, update(st, n=i))[0] for i in range(3)]
    assert [m["n"] for m in c.texts(3)] == [0, 1, 2]
    # roll the log and the counter back past the three, as a restart would
    for seq in seqs:
        r.xdel("hamrahi:panel:log", f"0-{seq}")
    r.execute_command("XSETID", "hamrahi:panel:log", f"0-{seqs[0] - 1}")
    r.set("hamrahi:panel:seq", seqs[0] - 1)
    again, _ = publish_logged(r, update(st, n="reused"))
    assert again == seqs[0]
    got = c.texts(2)
    assert got[0] == RESYNC
    assert (got[1]["n"], got[1]["seq"]) == ("reused", again)
    sentinel(r, c, st)
    c.close()


def test_seq_gone_back_while_unsubscribed_gives_resync_at_the_catch_up(stack):
    """Redis restarted without its newest writes: the subscriptions dropped
    and the log went back. The catch-up sees the counter behind what the
    worker saw and tells the panels at once, before any new update (which
    could otherwise be held during the catch-up and pass the seq check)."""
    r = stack.redis
    st = unique("st-r")
    c = connect(st)
    seqs = [publish_logged(r, update(st, n=i))[0] for i in range(3)]
    assert [m["n"] for m in c.texts(3)] == [0, 1, 2]
    for seq in seqs:
        r.xdel("hamrahi:panel:log", f"0-{seq}")
    r.execute_command("XSETID", "hamrahi:panel:log", f"0-{seqs[0] - 1}")
    r.set("hamrahi:panel:seq", seqs[0] - 1)
    workers = r.client_kill_filter(_type="pubsub")
    assert workers >= 2
    wait_until_subscribed(r, workers)
    assert c.texts(1) == [RESYNC]
    again, _ = publish_logged(r, update(st, n="reused"))
    assert again == seqs[0]
    assert [(m.get("n"), m.get("seq")) for m in c.texts(1)] == [("reused", again)]
    sentinel(r, c, st)
    c.close()
