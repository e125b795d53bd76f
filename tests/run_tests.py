#!/usr/bin/python3
"""Runs every test suite against a private stack and prints one closing line,
`N passed, N failed`. Called by `./build.sh test`, which has already built
everything, chosen free ports and set HAMRAHI_RUN_DIR to a temporary directory
(it also tears the stack down afterwards, whatever happens here).

    ./build.sh test                 everything
    ./build.sh test --no-asan       skip the sanitizer rebuild of the unit tests
    ./build.sh test -- -k watchdog  extra arguments after -- go to pytest
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

PASSED_RE = re.compile(r"^\[  PASSED  \] (\d+) test")
FAILED_RE = re.compile(r"^\[  FAILED  \] (\d+) test")


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def add(self, suite, passed, failed):
        self.passed += passed
        self.failed += failed
        if failed:
            self.failures.append(suite)
        print(f"--- {suite}: {passed} passed, {failed} failed", flush=True)


def run_cmocka(binary, tally, label):
    # Unit tests see no HAMRAHI_* variables: the stack's settings must not
    # leak into tests of the configuration loader.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMRAHI_")}
    proc = subprocess.run([binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, env=env)
    sys.stdout.write(proc.stdout)
    passed = failed = 0
    for line in proc.stdout.splitlines():
        if m := PASSED_RE.match(line):
            passed = int(m.group(1))
        elif m := FAILED_RE.match(line):
            failed = int(m.group(1))
    if proc.returncode != 0 and failed == 0:
        failed = 1  # crashed or a sanitizer stopped it before the summary
    tally.add(f"{label} {os.path.basename(binary)}", passed, failed)


def unit_tests(root, tally, asan):
    for binary in sorted(glob.glob(os.path.join(root, "build/tests/test_*"))):
        run_cmocka(binary, tally, "unit")
    if not asan:
        return
    proc = subprocess.run(["make", "-C", root, "-s", "-j2", "asan"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        tally.add("asan build", 0, 1)
        return
    env_opts = "detect_leaks=1:abort_on_error=0"
    os.environ.setdefault("ASAN_OPTIONS", env_opts)
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for binary in sorted(glob.glob(os.path.join(root, "build-asan/tests/test_*"))):
        run_cmocka(binary, tally, "unit+asan")


def start_stack(root, tally):
    proc = subprocess.run([os.path.join(root, "build.sh"), "up"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        tally.add("stack up", 0, 1)
        return False
    return True


def pytest_suite(root, tmp, tally, name, paths, extra):
    xml = os.path.join(tmp, f"{name}.xml")
    cmd = ["/usr/bin/python3", "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *paths, *extra]
    subprocess.run(cmd, cwd=root, timeout=3600)
    if not os.path.exists(xml):
        tally.add(name, 0, 1)
        return
    passed = failed = 0
    for case in ET.parse(xml).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
    tally.add(name, passed, failed)


def show_logs(run_dir):
    for name in ("worker.log", "worker-2.log", "nginx-error.log", "sandbox.log"):
        path = os.path.join(run_dir, "log", name)
        if os.path.exists(path):
            print(f"===== last lines of {name}")
            with open(path, errors="replace") as f:
                sys.stdout.writelines(f.readlines()[-60:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--no-asan", action="store_true")
    ap.add_argument("--no-unit", action="store_true")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()

    tally = Tally()
    if not args.no_unit:
        unit_tests(args.root, tally, asan=not args.no_asan)
    sandbox_tests = sorted(glob.glob(os.path.join(args.root, "tests/sandbox/test_*.py")))
    if sandbox_tests:
        pytest_suite(args.root, args.tmp, tally, "sandbox", sandbox_tests, args.pytest_args)
    if start_stack(args.root, tally):
        pytest_suite(args.root, args.tmp, tally, "e2e", ["tests/e2e"], args.pytest_args)
    if tally.failed:
        show_logs(os.environ["HAMRAHI_RUN_DIR"])
        print("failed suites: " + ", ".join(tally.failures))
    print(f"{tally.passed} passed, {tally.failed} failed", flush=True)
    return 1 if tally.failed or tally.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
