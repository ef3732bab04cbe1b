"""Playwright in a process of its own, driven over a pipe (tests/browser.py starts it and
launches the browser the same way in both).

`nameko test` monkey-patches the test process with eventlet, and Playwright's sync API then
hangs: it runs its own asyncio loop, which blocks eventlet's hub (so the gateway under test,
in the same process, never answers the browser either). This plain-Python process runs the
browser; the test process sends it one JSON line per call and waits on the pipe, which yields
to the hub meanwhile.

Request: {"page": id or null, "call": "dotted.path", "args": [...], "kwargs": {...}}
Answer: {"ok": value} or {"error": text}. Calls on no page: "new_page" (context options).
"""
import json
import sys

from playwright.sync_api import sync_playwright

from tests.browser import launch


def main():
    pages, consoles = {}, {}
    with sync_playwright() as playwright:
        browser = launch(playwright)
        for line in sys.stdin:
            request = json.loads(line)
            try:
                if request["page"] is None and request["call"] == "new_page":
                    page = browser.new_context(**request["kwargs"]).new_page()
                    page_id = len(pages) + 1
                    pages[page_id], consoles[page_id] = page, []
                    page.on("console", lambda m, log=consoles[page_id]: log.append(
                        {"type": m.type, "text": m.text}))
                    result = page_id
                elif request["call"] == "console_messages":
                    result = consoles[request["page"]]
                else:
                    target = pages[request["page"]]
                    *path, name = request["call"].split(".")
                    for part in path:
                        target = getattr(target, part)
                    attribute = getattr(target, name)
                    result = attribute(*request["args"], **request["kwargs"]) \
                        if callable(attribute) else attribute
                answer = {"ok": result if isinstance(result, (str, int, float, bool, list, dict,
                                                              type(None))) else None}
            except Exception as exc:  # reported to the test, which raises it
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        browser.close()


if __name__ == "__main__":
    main()
