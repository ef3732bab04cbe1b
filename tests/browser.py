"""A real headless Chromium for page tests (DESIGN.md section 10).

Debian's `chromium` (installed by `make test` through deploy/ensure_test_tools.sh) driven by
Playwright for Python through `executable_path`: Playwright's own browser download cannot work
on these machines. Screenshots go to var/screenshots/ (git-ignored) for people to look at.

The one harness for every browser test. Under `nameko test`'s eventlet monkey-patching,
Playwright's sync API hangs the test process, so there it runs in a process of its own
(tests/browser_worker.py): a page forwards Playwright page calls (`page.goto(...)`,
`page.keyboard.type(...)`, `page.url`...) over a pipe, and adds `page.console_messages()`
(what the page logged: CSP violations show there). In a plain pytest (tests/pages/
browser_flows.py, run in a child process by tests/pages/test_pages_browser.py), the same
fixtures give Playwright's own objects.
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


def launch(playwright):
    """Debian's Chromium, headless, through Playwright: the worker's and the plain pytest's."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def _under_eventlet():
    from eventlet import patcher  # importing patches nothing; `nameko test` has, or not
    return patcher.is_monkey_patched("socket")


class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser_worker"],
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
    """Under eventlet, the worker process driving the browser; otherwise Playwright's Browser."""
    if _under_eventlet():
        worker = _Worker()
        yield worker
        worker.close()
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser):
    """new_page(viewport=DESK, **context options) -> a page in a fresh context (own cookies)."""

    pages = []

    def make(viewport=DESK, **options):
        if isinstance(browser, _Worker):
            page = RemotePage(browser, browser.call(None, "new_page", viewport=viewport, **options))
        else:
            page = browser.new_context(viewport=viewport, **options).new_page()
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.context.close()


def screenshot(page, name):
    """Save a full-page screenshot as var/screenshots/<name>.png; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def focused_id(page, expected, timeout=5000):
    """The focused element's id, once it is `expected` or after `timeout` ms: Chromium applies
    `autofocus` at a rendering step after the load event, later on a loaded machine."""
    try:
        page.wait_for_function(
            "id => document.activeElement && document.activeElement.id === id", arg=expected, timeout=timeout)
    except Exception:  # timed out: the assertion that follows says what has the focus instead
        pass
    return page.evaluate("document.activeElement ? document.activeElement.id : null")
