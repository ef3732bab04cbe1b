"""The benchmark scripts of tests/bench/ run with tiny sizes, each starting its own system on
free ports (its own vhost and stores), so that a change cannot break them unnoticed.

Each test asserts that the script ends well and prints its figures, and the figures that say
something went wrong (overbooked places, honest applicants cancelled, mail lost); never a
timing: the speed figures are for a person to read.
"""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
ROOT = BENCH.parents[1]


def run_bench(script, *args, timeout=150):
    """The script's standard output, once it has exited with 0 within `timeout` seconds."""
    # a session of its own, so that a hung bench is stopped with everything it started (its
    # services and stores die with it: deploy/run.py's die_with_parent)
    proc = subprocess.Popen([sys.executable, str(BENCH / script), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} still ran after {timeout} s\n{out}\n{err[-3000:]}")
    assert proc.returncode == 0, f"{script} exited with {proc.returncode}\n{out}\n{err[-3000:]}"
    return out


def figure(out, pattern):
    """The numbers the pattern's groups match in the output, as floats (the test fails when
    the line is missing)."""
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{out}"
    return [float(group) for group in found.groups()]


NUMBER = r"(-?\d+(?:\.\d+)?)"


def test_booking_burst():
    out = run_bench("booking_burst.py", "--start", "--slots", "3", "--desks", "2",
                    "--attempts", "30", "--clients", "5")
    booked, places = figure(out, rf"^booked places\s+{NUMBER} of {NUMBER}")
    assert places == 6 and booked > 0
    assert figure(out, rf"^overbooked\s+{NUMBER}") == [0]
    figure(out, rf"^attempts/s\s+{NUMBER}")
    figure(out, rf"^latency p99\s+{NUMBER} ms")
    # distinct people: a refusal for want of a place, never one of the bounds per address,
    # per domain or per person
    refused = re.search(r"^refused\s+(.*)$", out, re.MULTILINE).group(1)
    assert "person_has_booking" not in refused and "email_has_booking" not in refused, out


def test_booking_cost():
    out = run_bench("booking_cost.py", "--slots", "3", "--desks", "2", "--seconds", "2",
                    "--clients", "4", "--idle", "1", timeout=240)
    booked, places = figure(out, rf"^booked places\s+{NUMBER} of {NUMBER}")
    assert places == 6 and booked > 0
    assert figure(out, rf"^overbooked\s+{NUMBER}") == [0]
    # bookings were confirmed, and the bus drained: the CPU figures cover all of it
    assert figure(out, r"^confirmed\s+(\d+)\s+\(bus drained: True\)")[0] > 0
    figure(out, rf"^cpu ms per booking\s+{NUMBER}")
    figure(out, rf"^idle system total\s+{NUMBER} MiB")
    for phase in ("bookings", "listings", "full-slot attempts"):
        figure(out, rf"^{phase}: system\s+{NUMBER}/s .* baseline\s+{NUMBER}/s")


def test_release_burst():
    out = run_bench("release_burst.py", "--start", "--slots", "3", "--desks", "2", "--clients", "4",
                    "--freed", "2", "--watch", "1", "--release-within", "4")
    assert figure(out, rf"^booked places\s+{NUMBER} of {NUMBER}") == [6, 6]
    assert figure(out, rf"^overbooked\s+{NUMBER}") == [0]
    assert figure(out, rf"^booked before the release: {NUMBER}") == [0]
    figure(out, rf"^first booking\s+{NUMBER} s after the release")
    assert figure(out, rf"^freed places\s+{NUMBER}") == [2]
    # a freed place is held back, never taken back at once by whoever waits for it
    assert figure(out, rf"^re-booked within 1 s of being freed: {NUMBER}") == [0]


def test_release_fairness():
    out = run_bench("release_fairness.py", "--slots", "2", "--desks", "1", "--span", "6",
                    "--settle", "8", "--think", "0.5")
    for mode in ("open", "requests"):
        for kind in ("renewal", "first_application"):
            real, invented, cancelled = figure(
                out, rf"^figures {mode} {kind}: places 2; to real people who come {NUMBER} "
                     rf"\(.*\); wasted on invented people {NUMBER} .*; advantage .*; "
                     rf"honest cancelled {NUMBER} \(target 0\)$")
            assert real + invented <= 2 and cancelled == 0, out
            if mode == "requests":
                # the register holds real people's permits and visas only: an invented
                # renewal or first application is never filed
                assert invented == 0, out


def test_fraud_latency():
    # notify and its SMTP sink beside the services fraud needs: not all of them, for the time
    out = run_bench("fraud_latency.py", "--start", "--only", "notify", "--honest", "10", "--rate", "50",
                    "--slots", "10", "--desks", "20", "--clients", "10")
    assert figure(out, rf"^{NUMBER} bookings in")[0] > 0
    # 80 bookings on 10 slots picked at random: with 10 places a slot some slot overflowed in
    # most runs, now and then under an honest booking (CI saw 9 of 10); with 20, P < 0.0003
    assert figure(out, rf"^honest bookings cancelled\s+{NUMBER} of {NUMBER}") == [0, 10], out
    # each honest person distinct: nothing refuses them
    assert re.search(r"^honest refused by reason\s+\{\}$", out, re.MULTILINE), out
    cancelled, traffickers = figure(out, rf"^trafficker bookings cancelled\s+{NUMBER} of {NUMBER}")
    assert 0 < cancelled <= traffickers
    # from the confirmation that completes the evidence (issue 22), split at the bus
    figure(out, rf"^booking_confirmed -> cancelled, from the evidence: p50 {NUMBER} ms")
    figure(out, rf"^  event on the bus -> cancellation\s+p50 {NUMBER} ms")
    figure(out, rf"^messages waiting by consumer\s+peak ")


def test_notify_throughput():
    out = run_bench("notify_throughput.py", "--messages", "5", "--outage", "2")
    assert figure(out, rf"^delivered {NUMBER} of {NUMBER}; duplicates {NUMBER}; lost {NUMBER}") == [10, 10, 0, 0]
    figure(out, rf"^messages/s \(event to SMTP accept\)\s+{NUMBER}")


def test_connection_flood():
    out = run_bench("connection_flood.py", "--connections", "50", "--requests", "10",
                    "--idle-timeout", "1", "--proxy")
    opened, failed = figure(out, rf"^flood: {NUMBER} connections opened \({NUMBER} failed\)")
    assert opened == 50 and failed == 0
    assert figure(out, rf"^flood closed by the gateway:\s+{NUMBER} of {NUMBER}") == [50, 50]
    figure(out, rf"^direct, during the flood\s+p50\s+{NUMBER} ms")
    assert re.search(r"^gateway still running:\s+True$", out, re.MULTILINE), out


def test_allocation_pass():
    out = run_bench("allocation_pass.py", "--requests", "8", "--slots", "6", "--desks", "1")
    made, expected = figure(out, rf"^offers made\s+{NUMBER} of {NUMBER}")
    assert made == expected == 8, out
    assert figure(out, rf"^requests with 2 places {NUMBER}") == [0]
    assert figure(out, rf"^places over capacity\s+{NUMBER}") == [0]
    figure(out, rf"^offers/s\s+{NUMBER}")


def test_retention_pass():
    out = run_bench("retention_pass.py", "--bookings", "300", "--due", "120", "--batch", "50")
    assert figure(out, rf"^erased\s+{NUMBER}\s+in {NUMBER} batches") == [120, 3]
    figure(out, rf"^batch time\s+median\s+{NUMBER} ms")
    figure(out, rf"^caught-up pass\s+{NUMBER} ms")
    figure(out, rf"^steady pass\s+{NUMBER} ms")
