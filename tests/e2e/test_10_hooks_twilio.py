"""Telephony callbacks: X-Twilio-Signature checked against Twilio's own helper
library (python3-twilio RequestValidator), the status callback stored as a
call_status event, and the <Dial action> callback serving the next call
instruction, or TwiML that holds the caller when there is none."""

import json
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from twilio.request_validator import RequestValidator, add_port, remove_port

from hamrahi import PrivateNginx, events_of, post_telephony, telephony_token, twilio_signature


def status_params(call_sid="CA" + "0" * 31 + "1", status="ringing"):
    """What a Twilio status callback carries (the sandbox sends the same)."""
    return {"AccountSid": "AC" + "1" * 32, "CallSid": call_sid, "CallStatus": status,
            "From": "+15550009999", "To": "+15550000001", "Direction": "outbound-api",
            "ApiVersion": "2010-04-01", "SequenceNumber": "1", "CallbackSource": "call-progress-events",
            "Timestamp": "Tue, 24 Nov 2026 10:00:00 +0000"}


def only_event(stack, session_id):
    entries = events_of(stack, session_id)
    assert len(entries) == 1, entries
    return entries[0]


# ---------------------------------------------------------------- status

def test_signed_status_callback_is_stored_as_call_status(stack, session_id):
    params = status_params()
    before_ms = time.time() * 1000
    r = post_telephony(stack, "status", {"session": session_id, "leg": "citizen"}, params)
    assert r.status == 202, (r.status, r.body)
    stream_id, fields = only_event(stack, session_id)
    assert r.json() == {"id": stream_id}
    assert fields["type"] == "call_status"
    assert fields["session_id"] == session_id
    assert abs(int(fields["at_ms"]) - before_ms) < 2000
    assert json.loads(fields["payload"]) == dict(params, leg="citizen")


def test_awkward_parameter_values_are_signed_and_stored_exactly(stack, session_id):
    params = status_params()
    params.update({"CallerName": "Priyá & co = 100% + \"quotes\"", "Empty": "",
                   "Emoji": "\U0001F6A8", "Spaces": "  a  b  "})
    r = post_telephony(stack, "status", {"session": session_id, "leg": "operator"}, params)
    assert r.status == 202, (r.status, r.body)
    assert json.loads(only_event(stack, session_id)[1]["payload"]) == dict(params, leg="operator")


@pytest.mark.parametrize("change", ["changed", "added", "removed", "query"])
def test_one_changed_parameter_is_401(stack, session_id, change):
    query = {"session": session_id, "leg": "citizen"}
    params = status_params()
    path = f"/v1/telephony/status?{urllib.parse.urlencode(query)}"
    signature = twilio_signature(telephony_token(stack), stack.url + path, params)
    sent = dict(params)
    if change == "changed":
        sent["CallStatus"] = "completed"
    elif change == "added":
        sent["Extra"] = "1"
    elif change == "removed":
        del sent["Direction"]
    else:
        query["leg"] = "operator"
    r = post_telephony(stack, "status", query, sent, signature=signature)
    assert r.status == 401, (r.status, r.body)
    assert r.json()["error"] == "bad_signature"
    assert events_of(stack, session_id) == []


def test_signature_over_the_url_without_its_port_is_accepted(stack, session_id):
    """Twilio's validator accepts the public URL with and without its port; so
    do we (here the configured URL has a port, http://127.0.0.1:PORT)."""
    query = {"session": session_id, "leg": "citizen"}
    params = status_params()
    url = f"{stack.url}/v1/telephony/status?{urllib.parse.urlencode(query)}"
    portless = remove_port(urllib.parse.urlparse(url))
    assert portless != url
    signature = twilio_signature(telephony_token(stack), portless, params)
    assert RequestValidator(telephony_token(stack)).validate(url, params, signature)
    r = post_telephony(stack, "status", query, params, signature=signature)
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, session_id)) == 1


def test_signature_over_another_port_is_401(stack, session_id):
    query = {"session": session_id, "leg": "citizen"}
    params = status_params()
    other = f"http://127.0.0.1:1/v1/telephony/status?{urllib.parse.urlencode(query)}"
    r = post_telephony(stack, "status", query, params, signed_url=other)
    assert r.status == 401, (r.status, r.body)
    assert events_of(stack, session_id) == []


@pytest.fixture(scope="module")
def portless(stack, tmp_path_factory):
    """An nginx whose public base URL names no port, as a production one
    behind TLS on 443 would."""
    env = stack.env
    nginx = PrivateNginx(
        stack, str(tmp_path_factory.mktemp("portless")),
        f"    hamrahi_hook_secret_file {env['HAMRAHI_HOOK_SECRET_FILE']};\n"
        f"    hamrahi_twilio_token_file {env['HAMRAHI_TELEPHONY_TOKEN_FILE']};\n"
        "    hamrahi_public_base_url https://hooks.example.test/;",
        "        location /v1/telephony/ { hamrahi_hooks; }")
    nginx.start()
    yield nginx
    nginx.stop()


@pytest.mark.parametrize("signed_base", [
    "https://hooks.example.test", "https://hooks.example.test:443",
])
def test_public_url_with_or_without_the_default_port_is_accepted(stack, portless, session_id,
                                                                  signed_base):
    query = {"session": session_id, "leg": "citizen"}
    params = status_params()
    path = f"/v1/telephony/status?{urllib.parse.urlencode(query)}"
    signature = twilio_signature(telephony_token(stack), signed_base + path, params)
    # Twilio's own validator, given the configured URL, agrees
    assert RequestValidator(telephony_token(stack)).validate(
        "https://hooks.example.test" + path, params, signature)
    assert add_port(urllib.parse.urlparse("https://hooks.example.test" + path)) \
        == "https://hooks.example.test:443" + path
    r = post_telephony(stack, "status", query, params, signature=signature,
                       base_url=portless.url)
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, session_id)) == 1


@pytest.mark.parametrize("signed_base", [
    "http://hooks.example.test", "https://hooks.example.test:80",
    "https://hooks.example.test:8443", "https://other.example.test",
])
def test_public_url_of_another_scheme_port_or_host_is_401(stack, portless, session_id,
                                                           signed_base):
    query = {"session": session_id, "leg": "citizen"}
    params = status_params()
    path = f"/v1/telephony/status?{urllib.parse.urlencode(query)}"
    signature = twilio_signature(telephony_token(stack), signed_base + path, params)
    r = post_telephony(stack, "status", query, params, signature=signature,
                       base_url=portless.url)
    assert r.status == 401, (r.status, r.body)
    assert events_of(stack, session_id) == []


# ---------------------------------------------------------------- dial

def dial_params(status="no-answer"):
    return {"AccountSid": "AC" + "1" * 32, "CallSid": "CA" + "0" * 31 + "2",
            "CallStatus": "in-progress", "DialCallStatus": status,
            "DialCallSid": "CA" + "0" * 31 + "3", "DialCallDuration": "0", "DialBridged": "false"}


def parse_twiml(r):
    assert r.status == 200, (r.status, r.body)
    assert r.headers.get("Content-Type", "").startswith("text/xml"), r.headers
    return ET.fromstring(r.body)


def test_dial_serves_the_stored_instruction_and_stores_dial_result(stack, session_id):
    doc = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial timeout=\"20\" "
           f"action=\"{stack.url}/v1/telephony/dial?session={session_id}&amp;step=2\">"
           "<Number>+15550000201</Number></Dial></Response>")
    stack.redis.set(f"hamrahi:twiml:{session_id}:1", doc, ex=60)
    params = dial_params()
    r = post_telephony(stack, "dial", {"session": session_id, "step": "1"}, params)
    assert r.status == 200, (r.status, r.body)
    assert r.headers["Content-Type"].startswith("text/xml")
    assert r.body.decode() == doc
    _, fields = only_event(stack, session_id)
    assert fields["type"] == "dial_result"
    assert json.loads(fields["payload"]) == dict(params, step="1")


def test_dial_without_instruction_holds_the_caller_and_retries(stack, session_id):
    """No document for the step yet: TwiML keeps the caller on the line and
    asks the same URL again, carrying the dial outcome Twilio will not resend."""
    params = dial_params("busy")
    r = post_telephony(stack, "dial", {"session": session_id, "step": "1"}, params)
    root = parse_twiml(r)
    assert [c.tag for c in root] == ["Say", "Pause", "Redirect"]
    assert root.find("Pause").get("length") == "2"
    redirect = root.find("Redirect")
    assert redirect.get("method") == "POST"
    url = redirect.text
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == stack.url
    assert parts.path == "/v1/telephony/dial"
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "session": session_id, "step": "1", "attempt": "2", "DialCallStatus": "busy"}
    assert json.loads(only_event(stack, session_id)[1]["payload"])["DialCallStatus"] == "busy"

    # Twilio follows the redirect: signed over that URL, without Dial* params
    follow = {"AccountSid": params["AccountSid"], "CallSid": params["CallSid"],
              "CallStatus": "in-progress"}
    query = dict(urllib.parse.parse_qsl(parts.query))
    r = post_telephony(stack, "dial", query, follow, signed_url=url)
    redirect = parse_twiml(r).find("Redirect")
    assert "attempt=3" in redirect.text and "DialCallStatus=busy" in redirect.text
    latest = json.loads(events_of(stack, session_id)[0][1]["payload"])
    assert latest["attempt"] == "2" and latest["DialCallStatus"] == "busy"

    # the worker stores the document: the next follow-up gets it
    doc = "<Response><Hangup/></Response>"
    stack.redis.set(f"hamrahi:twiml:{session_id}:1", doc, ex=60)
    query["attempt"] = "3"
    url = f"{stack.url}/v1/telephony/dial?{urllib.parse.urlencode(query)}"
    r = post_telephony(stack, "dial", query, follow, signed_url=url)
    assert r.status == 200 and r.body.decode() == doc
    assert len(events_of(stack, session_id)) == 3


def test_dial_hold_is_bounded(stack, session_id):
    r = post_telephony(stack, "dial", {"session": session_id, "step": "2", "attempt": "10"},
                       {"CallSid": "CA9", "CallStatus": "in-progress"})
    root = parse_twiml(r)
    assert root.find("Redirect") is None
    assert root.find("Say") is not None and root.find("Say").text


def test_dial_with_bad_signature_is_401_not_twiml(stack, session_id):
    stack.redis.set(f"hamrahi:twiml:{session_id}:1", "<Response/>", ex=60)
    r = post_telephony(stack, "dial", {"session": session_id, "step": "1"}, dial_params(),
                       token="wrong")
    assert r.status == 401, (r.status, r.body)
    assert r.json()["error"] == "bad_signature"
    assert events_of(stack, session_id) == []

