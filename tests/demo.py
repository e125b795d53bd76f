#!/usr/bin/python3
"""The demo scenario of `./build.sh run`: Priya presses SOS, WebRTC never comes
up, and the backend calls her phone. Prints the timeline as it happens."""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
from hamrahi import Stack, now_ms  # noqa: E402

CITIZEN_PHONE = "+15550000001"


def mask(phone):
    return "*" * (len(phone) - 4) + phone[-4:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default=None)
    args = ap.parse_args()
    stack = Stack(args.env)
    session = f"demo-{int(time.time())}"
    known = {c["sid"] for c in stack.sandbox_calls()}
    panel = stack.panel(role="operator", station="st-1", sub="op-1")
    timeline = []

    def say(at, text):
        timeline.append((at, text))

    print(f"Demo session {session} (citizen cit-1, operator op-1, station st-1)")
    r = stack.activate(session)
    (entry,) = stack.redis.xrange("hamrahi:events", r.json()["id"], r.json()["id"])
    at_ms = int(entry[1]["at_ms"])
    print("  (watching the stack for up to 20 s...)", flush=True)
    say(at_ms, f"activation accepted by nginx (stream id {r.json()['id']}); no WebRTC stream follows")
    say(at_ms + 5000, "watchdog deadline (5 s after activation)")

    seen, statuses, got_panel, got_record = set(), {}, False, False
    end = time.monotonic() + 20
    while time.monotonic() < end:
        for c in stack.sandbox_calls():
            if c["sid"] in known:
                continue
            if c["sid"] not in seen:
                seen.add(c["sid"])
                leg = "child leg" if c.get("parent_sid") else "call"
                say(c.get("received_at_ms", c["created_at_ms"]),
                    f"{leg} {c['sid']} created at the provider sandbox, to {mask(c['to'])}")
            if c.get("answered_at_ms") and statuses.get(c["sid"]) != "answered":
                statuses[c["sid"]] = "answered"
                say(c["answered_at_ms"], f"{c['sid']} answered ({mask(c['to'])})")
        while True:
            try:
                at, msg = panel.next(0.05, match=lambda m: m.get("session_id") == session)
            except AssertionError:
                break
            say(at, f"panel update received: state={msg.get('state')} mode={msg.get('mode')} "
                    f"call_ref={msg.get('provider_call_ref', '-')} seq={msg.get('seq')}")
            got_panel = got_panel or msg.get("state") == "phone_fallback_active"
        row = stack.session_row(session)
        if row and row.get("provider_call_ref") and not got_record:
            got_record = True
            say(now_ms(), f"sos_sessions record: reason={row['fallback_reason']} "
                          f"call_ref={row['provider_call_ref']} "
                          f"webrtc_failed_at={row['webrtc_failed_at']:%H:%M:%S.%f} "
                          f"call_initiated_at={row['call_initiated_at']:%H:%M:%S.%f}")
        if got_panel and got_record and len(statuses) >= 2:
            # Both legs are up: give the last panel update a moment, then stop.
            end = min(end, time.monotonic() + 1.0)
        time.sleep(0.05)
    panel.close()
    stack.close()
    for at, text in sorted(timeline, key=lambda e: e[0]):
        print(f"  +{(at - at_ms) / 1000:6.3f} s  {text}")
    print("Demo done." if got_panel and got_record else "Demo incomplete: see .run/log/")


if __name__ == "__main__":
    main()
