"""Run the suite as TEST_JOBS shards at once (`make test`), each a plain `nameko test` process.

Most of the suite's wall time is waiting (services starting, RabbitMQ vhosts, timers), so a few
shards side by side use the 2 cores that one run leaves idle. Shards are whole processes rather
than pytest-xdist workers: nameko needs eventlet's monkey patch applied before pytest starts,
which `nameko test` does and an xdist worker would not. Every test already has its own vhost,
database prefix and free ports, and each shard starts its own MongoDB stand-in.

Which shard runs a test is decided in tests/conftest.py (`pytest_collection_modifyitems`), a
whole file per shard, so that a file's session fixtures (the browser) start once, balanced by
each file's measured seconds (tests/durations.json).

    python -m tests.parallel [--record-durations] [pytest arguments...]

--record-durations: each shard adds up the seconds of each file's tests, and tests/durations.json
is updated with them at the end (files not run keep their record). Record on a whole run of an
otherwise idle machine, and commit the file: that is what balances the next runs' shards.

Prints each shard's output as it ends, then one closing line `N passed, N failed, N skipped`
for the whole run; exits non-zero if any shard failed.

A test that failed in a shard is run once more, alone, after the shards (TEST_RERUNS=0 turns this
off). Many tests here start real processes and wait on real timers with 2 cores shared by three
shards; a wait that ran out on a loaded machine is not a fault of the code, while a fault shows
again on the second run. The run still fails when the second run fails; when it passes, the test
is named under "FLAKY" in the closing lines and appended to var/flaky-tests.log, to be mended.
A test that hangs past its pytest-timeout ends its whole shard (the timeout's thread method, the
one eventlet leaves it): that test is run again the same way, and the tests its shard never
reached are run then (tests/progress.py records which they are).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / "tests" / "durations.json"
RECORD = "--record-durations"
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
# pytest's exit code when a shard was given no test (a filter left it nothing): not a failure
NO_TESTS = 5
# pytest's short summary: "FAILED tests/x.py::test_y[param] - AssertionError: ..."
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)")
FLAKY_LOG = Path(os.environ.get("TEST_FLAKY_LOG", ROOT / "var" / "flaky-tests.log"))


# more failures than this is not a loaded machine: no second run
MAX_RERUNS = 5


def reruns_allowed():
    return os.environ.get("TEST_RERUNS", "1") != "0"


def with_root_on_path(env=None):
    """The environment with the project importable: `-p tests.progress` is loaded before any
    conftest puts the project's folder on sys.path."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def jobs():
    return max(1, int(os.environ.get("TEST_JOBS", "3")))


def summary_counts(output):
    """The counts of pytest's closing line (the last line that names any), by outcome."""
    for line in reversed(output.splitlines()):
        found = COUNTS.findall(line)
        if found and (" in " in line or "no tests ran" in line):
            counts = {}
            for number, outcome in found:
                outcome = "errors" if outcome.startswith("error") else outcome
                counts[outcome] = counts.get(outcome, 0) + int(number)
            return counts
    return {}


def failed_tests(output):
    """The node ids of the tests a shard's short summary names as failed or in error."""
    ids = []
    for line in output.splitlines():
        found = FAILED_LINE.match(line)
        if found and found.group(1) not in ids:
            ids.append(found.group(1))
    return ids


def excusable(returncode, output, named):
    """A shard whose failures may be run again: pytest's "some tests failed" (exit 1) after
    running them all (no -x stop, no interruption), each failure and error named once."""
    if returncode != 1 or not named or "Interrupted" in output or "stopping after" in output:
        return False
    counts = summary_counts(output)
    return counts.get("failed", 0) + counts.get("errors", 0) == len(named)


def progress_of(path):
    """(hung, unrun) from a shard's TEST_PROGRESS_OUT: the tests it started and never ended,
    and those it collected and never started."""
    collected, started, ended = [], [], set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return [], []
    for line in lines:
        kind, _, nodeid = line.partition(" ")
        {"collected": collected.append, "start": started.append, "end": ended.add}.get(
            kind, lambda _: None)(nodeid)
    begun = set(started)
    return [n for n in started if n not in ended], [n for n in collected if n not in begun]


def rerun(command, ids, unrun=()):
    """Run the tests that failed (or hung) once more, and those their shard never reached, in
    one process: (True when they all pass, its closing counts)."""
    print(f"\n===== a second run of the {len(ids)} test(s) that failed"
          + (f", with the {len(unrun)} their shard never ran" if unrun else "") + " =====",
          flush=True)
    proc = subprocess.run([*command, *ids, *unrun], cwd=ROOT, env=with_root_on_path(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, flush=True)
    return proc.returncode == 0, summary_counts(proc.stdout)


def log_flaky(ids):
    FLAKY_LOG.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(FLAKY_LOG, "a") as log:
        log.writelines(f"{stamp} {i}\n" for i in ids)


def merged_durations(recorded, measured):
    """The record updated with this run's {file: seconds} (rounded), sorted by file."""
    merged = dict(recorded, **{f: round(s, 1) for f, s in measured.items()})
    return {f: merged[f] for f in sorted(merged)}


def record_durations(outputs):
    """Write tests/durations.json from the shards' TEST_DURATIONS_OUT files."""
    measured = {}
    for out in outputs:
        try:
            measured.update(json.loads(Path(out).read_text()))
        except (OSError, ValueError):
            print(f"no durations from {out}: that shard ended before writing them")
    try:
        recorded = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        recorded = {}
    DURATIONS.write_text(json.dumps(merged_durations(recorded, measured), indent=1) + "\n")
    print(f"durations of {len(measured)} files written to {DURATIONS.relative_to(ROOT)}")


def main(args):
    record = RECORD in args
    args = [a for a in args if a != RECORD]
    n = jobs()
    nameko = str(Path(sys.executable).parent / "nameko")
    command = [nameko, "test", "-p", "tests.progress", *args]
    logs = Path(tempfile.mkdtemp(prefix="test-shards-"))
    outputs = [logs / f"durations-{i}.json" for i in range(n)] if record else []
    if n == 1:
        env = dict(os.environ, TEST_DURATIONS_OUT=str(outputs[0])) if record else None
        code = subprocess.call(command, cwd=ROOT, env=with_root_on_path(env))
        if record:
            record_durations(outputs)
        return code
    started = time.monotonic()
    shards = []
    for i in range(n):
        log = open(logs / f"shard-{i}.log", "w+")
        env = with_root_on_path(dict(os.environ, TEST_SHARD=f"{i}/{n}",
                                     TEST_PROGRESS_OUT=str(logs / f"progress-{i}.txt")))
        if record:
            env["TEST_DURATIONS_OUT"] = str(outputs[i])
        shards.append((i, log, subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                               stderr=subprocess.STDOUT)))
    print(f"running the suite as {n} shards (TEST_JOBS); their output: {logs}", flush=True)
    totals, failed, failed_ids, unrun, unnamed = {}, [], [], [], False
    pending = list(shards)
    while pending:
        for shard in list(pending):
            i, log, proc = shard
            if proc.poll() is None:
                continue
            pending.remove(shard)
            log.seek(0)
            output = log.read()
            log.close()
            took = time.monotonic() - started
            print(f"\n===== shard {i + 1}/{n} (exit {proc.returncode}, {took:.0f} s) =====\n{output}",
                  flush=True)
            for outcome, number in summary_counts(output).items():
                totals[outcome] = totals.get(outcome, 0) + number
            if proc.returncode not in (0, NO_TESTS):
                failed.append(i + 1)
                named = failed_tests(output)
                hung, never_ran = progress_of(logs / f"progress-{i}.txt")
                if hung and "Timeout" in output:
                    # pytest-timeout ended the shard in the middle of a test: that one is run
                    # again like a failure, and those after it for the first time
                    failed_ids.extend(named + hung)
                    unrun.extend(never_ran)
                else:
                    failed_ids.extend(named)
                    unnamed = unnamed or not excusable(proc.returncode, output, named)
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    if record:
        record_durations(outputs)
    flaky = []
    # a shard that crashed, stopped early, or failed without naming each failure is not rerun
    if failed and not unnamed and len(failed_ids) <= MAX_RERUNS and reruns_allowed():
        passed, counts = rerun(command, failed_ids, unrun)
        if passed:
            flaky, failed = failed_ids, []
            totals["passed"] = totals.get("passed", 0) + counts.get("passed", 0)
            totals["skipped"] = totals.get("skipped", 0) + counts.get("skipped", 0)
            totals["failed"], totals["errors"] = 0, 0
            log_flaky(flaky)
        elapsed = time.monotonic() - started
    if failed:
        print(f"shards that failed: {', '.join(map(str, failed))}")
    if flaky:
        print("FLAKY (failed in their shard, passed when run again; logged in "
              f"{FLAKY_LOG}):")
        for i in flaky:
            print(f"  {i}")
    print(f"whole suite, {n} shards, {elapsed:.0f} s:")
    # the plain closing line CI reads, for the whole run rather than the last shard
    line = f"{totals.get('passed', 0)} passed, {totals.get('failed', 0) + totals.get('errors', 0)} failed"
    if totals.get("skipped"):
        line += f", {totals['skipped']} skipped"
    print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
