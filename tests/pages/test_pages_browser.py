"""Runs tests/pages/browser_flows.py (the pages in a real Chromium) in a pytest of its own.

Playwright's sync API hangs at random under eventlet's monkey-patch, which `nameko test`
applies to the whole run; the browser tests need no eventlet (their services run as
`nameko run` processes), so they run in a child pytest without it. Screenshots still land in
var/screenshots/. Run them directly with `.venv/bin/python -m pytest tests/pages/browser_flows.py`.
"""
import subprocess
import sys

from tests.browser import ROOT


def test_the_pages_in_a_real_browser():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "tests/pages/browser_flows.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=280)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, f"{summary}\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary
