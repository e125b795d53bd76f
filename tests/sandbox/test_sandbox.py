"""Tests for the telephony sandbox: /usr/bin/python3 -m pytest tests/sandbox

The sandbox runs in-process on a free loopback port; a small HTTP receiver
plays the application (status callbacks, TwiML and <Dial action> answers) and
checks every request's X-Twilio-Signature with the official RequestValidator.
One test starts the CLI as a process to check its log hygiene.
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from twilio.request_validator import RequestValidator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox  # noqa: E402

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "sandbox-test-token-5f3c"
CITIZEN, OPERATOR, SUPERVISOR = "+15550000001", "+15550000101", "+15550000201"
FROM = "+15550009999"
WAIT_S = 10
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Receiver:
    """The application side: records requests, answers per path. A request
    is recorded before it is answered, so the record keeps delivery order."""

    def __init__(self):
        self.requests = []
        self.responses = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                receiver.record(self, dict(urllib.parse.parse_qsl(body)))

            def do_GET(self):
                receiver.record(self, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever,
                         args=(0.05,), daemon=True).start()

    def record(self, handler, params):
        path = urllib.parse.urlsplit(handler.path).path
        entry = {"method": handler.command, "url": self.base + handler.path,
                 "path": path, "params": params,
                 "signature": handler.headers.get("X-Twilio-Signature", "")}
        with self.cond:
            self.requests.append(entry)
            self.cond.notify_all()
        status, body = self.responses.get(path, (200, ""))
        handler.send_response(status)
        handler.send_header("Content-Type", "text/xml")
        handler.send_header("Content-Length", str(len(body.encode())))
        handler.end_headers()
        handler.wfile.write(body.encode())

    def on(self, path, body, status=200):
        self.responses[path] = (status, body)

    def wait_for(self, predicate, timeout=WAIT_S):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.requests), timeout)
            return list(self.requests)

    def to(self, path):
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, message):
        self.lines.append(message)


@pytest.fixture
def env():
    log = Log()
    box = sandbox.Sandbox(ACCOUNT, TOKEN, log)
    server = sandbox.Server(("127.0.0.1", 0), box)
    threading.Thread(target=server.serve_forever, args=(0.05,),
                     daemon=True).start()
    receiver = Receiver()
    yield Env(box, f"http://127.0.0.1:{server.server_address[1]}", receiver,
              log)
    box.reset()
    server.shutdown()
    server.server_close()
    receiver.close()


class Env:
    def __init__(self, box, base, receiver, log):
        self.box = box
        self.base = base
        self.receiver = receiver
        self.log = log
        self.calls_uri = f"/2010-04-01/Accounts/{ACCOUNT}/Calls"

    def request(self, method, path, form=None, auth=(ACCOUNT, TOKEN),
                json_body=None):
        data = None
        headers = {}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            pair = f"{auth[0]}:{auth[1]}".encode()
            encoded = base64.b64encode(pair).decode()
            headers["Authorization"] = "Basic " + encoded
        req = urllib.request.Request(self.base + path, data=data,
                                     method=method, headers=headers)
        try:
            with OPENER.open(req, timeout=WAIT_S) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def create(self, to=CITIZEN, twiml="<Response><Say>hi</Say></Response>",
               events=("initiated", "ringing", "answered", "completed"),
               **extra):
        form = [("To", to), ("From", FROM),
                ("StatusCallback", self.receiver.base + "/status?leg=citizen")]
        if twiml is not None:
            form.append(("Twiml", twiml))
        form += [("StatusCallbackEvent", e) for e in events]
        form += list(extra.items())
        status, body = self.request("POST", self.calls_uri + ".json", form)
        assert status == 201, body
        return body

    def script(self, number, behavior, after_ms, hold_ms=None):
        spec = {"behavior": behavior, "after_ms": after_ms}
        if hold_ms is not None:
            spec["hold_ms"] = hold_ms
        status, body = self.request("POST", f"/_sandbox/numbers/{number}",
                                    json_body=spec)
        assert status == 200, body

    def call(self, sid):
        status, body = self.request("GET", f"/_sandbox/calls/{sid}")
        assert status == 200
        return body

    def wait_call(self, sid, predicate, timeout=WAIT_S):
        """Polls the sandbox's own record (it has no push channel)."""
        deadline = time.monotonic() + timeout
        while True:
            call = self.call(sid)
            if predicate(call):
                return call
            assert time.monotonic() < deadline, call
            time.sleep(0.02)

    def wait_ended(self, sid, timeout=WAIT_S):
        return self.wait_call(sid, lambda c: c["status"] in sandbox.TERMINAL,
                              timeout)

    def status_callbacks(self, sid, count):
        requests = self.receiver.wait_for(
            lambda rs: len([r for r in rs if r["path"] == "/status"
                            and r["params"]["CallSid"] == sid]) >= count)
        return [r for r in requests
                if r["path"] == "/status" and r["params"]["CallSid"] == sid]


def signed(request):
    return RequestValidator(TOKEN).validate(request["url"], request["params"],
                                            request["signature"])


# ---- REST API shape and errors ----------------------------------------------

def test_create_returns_twilio_call_shape(env):
    call = env.create()
    assert re.fullmatch(r"CA[0-9a-f]{32}", call["sid"])
    assert call["status"] == "queued"
    assert call["account_sid"] == ACCOUNT
    assert (call["to"], call["from"]) == (CITIZEN, FROM)
    assert call["parent_call_sid"] is None
    assert call["direction"] == "outbound-api"
    assert call["api_version"] == "2010-04-01"
    assert call["uri"] == f"{env.calls_uri}/{call['sid']}.json"
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000",
                        call["date_created"])
    status, fetched = env.request("GET", call["uri"])
    assert status == 200 and fetched["sid"] == call["sid"]


@pytest.mark.parametrize("auth", [None, (ACCOUNT, "wrong"),
                                  ("AC" + "f" * 32, TOKEN)])
def test_bad_credentials_are_401(env, auth):
    status, body = env.request("POST", env.calls_uri + ".json",
                               {"To": CITIZEN, "From": FROM, "Twiml": "<x/>"},
                               auth=auth)
    assert status == 401
    assert body["code"] == 20003 and body["status"] == 401
    assert env.request("GET", "/_sandbox/calls")[1] == []


@pytest.mark.parametrize("form, code", [
    ({"From": FROM, "Twiml": "<Response/>"}, 21201),
    ({"To": CITIZEN, "Twiml": "<Response/>"}, 21213),
    ({"To": "5550000001", "From": FROM, "Twiml": "<Response/>"}, 21211),
    ({"To": CITIZEN, "From": FROM}, 21205),
])
def test_invalid_create_is_400_with_twilio_code(env, form, code):
    status, body = env.request("POST", env.calls_uri + ".json", form)
    assert status == 400 and body["code"] == code
    assert body["more_info"].endswith(str(code))


def test_scripted_invalid_number_is_21211(env):
    env.script(CITIZEN, "invalid", 0)
    status, body = env.request("POST", env.calls_uri + ".json",
                               {"To": CITIZEN, "From": FROM,
                                "Twiml": "<Response/>"})
    assert status == 400 and body["code"] == 21211


def test_unknown_call_is_404(env):
    status, body = env.request("GET", f"{env.calls_uri}/CA{'0' * 32}.json")
    assert status == 404 and body["code"] == 20404


# ---- lifecycle and status callbacks -----------------------------------------

def test_default_script_answers_after_1000_ms_with_signed_callbacks(env):
    sid = env.create()["sid"]
    callbacks = env.status_callbacks(sid, 4)
    assert [c["params"]["CallStatus"] for c in callbacks] == \
        ["initiated", "ringing", "in-progress", "completed"]
    assert [c["params"]["SequenceNumber"] for c in callbacks] == \
        ["0", "1", "2", "3"]
    assert all(signed(c) for c in callbacks)
    first = callbacks[0]["params"]
    assert first["AccountSid"] == ACCOUNT and first["To"] == CITIZEN
    assert first["CallbackSource"] == "call-progress-events"
    assert first["Direction"] == "outbound-api"
    assert callbacks[-1]["params"]["CallDuration"] == "0"
    call = env.wait_ended(sid)
    assert call["status"] == "completed"
    assert 950 <= call["answered_at_ms"] - call["created_at_ms"] <= 2500
    assert call["received_at_ms"] <= call["created_at_ms"]


def test_completed_is_sent_even_when_not_subscribed(env):
    env.script(CITIZEN, "busy", 50)
    sid = env.create(events=("answered",))["sid"]
    callbacks = env.status_callbacks(sid, 1)
    assert env.wait_ended(sid)["status"] == "busy"
    time.sleep(0.1)
    assert [c["params"]["CallStatus"] for c in env.status_callbacks(sid, 1)] \
        == ["busy"]
    assert callbacks[0]["params"]["SequenceNumber"] == "0"


def test_busy_never_answers(env):
    env.script(CITIZEN, "busy", 100)
    sid = env.create()["sid"]
    statuses = [c["params"]["CallStatus"]
                for c in env.status_callbacks(sid, 3)]
    assert statuses == ["initiated", "ringing", "busy"]
    call = env.wait_ended(sid)
    assert call["answered_at_ms"] is None


def test_fail_ends_failed_without_ringing(env):
    env.script(CITIZEN, "fail", 50)
    sid = env.create()["sid"]
    statuses = [c["params"]["CallStatus"]
                for c in env.status_callbacks(sid, 2)]
    assert statuses == ["initiated", "failed"]


def test_no_answer_rings_for_the_shorter_of_after_ms_and_timeout(env):
    env.script(CITIZEN, "no-answer", 5000)
    sid = env.create(Timeout="1")["sid"]
    call = env.wait_ended(sid)
    assert call["status"] == "no-answer"
    assert 900 <= call["ended_at_ms"] - call["created_at_ms"] <= 2500


def test_answer_later_than_timeout_is_no_answer(env):
    env.script(CITIZEN, "answer", 3000)
    sid = env.create(Timeout="1")["sid"]
    assert env.wait_ended(sid)["status"] == "no-answer"


def test_cancel_ringing_call_then_21220(env):
    env.script(CITIZEN, "answer", 5000)
    sid = env.create()["sid"]
    env.wait_call(sid, lambda c: c["status"] == "ringing")
    uri = f"{env.calls_uri}/{sid}.json"
    status, body = env.request("POST", uri, {"Status": "canceled"})
    assert status == 200 and body["status"] == "canceled"
    statuses = [c["params"]["CallStatus"]
                for c in env.status_callbacks(sid, 3)]
    assert statuses == ["initiated", "ringing", "canceled"]
    status, body = env.request("POST", uri, {"Status": "canceled"})
    assert status == 400 and body["code"] == 21220


def test_cancel_does_not_touch_an_answered_call_but_complete_does(env):
    env.script(CITIZEN, "answer", 50)
    sid = env.create(twiml="<Response><Pause length=\"30\"/></Response>")["sid"]
    env.wait_call(sid, lambda c: c["status"] == "in-progress")
    uri = f"{env.calls_uri}/{sid}.json"
    status, body = env.request("POST", uri, {"Status": "canceled"})
    assert status == 200 and body["status"] == "in-progress"
    status, body = env.request("POST", uri, {"Status": "completed"})
    assert status == 200 and body["status"] == "completed"
    assert env.status_callbacks(sid, 4)[-1]["params"]["CallStatus"] == \
        "completed"


def test_complete_on_a_ringing_call_cancels_it(env):
    env.script(CITIZEN, "answer", 5000)
    sid = env.create()["sid"]
    env.wait_call(sid, lambda c: c["status"] == "ringing")
    status, body = env.request("POST", f"{env.calls_uri}/{sid}.json",
                               {"Status": "completed"})
    assert status == 200 and body["status"] == "canceled"


def test_hold_ms_hangs_up_the_answered_call(env):
    env.script(CITIZEN, "answer", 50, hold_ms=300)
    sid = env.create(twiml="<Response><Pause length=\"30\"/></Response>")["sid"]
    call = env.wait_ended(sid)
    assert call["status"] == "completed"
    assert 250 <= call["ended_at_ms"] - call["answered_at_ms"] <= 1500


# ---- TwiML and <Dial> -------------------------------------------------------

def dial_twiml(env, number, timeout=20, step=1):
    action = f"{env.receiver.base}/dial?session=s-1&amp;step={step}"
    return (f'<Response><Dial timeout="{timeout}" action="{action}">'
            f"<Number>{number}</Number></Dial></Response>")


def dial_results(env, count):
    return env.receiver.wait_for(
        lambda rs: len([r for r in rs if r["path"] == "/dial"]) >= count)


def test_dial_bridges_operator_and_posts_action(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "answer", 50, hold_ms=200)
    env.receiver.on("/dial", "<Response><Hangup/></Response>")
    parent = env.create(twiml=dial_twiml(env, OPERATOR))["sid"]
    action = [r for r in dial_results(env, 1) if r["path"] == "/dial"][0]
    assert signed(action)
    params = action["params"]
    assert params["DialCallStatus"] == "completed"
    assert params["CallSid"] == parent
    assert action["url"].endswith("/dial?session=s-1&step=1")
    assert env.wait_ended(parent)["status"] == "completed"
    child = env.call(params["DialCallSid"])
    assert child["parent_sid"] == parent and child["to"] == OPERATOR
    assert child["status"] == "completed"
    assert child["direction"] == "outbound-dial"
    assert child["answered_at_ms"] is not None
    assert params["DialBridged"] == "true"


def test_dial_busy_then_supervisor_then_parent_hangs_up(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "busy", 50)
    env.script(SUPERVISOR, "answer", 50)
    env.receiver.on("/dial", dial_twiml(env, SUPERVISOR, step=2))
    parent = env.create(twiml=dial_twiml(env, OPERATOR))["sid"]
    dial_results(env, 1)
    env.receiver.on("/dial", "<Response/>")
    supervisor = env.wait_call(
        parent, lambda c: len(c["children"]) == 2)["children"][1]
    env.wait_call(supervisor, lambda c: c["status"] == "in-progress")
    status, _ = env.request("POST", f"{env.calls_uri}/{parent}.json",
                            {"Status": "completed"})
    assert status == 200
    results = [r["params"] for r in dial_results(env, 2)
               if r["path"] == "/dial"]
    assert [r["DialCallStatus"] for r in results] == ["busy", "completed"]
    assert results[1]["CallStatus"] == "completed"
    assert env.wait_ended(supervisor)["status"] == "completed"
    listed = env.request("GET", f"{env.calls_uri}.json?ParentCallSid={parent}")
    assert len(listed[1]["calls"]) == 2


def test_dial_timeout_is_no_answer(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "answer", 5000)
    env.receiver.on("/dial", "<Response><Say>sorry</Say></Response>")
    parent = env.create(twiml=dial_twiml(env, OPERATOR, timeout=1))["sid"]
    result = [r for r in dial_results(env, 1) if r["path"] == "/dial"][0]
    assert result["params"]["DialCallStatus"] == "no-answer"
    call = env.wait_ended(parent)
    assert [t["verb"] for t in call["trace"]] == ["Dial", "Say"]


def test_parent_canceled_while_child_rings_cancels_child(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "answer", 5000)
    parent = env.create(twiml=dial_twiml(env, OPERATOR))["sid"]
    child = env.wait_call(parent, lambda c: c["children"])["children"][0]
    env.wait_call(child, lambda c: c["status"] == "ringing")
    env.request("POST", f"{env.calls_uri}/{parent}.json",
                {"Status": "completed"})
    assert env.wait_ended(child)["status"] == "canceled"
    result = [r for r in dial_results(env, 1) if r["path"] == "/dial"][0]
    assert result["params"]["DialCallStatus"] == "canceled"


def test_dial_without_action_continues_with_next_verb(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "fail", 50)
    twiml = (f"<Response><Dial><Number>{OPERATOR}</Number></Dial>"
             "<Say>next</Say></Response>")
    call = env.wait_ended(env.create(twiml=twiml)["sid"])
    assert [t["verb"] for t in call["trace"]] == ["Dial", "Say"]
    assert "failed" in call["trace"][0]["detail"]


def test_url_is_requested_signed_and_redirect_followed(env):
    env.script(CITIZEN, "answer", 50)
    env.receiver.on("/start", "<Response><Redirect>/next</Redirect></Response>")
    env.receiver.on("/next", "<Response><Say>from next</Say></Response>")
    sid = env.create(twiml=None, Url=env.receiver.base + "/start")["sid"]
    call = env.wait_ended(sid)
    fetched = env.receiver.wait_for(
        lambda rs: any(r["path"] == "/next" for r in rs))
    start = [r for r in fetched if r["path"] == "/start"][0]
    assert signed(start) and start["params"]["CallStatus"] == "in-progress"
    assert signed([r for r in fetched if r["path"] == "/next"][0])
    assert call["trace"][-1] == {**call["trace"][-1], "verb": "Say",
                                 "detail": "from next"}


def test_failed_action_request_hangs_up(env):
    env.script(CITIZEN, "answer", 50)
    env.script(OPERATOR, "busy", 50)
    env.receiver.on("/dial", "", status=503)
    call = env.wait_ended(env.create(twiml=dial_twiml(env, OPERATOR))["sid"])
    assert call["status"] == "completed"
    assert call["trace"][-1]["verb"] == "error"


def test_invalid_twiml_hangs_up(env):
    env.script(CITIZEN, "answer", 50)
    call = env.wait_ended(env.create(twiml="<Response><Dial>")["sid"])
    assert call["status"] == "completed"
    assert call["trace"][0]["verb"] == "error"


# ---- faults, listing, reset -------------------------------------------------

def test_scripted_429_then_success(env):
    status, _ = env.request("POST", "/_sandbox/faults",
                            json_body={"status": 429, "count": 2})
    assert status == 200
    form = {"To": CITIZEN, "From": FROM, "Twiml": "<Response/>"}
    for _ in range(2):
        status, body = env.request("POST", env.calls_uri + ".json", form)
        assert status == 429 and body["code"] == 20429
    status, _ = env.request("POST", env.calls_uri + ".json", form)
    assert status == 201
    assert len(env.request("GET", "/_sandbox/calls")[1]) == 1


def test_scripted_500(env):
    env.request("POST", "/_sandbox/faults", json_body={"status": 500,
                                                      "count": 1})
    status, body = env.request("GET", env.calls_uri + ".json")
    assert status == 500 and body["status"] == 500
    assert env.request("GET", env.calls_uri + ".json")[0] == 200


def test_dropped_callbacks_are_not_sent_but_call_proceeds(env):
    env.request("POST", "/_sandbox/faults", json_body={"drop_callbacks": True})
    env.script(CITIZEN, "busy", 50)
    call = env.wait_ended(env.create()["sid"])
    assert call["status"] == "busy"
    assert call["callbacks"] and all(c["dropped"] for c in call["callbacks"])
    time.sleep(0.2)
    assert env.receiver.to("/status") == []


def test_unreachable_callback_is_logged_not_fatal(env):
    env.script(CITIZEN, "busy", 20)
    form = {"To": CITIZEN, "From": FROM, "Twiml": "<Response/>",
            "StatusCallback": "http://127.0.0.1:9/nowhere"}
    status, created = env.request("POST", env.calls_uri + ".json", form)
    assert status == 201
    env.wait_call(created["sid"], lambda c: c["callbacks"]
                  and c["callbacks"][-1]["error"])
    assert env.request("GET", "/_sandbox/health")[0] == 200


def test_list_filters_by_to_and_start_time(env):
    env.script(CITIZEN, "busy", 10)
    env.script(OPERATOR, "busy", 10)
    mine = env.create()["sid"]
    env.create(to=OPERATOR)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    query = urllib.parse.urlencode({"To": CITIZEN, "StartTime>": today})
    status, page = env.request("GET", f"{env.calls_uri}.json?{query}")
    assert status == 200
    assert [c["sid"] for c in page["calls"]] == [mine]
    query = urllib.parse.urlencode({"To": CITIZEN,
                                    "StartTime>": "2999-01-01"})
    assert env.request("GET", f"{env.calls_uri}.json?{query}")[1]["calls"] == []


def test_reset_forgets_calls_scripts_and_faults(env):
    env.script(CITIZEN, "answer", 5000)
    env.request("POST", "/_sandbox/faults", json_body={"status": 500,
                                                      "count": 5})
    env.request("POST", "/_sandbox/reset", json_body={})
    env.create()
    status, _ = env.request("POST", "/_sandbox/reset", json_body={})
    assert status == 200
    assert env.request("GET", "/_sandbox/calls")[1] == []
    assert env.request("GET", "/_sandbox/numbers")[1] == {}


@pytest.mark.parametrize("spec", [{"behavior": "ring"},
                                  {"behavior": "answer", "after_ms": "5"},
                                  {"behavior": "answer", "after_ms": -1}])
def test_bad_script_is_400(env, spec):
    status, body = env.request("POST", f"/_sandbox/numbers/{CITIZEN}",
                               json_body=spec)
    assert status == 400 and body["error"] == "bad_request"


def test_control_calls_shape(env):
    sid = env.create()["sid"]
    call = env.request("GET", "/_sandbox/calls")[1][0]
    for key in ("sid", "to", "from", "status", "created_at_ms",
                "answered_at_ms", "ended_at_ms", "parent_sid"):
        assert key in call
    assert call["sid"] == sid


# ---- the CLI process --------------------------------------------------------

def test_cli_logs_mask_numbers_and_hide_the_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    log_file = tmp_path / "sandbox.log"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "sandbox.py")
    process = subprocess.Popen(
        ["/usr/bin/python3", script, "--port", "0", "--account-sid", ACCOUNT,
         "--auth-token-file", str(token_file), "--log", str(log_file)])
    try:
        deadline = time.monotonic() + WAIT_S
        port = None
        while port is None:
            assert time.monotonic() < deadline and process.poll() is None
            found = re.search(r"listening on http://127.0.0.1:(\d+)",
                              log_file.read_text() if log_file.exists()
                              else "")
            port = found and int(found.group(1))
            time.sleep(0.02)
        env = Env(None, f"http://127.0.0.1:{port}", None, None)
        assert env.request("GET", "/_sandbox/health")[0] == 200
        env.request("POST", f"/_sandbox/numbers/{CITIZEN}",
                    json_body={"behavior": "busy", "after_ms": 10})
        status, created = env.request(
            "POST", env.calls_uri + ".json",
            {"To": CITIZEN, "From": FROM, "Twiml": "<Response/>",
             "StatusCallback": "http://127.0.0.1:9/x?to=%2B15550000001"})
        assert status == 201
        env.wait_ended(created["sid"])
        env.request("POST", env.calls_uri + ".json",
                    {"To": CITIZEN, "From": FROM, "Twiml": "<Response/>"},
                    auth=(ACCOUNT, "wrong"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)
    text = log_file.read_text()
    assert "0001" in text
    for secret in ("5550000001", "5550009999", TOKEN):
        assert secret not in text
    assert process.returncode == 0
