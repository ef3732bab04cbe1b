"""Allocation by request in the staff gateway (issue 12) over real HTTP and a real bus: the
per-procedure mode switch (requests service and slots), the counts of open requests, the audit
record of a draw, and the /requests page for agents and supervisors (in Chromium too, with
screenshots at desk width and 320 px in var/screenshots/)."""
import re
from datetime import date, timedelta
from html import unescape

import pytest

from services.common.errors import Refused, SlotNotBookable
from services.requests.service import RequestsService
from tests.browser import DESK, PHONE, browser, new_page, screenshot  # noqa: F401 (fixtures)
from tests.helpers import plan, wait_until
from tests.integration.test_admin_gateway import csrf_of, page_session
from tests.integration.test_admin_pages import fits, open_logged_in
from tests.integration.test_requests_allocation import aged
from tests.unit.test_admin_input import SWITCH_INPUT, one_per_route

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
AVAILABLE = {"sites": ["montpellier"],
             "times": [{"weekday": d, "from": "08:00", "to": "13:00"} for d in WEEKDAYS]}
NEW_JSON = [("GET", "/api/requests/modes"), ("POST", "/api/requests/modes/renewal"),
            ("GET", "/api/requests/counts"), ("GET", "/api/requests/draws/DRW-0123456789ab")]
SUPERVISOR_JSON = [("POST", "/api/requests/modes/renewal"),
                   ("GET", "/api/requests/draws/DRW-0123456789ab")]


@pytest.fixture
def desk(counter, container_factory, counter_config):
    """The counter (slots, booking, notify, staff gateway) and the requests service."""
    container_factory(RequestsService, dict(counter_config, REQUEST_TIMER_SECONDS=0.3)).start()
    return counter


def switch(desk, procedure, mode, who="chief"):
    return desk.http.post(f"/api/requests/modes/{procedure}", json={"mode": mode},
                          headers=desk.bearer(who))


def file(desk, procedure, n, expiry=None, confirm=True):
    """A request filed (and confirmed from its e-mail) through the requests RPC."""
    people = [("Okafor", "Chinedu"), ("Rahman", "Nusrat"), ("Moreau", "Léa"), ("Traoré", "Issa"),
              ("Kovalenko", "Olena"), ("Mendes", "Rui")]
    family, given = people[n % len(people)]
    body = {"procedure": procedure, "family_name": family, "given_names": given,
            "birth_date": f"1990-02-{n + 1:02d}", "email": f"{procedure}.{n}@example.org",
            "permit_expiry": expiry and expiry.isoformat(), "availability": AVAILABLE}
    if procedure in ("renewal", "renewal_10y"):
        body["foreigner_number"] = f"98765432{n:02d}"
    filed = desk.rpc.requests.file(body)
    if confirm:
        desk.rpc.requests.confirm(filed["reference"], filed["token"])
    return filed


def month(day):
    return day.isoformat()[:7]


def test_new_routes_refuse_no_session_agents_and_cookies(desk):
    http, agent = desk.http, desk.bearer("agent")
    for method, path in NEW_JSON:
        answer = http.request(method, path, json={"mode": "requests"})
        assert answer.status_code == 401 and answer.json()["error"] == "unauthenticated", (method, path)
    for method, path in SUPERVISOR_JSON:
        answer = http.request(method, path, json={"mode": "requests"}, headers=agent)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", (method, path)
    for path in ("/api/requests/modes", "/api/requests/counts"):  # any staff reads these
        assert http.get(path, headers=agent).status_code == 200, path
    for method in ("GET", "POST"):
        answer = http.request(method, "/requests", allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login"
    # a page session's cookie does not open the JSON switch (no CSRF through the API)
    page_session(http, "chief")
    answer = http.post("/api/requests/modes/renewal", json={"mode": "requests"})
    assert answer.status_code == 401
    assert desk.rpc.requests.modes()["renewal"] == "open"


def test_a_bad_switch_is_400_naming_the_field_and_changes_nothing(desk):
    # every case is a unit test of the route (tests/unit/test_admin_input.py), which shows
    # that no service is asked; here one reaches the client, and nothing changed
    [(method, path, body, field)] = one_per_route(SWITCH_INPUT)
    answer = desk.http.request(method, path, json=body, headers=desk.bearer("chief"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request" and field in answer.json()["fields"], answer.json()
    assert set(desk.rpc.requests.modes().values()) == {"open"}
    assert desk.rpc.slots.hold(desk.slot["id"], "probe-open-1", "renewal")  # still bookable


def test_the_switch_reaches_requests_and_slots_and_is_audited(desk):
    http, chief = desk.http, desk.bearer("chief")
    assert http.get("/api/requests/modes", headers=chief).json()["modes"]["renewal"] == "open"
    with pytest.raises(Refused):  # open: booked directly, no filing
        file(desk, "renewal", 0)
    answer = switch(desk, "renewal", "requests")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["procedure"], answer.json()["mode"], answer.json()["before"]) == (
        "renewal", "requests", "open")
    assert desk.rpc.requests.modes()["renewal"] == "requests"
    assert http.get("/api/requests/modes", headers=desk.bearer("agent")).json()["modes"] == dict(
        desk.rpc.requests.modes())
    # slots decides every hold: a direct hold on the procedure is refused from now on
    with pytest.raises(SlotNotBookable):
        desk.rpc.slots.hold(desk.slot["id"], "probe-direct-1", "renewal")
    assert file(desk, "renewal", 0, confirm=False)["state"] == "unconfirmed"
    # audited with before, after and the username
    entries = http.get("/api/audit?person=chief&object=procedure:renewal", headers=chief).json()["entries"]
    [entry] = [e for e in entries if e["action"] == "request_mode_switched"]
    assert (entry["who"], entry["before"], entry["after"]) == ("chief", {"mode": "open"},
                                                               {"mode": "requests"})
    # and back: existing requests keep waiting, direct holds work again
    assert switch(desk, "renewal", "open").json()["mode"] == "open"
    assert desk.rpc.slots.hold(desk.slot["id"], "probe-direct-2", "renewal")
    entries = http.get("/api/audit?person=chief&object=procedure:renewal", headers=chief).json()["entries"]
    assert [e["after"] for e in entries if e["action"] == "request_mode_switched"] == [
        {"mode": "open"}, {"mode": "requests"}]  # newest first


def test_the_switch_passes_the_staff_username_as_by(desk, mongo):
    assert switch(desk, "duplicate", "requests").status_code == 200
    doc = mongo("requests")["mode_changes"].find_one({"procedure": "duplicate"})
    assert (doc["mode"], doc["by"]) == ("requests", "chief")


def test_counts_by_state_and_expiry_month(desk):
    # change_of_status has no slots here: its requests wait, none is offered
    assert switch(desk, "change_of_status", "requests").status_code == 200
    today = date.today()
    soon, later = today + timedelta(days=40), today + timedelta(days=200)
    file(desk, "change_of_status", 0, expiry=later)
    file(desk, "change_of_status", 1, expiry=soon, confirm=False)
    file(desk, "change_of_status", 2)  # no permit: a first application
    file(desk, "change_of_status", 3, expiry=soon)
    gone = file(desk, "change_of_status", 4, expiry=soon)
    desk.rpc.requests.withdraw(gone["reference"], gone["token"])  # closed: not counted
    for who in ("agent", "chief"):
        counts = desk.http.get("/api/requests/counts", headers=desk.bearer(who)).json()
        assert counts["by_procedure"] == {"change_of_status": {"waiting": 3, "unconfirmed": 1}}, counts
        assert counts["by_expiry_month"] == {"change_of_status": {
            month(soon): 2, month(later): 1, "none": 1}}, counts
    # the page: months in order, the no-permit row labelled, both roles
    for who in ("agent", "chief"):
        http = type(desk.http)()
        page_session(http, who)
        page = http.get("/requests")
        assert page.status_code == 200
        table = page.text.split('id="months-change_of_status"')[1].split("</table>")[0]
        assert table.index(f'data-month="{month(soon)}"') < table.index(
            f'data-month="{month(later)}"') < table.index('data-month="none"')
        assert "sans titre (première demande) / no permit (first application)" in table
        row = page.text.split('id="state-change_of_status"')[1].split("</tr>")[0]
        assert [c.split(">")[-1] for c in row.split("</td>")[1:4]] == ["1", "3", "0"], row


def test_counts_by_what_verified_the_requests(desk):
    """verified_by (issue 24): no register checks change_of_status here, so the site's requests
    count as "none", the desk's as "desk", a partner's as "partner"; counts only."""
    assert switch(desk, "change_of_status", "requests").status_code == 200
    file(desk, "change_of_status", 0)
    file(desk, "change_of_status", 1, confirm=False)
    person = {"procedure": "change_of_status", "family_name": "Mendes", "given_names": "Rui",
              "birth_date": "1980-01-01", "availability": AVAILABLE, "channel": "desk",
              "phone": "0612345678"}
    desk.rpc.requests.file_for_person(person, "agent")
    partner = desk.rpc.requests.create_partner({
        "name": "Association d'accueil", "contact_email": "accueil@example.org",
        "quotas": {"change_of_status": 2}, "expires": (date.today() + timedelta(days=30)).isoformat(),
        "by": "chief"})
    beneficiary = {k: v for k, v in person.items() if k != "channel"}
    desk.rpc.requests.partner_file(partner["id"], dict(
        beneficiary, family_name="Kovalenko", given_names="Olena", mailbox="partner"))
    counts = desk.http.get("/api/requests/counts", headers=desk.bearer("agent")).json()
    assert counts["by_verified"] == {"change_of_status": {"none": 2, "desk": 1, "partner": 1}}
    http = type(desk.http)()
    page_session(http, "chief")
    page = http.get("/requests")
    row = page.text.split('id="verified-change_of_status"')[1].split("</tr>")[0]
    shown = dict(re.findall(r'data-verified="(\w+)">(\d+)<', row))
    assert shown == {"permits": "0", "visas": "0", "invitation": "0", "partner": "1",
                     "desk": "1", "none": "2"}, row
    assert "Mendes" not in page.text and "Kovalenko" not in page.text  # never a list


def release_allocated(desk, mongo):
    """`duplicate` switched to requests, three requests waiting, then a release of its places
    allocated by draw: the requests and the draw's record (read from the requests database:
    the gateway has no list of draws, only the lookup of one by its id)."""
    assert switch(desk, "duplicate", "requests").status_code == 200
    filed = [file(desk, "duplicate", n, expiry=date.today() + timedelta(days=30 * n) if n else None)
             for n in range(3)]
    start = date.today() + timedelta(days=1)
    desk.rpc.slots.create_from_plan(plan(procedure="duplicate", desks=1, days=7, start=start,
                                         hours=["09:00-10:00"]), release="now")

    def states():
        return [desk.rpc.requests.get(f["reference"], f["token"])["state"] for f in filed]
    assert wait_until(lambda: states() == ["offered"] * 3, timeout=20), states()
    [record] = list(mongo("requests")["draws"].find({"procedure": "duplicate"}))
    return filed, record


def test_draw_lookup_for_a_real_draw_and_404_for_an_unknown_one(desk, mongo):
    filed, record = release_allocated(desk, mongo)
    chief = desk.bearer("chief")
    answer = desk.http.get(f"/api/requests/draws/{record['_id']}", headers=chief)
    assert answer.status_code == 200, answer.text
    draw = answer.json()
    assert draw["replays"] is True and draw["seed"] == record["seed"]
    assert len(draw["inputs"]) == 3 and sorted(draw["result"]) == sorted(f["reference"] for f in filed)
    counts = desk.http.get("/api/requests/counts", headers=desk.bearer("agent")).json()
    assert counts["by_procedure"]["duplicate"] == {"offered": 3}
    assert desk.http.get("/api/requests/draws/DRW-000000000000", headers=chief).status_code == 404
    for bad in ("DRW-nothex", "$gt", "DRW-0123456789AB"):
        answer = desk.http.get(f"/api/requests/draws/{bad}", headers=chief)
        assert answer.status_code == 400 and "draw_id" in answer.json()["fields"], bad
    # on the page: the supervisor looks it up; unknown or malformed ids give the page again
    page_session(desk.http, "chief")
    page = desk.http.get(f"/requests?draw_id={record['_id']}")
    assert page.status_code == 200 and 'id="draw-replays"' in page.text
    assert f'<code id="draw-seed">{record["seed"]}</code>' in page.text
    assert '<dd id="draw-inputs">3</dd>' in page.text and "oui / yes" in page.text
    for bad, status in (("DRW-000000000000", 404), ("nonsense", 400)):
        page = desk.http.get(f"/requests?draw_id={bad}")
        assert page.status_code == status and 'role="alert"' in page.text and 'id="by-state"' in page.text
        assert "Traceback" not in page.text


def test_draw_lookup_says_when_a_draw_is_older_than_the_retention(desk, mongo):
    """A draw past REQUEST_DRAW_RETENTION_DAYS is deleted: its lookup says so (not merely
    "unknown"), in the API and on the page next to the field."""
    _, record = release_allocated(desk, mongo)
    aged(mongo, record["_id"], days=400)
    chief = desk.bearer("chief")
    assert wait_until(lambda: desk.http.get(f"/api/requests/draws/{record['_id']}",
                                            headers=chief).status_code == 404, timeout=70)
    answer = desk.http.get(f"/api/requests/draws/{record['_id']}", headers=chief).json()
    assert "durée de conservation (365 jours)" in answer["message"]
    assert "older than the retention period (365 days)" in answer["message"]
    assert answer["fields"]["draw_id"] == ["Older than the retention period (365 days)."]
    unknown = desk.http.get("/api/requests/draws/DRW-000000000000", headers=chief).json()
    assert unknown["fields"]["draw_id"] == ["Unknown draw."]
    page_session(desk.http, "chief")
    page = desk.http.get(f"/requests?draw_id={record['_id']}")
    assert page.status_code == 404 and "durée de conservation (365 jours)" in unescape(page.text)
    assert 'id="draw-error"' in page.text and 'id="draw"' not in page.text


def test_the_page_for_agents_has_no_switch_and_refuses_their_posts(desk):
    http = desk.http
    token = page_session(http, "agent")
    page = http.get("/requests")
    assert page.status_code == 200 and 'href="/requests"' in page.text  # in the navigation
    assert 'id="modes"' in page.text and 'id="by-state"' in page.text
    assert 'action="/requests"' not in page.text.split('id="modes"')[1].split("</table>")[0]
    assert 'name="mode"' not in page.text and 'id="draw_id"' not in page.text
    answer = http.post("/requests", data={"csrf": token, "procedure": "renewal", "mode": "requests"},
                       allow_redirects=False)
    assert answer.status_code == 403 and "Accès refusé" in answer.text
    assert http.get("/requests?draw_id=DRW-000000000000").status_code == 403
    assert desk.rpc.requests.modes()["renewal"] == "open"


def test_the_switch_through_the_page_needs_csrf_and_says_what_it_does(desk):
    http = desk.http
    token = page_session(http, "chief")
    page = http.get("/requests")
    effects = page.text.split('id="switch-effects"')[1].split("</p>")[0]
    for words in ("rendez-vous déjà pris restent", "demandes en attente continuent d'attendre",
                  "pages publiques changent de parcours immédiatement"):
        assert words in effects
    form = {"procedure": "renewal", "mode": "requests"}
    for bad in ({}, {"csrf": "forged"}, {"csrf": token + "x"}):
        answer = http.post("/requests", data=dict(form, **bad), allow_redirects=False)
        assert answer.status_code == 403 and "formulaire a expiré" in answer.text, bad
    assert desk.rpc.requests.modes()["renewal"] == "open"
    answer = http.post("/requests", data=dict(form, csrf=csrf_of(page.text)), allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/requests?switched=renewal"
    assert desk.rpc.requests.modes()["renewal"] == "requests"
    with pytest.raises(SlotNotBookable):
        desk.rpc.slots.hold(desk.slot["id"], "probe-direct-3", "renewal")
    shown = http.get("/requests").text
    assert "Passer en «&nbsp;réservation directe&nbsp;»" in shown.split('id="mode-renewal"')[1].split("</tr>")[0]
    # a bad value: the page again with its message and the field, nothing changed
    answer = http.post("/requests", data={"csrf": csrf_of(shown), "procedure": "renewal",
                                          "mode": "sometimes"})
    assert answer.status_code == 400 and 'role="alert"' in answer.text and "mode :" in answer.text
    assert desk.rpc.requests.modes()["renewal"] == "requests"
    entries = http.get("/audit?object=procedure:renewal").text
    assert "mode d&#39;attribution changé" in entries  # the action's label, not its code


@pytest.mark.parametrize("viewport, name", [(DESK, "desk"), (PHONE, "320")])
def test_requests_page_in_a_browser(desk, mongo, new_page, viewport, name):
    page = open_logged_in(new_page, desk, viewport, "chief")
    page.click("nav a[href='/requests']")
    page.wait_for_url("**/requests")
    page.click("#mode-duplicate button")
    page.wait_for_selector("#switched")
    assert desk.rpc.requests.modes()["duplicate"] == "requests"
    _, record = release_allocated(desk, mongo)
    file(desk, "duplicate", 3, confirm=False)
    assert switch(desk, "change_of_status", "requests").status_code == 200
    file(desk, "change_of_status", 4, expiry=date.today() + timedelta(days=400))  # no slots: waits
    page.reload()
    assert "sans titre (première demande)" in page.inner_text("#months-duplicate")
    assert "Sur demande" in page.inner_text("#mode-duplicate")
    assert fits(page)
    screenshot(page, f"admin-requests-supervisor-{name}")
    page.fill("#draw_id", record["_id"])
    page.click("#draw-form button")
    page.wait_for_selector("#draw")
    assert "oui / yes" in page.inner_text("#draw-replays")
    assert page.inner_text("#draw-inputs") == "3"
    assert fits(page)
    screenshot(page, f"admin-requests-draw-{name}")

    agent = open_logged_in(new_page, desk, viewport, "agent")
    agent.click("nav a[href='/requests']")
    agent.wait_for_url("**/requests")
    assert "Sur demande" in agent.inner_text("#mode-duplicate")
    assert agent.evaluate("document.querySelectorAll('main form').length") == 0
    assert fits(agent)
    screenshot(agent, f"admin-requests-agent-{name}")
