"""Runs tests/pages/browser_flows.py and browser_layout.py (the pages in a real Chromium) in a
pytest of their own.

Playwright's sync API hangs at random under eventlet's monkey-patch, which `nameko test`
applies to the whole run; the browser tests need no eventlet (their services run as
`nameko run` processes), so they run in a child pytest without it. Screenshots still land in
var/screenshots/. Run them directly with `.venv/bin/python -m pytest tests/pages/browser_flows.py`.
"""
import os
import subprocess
import sys

import pytest

from tests.browser import ROOT


def run_child_pytest(path):
    # the child runs every test of the file: the shard of `make test` that runs this one chose it
    env = {key: value for key, value in os.environ.items()
           if key not in ("TEST_SHARD", "TEST_DURATIONS_OUT")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         path], cwd=ROOT, env=env, capture_output=True, text=True, timeout=880)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, f"{summary}\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary


# the flows take 1-2 minutes alone, several on a loaded machine: more than the suite's 300 s
@pytest.mark.timeout(900)
def test_the_pages_in_a_real_browser():
    run_child_pytest("tests/pages/browser_flows.py")
