"""The applicant pages in a real headless Chromium, at desk width and at a phone's 320 px.

A person books from the home page, makes a mistake and fixes it, switches to English and
cancels from the manage page. Another, for a procedure allocated by request (issue 12), files
a request with a mistake, opens the e-mail's link, confirms, gets an offer and accepts it. axe-core checks each page on the way (no serious or critical
violation); screenshots go to var/screenshots/ for people to look at.
"""
import re
import subprocess
from contextlib import contextmanager
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import axe_playwright_python
import pytest
import requests

from services.common import i18n
from services.common.errors import InvalidRequest
# `browser` and `new_page`: the suite's one harness (tests/browser.py, via tests/pages/conftest.py)
from tests.browser import DESK, PHONE, focused_id, screenshot
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

    def visit(self, page, name, submit=None, fill=()):
        """Screenshot, nothing wider than the screen, and axe on the same page (submit: the
        button to press in the sibling first, to check a form's error state; fill: what to
        type there before, (selector, text) pairs, True for a box to tick)."""
        screenshot(page, f"{self.width}-{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
        self.context.add_cookies(page.context.cookies())
        self.sibling.goto(page.url)
        for selector, value in fill:
            if value is True:
                self.sibling.locator(selector).check()
            else:
                self.sibling.locator(selector).fill(value)
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
    assert focused_id(page, "email") == "email"
    email.fill("yasmine.benali@example.org")
    page.get_by_role("button", name="Confirmer le rendez-vous").click()
    page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
    assert "pas encore définitif" in page.locator("[role=status]").inner_text()
    reference = page.locator(".reference").inner_text()
    check.visit(page, "07-confirmation")

    # English, from the language selector (opened without script), remembered
    page.locator(".lang-select summary").click()
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
    assert focused_id(page, "main") == "main"
    # the walk-in rule stands above the slots (M6)
    rule = page.get_by_role("heading", name="Sans rendez-vous").bounding_box()
    first_slot = page.locator("a.time").first.bounding_box()
    assert rule["y"] < first_slot["y"]
    check.visit(page, "13-walk-in-slots")


@contextmanager
def requests_system(config, tmp_path, more=(), **env):
    """Gateway, slots, booking and requests (and `more`) as `nameko run` processes (env:
    settings of their own): an RPC proxy and a listener of request_filed (the e-mail's token)."""
    system = System(config, tmp_path)
    system.env.update(env)
    for name in ("slots", "booking", "requests", *more, "public_gateway"):
        system.start(name)
    listener = BusListener(config["AMQP_URI"], "requests", "request_filed")
    try:
        system.wait_ready()
        for name in ("requests", *more):
            system.wait_consuming(f"rpc-{name}")
        with system.rpc() as rpc:
            yield rpc, listener
    finally:
        listener.close()
        system.stop()


@pytest.fixture
def request_site(config, tmp_path, web_port):
    """Renewals by request. (the gateway's base URL, an RPC proxy, the listener)"""
    with requests_system(config, tmp_path, RELEASE_TIMER_SECONDS="0.5") as (rpc, listener):
        rpc.requests.set_mode("renewal", "requests", by="chief")
        yield f"http://127.0.0.1:{web_port}", rpc, listener


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
    assert focused_id(page, "times") == "times"
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
    offer_a_tuesday_morning(rpc, reference, event["token"], index)
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


def offer_a_tuesday_morning(rpc, reference, token, weeks):
    """A renewal place released now on a Tuesday morning (weeks on, one per request), until
    the request that asked for Tuesday mornings has it offered."""
    day = date.today() + timedelta(days=2)
    day += timedelta(days=(1 - day.weekday()) % 7 + 7 * weeks)
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=["09:00-09:30"], desks=1),
                               release="schedule")
    for batch in rpc.slots.schedule_for(procedure="renewal")["batches"]:
        try:
            rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
        except InvalidRequest:
            pass
    assert wait_until(lambda: rpc.requests.get(reference, token)["state"] == "offered",
                      timeout=30)


@pytest.fixture
def one_way_site(config, tmp_path, web_port):
    """Requests as the configured default (issue 24: nobody switched anything), and a place
    released next Wednesday afternoon for first applications that nobody asked for yet. The
    register runs, as configured by default: renewals checked against its permits, first
    applications against its long-stay visas (Okafor's visa, Kaya's 10-year card)."""
    with requests_system(config, tmp_path, more=("register",), PROCEDURE_MODE_DEFAULT="requests",
                         REGISTER_CHECKED_PROCEDURES="renewal,renewal_10y",
                         VISA_CHECKED_PROCEDURES="first_application",
                         REGISTER_TOKEN_SECRET=config["REGISTER_TOKEN_SECRET"]) as (rpc, listener):
        assert rpc.requests.modes()["first_application"] == "requests"
        end = (date.today() + timedelta(days=60)).isoformat()
        rpc.register.import_visas(
            "visa_number,family_name,given_names,birth_date,visa_kind,validity_end\n"
            f"FRA123456789,Okafor,Chidi,1991-07-14,vls_ts,{end}\n", "chief")
        rpc.register.import_register(
            "foreigner_number,family_name,given_names,birth_date,permit_kind,expiry\n"
            f"0412345678,Kaya,Ayse,1990-01-01,resident_10y,{end}\n", "chief")
        day = date.today() + timedelta(days=3)
        day += timedelta(days=(2 - day.weekday()) % 7)
        rpc.slots.create_from_plan(plan(procedure="first_application", days=1, start=day,
                                        hours=["14:00-14:30"], desks=1), release="now")
        yield f"http://127.0.0.1:{web_port}", rpc, listener


def test_one_flow_from_the_home_page_to_an_offer_booked_in_the_same_sitting_on_a_phone(
        one_way_site, new_page, checks):
    """Choose the procedure, give identity and availability, confirm from the e-mail, get the
    free place offered at once and book it: one sitting, at 320 px."""
    url, rpc, listener = one_way_site
    check = checks(PHONE)
    page = check.watch(new_page(viewport=PHONE))
    page.goto(url + "/")
    assert "tout de suite" in page.locator("ol.flow").inner_text()
    check.visit(page, "o01-home")
    page.get_by_role("main").get_by_role("link", name="Prendre rendez-vous").click()  # not the menu's
    page.wait_for_url("**/book")
    assert "Étape 1 sur 4" in page.locator(".steps").inner_text()
    check.visit(page, "o02-procedures")
    page.get_by_role("link", name="Première demande de titre de séjour").click()
    page.wait_for_url("**/request/first_application")
    assert "Étape 2 sur 4" in page.locator(".steps").inner_text()
    check.visit(page, "o03-request-form")
    page.get_by_label("Nom de famille").fill("Okafor")
    page.get_by_label("Prénoms").fill("Chidi")
    page.get_by_label("Date de naissance").fill("1991-07-14")
    page.get_by_label("Numéro de votre visa de long séjour").fill("fra 1234 5678 9")  # as copied
    page.get_by_label("Adresse électronique").fill("chidi.okafor@example.org")
    page.get_by_label("Préfecture de l'Hérault").check()
    page.get_by_label("Mercredi après-midi").check()
    page.get_by_role("button", name="Envoyer ma demande").click()
    page.wait_for_load_state()
    reference = page.locator("#request-reference").inner_text()
    assert "Étape 3 sur 4" in page.locator(".steps").inner_text()
    check.visit(page, "o04-request-receipt")

    _, event = listener.wait_for(lambda t, p: p["reference"] == reference)
    page.goto(f"{url}/requests/{reference}/confirm?token={event['token']}")
    check.visit(page, "o05-request-confirm")
    page.get_by_role("button", name="Confirmer ma demande").click()
    page.wait_for_url(f"**/requests/{reference}?confirmed=1")
    # offered at the confirmation itself: no release, no waiting, nothing reloaded
    assert "Étape 4 sur 4" in page.locator(".steps").inner_text()
    assert "proposée tout de suite" in page.locator("[role=status]").first.inner_text()
    assert "14:00" in page.locator(".summary").first.inner_text()
    check.visit(page, "o06-request-offered-at-once")
    page.get_by_role("button", name="Accepter ce rendez-vous").click()
    page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
    assert "Votre rendez-vous est confirmé" in page.locator("[role=status]").inner_text()
    check.visit(page, "o07-booked")
    for viewport in (DESK, PHONE):
        register_refusals(url, new_page, checks(viewport), viewport)


def register_refusals(url, new_page, check, viewport):
    """Issue 24's pages: a first application asks for the long-stay visa's number (its label,
    its hint, the error linked to it); a visa not found is said once, at the top, the form kept;
    in English a renewal filed for the wrong procedure links to the right one's form; in Arabic
    the visa is typed left to right, aligned with its label on the right."""
    page = check.watch(new_page(viewport=viewport))
    page.goto(url + "/request/first_application?lang=fr")
    visa = page.get_by_label("Numéro de votre visa de long séjour")
    hint = page.locator("#" + visa.get_attribute("aria-describedby").split()[-1]).inner_text()
    assert "vignette" in hint and visa.get_attribute("autocapitalize") == "characters"
    check.visit(page, "v01-first-application-form")
    person = (("#family_name", "Okafor"), ("#given_names", "Chidi"),
              ("#birth_date", "1991-07-14"), ("#email", "chidi.again@example.org"),
              ("#sites", True), ("#times-wednesday-afternoon", True))
    for selector, value in person:
        page.locator(selector).check() if value is True else page.locator(selector).fill(value)
    page.get_by_role("button", name="Envoyer ma demande").click()  # no visa number
    page.wait_for_load_state()
    assert visa.get_attribute("aria-invalid") == "true"
    assert "vignette" in page.locator("#visa_number-error").inner_text()
    page.locator(".error-summary a[href='#visa_number']").click()
    assert focused_id(page, "visa_number") == "visa_number"
    check.visit(page, "v02-visa-missing", submit="Envoyer ma demande", fill=person)

    visa.fill("FRA000000000")
    page.get_by_role("button", name="Envoyer ma demande").click()
    page.wait_for_load_state()
    summary = page.locator(".error-summary")
    assert "visa de long séjour n'a pas été trouvé" in summary.inner_text()
    assert page.locator("#family_name").input_value() == "Okafor" and visa.input_value() == "FRA000000000"
    # the three things to check, each a link to its field
    assert summary.locator("a[href='#visa_number']").count() == 1
    summary.locator("a[href='#visa_number']").click()
    assert focused_id(page, "visa_number") == "visa_number"
    check.visit(page, "v03-visa-not-found", submit="Envoyer ma demande",
                fill=person + (("#visa_number", "FRA000000000"),))

    # a 10-year card filed as an ordinary renewal, in English: the right form one link away
    page.goto(url + "/request/renewal?lang=en")
    kaya = (("#family_name", "Kaya"), ("#given_names", "Ayse"), ("#birth_date", "1990-01-01"),
            ("#foreigner_number", "0412345678"), ("#email", "ayse.kaya@example.org"),
            ("#sites", True), ("#times-monday-afternoon", True))
    for selector, value in kaya:
        page.locator(selector).check() if value is True else page.locator(selector).fill(value)
    page.get_by_role("button", name="Send my request").click()
    page.wait_for_load_state()
    assert "renewed through another procedure" in page.locator(".error-summary").inner_text()
    assert page.locator("#family_name").input_value() == "Kaya"
    check.visit(page, "v04-wrong-procedure-en", submit="Send my request", fill=kaya)
    page.get_by_role("link", name="Renewal of a 10-year resident card", exact=False).click()
    page.wait_for_url("**/request/renewal_10y")
    assert page.locator("html").get_attribute("lang") == "en"

    # Arabic: the visa field on the right, typed left to right; the refusal at the top
    page.goto(url + "/request/first_application?lang=ar")
    in_arabic(page)
    label = page.locator("label[for=visa_number]").bounding_box()
    field = page.locator("#visa_number").bounding_box()
    assert abs((label["x"] + label["width"]) - (field["x"] + field["width"])) < 2, (label, field)
    assert page.evaluate("getComputedStyle(document.getElementById('visa_number')).direction") == "ltr"
    check.visit(page, "v05-first-application-form-ar")
    for selector, value in person + (("#visa_number", "FRA000000000"),):
        page.locator(selector).check() if value is True else page.locator(selector).fill(value)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    in_arabic(page)
    assert page.locator(".error-summary a[href='#visa_number']").count() == 1
    assert page.evaluate("getComputedStyle(document.querySelector('.fr-alert'), '::before').right") == "0px"
    check.visit(page, "v06-visa-not-found-ar", submit="إرسال طلبي",
                fill=person + (("#visa_number", "FRA000000000"),))


def e_mail_link(event_type, event, base, path_part):
    """The link of the e-mail notify composes for `event` whose path has `path_part`."""
    from services.notify.compose import compose

    settings = {"public_base_url": base, "report_url": "https://report.example",
                "report_email": "r@example.fr", "mail_domain": "example.fr"}
    text = compose(event_type, event, settings)["text"]
    return next(link for link in re.findall(rf"{re.escape(base)}/\S+", text) if path_part in link)


def test_booking_in_english_from_the_e_mail_to_the_convocation_at_desk_width_and_on_a_phone(
        live_site, config, new_page, checks):
    """A person books on the English pages, sees where the e-mail went, opens its links (which
    keep English), confirms and prints the convocation: at 320 px nothing is wider than the
    screen (the long code wraps), axe finds nothing serious, at desk width too."""
    created = BusListener(config["AMQP_URI"], "booking", "booking_created")
    confirmed = BusListener(config["AMQP_URI"], "booking", "booking_confirmed")
    try:
        check = checks(PHONE)
        page = check.watch(new_page(viewport=PHONE))
        page.goto(live_site + "/?lang=en")
        page.get_by_role("link", name="Book an appointment").first.click()
        page.get_by_role("link", name="Renewal of a residence permit").click()
        page.get_by_role("link", name="Préfecture de l'Hérault, guichet des étrangers").click()
        page.locator("a.time").first.click()
        page.wait_for_url(re.compile(r".*/book/renewal/montpellier/[^/]+$"))
        assert page.get_by_label("Foreigner number").get_attribute("inputmode") == "numeric"
        page.get_by_label("Family name").fill("Okonkwo")
        page.get_by_label("Given names").fill("Chidinma Adaeze")
        page.get_by_label("Date of birth").fill("1991-07-23")
        page.get_by_label("E-mail address").fill("chidinma.okonkwo@example.org")
        page.get_by_label("Foreigner number").fill("0123456789")
        check.visit(page, "e01-form-en")
        # someone else takes the slot meanwhile: the form comes back with what was typed
        taken_meanwhile(live_site, page)
        page.get_by_role("button", name="Confirm the appointment").click()
        page.wait_for_load_state()
        assert "This slot has just been taken" in page.locator(".error-summary").inner_text()
        assert page.get_by_label("Family name").input_value() == "Okonkwo"
        assert page.get_by_label("E-mail address").input_value() == "chidinma.okonkwo@example.org"
        taken_form_checks(check, page, live_site)
        page.locator(".error-summary a[href='#slot_id']").first.click()
        assert focused_id(page, "slot_id") == "slot_id"
        page.keyboard.press("Space")  # the first time still free, from the keyboard
        assert page.locator("#slot_id").is_checked()
        page.get_by_role("button", name="Confirm the appointment").click()
        page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
        status = page.locator("[role=status]").inner_text()
        assert "chidinma.okonkwo@example.org" in status and "Open the e-mail" in status
        reference = page.locator(".reference").inner_text()
        check.visit(page, "e02-booked-en")

        # the e-mail's confirmation link, opened in the mail app's browser (no cookie): English
        _, event = created.wait_for(lambda t, p: p["reference"] == reference)
        assert event["lang"] == "en"
        mail = check.watch(new_page(viewport=PHONE))
        mail.goto(e_mail_link("booking_created", event, live_site, "/confirm?"))
        assert mail.url.endswith(f"/bookings/{reference}/confirm")
        assert mail.locator("html").get_attribute("lang") == "en"
        mail.get_by_role("button", name="Confirm my appointment").click()
        mail.wait_for_url(f"**/bookings/{reference}?confirmed=1")
        assert "Your appointment is confirmed" in mail.locator("[role=status]").inner_text()
        mail.get_by_role("link", name="Print the appointment letter").click()
        mail.wait_for_url(f"**/bookings/{reference}/convocation")
        convocation_checks(mail, check, reference, "e03-convocation")
        mail.get_by_role("link", name="Back to my appointment").first.click()
        mail.wait_for_url(f"**/bookings/{reference}")

        # the confirmed appointment's e-mail: its convocation link, at desk width
        _, event = confirmed.wait_for(lambda t, p: p["reference"] == reference)
        desk_check = checks(DESK)
        desk = desk_check.watch(new_page(viewport=DESK))
        desk.goto(e_mail_link("booking_confirmed", event, live_site, "/convocation?"))
        assert desk.url.endswith(f"/bookings/{reference}/convocation")
        convocation_checks(desk, desk_check, reference, "e04-convocation")
    finally:
        created.close()
        confirmed.close()


def convocation_checks(page, check, reference, name):
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text().startswith("Convocation")
    assert "Okonkwo" in page.locator(".convocation").inner_text()
    code = page.locator(".code code")
    assert code.inner_text().startswith(reference + ".")
    width = page.evaluate("window.innerWidth")
    for part in (code, page.locator(".qr svg")):
        box = part.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box)
    assert page.locator(".qr svg").bounding_box()["width"] >= 150  # still scannable
    assert "What to bring" in page.locator("h2").first.inner_text()
    assert page.locator(".documents li").count() >= 3
    # styled like the pages: the site's stylesheet, header and warning
    assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("Marianne")
    assert page.locator(".warning").is_visible()
    check.visit(page, name)


def taken_meanwhile(live_site, page, email="samir@example.org"):
    """Another applicant books the slot of the form `page` shows, through the JSON API."""
    slot_id = page.url.rsplit("/", 1)[1]
    taken = requests.post(live_site + "/api/bookings", timeout=30, json={
        "procedure": "renewal", "slot_id": slot_id, "family_name": "Haddad",
        "given_names": "Samir", "birth_date": "1985-01-02", "email": email,
        "foreigner_number": "0123456788"})
    assert taken.status_code == 201, taken.text


def taken_form_checks(check, page, live_site):
    """Screenshot and width of the form shown again; axe on the same state, reached in the
    CSP-free sibling the same way (a slot taken between the form and its sending)."""
    screenshot(page, f"{check.width}-e01b-slot-taken-en")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"slot taken: {overflow} px wider than the screen"
    sibling = check.sibling
    check.context.add_cookies(page.context.cookies())
    sibling.goto(live_site + "/book/renewal/montpellier")
    sibling.locator("a.time").last.click()  # not one of the times the person is offered
    sibling.wait_for_url(re.compile(r".*/book/renewal/montpellier/[^/]+$"))
    sibling.get_by_label("Family name").fill("Okonkwo")
    taken_meanwhile(live_site, sibling, email="samir.again@example.org")
    sibling.get_by_role("button", name="Confirm the appointment").click()
    sibling.wait_for_load_state()
    assert "This slot has just been taken" in sibling.locator(".error-summary").inner_text()
    blocking = [v for v in check.violations() if v[1] in BLOCKING]
    assert not blocking, f"slot taken: {blocking}"


def test_the_attestation_and_its_verify_page_at_desk_width_and_on_a_phone(
        live_site, config, new_page, checks):
    """M7: the receipt e-mail's link opens the attestation (attempts, QR, code); anyone types
    the code on the public verify page; a wrong or malformed code is said plainly."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy(config, timeout=30) as rpc:
        person = {"procedure": "duplicate", "email": "amina.diallo@example.org",
                  "foreigner_number": "0612345678"}
        first, second = (rpc.booking.record_attempt(person) for _ in range(2))
    for viewport in (DESK, PHONE):
        check = checks(viewport)
        page = check.watch(new_page(viewport=viewport))
        page.goto(f"{live_site}/attempts/{second['reference']}/attestation?token={second['token']}")
        assert page.url.endswith(f"/attempts/{second['reference']}/attestation")  # the token left
        assert first["reference"] in page.locator(".attempts").inner_text()
        assert page.locator("figure.qr svg").is_visible()
        code = page.locator("#attestation-code").inner_text()
        box = page.locator("#attestation-code").bounding_box()
        assert box["x"] + box["width"] <= viewport["width"]  # the code whole, on screen
        check.visit(page, "m01-attestation")
        page.goto(f"{page.url}?lang=en")
        assert "Record your attempts before" in page.locator(".callout").inner_text()
        check.visit(page, "m02-attestation-en")

        page.goto(f"{live_site}/attestations/verify?lang=fr")
        check.visit(page, "m03-verify-form")
        page.get_by_label("Code de vérification").fill(code.lower())
        page.get_by_role("button", name="Vérifier").click()
        page.wait_for_load_state()
        assert "Attestation valide" in page.locator("#verify-answer").inner_text()
        assert "se termine par 678" in page.locator(".summary").inner_text()
        check.visit(page, "m04-verify-valid")

        page.get_by_label("Code de vérification").fill("0000-0000-0000-0000")
        page.get_by_role("button", name="Vérifier").click()
        page.wait_for_load_state()
        assert "Aucune attestation" in page.locator("#verify-answer").inner_text()
        check.visit(page, "m05-verify-unknown")

        page.get_by_label("Code de vérification").fill("ABC")
        page.get_by_role("button", name="Vérifier").click()
        page.wait_for_load_state()
        field = page.get_by_label("Code de vérification")
        assert field.get_attribute("aria-invalid") == "true" and field.input_value() == "ABC"
        page.locator(".error-summary a[href='#code']").click()
        assert focused_id(page, "code") == "code"
        check.visit(page, "m06-verify-malformed")


def test_arabic_pages_mirror_at_desk_width_and_on_a_phone(live_site, config, new_page, checks):
    """Issue 21: the home page, the booking form (with a mistake) and the booking page in
    Arabic, right to left, at desk width and at 320 px: nothing wider than the screen, the
    warning's and the errors' bars on the right, labels and fields aligned on the right,
    what is written left to right (the reference, the e-mail typed) kept in its order; axe.
    Then the e-mail's link confirms it and the convocation opens, its page in Arabic."""
    created = BusListener(config["AMQP_URI"], "booking", "booking_created")
    try:
        for index, viewport in enumerate((DESK, PHONE)):
            arabic_booking(live_site, new_page, checks(viewport), viewport, index, created)
    finally:
        created.close()


def arabic_booking(live_site, new_page, check, viewport, index, created):
    """One booking in Arabic at one width (see the test above)."""
    page = check.watch(new_page(viewport=viewport))
    page.goto(live_site + "/?lang=ar")
    html = page.locator("html")
    assert html.get_attribute("lang") == "ar" and html.get_attribute("dir") == "rtl"
    warning = page.locator(".warning p")
    assert "المواعيد مجانية" in warning.inner_text()
    # mirrored: the button stands at the right of the content, where a line starts
    button = page.locator("main a.button, main .fr-btn").first.bounding_box()
    content = page.locator("main h1").bounding_box()
    assert abs((button["x"] + button["width"]) - (content["x"] + content["width"])) < 2, (button, content)
    assert button["x"] > content["x"] + 20, (button, content)
    assert page.locator("a[hreflang=fr]", has_text="Français").count() == 1
    check.visit(page, "ar01-home")

    page.get_by_role("link", name="حجز موعد", exact=True).first.click()
    page.wait_for_url("**/book")
    page.get_by_role("link", name="تجديد بطاقة الإقامة").click()
    page.get_by_role("link", name="Préfecture de l'Hérault, guichet des étrangers").click()
    page.wait_for_url("**/book/renewal/montpellier")
    check.visit(page, "ar02-slots")
    page.locator("a.time").first.click()
    page.wait_for_url(re.compile(r".*/book/renewal/montpellier/[^/]+$"))
    family = page.get_by_label("اسم العائلة")
    label = page.locator("label[for=family_name]").bounding_box()
    field = family.bounding_box()
    # mirrored: label and field start on the right
    assert abs((label["x"] + label["width"]) - (field["x"] + field["width"])) < 2, (label, field)
    if viewport is DESK:  # a field narrower than the line keeps to the right
        assert field["x"] > page.evaluate("window.innerWidth") / 3, field
    check.visit(page, "ar03-form")

    # one person per width: the first booking is confirmed below (one booking per person, M3)
    family.fill(["Benali", "Haddad"][index])
    page.get_by_label("الأسماء الشخصية").fill(["Yasmine", "Nour"][index])
    page.get_by_label("تاريخ الميلاد").fill(["1988-03-14", "1990-11-02"][index])
    page.get_by_label("رقم الأجنبي").fill(f"012345678{index}")
    page.get_by_role("button", name="تأكيد الموعد").click()
    page.wait_for_load_state()
    assert "صحّح هذه النقاط" in page.locator(".error-summary").inner_text()
    # the error's bar and the alert's strip stand on the right, where the Arabic line starts
    assert page.evaluate("getComputedStyle(document.querySelector('.fr-input-group--error'), '::before')"
                         ".backgroundPosition") in ("100% 0%", "100% 0px")
    assert page.evaluate("getComputedStyle(document.querySelector('.fr-alert'), '::before').right") == "0px"
    check.visit(page, "ar04-form-error", submit="تأكيد الموعد")

    email = page.get_by_label("البريد الإلكتروني")
    email.fill(f"yasmine.benali{index}@example.org")
    # typed left to right, aligned with its Arabic label
    assert page.evaluate("getComputedStyle(document.getElementById('email')).direction") == "ltr"
    page.get_by_role("button", name="تأكيد الموعد").click()
    page.wait_for_url(re.compile(r".*/bookings/RDV-[0-9A-Z]{4}-[0-9A-Z]{4}\?booked=1$"))
    assert page.get_by_role("heading", level=1).inner_text() == "موعدك"
    status = page.locator("[role=status]").inner_text()
    assert "هذا الحجز ليس نهائيًا بعد" in status
    assert f"yasmine.benali{index}@example.org" in status
    reference = page.locator(".reference")
    assert re.fullmatch(r"RDV-[0-9A-Z]{4}-[0-9A-Z]{4}", reference.inner_text())
    assert page.evaluate("getComputedStyle(document.querySelector('.reference')).direction") == "ltr"
    # the French address keeps its order: its number first, on the left of the line
    address = page.get_by_text("34 place des Martyrs de la Résistance", exact=False)
    assert address.count() == 1
    assert page.evaluate("""() => {
        const dd = [...document.querySelectorAll('.summary dd')]
            .find(d => d.textContent.includes('place des Martyrs'));
        const text = [...dd.childNodes].find(n => n.nodeType === 3 && n.textContent.includes('place des'));
        const start = text.textContent.indexOf('34 place');
        const range = document.createRange();
        range.setStart(text, start); range.setEnd(text, start + 2);
        const number = range.getBoundingClientRect();
        range.setStart(text, start + 3); range.setEnd(text, start + 8);
        return number.left < range.getBoundingClientRect().left;
    }""")
    check.visit(page, "ar05-booking")

    # the e-mail's link (Arabic, as the booking's lang), confirmed, then the convocation
    _, event = created.wait_for(lambda t, p: p["reference"] == reference.inner_text())
    assert event["lang"] == "ar"
    mail = check.watch(new_page(viewport=viewport))
    mail.goto(e_mail_link("booking_created", event, live_site, "/confirm?"))
    assert mail.locator("html").get_attribute("dir") == "rtl"
    mail.get_by_role("button", name="تأكيد موعدي").click()
    mail.wait_for_url("**?confirmed=1")
    assert "موعدك مؤكَّد." in mail.locator("[role=status]").inner_text()
    mail.get_by_role("link", name="طباعة الاستدعاء").click()
    mail.wait_for_url("**/convocation")
    assert mail.get_by_role("heading", level=1).inner_text().startswith("Convocation")
    # the letter itself (French and English, for the desk) reads left to right
    assert mail.evaluate("getComputedStyle(document.querySelector('.convocation')).direction") == "ltr"
    assert mail.evaluate("getComputedStyle(document.querySelector('.actions')).direction") == "rtl"
    assert mail.evaluate("getComputedStyle(document.querySelector('.convocation dd')).textAlign") \
        in ("start", "left")
    code = mail.locator(".code code").bounding_box()
    assert code["x"] >= 0 and code["x"] + code["width"] <= viewport["width"]
    check.visit(mail, "ar06-convocation")


def in_arabic(page):
    """The page in Arabic, right to left, its title starting on the right of its line."""
    html = page.locator("html")
    assert html.get_attribute("lang") == "ar" and html.get_attribute("dir") == "rtl", page.url
    title, text = page.evaluate("""() => {
        const h1 = document.querySelector('main h1');
        const range = document.createRange();
        range.selectNodeContents(h1);
        return [h1.getBoundingClientRect().toJSON(), range.getBoundingClientRect().toJSON()];
    }""")
    assert abs(text["right"] - title["right"]) < 2, (page.url, title, text)
    assert text["width"] < title["width"] or text["height"] > 40, (page.url, title, text)


def test_arabic_request_attempt_and_notice_pages_at_desk_width_and_on_a_phone(
        request_site, new_page, checks):
    """Issue 21, the other public pages in Arabic at desk width and at 320 px: the three
    notices, the fairness page, the partners' log-in, a failed attempt recorded (form and
    receipt) and its attestation, a request filed with a mistake, its receipt, confirmed from
    the e-mail's link, waiting, then offered a place; axe and no overflow on each."""
    url, rpc, listener = request_site
    for index, viewport in enumerate((DESK, PHONE)):
        check = checks(viewport)
        page = check.watch(new_page(viewport=viewport))
        for path, name in (("/accessibilite", "ar10-accessibility"),
                           ("/donnees-personnelles", "ar11-personal-data"),
                           ("/mentions-legales", "ar12-legal"), ("/fairness", "ar13-fairness"),
                           ("/partners/login", "ar14-partners-login")):
            assert page.goto(f"{url}{path}?lang=ar").ok, path  # not the error page
            in_arabic(page)
            check.visit(page, name)
        # the figures' labels too, in Arabic (they came from data, not the template)
        page.goto(f"{url}/fairness")
        labels = page.locator(".figures dt, .fairness-section h2").all_inner_texts()
        assert len(labels) > 8 and all(i18n.is_arabic(label) for label in labels), labels
        arabic_attempt(url, rpc, page, check, index)
        arabic_request(url, rpc, listener, page, check, index)


def arabic_attempt(url, rpc, page, check, index):
    """A failed attempt recorded in Arabic (no duplicate slot is free), then its attestation."""
    page.goto(f"{url}/attempts/new?procedure=duplicate&lang=ar")
    in_arabic(page)
    check.visit(page, "ar20-attempt-form")
    email = f"karim.haddad{index}@example.org"
    page.locator("#email").fill(email)
    page.locator("#foreigner_number").fill(f"061234567{index}")
    assert page.evaluate("getComputedStyle(document.getElementById('email')).direction") == "ltr"
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    in_arabic(page)
    assert email in page.locator("main").inner_text()
    check.visit(page, "ar21-attempt-receipt")
    recorded = rpc.booking.record_attempt({"procedure": "duplicate", "email": email,
                                           "foreigner_number": f"061234567{index}"})
    page.goto(f"{url}/attempts/{recorded['reference']}/attestation?token={recorded['token']}")
    in_arabic(page)
    box = page.locator("#attestation-code").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]
    check.visit(page, "ar22-attestation")


def boxes_on_the_right(page, selector):
    """A checkbox in Arabic: the box drawn on the right of its label, where the line starts,
    and the real (transparent) input under it, so a tap on the box ticks it."""
    drawn, text, field = page.evaluate("""selector => {
        const input = document.querySelector(selector);
        const label = document.querySelector(`label[for="${input.id}"]`);
        const before = getComputedStyle(label, '::before');
        const box = label.getBoundingClientRect();
        const right = box.right - parseFloat(before.right);
        return [[right - parseFloat(before.width), right], box.toJSON(),
                input.getBoundingClientRect().toJSON()];
    }""", selector)
    assert drawn[0] >= text["right"] - 1, (selector, drawn, text)
    assert abs(field["left"] - drawn[0]) < 2 and abs(field["right"] - drawn[1]) < 2, (selector, drawn, field)


def arabic_request(url, rpc, listener, page, check, index):
    """A renewal request in Arabic: a mistake, the receipt, confirmed, waiting, offered."""
    page.goto(f"{url}/request/renewal?lang=ar")
    in_arabic(page)
    check.visit(page, "ar30-request-form")
    family = ("Benali", "Haddad")[index]
    for field, value in (("family_name", family), ("given_names", "Yasmine"),
                         ("birth_date", "1988-03-14"), ("foreigner_number", f"098765432{index}"),
                         ("email", f"{family.lower()}@example.org")):
        page.locator(f"#{field}").fill(value)
    boxes_on_the_right(page, "#sites")
    page.locator("#sites").click()  # on the box itself, as a person taps it
    assert page.locator("#sites").is_checked()
    page.locator("main form button[type=submit]").click()  # no half-day ticked
    page.wait_for_load_state()
    in_arabic(page)
    assert page.locator(".error-summary a[href='#times']").count() == 1
    assert page.evaluate("getComputedStyle(document.querySelector('.fr-alert'), '::before').right") == "0px"
    check.visit(page, "ar31-request-form-error", submit="إرسال طلبي")
    boxes_on_the_right(page, "#times-tuesday-morning")
    page.locator("#times-tuesday-morning").click()
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    in_arabic(page)
    reference = page.locator("#request-reference")
    assert page.evaluate("getComputedStyle(document.getElementById('request-reference')).direction") == "ltr"
    check.visit(page, "ar32-request-receipt")

    _, event = listener.wait_for(lambda t, p: p["reference"] == reference.inner_text())
    reference = reference.inner_text()
    page.goto(f"{url}/requests/{reference}/confirm?token={event['token']}")
    in_arabic(page)
    check.visit(page, "ar33-request-confirm")
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(f"**/requests/{reference}?confirmed=1")
    in_arabic(page)
    assert page.locator("#times-tuesday-morning").is_checked()
    check.visit(page, "ar34-request-waiting")

    offer_a_tuesday_morning(rpc, reference, event["token"], index)
    page.reload()
    in_arabic(page)
    assert page.locator(f"a[href='/requests/{reference}/decline']").count() == 1
    check.visit(page, "ar35-request-offer")
