"""nginx reload: every panel gets close 1001 so that it reconnects (with
resume) to the new workers; the old workers leave even when panels never
answer the close; the new workers serve panels at once.

Changes the stack's nginx workers (not its state): sorted late on purpose."""

import os
import signal
import time

from wsraw import close_frame, env, publish_logged, token, unique, update, upgraded, \
    wait_subscribers


def run_dir():
    return env()["raw"]["HAMRAHI_RUN_DIR"]


def master_pid():
    with open(os.path.join(run_dir(), "pids", "nginx.pid")) as f:
        return int(f.read().strip())


def children(pid):
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(entry))
    return kids


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def reload_nginx():
    """What `nginx -s reload` sends; no second nginx process has to load the
    module (a sanitized one needs its runtime preloaded, see build.sh)."""
    os.kill(master_pid(), signal.SIGHUP)


def test_reload_closes_every_panel_with_1001_and_old_workers_leave(stack):
    st = unique("st-reload")
    panels = [upgraded(token(sub=f"reload-{i}", station=st)) for i in range(10)]
    old_workers = children(master_pid())
    assert old_workers
    started = time.monotonic()
    reload_nginx()
    for i, c in enumerate(panels):
        reason, _ = c.expect_close(1001, timeout=10)
        assert reason == b"server restarting"
        if i % 2 == 0:
            c.send(close_frame(1000))     # half answer the close, half stay silent
    for i, c in enumerate(panels):
        assert c.eof(timeout=10), f"panel {i} still open"
        c.close()
    print(f"every panel closed {time.monotonic() - started:.2f}s after the reload")

    deadline = time.monotonic() + 10
    while any(alive(p) for p in old_workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in old_workers), "an old nginx worker lingers"
    print(f"old workers gone {time.monotonic() - started:.2f}s after the reload")

    # the new workers: subscribed, and serving panels with live updates
    wait_subscribers(stack.redis, 2)
    c = upgraded(token(station=st))
    seq, _ = publish_logged(stack.redis, update(st, n="after-reload"))
    (m,) = c.texts(1)
    assert (m["seq"], m["n"]) == (seq, "after-reload")
    c.close()
