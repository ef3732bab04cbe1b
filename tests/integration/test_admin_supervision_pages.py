"""Supervisors' pages in a real headless Chromium: create a plan, see its release schedule,
decide a review case, answer a waiver request. Screenshots in var/screenshots/ (git-ignored)."""
from datetime import date, timedelta

import pytest

from tests.helpers import wait_until
from tests.browser import DESK, PHONE, browser, new_page, screenshot  # noqa: F401 (fixtures)
from tests.integration.test_admin_pages import fits, open_logged_in
from tests.integration.test_admin_supervision import _attempt, _book, with_fraud  # noqa: F401


@pytest.mark.parametrize("viewport, name", [(DESK, "desk"), (PHONE, "320")])
def test_supervisor_work_in_a_browser(with_fraud, new_page, viewport, name):
    counter = with_fraud
    slots = counter.rpc.slots.list_open("renewal", date.today().isoformat(),
                                        (date.today() + timedelta(days=10)).isoformat())["slots"]
    people = [("Kaya", "Ayse"), ("Demir", "Mustafa"), ("Sahin", "Elif"), ("Celik", "Huseyin"),
              ("Aydin", "Emre")]
    cluster = [_book(counter, slots[i]["id"], f, g, f"p{i}@example.org", "203.0.113.66")
               for i, (f, g) in enumerate(people)]
    recorded = _attempt(counter, "late@example.org", "1112223334")
    page = open_logged_in(new_page, counter, viewport, "chief")
    start = date.today() + timedelta(days=40)
    page.goto(counter.http.base + "/plans")
    page.select_option("#site", "beziers")
    page.select_option("#procedure", "first_application")
    page.fill("#from", start.isoformat())
    page.fill("#to", (start + timedelta(days=13)).isoformat())
    page.fill("#hours", "09:00-11:00")
    page.click("button[value=preview]")
    page.wait_for_selector("#preview")
    assert "48 créneaux, 96 places sur 8 jour(s)" in page.inner_text("#preview")
    assert fits(page)
    screenshot(page, f"admin-plan-preview-{name}")
    page.click("button[value=create]")
    page.wait_for_selector("#created")
    page.click("text=Voir son calendrier de publication")
    page.wait_for_url("**/releases?plan_id=*")
    assert "rel-" in page.inner_text("#schedule")
    assert fits(page)
    screenshot(page, f"admin-releases-{name}")

    page.goto(counter.http.base + "/review")
    for _ in range(40):  # the case grows as fraud screens the five confirmations
        if page.inner_text("main").count("à décider") == 5:
            break
        page.wait_for_timeout(500)
        page.reload()
    assert fits(page)
    screenshot(page, f"admin-review-{name}")
    page.fill("[id^=case-note-]", "cybercafé vérifié")
    page.click("text=Annuler tout le cas")
    page.wait_for_selector("text=Décision enregistrée")
    assert wait_until(lambda: all(s["status"] == "cancelled" for s in
                                  counter.rpc.booking.statuses(cluster).values()), timeout=20)

    page.goto(counter.http.base + "/waiver")
    expiry = date.fromisoformat(recorded["at"][:10]) + timedelta(days=1)
    page.fill("#foreigner_number", "1112223334")
    page.fill("#expiry", expiry.isoformat())
    page.fill("#filing", (expiry + timedelta(days=30)).isoformat())
    page.click("button[value=answer]")
    page.wait_for_selector("#answer")
    assert "levée" in page.inner_text("#answer") and recorded["reference"] in page.inner_text("#answer")
    assert fits(page)
    screenshot(page, f"admin-waiver-{name}")
