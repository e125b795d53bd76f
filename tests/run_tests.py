#!/usr/bin/python3
"""Runs every test suite against a private stack and prints one closing line,
`N passed, N failed`. Called by `./build.sh test`, which has already built
everything, chosen free ports and set HAMRAHI_RUN_DIR to a temporary directory
(it also tears the stack down afterwards, whatever happens here).

    ./build.sh test                 everything
    ./build.sh test --no-asan       skip the sanitizer passes (unit tests, and the e2e
                                    suite again with nginx and the worker under ASan/UBSan)
    ./build.sh test --no-valgrind   skip the unit tests under valgrind
    ./build.sh test --no-fuzz       skip the libFuzzer runs (--no-unit skips them too)
    ./build.sh test -- -k watchdog  extra arguments after -- go to pytest
    ./build.sh test -- tests/e2e/test_10_hooks_auth.py   only these e2e files

Fuzzing runs each tests/fuzz target for HAMRAHI_FUZZ_SECONDS (default 60 when
CI=true, else 10) on a scratch copy of its seed corpus.
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


VALGRIND = ["valgrind", "-q", "--tool=memcheck", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99"]


def run_cmocka(binary, tally, label, wrapper=()):
    # Unit tests see no HAMRAHI_* variables: the stack's settings must not
    # leak into tests of the configuration loader.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMRAHI_")}
    proc = subprocess.run([*wrapper, binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=1200, env=env)
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


def unit_tests(root, tally, asan, valgrind):
    binaries = sorted(glob.glob(os.path.join(root, "build/tests/test_*")))
    for binary in binaries:
        run_cmocka(binary, tally, "unit")
    if valgrind:
        # a memory error or a lost block makes valgrind exit 99: a failure
        for binary in binaries:
            run_cmocka(binary, tally, "unit+valgrind", VALGRIND)
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


def fuzz_seconds():
    if os.environ.get("HAMRAHI_FUZZ_SECONDS"):
        return int(os.environ["HAMRAHI_FUZZ_SECONDS"])
    return 60 if os.environ.get("CI") == "true" else 10


def fuzz_tests(root, tmp, tally):
    """Each libFuzzer target (tests/fuzz/fuzz.mk) for a bounded time: one pass
    or fail per target. New inputs go to tmp; the seeds in the repo are only
    read."""
    proc = subprocess.run(["make", "-C", root, "-s", "fuzz"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        tally.add("fuzz build", 0, 1)
        return
    seconds = fuzz_seconds()
    for source in sorted(glob.glob(os.path.join(root, "tests/fuzz/fuzz_*.c"))):
        name = os.path.basename(source)[:-2]
        work = os.path.join(tmp, "fuzz", name)
        os.makedirs(work, exist_ok=True)
        cmd = [os.path.join(root, "build-fuzz", name), f"-max_total_time={seconds}",
               "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1",
               f"-artifact_prefix={work}/", work, os.path.join(root, "tests/fuzz/corpus", name)]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace", timeout=seconds + 120)
            ok, out = proc.returncode == 0, proc.stdout
        except subprocess.TimeoutExpired as e:
            ok, out = False, (e.stdout or b"").decode(errors="replace") + "\n(timed out)\n"
        lines = out.splitlines()
        done = [l for l in lines if l.startswith("Done ")]
        print(f"fuzz {name}: {done[-1] if done else 'no summary'}")
        if not ok:
            sys.stdout.write("\n".join(lines[-60:]) + "\n")
        tally.add(f"fuzz {name} ({seconds} s)", 1 if ok else 0, 0 if ok else 1)


def start_stack(root, tally):
    proc = subprocess.run([os.path.join(root, "build.sh"), "up"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        tally.add("stack up", 0, 1)
        return False
    return True


def pytest_suite(root, tmp, tally, name, paths, extra, env=None):
    xml = os.path.join(tmp, f"{name}.xml")
    cmd = ["/usr/bin/python3", "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *paths, *extra]
    subprocess.run(cmd, cwd=root, timeout=3600, env=env)
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


SANITIZER_RE = re.compile(r"runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer")


def sanitizer_reports(run_dir):
    """ASan/UBSan reports of the sanitized nginx and worker: the files of
    their log_path, and reports that went to stderr (the services' logs)."""
    found = []
    for path in sorted(glob.glob(os.path.join(run_dir, "log", "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        if "san-" in os.path.basename(path) and text.strip():
            found.append((path, text))
        elif SANITIZER_RE.search(text):
            start = SANITIZER_RE.search(text).start()
            found.append((path, text[max(0, start - 2000):start + 4000]))
    return found


def e2e_sanitized(root, tmp, tally, paths, extra):
    """The end-to-end suite again, on a fresh stack whose nginx module and
    worker are built with AddressSanitizer and UBSan (HAMRAHI_SANITIZE=1,
    see build.sh). A sanitizer report from any process is a failure, even
    when every test passed. The valgrind tests are left to the plain pass."""
    build = os.path.join(root, "build.sh")
    subprocess.run([build, "down"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    run_dir = os.path.join(tmp, "run-asan")
    env = {**os.environ, "HAMRAHI_SANITIZE": "1", "HAMRAHI_RUN_DIR": run_dir}
    try:
        proc = subprocess.run([build, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900, env=env)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            tally.add("e2e+asan stack up", 0, 1)
            return
        skip = ["--deselect", "tests/e2e/test_97_worker_valgrind.py",
                "--deselect", "tests/e2e/test_98_nginx_valgrind.py"]
        pytest_suite(root, tmp, tally, "e2e+asan", paths, [*skip, *extra], env=env)
    finally:
        subprocess.run([build, "down"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                       env=env)
    reports = sanitizer_reports(run_dir)
    for path, text in reports:
        print(f"===== {path}\n{text[-6000:]}")
    tally.add("sanitizer reports (nginx, worker)", 0 if reports else 1, len(reports))


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
    ap.add_argument("--no-fuzz", action="store_true")
    ap.add_argument("--no-valgrind", action="store_true")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()

    tally = Tally()
    if not args.no_unit:
        unit_tests(args.root, tally, asan=not args.no_asan, valgrind=not args.no_valgrind)
    # e2e files named after -- replace the whole tests/e2e directory
    e2e_paths = [a for a in args.pytest_args if a.startswith("tests/e2e/")]
    pytest_args = [a for a in args.pytest_args if a not in e2e_paths]
    sandbox_tests = sorted(glob.glob(os.path.join(args.root, "tests/sandbox/test_*.py")))
    if sandbox_tests:
        pytest_suite(args.root, args.tmp, tally, "sandbox", sandbox_tests, pytest_args)
    if start_stack(args.root, tally):
        pytest_suite(args.root, args.tmp, tally, "e2e", e2e_paths or ["tests/e2e"], pytest_args)
    if not args.no_asan:
        e2e_sanitized(args.root, args.tmp, tally, e2e_paths or ["tests/e2e"], pytest_args)
    # last: the ports build.sh chose stay free for a shorter time before `up`
    if not args.no_unit and not args.no_fuzz:
        fuzz_tests(args.root, args.tmp, tally)
    if tally.failed:
        show_logs(os.environ["HAMRAHI_RUN_DIR"])
        print("failed suites: " + ", ".join(tally.failures))
    print(f"{tally.passed} passed, {tally.failed} failed", flush=True)
    return 1 if tally.failed or tally.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
