"""No full phone number in any log file of the run (DESIGN.md section 5: logs
show only the last 4 digits). Named to run after the other telephony tests, so
that their calls, bridges and escalations have been logged by then."""

import os
import re

# E.164 numbers of the run (+1555 and seven digits), also URL-encoded or
# without the plus sign.
PHONE = re.compile(r"(?:\+|%2B|\b)1555\d{7}\b", re.IGNORECASE)


def test_no_full_phone_number_in_any_log_file(stack):
    log_dir = os.path.join(stack.env["HAMRAHI_RUN_DIR"], "log")
    scanned, leaks = [], []
    for base, _, files in os.walk(log_dir):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                text = f.read().decode(errors="replace")
            scanned.append(name)
            for lineno, line in enumerate(text.splitlines(), 1):
                if PHONE.search(line):
                    leaks.append(f"{name}:{lineno}: {line[:200]}")
    print(f"scanned {len(scanned)} log files: {', '.join(sorted(scanned))}")
    assert "worker.log" in scanned and "sandbox.log" in scanned
    with open(os.path.join(log_dir, "worker.log")) as f:
        assert "***" in f.read(), "the run logged no (masked) number at all"
    assert not leaks, "\n".join(leaks[:20])
