"""The applicant pages in a real headless Chromium, at desk width and at a phone's 320 px.

A person books from the home page, makes a mistake and fixes it, switches to English and
cancels from the manage page. Another, for a procedure allocated by request (issue 12), files
a request with a mistake, opens the e-mail's link, confirms, gets an offer and accepts it. axe-core checks each page on the way (no serious or critical
violation); screenshots go to var/screenshots/ for people to look at.
"""
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import axe_playwright_python
import pytest
import requests

from services.common.errors import InvalidRequest
from tests.browser import CHROMIUM, CHROMIUM_ARGS, DESK, PHONE, screenshot
from tests.conftest import free_port
from tests.e2e.conftest import System
from tests.helpers import BusListener, plan, wait_until

BLOCKING = ("serious", "critical")


@pytest.fixture(scope="session")
def axe_url():
    """axe-core's script (as the pinned axe-playwright-python ships it) from a local server.

    Loaded by URL, not sent through Playwright: under eventlet's monkey-patch a message of
    several hundred kilobytes to the browser never finishes writing, and the session hangs.
    """
    port = free_port()
    folder = Path(axe_playwright_python.__file__).parent
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/axe.min.js"
    deadline = time.monotonic() + 15
    while True:
        try:
            if requests.get(url, timeout=1).ok:
                break
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(10)


class Checks:
    """What each page visited must pass. axe runs in a sibling context that bypasses the CSP
    (for the check only: the pages allow no outside script) with the person's cookies; the
    person's own page keeps the CSP, and any violation it reports fails the test."""

    def __init__(self, browser, viewport, axe_url):
        self.width = viewport["width"]
        self.axe_url = axe_url
        self.context = browser.new_context(viewport=viewport, bypass_csp=True)
        self.sibling = self.context.new_page()
        self.csp_reports = []

    def watch(self, page):
        page.on("console", lambda message: self.csp_reports.append(message.text)
                if "Content Security Policy" in message.text else None)
        return page

    def violations(self):
        """axe-core's violations on the sibling page: [(rule, impact, first targets)]."""
        self.sibling.add_script_tag(url=self.axe_url)
        return self.sibling.evaluate(
            "axe.run({resultTypes: ['violations']}).then(r => r.violations.map("
            "v => [v.id, v.impact, v.nodes.slice(0, 3).map(n => n.target.join(' '))]))")

    def visit(self, page, name, submit=None):
        """Screenshot, nothing wider than the screen, and axe on the same page (submit: the
        button to press in the sibling first, to check a form's error state)."""
        screenshot(page, f"{self.width}-{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
        self.context.add_cookies(page.context.cookies())
        self.sibling.goto(page.url)
        if submit:
            self.sibling.get_by_role("button", name=submit).click()
            self.sibling.wait_for_load_state()
        violations = self.violations()
        blocking = [v for v in violations if v[1] in BLOCKING]
        assert not blocking, f"{name}: {blocking}"
        assert not self.csp_reports, self.csp_reports
        return violations

    def close(self):
        self.context.close()


@pytest.fixture(scope="session")
def browser():
    """Playwright itself: this file runs in a pytest of its own, without eventlet (the
    suite's `browser` fixture drives a browser in another process for the eventlet tests)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser):
    """new_page(viewport=DESK) -> a page in a fresh context (its own cookies)."""
    contexts = []

    def make(viewport=DESK, **options):
        contexts.append(browser.new_context(viewport=viewport, **options))
        return contexts[-1].new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def checks(browser, axe_url):
    made = []

    def make(viewport):
        made.append(Checks(browser, viewport, axe_url))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_the_accessibility_check_sees_what_it_must_refuse(checks):
    check = checks(DESK)
    check.sibling.set_content('<html><body><form><input name="x"></form>'
                              '<p style="color:#bbb;background:#fff">pale</p></body></html>')
    found = {rule: impact for rule, impact, _ in check.violations()}
    assert found.get("label") == "critical" and found.get("color-contrast") == "serious"


def test_book_fix_a_mistake_switch_language_and_cancel_at_desk_width_and_on_a_phone(
        live_site, new_page, checks):
    # one system for both widths: starting it is most of the cost
    for viewport in (DESK, PHONE):
        book_fix_switch_and_cancel(live_site, new_page, checks(viewport), viewport)
    keyboard_and_walk_in_rule(live_site, new_page, checks(PHONE))


def book_fix_switch_and_cancel(live_site, new_page, check, viewport):
    page = check.watch(new_page(viewport=viewport))
    page.goto(live_site + "/")
    # the warning and where to report an offer, without scrolling
    warning = page.locator(".warning")
    assert warning.is_visible() and "gratuits" in warning.inner_text()
    box = page.locator(".warning a").first.bounding_box()
    assert box["y"] + box["height"] <= viewport["height"]
    check.visit(page, "01-home")

    page.get_by_role("link", name="Prendre rendez-vous").first.click()
    page.wait_for_url("**/book")
    check.visit(page, "02-procedures")
    page.get_by_role("link", name="Renouvellement de titre de séjour").click()
    page.wait_for_url("**/book/renewal")
    check.visit(page, "03-sites")
    page.get_by_role("link", name="Préfecture de l'Hérault, guichet des étrangers").click()
    page.wait_for_url("**/book/renewal/montpellier")
    check.visit(page, "04-slots")
    first_time = page.locator("a.time").first
    chosen = first_time.get_attribute("aria-label")
    first_time.click()
    page.wait_for_url(re.compile(r".*/book/renewal/montpellier/[^/]+$"))
    assert chosen.split()[-1] in page.locator(".slot-chosen").inner_text()
    check.visit(page, "05-form")

    # a mistake: no e-mail address
    page.get_by_label("Nom de famille").fill("Benali")
    page.get_by_label("Prénoms").fill("Yasmine")
    page.get_by_label("Date de naissance").fill("1988-03-14")
    page.get_by_label("Téléphone").fill("06 12 34 56 78")
    page.get_by_label("Numéro d'étranger").fill("0123456789")
    page.get_by_role("button", name="Confirmer le rendez-vous").click()
    page.wait_for_load_state()
    email = page.get_by_label("Adresse électronique")
    assert email.get_attribute("aria-invalid") == "true"
    described = email.get_attribute("aria-describedby").split()
    assert "Indiquez votre adresse électronique" in page.locator(f"#{described[0]}").inner_text()
    assert page.get_by_label("Nom de famille").input_value() == "Benali"  # the input kept
    assert page.get_by_label("Date de naissance").input_value() == "1988-03-14"
    check.visit(page, "06-form-error", submit="Confirmer le rendez-vous")

    # fixed, reaching the field from the summary's link
    page.locator(".error-summary a[href='#email']").click()
    assert page.evaluate("document.activeElement.id") == "email"
    email.fill("yasmine.benali@example.org")
    page.get_by_role("button", name="Confirmer le rendez-vous").click()
    page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
    assert "pas encore définitif" in page.locator("[role=status]").inner_text()
    reference = page.locator(".reference").inner_text()
    check.visit(page, "07-confirmation")

    # English, one click away, remembered
    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Your appointment"
    check.visit(page, "08-confirmation-en")

    # the manage page, as from the e-mail (the cookie holds the token), then cancel
    page.goto(f"{live_site}/bookings/{reference}")
    assert "token" not in page.url and page.locator("html").get_attribute("lang") == "en"
    page.get_by_role("link", name="Cancel the appointment").click()
    page.wait_for_url(f"**/bookings/{reference}/cancel")
    check.visit(page, "09-cancel-confirm")
    page.get_by_role("button", name="Yes, cancel the appointment").click()
    page.wait_for_url(f"**/bookings/{reference}")
    assert "This appointment is cancelled" in page.locator("[role=status]").inner_text()
    check.visit(page, "10-cancelled")

    # back in French, the no-free-slot page
    page.goto(f"{live_site}/book/duplicate/beziers?lang=fr")
    assert page.get_by_role("heading", level=1).inner_text() == "Aucun créneau libre pour le moment"
    check.visit(page, "11-no-slot")


def keyboard_and_walk_in_rule(live_site, new_page, check):
    """The skip link comes first and shows its focus; the walk-in rule stands above the slots."""
    page = check.watch(new_page(viewport=PHONE))
    page.goto(live_site + "/book/renewal_10y/montpellier")
    page.keyboard.press("Tab")
    focused = page.evaluate("[document.activeElement.className, document.activeElement.textContent]")
    assert focused == ["skip", "Aller au contenu"]
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    screenshot(page, "320-12-skip-link-focused")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # the walk-in rule stands above the slots (M6)
    rule = page.get_by_role("heading", name="Sans rendez-vous").bounding_box()
    first_slot = page.locator("a.time").first.bounding_box()
    assert rule["y"] < first_slot["y"]
    check.visit(page, "13-walk-in-slots")


@pytest.fixture
def request_site(config, tmp_path, web_port):
    """Gateway, slots, booking and requests as `nameko run` processes; renewals by request.
    (the gateway's base URL, an RPC proxy, a listener of request_filed: the e-mail's token)"""
    system = System(config, tmp_path)
    system.env["RELEASE_TIMER_SECONDS"] = "0.5"
    for name in ("slots", "booking", "requests", "public_gateway"):
        system.start(name)
    listener = BusListener(config["AMQP_URI"], "requests", "request_filed")
    try:
        system.wait_ready()
        system.wait_consuming("rpc-requests")
        with system.rpc() as rpc:
            rpc.requests.set_mode("renewal", "requests", by="chief")
            yield f"http://127.0.0.1:{web_port}", rpc, listener
    finally:
        listener.close()
        system.stop()


def test_request_file_confirm_and_accept_an_offer_at_desk_width_and_on_a_phone(
        request_site, new_page, checks):
    url, rpc, listener = request_site
    for index, viewport in enumerate((DESK, PHONE)):
        request_flow(url, rpc, listener, new_page, checks(viewport), viewport, index)


def request_flow(url, rpc, listener, new_page, check, viewport, index):
    page = check.watch(new_page(viewport=viewport))
    page.goto(url + "/book")
    page.get_by_role("link", name="Renouvellement de titre de séjour").click()
    page.wait_for_url("**/request/renewal")
    assert "tirage au sort" in page.locator(".callout").first.inner_text()
    check.visit(page, "r01-request-form")

    # a mistake: nothing ticked for the week
    family = ("Diallo", "Nguyen")[index]
    page.get_by_label("Nom de famille").fill(family)
    page.get_by_label("Prénoms").fill("Aminata")
    page.get_by_label("Date de naissance").fill("1990-05-02")
    page.get_by_label("Numéro d'étranger").fill(f"012345678{index}")
    page.get_by_label("Fin de validité de votre titre de séjour").fill("2030-01-31")
    page.get_by_label("Adresse électronique").fill(f"{family.lower()}@example.org")
    page.get_by_label("Préfecture de l'Hérault").check()
    page.get_by_role("button", name="Envoyer ma demande").click()
    page.wait_for_load_state()
    assert "Cochez au moins une demi-journée" in page.locator(".error-summary").inner_text()
    assert page.get_by_label("Nom de famille").input_value() == family  # the input kept
    assert page.get_by_label("Préfecture de l'Hérault").is_checked()
    check.visit(page, "r02-request-form-error", submit="Envoyer ma demande")

    # fixed from the summary's link: Tuesday mornings and Thursday afternoons
    page.locator(".error-summary a[href='#times']").click()
    assert page.evaluate("document.activeElement.id") == "times"
    page.get_by_label("Mardi matin").check()
    page.get_by_label("Jeudi après-midi").check()
    page.get_by_role("button", name="Envoyer ma demande").click()
    page.wait_for_load_state()
    reference = page.locator("#request-reference").inner_text()
    assert f"{family.lower()}@example.org" in page.locator("[role=status]").inner_text()
    check.visit(page, "r03-request-receipt")

    # the e-mail's confirmation link: the token leaves the address bar; a button confirms
    _, event = listener.wait_for(lambda t, p: p["reference"] == reference)
    page.goto(f"{url}/requests/{reference}/confirm?token={event['token']}")
    assert page.url.endswith(f"/requests/{reference}/confirm")
    check.visit(page, "r04-request-confirm")
    page.get_by_role("button", name="Confirmer ma demande").click()
    page.wait_for_url(f"**/requests/{reference}?confirmed=1")
    assert "confirmée et en attente" in page.locator("[role=status]").first.inner_text()
    assert page.get_by_label("Mardi matin").is_checked()
    check.visit(page, "r05-request-waiting")
    page.get_by_role("link", name="Retirer ma demande").click()
    check.visit(page, "r06-request-withdraw-sure")
    page.get_by_role("link", name="Non, garder ma demande").click()
    page.wait_for_url(f"**/requests/{reference}")

    # a release on a Tuesday morning: the place is offered
    day = date.today() + timedelta(days=2)
    day += timedelta(days=(1 - day.weekday()) % 7 + 7 * index)
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=["09:00-09:30"], desks=1),
                               release="schedule")
    for batch in rpc.slots.schedule_for(procedure="renewal")["batches"]:
        try:
            rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
        except InvalidRequest:
            pass
    assert wait_until(lambda: rpc.requests.get(reference, event["token"])["state"] == "offered",
                      timeout=30)
    page.reload()
    assert "Une place vous est proposée" in page.locator("[role=status]").first.inner_text()
    check.visit(page, "r07-request-offer")
    page.get_by_role("link", name="Refuser").click()
    page.wait_for_url(f"**/requests/{reference}/decline")
    check.visit(page, "r08-request-decline-sure")
    page.get_by_role("link", name="Non, revenir à ma demande").click()
    page.get_by_role("button", name="Accepter ce rendez-vous").click()
    page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
    assert "Votre rendez-vous est confirmé" in page.locator("[role=status]").inner_text()
    check.visit(page, "r09-request-booked")

    # the request's page in English
    page.goto(f"{url}/requests/{reference}?lang=en")
    assert "Appointment booked" in page.locator(".summary").inner_text()
    check.visit(page, "r10-request-booked-en")
