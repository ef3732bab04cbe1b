"""The counter in a real headless Chromium: log in, day view, check in by the code, mismatch.

Screenshots land in var/screenshots/ (git-ignored), at desk width and at 320 px.
"""
import pytest

from tests.browser import DESK, PHONE, browser, focused_id, new_page, screenshot  # noqa: F401 (fixtures)
from tests.integration.conftest import PASSWORD


def open_logged_in(new_page, counter, viewport, username="agent"):
    page = new_page(viewport=viewport)
    page.goto(counter.http.base + "/day")
    assert page.url.endswith("/login")
    assert focused_id(page, "username") == "username"
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/day")
    return page


def csp_problems(page):
    return [m["text"] for m in page.console_messages() if "Content Security Policy" in m["text"]]


def fits(page):
    """Nothing wider than the window (no sideways scrolling at 320 px); else what is too wide."""
    too_wide = page.evaluate("""Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        // headings kept for screen readers only, clipped to 1 px, take no room
        .filter(e => !(e.closest('thead') && e.closest('thead').getBoundingClientRect().width <= 1))
        .map(e => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 40))""")
    assert not too_wide, too_wide
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def scan(page, code, family_name, given_names):
    """As at the desk, one page per arrival: the agent types the names read on the document,
    then the scanner types the code and Enter; the outcome shows above the next person's form."""
    if not page.url.endswith("/checkin"):
        page.click("text=Enregistrer")
        page.wait_for_url("**/checkin")
    assert focused_id(page, "family_name") == "family_name"
    page.keyboard.type(family_name)
    page.keyboard.press("Tab")
    page.keyboard.type(given_names)
    page.keyboard.press("Tab")
    assert focused_id(page, "code") == "code"
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    page.wait_for_selector("#outcome h1")


@pytest.mark.parametrize("viewport, name", [(DESK, "desk"), (PHONE, "320")])
def test_the_counter_in_a_browser(counter, new_page, viewport, name):
    honest = counter.book(family_name="Benali", given_names="Yasmine")
    resold = counter.book(family_name="Martin", given_names="Paul")
    page = open_logged_in(new_page, counter, viewport)
    screenshot(page, f"admin-day-{name}")
    page.goto(counter.http.base + f"/day?date={counter.day}")
    assert honest["reference"] in page.inner_text("table") and "Attendu" in page.inner_text("table")
    assert fits(page)
    screenshot(page, f"admin-day-{name}")

    scan(page, honest["code"], "BENALI", "yasmine")
    assert "Enregistré" in page.inner_text("#outcome h1")
    assert page.url.endswith("/checkin")  # the next person's form is on the same page
    assert fits(page)
    screenshot(page, f"admin-checked-in-{name}")

    scan(page, resold["code"], "Haddad", "Karim")
    assert "relisez la pièce" in page.inner_text("#outcome h1")  # a first look cancels nothing
    compare = page.inner_text("table.compare")
    assert "Martin" in compare and "Haddad" in compare and "Karim" in compare
    assert fits(page)
    screenshot(page, f"admin-names-differ-{name}")
    page.click("#confirm-mismatch button")  # the agent's second, explicit decision
    page.wait_for_selector("text=rendez-vous annulé")
    assert fits(page)
    screenshot(page, f"admin-mismatch-{name}")

    page.goto(counter.http.base + f"/day?date={counter.day}")
    text = page.inner_text("table")
    assert "Reçu" in text and "nom différent de la pièce d'identité" in text
    screenshot(page, f"admin-day-after-{name}")
    assert csp_problems(page) == []


def test_supervisor_pages_in_a_browser(counter, new_page):
    page = open_logged_in(new_page, counter, DESK, "chief")
    page.click("text=Journal")
    page.wait_for_url("**/audit")
    assert "connexion" in page.inner_text("table")  # the action's label, not its code
    screenshot(page, "admin-audit-desk")
    page.click("text=Comptes")
    page.fill("#username", "new.agent")
    page.fill("#password", "short")
    page.evaluate("document.getElementById('password').removeAttribute('minlength')")
    page.click("button[value=create]")
    assert "12" in page.inner_text("main")  # the form again, with the reason
    page.fill("#username", "new.agent")
    page.fill("#password", "a long enough passphrase")
    page.click("button[value=create]")
    page.wait_for_selector("text=new.agent")
    screenshot(page, "admin-accounts-desk")
    page.click("text=Sans rendez-vous")
    assert "sauf le mercredi" in page.inner_text("main")
    screenshot(page, "admin-walk-in-desk")
    assert csp_problems(page) == []
