"""Every staff page in a real headless Chromium, as a supervisor and as an agent, at desk width
and at 320 px (issue 21, "Staff screens that break"): each answers 200 (or 403 for a role that
may not open it), shows no raw code where a French label exists, needs no sideways scrolling,
has no serious or critical axe-core violation, and is saved as a screenshot in
var/screenshots/ (git-ignored) for people to look at.

The store holds what makes each page show something: a review case (five people from one
address), a scheduled plan of first applications, a recorded failed attempt, a draw (a
procedure allocated by request), an audit entry as the command line wrote it (an ObjectId).
"""
import re
import time
from datetime import date, timedelta

import pytest

from gateway.admin.store import AdminStore
from services.common.reference_data import PROCEDURES
from services.register.service import RegisterService
from services.requests.service import RequestsService
from tests.browser import DESK, PHONE, browser, focused_id, new_page, screenshot  # noqa: F401 (fixtures)
from tests.helpers import wait_until
from tests.integration.test_admin_gateway import page_session
from tests.integration.test_admin_pages import fits, open_logged_in
from tests.integration.test_admin_requests import release_allocated
from tests.integration.test_admin_supervision import PLAN, _attempt, _book
from tests.pages.browser_flows import BLOCKING, axe_url  # noqa: F401 (fixture)

SUPERVISOR_PAGES = ["/audit", "/accounts", "/monitoring", "/plans", "/releases", "/review",
                    "/waiver", "/notifications", "/partners", "/register", "/register/visas"]
ALL_STAFF_PAGES = ["/day", "/checkin", "/walk-in", "/desk", "/requests", "/password",
                   "/desk/requests", "/desk/offers"]
# codes that have a French label: none may show as such on a page. Codes with an underscore
# (no French or English word has one) and the roles; a code inside an id, a queue name or an
# audit object, next to '-', '_', ':', '.' or '/', is not shown as a word.
RAW_CODES = sorted({code for code in PROCEDURES if "_" in code} | {
    "slot_grabbing", "multiple_bookings_same_email", "name_not_exact", "name_mismatch",
    "supervisor", "checked_in", "in_progress", "login_failed", "account_created", "check_in",
    "not_confirmed", "email_already_used", "request_mode_switched", "waiver_answered"})
RAW = re.compile(r"(?<![\w:/.-])(" + "|".join(RAW_CODES) + r")(?![\w-])")
STATUS_JS = "performance.getEntriesByType('navigation')[0].responseStatus"


@pytest.fixture
def stack(counter, container_factory, counter_config, mongo):
    """The counter with fraud and requests, and a store with something on every page."""
    from services.fraud.service import FraudService

    container_factory(FraudService, dict(counter_config, FRAUD_FAST_SECONDS=0,
                                         FRAUD_QUICK_SECONDS=0)).start()
    container_factory(RequestsService, dict(counter_config, REQUEST_TIMER_SECONDS=0.3)).start()
    container_factory(RegisterService, counter_config).start()
    counter.rpc.register.import_register(  # the register page shows it (issue 24)
        "foreigner_number,family_name,given_names,birth_date,permit_kind,expiry\n"
        "0412345678,Kaya,Ayse,1990-01-01,temporary,2030-01-01\n", "chief")
    counter.rpc.register.import_visas(  # and the visas' page its own (issue 24)
        "visa_number,family_name,given_names,birth_date,visa_kind,validity_end\n"
        "FRA123456789,Okafor,Chidi,1991-07-14,vls_ts,2030-01-01\n", "chief")
    slots = counter.rpc.slots.list_open("renewal", date.today().isoformat(),
                                        (date.today() + timedelta(days=10)).isoformat())["slots"]
    people = [("Kaya", "Ayse"), ("Demir", "Mustafa"), ("Sahin", "Elif"), ("Celik", "Huseyin"),
              ("Aydin", "Emre")]
    for i, (family, given) in enumerate(people):
        _book(counter, slots[i]["id"], family, given, f"p{i}@example.org", "203.0.113.66")
    counter.rpc.slots.create_from_plan(PLAN)  # first applications, on the secret schedule
    _attempt(counter, "late@example.org", "1112223334")
    release_allocated(counter, mongo)
    # an accredited partner (issue 24), for the partners' page
    counter.rpc.requests.create_partner({
        "name": "Cimade Hérault", "contact_email": "permanence@cimade.example.org",
        "quotas": {"renewal": 5, "first_application": 2},
        "expires": (date.today() + timedelta(days=365)).isoformat(), "by": "chief"})
    # written by `accounts create-supervisor` before it used audit_entry(): no uuid, an ObjectId
    AdminStore(mongo("admin")).append_audit({
        "who": "command-line", "action": "account_created", "object": "account:chief",
        "before": None, "after": {"role": "supervisor", "site": "montpellier"},
        "at_ts": time.time()})
    chief = counter.bearer("chief")
    assert wait_until(lambda: any(len(c["bookings"]) == 5 for c in counter.http.get(
        "/api/review/cases", headers=chief).json()["cases"]), timeout=30)
    return counter


def axe_beside(new_page, page, viewport):
    """A page beside the person's with the same cookies, that lets axe-core's script in (the
    staff pages' CSP lets no script run: the check only)."""
    axe = new_page(viewport=viewport, bypass_csp=True)
    axe.context.add_cookies(page.context.cookies())
    return axe


def blocking_violations(axe, url, axe_url):
    axe.goto(url)
    axe.add_script_tag(url=axe_url)
    assert axe.evaluate("typeof axe.run") == "function"  # the check really runs
    found = axe.evaluate("axe.run({resultTypes: ['violations']}).then(r => r.violations.map("
                         "v => [v.id, v.impact, v.nodes.slice(0, 3).map(n => n.target.join(' '))]))")
    return [v for v in found if v[1] in BLOCKING]


def visit(page, base, path, name, status=200, axe=None, axe_url=None):
    if axe is not None:  # no serious or critical accessibility violation (axe-core)
        assert blocking_violations(axe, base + path, axe_url) == [], path
    page.goto(base + path)
    assert page.evaluate(STATUS_JS) == status, (path, page.inner_text("main")[:500])
    text = page.inner_text("body")
    raw = sorted(set(RAW.findall(text)))
    assert not raw, (path, raw)
    screenshot(page, name)  # first: a page that fails is the one to look at
    assert fits(page), path
    return text


@pytest.mark.parametrize("viewport, width", [(DESK, "desk"), (PHONE, "320")])
def test_every_staff_page_for_a_supervisor(stack, new_page, viewport, width, axe_url, tmp_path):
    page = open_logged_in(new_page, stack, viewport, "chief")
    base, axe = stack.http.base, axe_beside(new_page, page, viewport)
    for path in ALL_STAFF_PAGES + SUPERVISOR_PAGES:
        text = visit(page, base, path, f"staff-chief{path.replace('/', '-')}-{width}", axe=axe,
                     axe_url=axe_url)
        if path == "/monitoring":  # failed attempts are recorded: counted, never "not recorded"
            assert "non enregistrées" not in text
        if path == "/review":  # fraud's evidence, in French
            assert "personnes différentes ont réservé depuis une même adresse réseau" in text
            assert "different people" not in text
    # the audit filter as the form sends it: every field, the empty ones empty
    page.goto(base + "/audit")
    page.fill("#person", "chief")
    page.click("text=Filtrer")
    page.wait_for_url("**/audit?person=chief*")
    assert page.evaluate(STATUS_JS) == 200
    assert "connexion" in page.inner_text("table") and "command-line" not in page.inner_text("table")
    screenshot(page, f"staff-chief-audit-filtered-{width}")
    # the counter's day acts: today's list with its buttons, a name typed wrong, undone
    page.goto(base + f"/day?date={stack.day}")
    conv = stack.book(family_name="Benali", given_names="Yasmine")
    page.goto(base + f"/day?date={stack.day}")
    assert "Arrivée" in page.inner_text("#bookings") and fits(page)
    screenshot(page, f"staff-chief-day-actions-{width}")
    page.click(f"tr[data-reference='{conv['reference']}'] >> text=Arrivée")
    page.fill("#family_name", "Benalli")
    page.fill("#given_names", "Yasmine")
    assert page.input_value("#reference") == conv["reference"]  # from the day's list
    page.fill("#birth_date", "1988-03-14")  # no code to scan: the birth date goes with it
    page.click("button[type=submit]:has-text('Vérifier')")
    page.wait_for_selector("#outcome table.compare")
    screenshot(page, f"staff-chief-names-differ-{width}")
    assert page.evaluate(STATUS_JS) == 409 and fits(page)
    page.click("#confirm-mismatch button")
    page.wait_for_selector("text=rendez-vous annulé")
    page.goto(base + f"/day?date={stack.day}")
    page.fill(f"#why-{conv['reference']}", "faute de frappe")
    assert fits(page)
    screenshot(page, f"staff-chief-day-undo-{width}")
    page.click(f"tr[data-reference='{conv['reference']}'] >> text=Rétablir le rendez-vous")
    page.wait_for_selector("#restored")
    assert "Rétabli par chief" in page.inner_text("#bookings") and fits(page)
    screenshot(page, f"staff-chief-day-restored-{width}")
    # the visas' import with a line the register refuses: the reason said in French, by the
    # file's field, nothing imported (issue 24)
    bad = tmp_path / "visas.csv"
    bad.write_text("visa_number,family_name,given_names,birth_date,visa_kind,validity_end\n"
                   "FRA123456789,Okafor,Chidi,1991-07-14,vls_ts,2030-01-01\n"
                   "VLS-TS,Benali,Karim,1985-11-12,vls,2030-01-01\n")
    page.goto(base + "/register/visas")
    page.set_input_files("#csv", str(bad))
    page.click("button[value=preview]")
    page.wait_for_selector("#csv-error")
    assert page.evaluate(STATUS_JS) == 400 and fits(page)
    error = page.inner_text("#csv-error")
    assert "Ligne 3" in error and "visa_number" in error, error
    assert page.get_attribute("#csv", "aria-describedby") == "csv-error"
    assert page.inner_text("#current").startswith("1 visas en vigueur")  # nothing imported
    assert focused_id(page, "csv") == "csv"  # where the fixed file goes
    # at 320 px each import is a block: every number says what it counts
    assert page.evaluate("[...document.querySelectorAll('#imports td')].every(td => td.dataset.label)")
    screenshot(page, f"staff-chief-visas-refused-{width}")
    assert blocking_violations(axe, base + "/register/visas", axe_url) == []
    # a draw's id is found on the requests page, and its record one click away
    page.goto(base + "/requests")
    # what verified the open requests: the procedures that have some, no row of zeros (issue 24)
    rows = page.evaluate("[...document.querySelectorAll('#by-verified tbody tr')].map(r => [r.id, "
                         "r.querySelector('[data-verified=none]').textContent])")
    assert rows == [["verified-duplicate", "3"]], rows
    page.click("#draws a")
    page.wait_for_selector("#draw-replays")
    assert page.evaluate(STATUS_JS) == 200 and fits(page)
    screenshot(page, f"staff-chief-draw-{width}")


@pytest.mark.parametrize("viewport, width", [(DESK, "desk"), (PHONE, "320")])
def test_every_staff_page_for_an_agent(stack, new_page, viewport, width, axe_url):
    page = open_logged_in(new_page, stack, viewport, "agent")
    base, axe = stack.http.base, axe_beside(new_page, page, viewport)
    for path in ALL_STAFF_PAGES:
        text = visit(page, base, path, f"staff-agent{path.replace('/', '-')}-{width}", axe=axe,
                     axe_url=axe_url)
        if path == "/requests":
            assert "Derniers tirages" not in text  # draws are for supervisors
    # the desk booking form with its free slots and every field (issue 21)
    text = visit(page, base, "/desk?procedure=renewal", f"staff-agent-desk-form-{width}", axe=axe,
                 axe_url=axe_url)
    assert "Adresse postale" in text
    for path in SUPERVISOR_PAGES:
        text = visit(page, base, path, f"staff-agent-refused{path.replace('/', '-')}-{width}",
                     status=403)
        assert "Accès refusé" in text


def test_audit_api_and_filter_answer_with_legacy_entries_and_empty_fields(stack):
    chief = stack.bearer("chief")
    answer = stack.http.get("/api/audit", headers=chief)
    assert answer.status_code == 200, answer.text[:300]
    assert any(e["who"] == "command-line" for e in answer.json()["entries"])
    answer = stack.http.get("/api/audit?person=chief&object=&day=", headers=chief)
    assert answer.status_code == 200, answer.text[:300]
    assert {e["who"] for e in answer.json()["entries"]} == {"chief"}
    answer = stack.http.get("/api/audit?day=yesterday", headers=chief)
    assert answer.status_code == 400 and "day" in answer.json()["fields"]
    draws = stack.http.get("/api/requests/draws", headers=chief)
    assert draws.status_code == 200 and draws.json()["draws"][0]["id"].startswith("DRW-")
    assert stack.http.get("/api/requests/draws", headers=stack.bearer("agent")).status_code == 403
    page_session(stack.http, "chief")
    assert stack.http.get("/notifications").status_code == 200
