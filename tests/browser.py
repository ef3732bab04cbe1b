"""A real headless Chromium for page tests (DESIGN.md section 10).

Debian's `chromium` (installed by `make test` through deploy/ensure_test_tools.sh) driven by
Playwright for Python through `executable_path`: Playwright's own browser download cannot work
on these machines. Screenshots go to var/screenshots/ (git-ignored) for people to look at.

Playwright runs in a process of its own (tests/browser_worker.py): under `nameko test`'s
eventlet monkey-patching its sync API hangs the test process. A page here forwards Playwright
page calls (`page.goto(...)`, `page.keyboard.type(...)`, `page.url`...) over a pipe, and adds
`page.console_messages()` (what the page logged: CSP violations show there).
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# without the background-networking flags Chromium keeps trying hosts this machine cannot reach
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 320, "height": 640}
DESK = {"width": 1280, "height": 900}


class BrowserError(AssertionError):
    pass


class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser_worker", CHROMIUM, *CHROMIUM_ARGS],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, page, call, *args, **kwargs):
        self.proc.stdin.write(json.dumps({"page": page, "call": call, "args": args,
                                          "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BrowserError("the browser process stopped")
        answer = json.loads(line)
        if "error" in answer:
            raise BrowserError(answer["error"])
        return answer["ok"]

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Remote:
    """A Playwright object in the worker: attribute access builds the path, a call sends it."""

    def __init__(self, worker, page_id, path=""):
        self._worker, self._page, self._path = worker, page_id, path

    def __getattr__(self, name):
        return _Remote(self._worker, self._page, f"{self._path}.{name}" if self._path else name)

    def __call__(self, *args, **kwargs):
        return self._worker.call(self._page, self._path, *args, **kwargs)


class RemotePage(_Remote):
    @property
    def url(self):
        return self._worker.call(self._page, "url")


@pytest.fixture(scope="session")
def browser():
    worker = _Worker()
    yield worker
    worker.close()


@pytest.fixture
def new_page(browser):
    """new_page(viewport=DESK, **context options) -> a page in a fresh context (own cookies)."""

    pages = []

    def make(viewport=DESK, **options):
        pages.append(RemotePage(browser, browser.call(None, "new_page", viewport=viewport, **options)))
        return pages[-1]

    yield make
    for page in pages:
        page.context.close()


def screenshot(page, name):
    """Save a full-page screenshot as var/screenshots/<name>.png; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path
