#!/usr/bin/python3
"""Telephony sandbox: a local stand-in for Twilio's 2010-04-01 Calls API.

Speaks the REST API the worker uses (create, fetch, list, cancel, hang up a
call), plays each call through Twilio's lifecycle as scripted per phone number,
sends status callbacks signed as Twilio signs them (X-Twilio-Signature), and
executes the call's TwiML once the callee answers: <Dial> creates the child leg,
requests the action URL with DialCallStatus and runs the TwiML it returns.

    sandbox.py [--host H] --port 8090 --account-sid AC...
               --auth-token-file FILE [--log FILE]

Control API for tests (DESIGN.md section 7; details in README.md here):
    POST /_sandbox/numbers/{E164}  {"behavior": "answer"|"busy"|
                                    "no-answer"|"fail"|"invalid",
                                    "after_ms": N, "hold_ms": N}
    GET  /_sandbox/calls           every call, oldest first
    POST /_sandbox/reset           forget calls, scripts and faults
    POST /_sandbox/faults          {"status": 429|500, "count": N} and/or
                                   {"drop_callbacks": true|false}
    GET  /_sandbox/health

Logs never show a full phone number (only its last 4 digits) nor the token.
"""

import argparse
import base64
import collections
import email.utils
import hmac
import json
import queue
import re
import secrets
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
BEHAVIORS = frozenset({"answer", "busy", "no-answer", "fail", "invalid"})
CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
SUBRESOURCES = ("notifications", "recordings", "payments", "events", "siprec",
                "streams", "transcriptions", "user_defined_messages",
                "user_defined_message_subscriptions")

DEFAULT_TIMEOUT_S = 60
DEFAULT_DIAL_TIMEOUT_S = 30
MAX_CALL_S = 4 * 3600          # Twilio's default timeLimit: no call outlives it
MAX_DOCUMENTS = 50             # TwiML documents per call: stops redirect loops
CALLBACK_TIMEOUT_S = 5
TWIML_FETCH_TIMEOUT_S = 15     # Twilio's own timeout for TwiML requests
MAX_BODY = 1 << 20

Script = collections.namedtuple("Script", "behavior after_ms hold_ms")
DEFAULT_SCRIPT = Script("answer", 1000, None)

CONTINUE = object()            # a verb handler's "go on with the next verb"


def now_ms():
    return int(time.time() * 1000)


def rfc2822(ms):
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return email.utils.format_datetime(moment)


def mask_number(number):
    return "***" + str(number)[-4:] if number else "-"


PHONE_IN_TEXT = re.compile(r"(\+|%2B|%2b)([0-9]{5,15})")


class Log:
    """Thread-safe line log that masks phone numbers and the token itself:
    every line passes the filter, so a careless message cannot leak them."""

    def __init__(self, stream, secret):
        self.stream = stream
        self.secret = secret
        self.lock = threading.Lock()

    def __call__(self, message):
        line = PHONE_IN_TEXT.sub(lambda m: "***" + m.group(2)[-4:], message)
        if self.secret:
            line = line.replace(self.secret, "[token]")
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self.lock:
            self.stream.write(f"{stamp} sandbox: {line}\n")
            self.stream.flush()


class TwilioError(Exception):
    """An error answered in Twilio's JSON error shape."""

    def __init__(self, http_status, code, message):
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message

    def body(self):
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.http_status}


class Call:
    """One call leg. Every field is guarded by Sandbox.cond."""

    def __init__(self, sid, to, from_, script, timeout_s, received_ms):
        self.sid = sid
        self.to = to
        self.from_ = from_
        self.script = script
        self.timeout_s = timeout_s
        self.received_ms = received_ms
        self.created_ms = now_ms()
        self.updated_ms = self.created_ms
        self.start_ms = None
        self.answered_ms = None
        self.ended_ms = None
        self.status = "queued"
        self.parent = None
        self.direction = "outbound-api"
        self.twiml = None
        self.url = None
        self.method = "POST"
        self.status_callback = None
        self.status_events = frozenset()
        self.status_method = "POST"
        self.sequence = 0
        self.hold_deadline = None
        self.discarded = False
        self.end_cause = None
        self.history = [{"status": "queued", "at_ms": self.created_ms}]
        self.trace = []
        self.callbacks = []
        self.children = []
        self.outbox = queue.Queue()

    def ended(self):
        return self.discarded or self.status in TERMINAL

    def duration_s(self):
        if self.answered_ms is None or self.ended_ms is None:
            return 0
        return max(0, round((self.ended_ms - self.answered_ms) / 1000))


class Sandbox:
    def __init__(self, account_sid, token, log):
        self.account_sid = account_sid
        self.token = token
        self.log = log
        self.validator = RequestValidator(token)
        self.cond = threading.Condition()
        self.calls = {}
        self.scripts = {}
        self.fault = None
        self.drop_callbacks = False
        self.http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.verbs = {"Say": self._verb_say, "Play": self._verb_say,
                      "Pause": self._verb_pause, "Hangup": self._verb_hangup,
                      "Reject": self._verb_hangup,
                      "Redirect": self._verb_redirect, "Dial": self._verb_dial}

    # ---- REST API -----------------------------------------------------------

    def take_fault(self):
        """The scripted error for this REST request, if one is pending."""
        with self.cond:
            if not self.fault or self.fault["count"] <= 0:
                return None
            self.fault["count"] -= 1
            status = self.fault["status"]
            if self.fault["count"] == 0:
                self.fault = None
        if status == 429:
            return TwilioError(429, 20429, "Too Many Requests")
        return TwilioError(status, 20500, "Internal Server Error")

    def create_call(self, form, received_ms):
        """Validates as Twilio does and starts the call; returns its JSON as
        created (status "queued")."""
        to, from_ = first(form, "To"), first(form, "From")
        if not to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        with self.cond:
            script = self.scripts.get(to, DEFAULT_SCRIPT)
        if not E164.match(to) or script.behavior == "invalid":
            raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not E164.match(from_):
            raise TwilioError(400, 21212,
                              f"Invalid 'From' Phone Number: {from_}")
        twiml, url = first(form, "Twiml"), first(form, "Url")
        if not twiml and not url:
            raise TwilioError(400, 21205,
                              "Url, Twiml or ApplicationSid is required")
        call = Call(new_sid(), to, from_, script,
                    parse_timeout(first(form, "Timeout"), DEFAULT_TIMEOUT_S),
                    received_ms)
        call.twiml = twiml or None
        call.url = None if twiml else url
        call.method = (first(form, "Method") or "POST").upper()
        self._subscribe(call, first(form, "StatusCallback"),
                        form.get("StatusCallbackEvent", []),
                        first(form, "StatusCallbackMethod"))
        created = self.call_json(call)
        self._start(call)
        self.log(f"created {call.sid} to {mask_number(to)} "
                 f"script {script.behavior}/{script.after_ms}ms "
                 f"timeout {call.timeout_s}s")
        return created

    def _subscribe(self, call, url, events, method):
        call.status_callback = url or None
        names = set()
        for value in events:
            names.update(value.replace(",", " ").split())
        call.status_events = frozenset(names & set(CALLBACK_EVENTS))
        call.status_method = (method or "POST").upper()

    def _start(self, call):
        with self.cond:
            self.calls[call.sid] = call
        threading.Thread(target=self._deliver_callbacks, args=(call,),
                         name=f"cb-{call.sid}", daemon=True).start()
        threading.Thread(target=self._run_call, args=(call,),
                         name=f"call-{call.sid}", daemon=True).start()

    def get_call(self, sid):
        with self.cond:
            call = self.calls.get(sid)
            if call is None:
                raise TwilioError(404, 20404, f"The requested resource "
                                  f"{self.call_uri(sid)} was not found")
            return self.call_json(call)

    def list_calls(self, query):
        """Newest first, as Twilio lists. StartTime filters compare a date
        (YYYY-MM-DD, whole UTC day) or an instant (ISO 8601); a call not yet
        started is compared by its creation time."""
        page_size = parse_int(first(query, "PageSize"), 50, 1, 1000)
        checks = list_filters(query)
        with self.cond:
            calls = [c for c in self.calls.values()
                     if all(check(c) for check in checks)]
            calls.sort(key=lambda c: c.created_ms, reverse=True)
            rows = [self.call_json(c) for c in calls[:page_size]]
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        return {"calls": rows, "start": 0, "end": max(0, len(rows) - 1),
                "page": 0, "page_size": page_size, "uri": uri,
                "first_page_uri": f"{uri}?PageSize={page_size}&Page=0",
                "next_page_uri": None, "previous_page_uri": None}

    def update_call(self, sid, form):
        """Status=canceled ends a queued or ringing call and leaves an
        answered one alone; Status=completed ends it in any live state (one
        never answered then ends canceled). A call that already ended answers
        21220, as Twilio does."""
        status = first(form, "Status")
        if status not in ("canceled", "completed"):
            if first(form, "Twiml") or first(form, "Url"):
                raise TwilioError(400, 20001,
                                  "sandbox: redirecting a live call is "
                                  "not supported")
            raise TwilioError(400, 20001, "Status must be canceled or "
                              "completed")
        with self.cond:
            call = self.calls.get(sid)
            if call is None:
                raise TwilioError(404, 20404, f"The requested resource "
                                  f"{self.call_uri(sid)} was not found")
            if call.status in TERMINAL:
                raise TwilioError(400, 21220, "Call is not in-progress. "
                                  "Cannot redirect.")
            if call.status != "in-progress":
                self._finish(call, "canceled", f"api {status}")
            elif status == "completed":
                self._finish(call, "completed", "api completed")
            return self.call_json(call)

    def call_uri(self, sid):
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"

    def call_json(self, call):
        base = self.call_uri(call.sid)[:-len(".json")]
        subresources = {name: f"{base}/{name.title().replace('_', '')}.json"
                        for name in SUBRESOURCES}
        ended = call.status in TERMINAL
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(call.created_ms),
            "date_updated": rfc2822(call.updated_ms),
            "direction": call.direction,
            "duration": str(call.duration_s()) if ended else None,
            "end_time": rfc2822(call.ended_ms),
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": call.parent.sid if call.parent else None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call.sid,
            "start_time": rfc2822(call.start_ms),
            "status": call.status,
            "subresource_uris": subresources,
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": None,
            "uri": self.call_uri(call.sid),
        }

    # ---- control API --------------------------------------------------------

    def set_script(self, number, spec):
        if not E164.match(number):
            raise ValueError("number must be E.164")
        behavior = spec.get("behavior", "answer")
        if behavior not in BEHAVIORS:
            raise ValueError(f"behavior must be one of {sorted(BEHAVIORS)}")
        after_ms = spec.get("after_ms", DEFAULT_SCRIPT.after_ms)
        hold_ms = spec.get("hold_ms")
        for name, value in (("after_ms", after_ms), ("hold_ms", hold_ms)):
            if value is not None and (not isinstance(value, int)
                                      or isinstance(value, bool)
                                      or not 0 <= value <= MAX_CALL_S * 1000):
                raise ValueError(f"{name} must be an integer of ms")
        script = Script(behavior, after_ms, hold_ms)
        with self.cond:
            self.scripts[number] = script
        self.log(f"script {mask_number(number)}: {behavior} after "
                 f"{after_ms}ms hold {hold_ms}")
        return dict(script._asdict(), number=number)

    def scripts_json(self):
        with self.cond:
            return {n: s._asdict() for n, s in self.scripts.items()}

    def set_faults(self, spec):
        status, count = spec.get("status"), spec.get("count")
        drop = spec.get("drop_callbacks")
        if status is not None and status not in (429, 500, 503):
            raise ValueError("status must be 429, 500 or 503")
        if status is not None and (not isinstance(count, int) or count < 0):
            raise ValueError("count must be a non-negative integer")
        if drop is not None and not isinstance(drop, bool):
            raise ValueError("drop_callbacks must be true or false")
        with self.cond:
            if status is not None:
                self.fault = ({"status": status, "count": count} if count
                              else None)
            if drop is not None:
                self.drop_callbacks = drop
        self.log(f"faults: {self.faults_json()}")
        return self.faults_json()

    def faults_json(self):
        with self.cond:
            return {"fault": dict(self.fault) if self.fault else None,
                    "drop_callbacks": self.drop_callbacks}

    def reset(self):
        """Forgets everything; live calls stop silently (no more callbacks)."""
        with self.cond:
            for call in self.calls.values():
                call.discarded = True
                call.outbox.put(None)
            self.calls.clear()
            self.scripts.clear()
            self.fault = None
            self.drop_callbacks = False
            self.cond.notify_all()
        self.log("reset")

    def remote_hangup(self, sid):
        """The callee (or, for a parent leg, the caller) hangs up."""
        with self.cond:
            call = self.calls.get(sid)
            if call is None:
                raise KeyError(sid)
            if call.status != "in-progress":
                raise ValueError(f"call is {call.status}, not in-progress")
            self._finish(call, "completed", "remote hangup")
            return self.sandbox_json(call)

    def calls_json(self, query):
        to, parent = first(query, "to"), first(query, "parent_sid")
        with self.cond:
            return [self.sandbox_json(c) for c in self.calls.values()
                    if (not to or c.to == to)
                    and (not parent or (c.parent and c.parent.sid == parent))]

    def call_sandbox_json(self, sid):
        with self.cond:
            call = self.calls.get(sid)
            return None if call is None else self.sandbox_json(call)

    def sandbox_json(self, call):
        return {
            "sid": call.sid, "to": call.to, "from": call.from_,
            "status": call.status,
            "created_at_ms": call.created_ms,
            "received_at_ms": call.received_ms,
            "started_at_ms": call.start_ms,
            "answered_at_ms": call.answered_ms,
            "ended_at_ms": call.ended_ms,
            "parent_sid": call.parent.sid if call.parent else None,
            "direction": call.direction,
            "duration": call.duration_s(),
            "timeout": call.timeout_s,
            "twiml": call.twiml, "url": call.url,
            "status_callback": call.status_callback,
            "status_callback_events": sorted(call.status_events),
            "script": call.script._asdict(),
            "end_cause": call.end_cause,
            "history": list(call.history),
            "trace": list(call.trace),
            "callbacks": [dict(c) for c in call.callbacks],
            "children": [c.sid for c in call.children],
        }

    # ---- call lifecycle (one thread per leg) --------------------------------

    def _run_call(self, call):
        try:
            outcome = self._ring(call)
            if outcome != "answer":
                with self.cond:
                    if outcome:
                        self._finish(call, outcome, "script")
                return
            with self.cond:
                answered = self._answer(call)
            if not answered:
                return
            if call.parent is None:
                self._run_twiml(call)
            elif self._wait(call, MAX_CALL_S):
                with self.cond:
                    self._finish(call, "completed", "time limit")
        except Exception:
            self.log(f"call {call.sid} crashed: {traceback.format_exc()}")
            with self.cond:
                self._finish(call, "failed", "sandbox error")

    def _ring(self, call):
        """Plays the script up to the answer. Returns "answer", a final
        status, or None when the call was ended meanwhile."""
        script = call.script
        with self.cond:
            if call.ended():
                return None
            self._mark(call, "initiated")
        if script.behavior == "fail":
            alive = self._wait(call, script.after_ms / 1000)
            return "failed" if alive else None
        with self.cond:
            if call.ended():
                return None
            call.status = "ringing"
            self._mark(call, "ringing")
        after_s = script.after_ms / 1000
        outcome = {"answer": "answer", "busy": "busy"}.get(script.behavior,
                                                           "no-answer")
        if after_s > call.timeout_s:
            outcome, after_s = "no-answer", call.timeout_s
        return outcome if self._wait(call, after_s) else None

    def _wait(self, call, seconds, until=None):
        """Sleeps up to seconds, or until until() holds. Returns False as soon
        as the call has ended; the scripted hang-up (hold_ms) ends it here."""
        deadline = time.monotonic() + seconds
        with self.cond:
            while True:
                if call.ended():
                    return False
                if until is not None and until():
                    return True
                now = time.monotonic()
                if call.hold_deadline is not None and now >= call.hold_deadline:
                    self._finish(call, "completed", "hold_ms elapsed")
                    return False
                if now >= deadline:
                    return True
                limit = deadline
                if call.hold_deadline is not None:
                    limit = min(limit, call.hold_deadline)
                self.cond.wait(limit - now)

    def _mark(self, call, event):
        """Records a progress event and queues its status callback. The REST
        status stays "queued" through "initiated", as Twilio shows it."""
        at = now_ms()
        call.updated_ms = at
        if event == "initiated":
            call.start_ms = at
        call.history.append({"status": event, "at_ms": at})
        self.cond.notify_all()
        status = {"answered": "in-progress"}.get(event, event)
        if event in call.status_events:
            self._queue_callback(call, event, status, at)

    def _answer(self, call):
        if call.ended():
            return False
        call.status = "in-progress"
        call.answered_ms = now_ms()
        if call.script.hold_ms is not None:
            call.hold_deadline = time.monotonic() + call.script.hold_ms / 1000
        self._mark(call, "answered")
        self.log(f"{call.sid} answered by {mask_number(call.to)}")
        return True

    def _finish(self, call, status, cause):
        """Ends a live call once; whoever takes the lock first decides.
        Caller holds self.cond."""
        if call.ended():
            return False
        at = now_ms()
        call.status = status
        call.ended_ms = at
        call.updated_ms = at
        call.end_cause = cause
        call.history.append({"status": status, "at_ms": at})
        if call.status_callback:
            self._queue_callback(call, "completed", status, at)
        call.outbox.put(None)
        self.cond.notify_all()
        self.log(f"{call.sid} {status} ({cause}), "
                 f"duration {call.duration_s()}s")
        return True

    # ---- TwiML --------------------------------------------------------------

    def _run_twiml(self, call):
        doc, base = call.twiml, None
        if doc is None:
            base = call.url
            doc = self._fetch_twiml(call, base, call.method, {})
        for _ in range(MAX_DOCUMENTS):
            if doc is None:
                break
            follow = self._run_document(call, doc, base)
            if follow is None:
                break
            doc, base = follow
        else:
            self._trace(call, "error", "too many TwiML documents")
        with self.cond:
            self._finish(call, "completed", "end of TwiML")

    def _run_document(self, call, doc, base):
        """Executes one document. Returns the next (document, url) to run,
        or None when the call is to hang up."""
        try:
            root = ET.fromstring(doc)
        except ET.ParseError as error:
            self._trace(call, "error", f"invalid TwiML: {error}")
            return None
        if root.tag != "Response":
            self._trace(call, "error", f"root element is <{root.tag}>")
            return None
        for verb in root:
            with self.cond:
                if call.ended():
                    return None
            handler = self.verbs.get(verb.tag)
            if handler is None:
                self._trace(call, "ignored", f"<{verb.tag}>")
                continue
            result = handler(call, verb, base)
            if result is not CONTINUE:
                return result
        return None

    def _verb_say(self, call, verb, _base):
        self._trace(call, verb.tag, (verb.text or "").strip()[:200])
        return CONTINUE

    def _verb_pause(self, call, verb, _base):
        length = parse_int(verb.get("length"), 1, 0, 600)
        self._trace(call, "Pause", str(length))
        return CONTINUE if self._wait(call, length) else None

    def _verb_hangup(self, call, verb, _base):
        self._trace(call, verb.tag, "")
        return None

    def _verb_redirect(self, call, verb, base):
        url = urllib.parse.urljoin(base or "", (verb.text or "").strip())
        self._trace(call, "Redirect", url)
        doc = self._fetch_twiml(call, url, verb.get("method", "POST"), {})
        return None if doc is None else (doc, url)

    def _verb_dial(self, call, verb, base):
        number = dial_target(verb)
        timeout = parse_timeout(verb.get("timeout"), DEFAULT_DIAL_TIMEOUT_S)
        child = None
        if number and E164.match(number):
            child = self._dial(call, number, timeout, verb)
            dial_status = child.status
        else:
            dial_status = "failed"
        self._trace(call, "Dial", f"{number} -> {dial_status}")
        action = verb.get("action")
        if not action:
            with self.cond:
                return None if call.ended() else CONTINUE
        params = {"DialCallStatus": dial_status,
                  "DialBridged": "true" if child and child.answered_ms
                  else "false"}
        if child is not None:
            params["DialCallSid"] = child.sid
            params["DialCallDuration"] = str(child.duration_s())
        url = urllib.parse.urljoin(base or "", action)
        doc = self._fetch_twiml(call, url, verb.get("method", "POST"), params)
        with self.cond:
            if call.ended():
                return None
        return None if doc is None else (doc, url)

    def _dial(self, parent, number, timeout, verb):
        """Rings the child leg and bridges it; returns the ended child."""
        with self.cond:
            child = Call(new_sid(), number,
                         verb.get("callerId") or parent.from_,
                         self.scripts.get(number, DEFAULT_SCRIPT), timeout,
                         now_ms())
            child.parent = parent
            child.direction = "outbound-dial"
            noun = verb.find("Number")
            if noun is not None:
                self._subscribe(child, noun.get("statusCallback"),
                                [noun.get("statusCallbackEvent", "")],
                                noun.get("statusCallbackMethod"))
            parent.children.append(child)
        self.log(f"{parent.sid} dials {child.sid} to {mask_number(number)} "
                 f"script {child.script.behavior}/{child.script.after_ms}ms "
                 f"timeout {timeout}s")
        self._start(child)
        self._wait(parent, MAX_CALL_S, until=lambda: child.status in TERMINAL)
        with self.cond:
            if child.status not in TERMINAL:
                bridged = child.status == "in-progress"
                self._finish(child, "completed" if bridged else "canceled",
                             "parent ended")
        return child

    def _trace(self, call, verb, detail):
        with self.cond:
            call.trace.append({"verb": verb, "detail": detail,
                               "at_ms": now_ms()})
        self.log(f"{call.sid} <{verb}> {detail}")

    # ---- outgoing requests --------------------------------------------------

    def _call_params(self, call):
        params = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION,
                  "CallSid": call.sid, "CallStatus": call.status,
                  "Called": call.to, "Caller": call.from_,
                  "Direction": call.direction, "From": call.from_,
                  "To": call.to}
        if call.parent is not None:
            params["ParentCallSid"] = call.parent.sid
        return params

    def _queue_callback(self, call, event, status, at_ms):
        """Caller holds self.cond. Delivery runs on the leg's own sender
        thread, in order, so a slow receiver never delays the call."""
        params = self._call_params(call)
        params.update({"CallStatus": status,
                       "CallbackSource": "call-progress-events",
                       "SequenceNumber": str(call.sequence),
                       "Timestamp": rfc2822(at_ms)})
        if event == "completed":
            params["CallDuration"] = str(call.duration_s())
        record = {"event": event, "status": status,
                  "sequence": call.sequence, "at_ms": at_ms,
                  "dropped": self.drop_callbacks, "http_status": None,
                  "error": None}
        call.sequence += 1
        call.callbacks.append(record)
        call.outbox.put((params, record))

    def _deliver_callbacks(self, call):
        while True:
            item = call.outbox.get()
            if item is None:
                return
            params, record = item
            with self.cond:
                if call.discarded:
                    return
            if record["dropped"]:
                self.log(f"{call.sid} callback {record['event']} dropped")
                continue
            code, error = self._send(call.status_callback, call.status_method,
                                     params, CALLBACK_TIMEOUT_S)[:2]
            with self.cond:
                record["http_status"], record["error"] = code, error
            self.log(f"{call.sid} callback {record['event']} "
                     f"#{record['sequence']} -> {code or error}")

    def _fetch_twiml(self, call, url, method, extra):
        """Requests a TwiML document; None (logged) on any failure: Twilio
        then says "an application error has occurred" and hangs up."""
        params = self._call_params(call)
        params.update(extra)
        code, error, body = self._send(url, method, params,
                                       TWIML_FETCH_TIMEOUT_S)
        if code is None or not 200 <= code < 300:
            self._trace(call, "error", f"TwiML request failed: {code or error}")
            return None
        return body

    def _send(self, url, method, params, timeout):
        """Signed request as Twilio makes it. Returns (status, error, body);
        never raises."""
        method = (method or "POST").upper()
        data = None
        if method == "GET":
            joiner = "&" if "?" in url else "?"
            url = url + joiner + urllib.parse.urlencode(params)
            signature = self.validator.compute_signature(url, {})
        else:
            method = "POST"
            data = urllib.parse.urlencode(params).encode()
            signature = self.validator.compute_signature(url, params)
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("X-Twilio-Signature", signature)
        request.add_header("User-Agent", "TwilioProxy/1.1")
        request.add_header("I-Twilio-Idempotency-Token", secrets.token_hex(16))
        if data is not None:
            request.add_header("Content-Type",
                               "application/x-www-form-urlencoded")
        try:
            with self.http.open(request, timeout=timeout) as response:
                return response.status, None, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, None, None
        except Exception as error:
            return None, f"{type(error).__name__}: {error}", None


# ---- helpers ----------------------------------------------------------------

def first(form, key):
    values = form.get(key)
    return values[0] if values else None


def new_sid():
    return "CA" + secrets.token_hex(16)


def parse_int(text, default, low, high):
    try:
        return min(high, max(low, int(text)))
    except (TypeError, ValueError):
        return default


def parse_timeout(text, default):
    return parse_int(text, default, 1, 600)


def dial_target(verb):
    noun = verb.find("Number")
    text = noun.text if noun is not None else verb.text
    return (text or "").strip() or None


def parse_moment(text):
    """(start_ms, end_ms) covered by a StartTime value: a whole UTC day for
    YYYY-MM-DD, one instant for an ISO 8601 time."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        start = int(day.timestamp() * 1000)
        return start, start + 86400000 - 1
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    at = int(moment.timestamp() * 1000)
    return at, at


def list_filters(query):
    checks = []
    for key, attr in (("To", "to"), ("From", "from_"), ("Status", "status")):
        wanted = first(query, key)
        if wanted:
            checks.append(lambda c, a=attr, w=wanted: getattr(c, a) == w)
    parent = first(query, "ParentCallSid")
    if parent:
        checks.append(lambda c: c.parent is not None and c.parent.sid == parent)

    def started(c):
        return c.start_ms if c.start_ms is not None else c.created_ms
    bounds = {key: first(query, key)
              for key in ("StartTime", "StartTime>", "StartTime<")}
    try:
        if bounds["StartTime"]:
            low, high = parse_moment(bounds["StartTime"])
            checks.append(lambda c: low <= started(c) <= high)
        if bounds["StartTime>"]:
            after = parse_moment(bounds["StartTime>"])[0]
            checks.append(lambda c: started(c) >= after)
        if bounds["StartTime<"]:
            before = parse_moment(bounds["StartTime<"])[1]
            checks.append(lambda c: started(c) <= before)
    except ValueError:
        raise TwilioError(400, 20001, "StartTime must be YYYY-MM-DD or "
                          "an ISO 8601 time") from None
    return checks


# ---- HTTP -------------------------------------------------------------------

REST_PATH = re.compile(rf"^/{API_VERSION}/Accounts/([^/]+)/Calls"
                       r"(?:/([^/]+))?\.json$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120              # idle keep-alive connections are closed
    server_version = "HamrahiTelephonySandbox/1.0"

    @property
    def sandbox(self):
        return self.server.sandbox

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        self.received_ms = now_ms()
        self.answered = None
        split = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        try:
            body = self._read_body()
            match = REST_PATH.match(split.path)
            if match:
                self._rest(method, match.group(1), match.group(2), body)
            elif split.path.startswith("/_sandbox/"):
                self._control(method, split.path, body)
            else:
                self._json(404, {"error": "not_found", "detail": split.path})
        except TwilioError as error:
            self._twilio_error(error)
        except Exception:
            self.sandbox.log(f"{method} {split.path} crashed: "
                             f"{traceback.format_exc()}")
            self._json(500, {"error": "internal", "detail": "sandbox error"})
        if method != "GET" or not split.path.startswith("/_sandbox/"):
            self.sandbox.log(f"{method} {split.path} -> {self.answered}")

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise TwilioError(413, 20001, "request body too large")
        return self.rfile.read(length) if length else b""

    def _rest(self, method, account, sid, body):
        fault = self.sandbox.take_fault()
        if fault:
            raise fault
        self._authenticate(account)
        form = urllib.parse.parse_qs(body.decode(errors="replace"),
                                     keep_blank_values=True)
        if method == "POST" and sid is None:
            self._json(201, self.sandbox.create_call(form, self.received_ms))
        elif method == "POST":
            self._json(200, self.sandbox.update_call(sid, form))
        elif method == "GET" and sid is None:
            self._json(200, self.sandbox.list_calls(self.query))
        elif method == "GET":
            self._json(200, self.sandbox.get_call(sid))
        else:
            raise TwilioError(405, 20004, "Method not allowed")

    def _authenticate(self, account):
        header = self.headers.get("Authorization", "")
        user = password = ""
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
                user, _, password = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        valid = (hmac.compare_digest(user, self.sandbox.account_sid)
                 and hmac.compare_digest(password.encode(),
                                         self.sandbox.token.encode()))
        if not valid:
            raise TwilioError(401, 20003, "Authenticate")
        if account != self.sandbox.account_sid:
            raise TwilioError(404, 20404, f"The requested resource "
                              f"{self.path} was not found")

    def _control(self, method, path, body):
        parts = [urllib.parse.unquote(p) for p in path.split("/")[2:]]
        route = (method, parts[0] if parts else "", len(parts))
        if route == ("GET", "health", 1):
            return self._json(200, {"status": "ok"})
        if route == ("GET", "calls", 1):
            return self._json(200, self.sandbox.calls_json(self.query))
        if route == ("GET", "calls", 2):
            found = self.sandbox.call_sandbox_json(parts[1])
            return self._json(200 if found else 404,
                              found or {"error": "not_found",
                                        "detail": "no such call"})
        if route == ("POST", "calls", 3) and parts[2] == "hangup":
            return self._guarded(lambda: self.sandbox.remote_hangup(parts[1]))
        if route == ("POST", "reset", 1):
            self.sandbox.reset()
            return self._json(200, {"status": "ok"})
        if route == ("GET", "numbers", 1):
            return self._json(200, self.sandbox.scripts_json())
        if route == ("POST", "numbers", 2):
            return self._guarded(lambda: self.sandbox.set_script(
                parts[1], self._json_body(body)))
        if route == ("GET", "faults", 1):
            return self._json(200, self.sandbox.faults_json())
        if route == ("POST", "faults", 1):
            return self._guarded(
                lambda: self.sandbox.set_faults(self._json_body(body)))
        return self._json(404, {"error": "not_found", "detail": path})

    def _guarded(self, action):
        try:
            return self._json(200, action())
        except KeyError:
            return self._json(404, {"error": "not_found",
                                    "detail": "no such call"})
        except ValueError as error:
            return self._json(400, {"error": "bad_request",
                                    "detail": str(error)})

    @staticmethod
    def _json_body(body):
        try:
            spec = json.loads(body or b"{}")
        except ValueError:
            raise ValueError("body must be JSON") from None
        if not isinstance(spec, dict):
            raise ValueError("body must be a JSON object")
        return spec

    def _twilio_error(self, error):
        headers = {}
        if error.http_status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        self._json(error.http_status, error.body(), headers)

    def _json(self, status, obj, headers=None):
        payload = json.dumps(obj).encode()
        self.answered = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops connects when a burst of sessions
    # expires in the same second; a real provider takes them all.
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, sandbox):
        super().__init__(address, Handler)
        self.sandbox = sandbox


def read_token(path):
    with open(path, encoding="utf-8") as file:
        token = file.read().rstrip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090,
                        help="0 picks a free port (logged at start)")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token-file", required=True)
    parser.add_argument("--log", help="log file (default: stderr)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        token = read_token(args.auth_token_file)
    except (OSError, ValueError) as error:
        sys.exit(f"sandbox: cannot read the auth token: {error}")
    stream = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr
    log = Log(stream, token)
    try:
        server = Server((args.host, args.port),
                        Sandbox(args.account_sid, token, log))
    except OSError as error:
        sys.exit(f"sandbox: cannot listen on {args.host}:{args.port}: {error}")

    def stop(signum, _frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    log(f"listening on http://{host}:{port}")
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    log("stopped")


if __name__ == "__main__":
    main()
