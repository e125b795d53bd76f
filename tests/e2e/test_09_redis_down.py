"""Redis unavailable: a hook is never acknowledged with a 2xx it did not store."""

from conftest import build_sh
from hamrahi import wait_until


def test_redis_stopped_hook_answers_503_then_recovers(stack, session_id):
    build_sh("svc", "stop", "redis")
    try:
        r = stack.post_hook(session_id, "activated", {"citizen_id": "cit-1", "operator_id": "op-1",
                                                      "station_id": "st-1"})
        assert r.status == 503, (r.status, r.body)
        assert r.json()["error"]
    finally:
        build_sh("svc", "start", "redis")
    # The same hook is accepted again once Redis is back (nginx reconnects).
    wait_until(lambda: stack.post_hook(session_id + "-b", "released", {"reason": "test"}).status
               == 202, 10, interval=0.1, what="202 after Redis returned")
