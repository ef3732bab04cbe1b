"""The State design system's look (DSFR) in a real headless Chromium, at desk width and 320 px.

Home, the booking form, a booking's page, the fairness page and the three notices: each is
screenshot (var/screenshots/layout-*), nothing is wider than the screen, axe finds nothing
serious, every request the browser makes goes to the gateway itself (no outside font, style or
script), the DSFR's stylesheet and fonts are applied, and the footer links to the three notices.
The language selector opens and switches without JavaScript. Run through
tests/pages/test_pages_browser.py (a plain pytest, without eventlet), or directly:
`.venv/bin/python -m pytest tests/pages/browser_layout.py`.
"""
import re
from urllib.parse import urlsplit

import requests

from tests.browser import DESK, PHONE, screenshot
# the accessibility check and its axe-core server, shared with the flows
from tests.pages.browser_flows import axe_url, checks  # noqa: F401  (fixtures)
from tests.pages.conftest import FORM

NOTICES = {"/accessibilite": "Déclaration d'accessibilité",
           "/donnees-personnelles": "Données personnelles",
           "/mentions-legales": "Mentions légales"}


def booked(live_site):
    """A booking made through the JSON API: (its page's e-mail link, its reference)."""
    slots = requests.get(live_site + "/api/slots", params={"procedure": "renewal"},
                         timeout=30).json()["slots"]
    created = requests.post(live_site + "/api/bookings", timeout=30, json=dict(
        FORM, procedure="renewal", slot_id=slots[-1]["id"]))
    assert created.status_code == 201, created.text
    body = created.json()
    return f"{live_site}/bookings/{body['reference']}?token={body['token']}", body["reference"]


def watch_requests(page):
    """Every URL the page asks for, from now on (fonts and icons included)."""
    asked = []
    page.on("request", lambda request: asked.append(request.url))
    return asked


def layout_checks(page, live_site, check, name, asked):
    """What every page must show and do, then screenshot, width and axe (check.visit)."""
    origin = urlsplit(live_site).netloc
    page.wait_for_load_state("networkidle")
    outside = [url for url in asked if urlsplit(url).scheme in ("http", "https")
               and urlsplit(url).netloc != origin]
    assert not outside, f"{name}: loaded from outside: {outside}"
    assert any(url.endswith("/static/dsfr/dsfr.min.css") for url in asked), name
    # the DSFR is applied: its typeface, loaded from here
    assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("Marianne")
    assert page.evaluate("document.fonts.check('1rem Marianne')")
    assert page.locator(".fr-header .fr-logo").is_visible()
    assert page.locator(".fr-header__service-title").is_visible()
    assert page.locator(".warning").is_visible()
    footer = page.locator("footer")
    for path in NOTICES:
        assert footer.locator(f"a[href='{path}']").count() == 1, (name, path)
    # the menu and the language selector are there on a phone too, without the DSFR's script
    assert page.locator(".site-menu a[href='/fairness']").is_visible(), name
    assert page.locator(".lang-select summary").is_visible(), name
    wide = page.evaluate("[...document.querySelectorAll('body *')].filter(e => "
                         "e.getBoundingClientRect().right > innerWidth + 1).slice(0, 5).map(e => "
                         "e.tagName + '.' + e.className + ' ' + JSON.stringify(e.getBoundingClientRect()))")
    assert not wide, f"{name}: wider than the screen: {wide}"
    asked.clear()
    return check.visit(page, f"layout-{name}")


def visit_all(live_site, new_page, check, viewport, booking_link):
    page = check.watch(new_page(viewport=viewport))
    asked = watch_requests(page)
    page.goto(live_site + "/?lang=fr")
    layout_checks(page, live_site, check, "01-home", asked)
    page.get_by_role("link", name="Voir l'équité des rendez-vous").click()
    page.wait_for_url("**/fairness")
    assert page.locator(".site-menu a[href='/fairness']").get_attribute("aria-current") == "page"
    assert page.locator("svg.plot").count() >= 1 or page.locator(".figures").count() >= 1
    layout_checks(page, live_site, check, "02-fairness", asked)

    page.goto(live_site + "/book/renewal/montpellier")
    page.locator("a.time").first.click()
    page.wait_for_url(re.compile(r".*/book/renewal/montpellier/[^/]+$"))
    layout_checks(page, live_site, check, "03-form", asked)
    page.get_by_role("button", name="Confirmer le rendez-vous").click()  # nothing filled in
    page.wait_for_load_state()
    assert page.locator(".fr-alert--error").is_visible()
    assert page.locator(".fr-input-group--error").count() >= 3
    layout_checks(page, live_site, check, "04-form-errors", asked)

    page.goto(booking_link)
    assert "token" not in page.url
    layout_checks(page, live_site, check, "05-booking", asked)

    for index, (path, title) in enumerate(NOTICES.items(), start=6):
        page.goto(live_site + "/")
        page.locator(f"footer a[href='{path}']").click()
        page.wait_for_url(f"**{path}")
        assert page.get_by_role("heading", level=1).inner_text() == title
        layout_checks(page, live_site, check, f"0{index}-{path.strip('/')}", asked)
    # the same notice in English, from the language selector
    page.locator(".lang-select summary").click()
    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Legal notice"
    layout_checks(page, live_site, check, "09-legal-en", asked)
    page.goto(live_site + "/fairness?lang=en")
    assert page.get_by_role("heading", level=1).inner_text() == "Fairness of appointments"
    layout_checks(page, live_site, check, "10-fairness-en", asked)
    page.goto(live_site + "/?lang=fr")


def test_the_dsfr_pages_at_desk_width_and_on_a_phone(live_site, new_page, checks):  # noqa: F811
    link, _ = booked(live_site)
    for viewport in (DESK, PHONE):
        visit_all(live_site, new_page, checks(viewport), viewport, link)


def test_the_language_selector_works_without_javascript(live_site, new_page):
    page = new_page(viewport=PHONE, java_script_enabled=False)
    page.goto(live_site + "/mentions-legales?lang=fr")
    english = page.get_by_role("link", name="EN – English")
    assert not english.is_visible()  # closed until asked for
    page.locator(".lang-select summary").click()
    assert english.is_visible()
    box = page.locator(".lang-select .fr-translate__menu").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]  # on screen at 320 px
    screenshot(page, "layout-320-11-language-selector-open")
    english.click()
    page.wait_for_url("**/mentions-legales?lang=en")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Legal notice"
    # remembered: the next page is in English too, and the selector offers French back
    page.locator("footer a[href='/accessibilite']").click()
    page.wait_for_url("**/accessibilite")
    assert page.get_by_role("heading", level=1).inner_text() == "Accessibility statement"
    page.locator(".lang-select summary").click()
    page.get_by_role("link", name="FR – Français").click()
    page.wait_for_url("**/accessibilite?lang=fr")
    assert page.locator("html").get_attribute("lang") == "fr"
