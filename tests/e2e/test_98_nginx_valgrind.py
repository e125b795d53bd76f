"""nginx with the module under valgrind (memcheck): a master and one worker
(valgrind follows the fork) serve every hook outcome, a Redis command that
times out, and panels that get updates, close themselves or are closed with
1001 when nginx quits. Any invalid read or write or use of uninitialised
memory fails the test, and so does a definitely or indirectly lost block
allocated through the module (nginx's core keeps a few allocations to the end
on purpose; they are not ours to judge)."""

import glob
import json
import os
import re

from hamrahi import (VALGRIND_MEMCHECK, PrivateNginx, events_of, http, post_telephony,
                     telephony_token)
from hamrahi import hook_signature, twilio_signature, wait_until
from wsraw import (close_frame, current_epoch, publish_logged, token, unique, update,
                   upgraded)

VALGRIND = [*VALGRIND_MEMCHECK, "--errors-for-leak-kinds=none"]
OURS = re.compile(r"hamrahi|redisAsync|redisReader|json_|ngx_http_hamrahi_module\.so")


def conf(env):
    return (f"    hamrahi_hook_secret_file {env['HAMRAHI_HOOK_SECRET_FILE']};\n"
            f"    hamrahi_twilio_token_file {env['HAMRAHI_TELEPHONY_TOKEN_FILE']};\n"
            f"    hamrahi_panel_secret_file {env['HAMRAHI_PANEL_SECRET_FILE']};\n"
            "    hamrahi_public_base_url @URL@;\n"
            "    hamrahi_redis_timeout 1s;\n")


LOCATIONS = ("        location /v1/sos/sessions/ { hamrahi_hooks; }\n"
             "        location /v1/telephony/ { hamrahi_hooks; }\n"
             "        location = /v1/panel/ws { hamrahi_panel_ws; }\n"
             "        location = /metrics { hamrahi_status; }\n")


def signed_post(nginx, session_id, kind, payload, signature=None):
    body = json.dumps(payload).encode()
    return http("POST", f"{nginx.url}/v1/sos/sessions/{session_id}/{kind}", body,
                {"Content-Type": "application/json",
                 "X-Hamrahi-Signature": signature or hook_signature(nginx.secret, body)},
                timeout=20)


def exercise_hooks(stack, nginx):
    sid = unique("vg")
    released = {"reason": "early", "session_id": sid}
    signature = hook_signature(nginx.secret, json.dumps(released).encode())
    assert signed_post(nginx, sid, "released", released, signature).status == 202
    assert signed_post(nginx, sid, "released", released, signature).status == 409  # replay
    assert signed_post(nginx, sid, "stream", {"state": "bogus"}).status == 400
    assert signed_post(nginx, sid, "stream", {"state": "active", "session_id": "x"}).status == 400
    assert http("POST", f"{nginx.url}/v1/sos/sessions/{sid}/stream", b"{}",
                {"Content-Type": "application/json"}, timeout=20).status == 401
    assert http("GET", f"{nginx.url}/v1/sos/sessions/{sid}/stream", timeout=20).status == 405
    assert http("POST", f"{nginx.url}/v1/sos/sessions/{sid}/stream", b"x" * 20000,
                {"Content-Type": "application/json"}, timeout=20).status == 413
    params = {"CallSid": "CA" + "0" * 32, "CallStatus": "ringing", "To": "+15550000000"}
    for kind, query in (("status", {"session": sid, "leg": "citizen"}),
                        ("dial", {"session": sid, "step": "1"})):
        path = f"/v1/telephony/{kind}?" + "&".join(f"{k}={v}" for k, v in query.items())
        r = post_telephony(stack, kind, query, params, base_url=nginx.url,
                           signature=twilio_signature(telephony_token(stack), nginx.url + path,
                                                      params))
        assert r.status in (200, 202), (kind, r.status, r.body)
    assert [e[1]["type"] for e in events_of(stack, sid)] == ["dial_result", "call_status",
                                                            "released"]
    assert http("GET", f"{nginx.url}/metrics", timeout=20).status == 200


def subscribers(stack):
    return stack.redis.pubsub_numsub("hamrahi:panel")[0][1]


def exercise_panels(stack, nginx, others):
    addr = ("127.0.0.1", nginx.port)
    station = unique("st-vg")
    stays = upgraded(token(station=station), addr=addr, timeout=20)
    leaves = upgraded(token(station=station), addr=addr, timeout=20)
    wait_until(lambda: subscribers(stack) > others, 20, what="the valgrind nginx subscribed")
    seq, _ = publish_logged(stack.redis, update(station, n=1))
    for c in (stays, leaves):
        assert c.texts(1, timeout=20)[0]["seq"] == seq
    leaves.send(close_frame(1000))
    leaves.expect_close(1000, timeout=20)
    leaves.close()
    # resumes from the log: the missed update first
    seq2, _ = publish_logged(stack.redis, update(station, n=2))
    again = upgraded(token(station=station), addr=addr, timeout=20,
                     path=f"/v1/panel/ws?since={seq}&epoch={current_epoch(stack.redis)}")
    assert again.texts(1, timeout=20)[0]["seq"] == seq2
    return [stays, again]  # left open: nginx's quit closes them with 1001


def test_module_is_clean_under_valgrind(stack, tmp_path):
    directory = str(tmp_path)
    log = os.path.join(directory, "valgrind.%p.log")
    nginx = PrivateNginx(stack, directory, conf(stack.env), LOCATIONS,
                         wrapper=[*VALGRIND, f"--log-file={log}"])
    nginx.secret = stack.hook_secret
    others = subscribers(stack)
    nginx.start(timeout=60)
    panels = []
    try:
        exercise_hooks(stack, nginx)
        panels = exercise_panels(stack, nginx, others)
    finally:
        nginx.stop(timeout=60)
    for c in panels:
        c.expect_close(1001, timeout=5)
        c.close()

    reports = {}
    for path in glob.glob(os.path.join(directory, "valgrind.*.log")):
        with open(path, errors="replace") as f:
            reports[path] = f.read()
    assert len(reports) >= 2, "expected a master and a worker report"
    ours = []
    for path, report in reports.items():
        summary = re.search(r"ERROR SUMMARY: (\d+) errors", report)
        assert summary, report[-3000:]
        assert summary.group(1) == "0", report[-8000:]
        # loss records: blocks separated by blank lines, each with its stack
        for block in re.split(r"\n==\d+== \n", report):
            if re.search(r"(definitely|indirectly) lost in loss record", block) \
                    and OURS.search(block):
                ours.append(block)
    print(f"valgrind: {len(reports)} nginx processes, 0 errors, "
          f"{len(ours)} lost blocks from the module")
    assert not ours, "\n\n".join(ours)[:8000]
