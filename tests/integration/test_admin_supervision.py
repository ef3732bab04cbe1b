"""Supervisors' work in the staff gateway over real HTTP and a real bus (issue 10): plans and
the secret release schedule, the fraud review, the waiver (M7), notifications, passwords."""
import json
from datetime import date, datetime, timedelta, timezone

import pytest

from services.common import signing
from services.common.errors import InvalidRequest
from services.common.timeutil import PARIS
from tests.helpers import applicant, wait_until
from tests.integration.conftest import PASSWORD
from tests.integration.test_admin_gateway import csrf_of, page_session
from tests.unit.test_admin_input import PLAN, SUPERVISION_INPUT, one_per_route

NEW_JSON = [
    ("POST", "/api/plans/preview"), ("POST", "/api/plans"), ("POST", "/api/plans/plan-0123456789ab/desks"),
    ("GET", "/api/releases/schedule"), ("POST", "/api/releases/rel-0123456789ab/reschedule"),
    ("GET", "/api/figures"), ("GET", "/api/review/cases"), ("POST", "/api/review/decide"),
    ("GET", "/api/allow-list"), ("POST", "/api/allow-list"), ("POST", "/api/allow-list/remove"),
    ("GET", "/api/fraud/counts"), ("POST", "/api/waiver"), ("POST", "/api/attestations/verify"),
    ("GET", "/api/notifications"), ("POST", "/api/notifications/resend"),
    ("POST", "/api/accounts/agent/reset-password"),
]
NEW_PAGES = [("GET", "/plans"), ("POST", "/plans"), ("GET", "/releases"), ("POST", "/releases"),
             ("GET", "/review"), ("POST", "/review"), ("GET", "/waiver"), ("POST", "/waiver"),
             ("GET", "/notifications"), ("POST", "/notifications"), ("POST", "/accounts/reset")]


def test_new_endpoints_refuse_no_session_and_agents(counter):
    http, agent = counter.http, counter.bearer("agent")
    for method, path in NEW_JSON:
        answer = http.request(method, path, json={})
        assert answer.status_code == 401, (method, path, answer.text)
        answer = http.request(method, path, json={}, headers=agent)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", (method, path)
    for method, path in NEW_PAGES:
        answer = http.request(method, path, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login", (method, path)
    page_session(http, "agent")
    for method, path in NEW_PAGES:
        answer = http.request(method, path, allow_redirects=False)
        assert answer.status_code == 403 and "Accès refusé" in answer.text, (method, path)
    assert "/plans" not in http.get("/day").text  # agents do not see the links either


def test_bad_input_reaches_the_client_as_400_with_the_field(counter):
    # every case is a unit test of its route (tests/unit/test_admin_input.py); one per route
    # here, and the attestation's, which the booking service checks
    cases = one_per_route(SUPERVISION_INPUT) + [
        ("POST", "/api/attestations/verify", {"attestation": {}, "signature": {"$ne": ""}}, "signature")]
    for method, path, body, field in cases:
        answer = counter.http.request(method, path, json=body, headers=counter.bearer("chief"))
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"] == "invalid_request" and field in answer.json()["fields"], \
            (path, answer.json())


def test_preview_then_create_then_reschedule_reaches_the_slots_service(counter):
    chief, http = counter.bearer("chief"), counter.http
    preview = http.post("/api/plans/preview", json=PLAN, headers=chief).json()
    # 2 weekdays in 7 days, three 20-minute slots from 09:00 to 10:00, 2 desks
    assert (preview["slots"], preview["places"], preview["days"], preview["exists"]) == (6, 12, 2, False)
    assert counter.rpc.slots.schedule_for(plan_id=preview["plan_id"])["batches"] == []  # nothing saved
    created = http.post("/api/plans", json=PLAN, headers=chief)
    assert created.status_code == 201, created.text
    assert created.json()["plan_id"] == preview["plan_id"] and created.json()["scheduled"] == 6
    schedule = http.get(f"/api/releases/schedule?plan_id={preview['plan_id']}", headers=chief).json()
    batch = schedule["batches"][0]
    due = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    moved = http.post(f"/api/releases/{batch['id']}/reschedule", json={"due": due.isoformat()},
                      headers=chief)
    assert moved.status_code == 200, moved.text
    [seen] = [b for b in counter.rpc.slots.schedule_for(plan_id=preview["plan_id"])["batches"]
              if b["id"] == batch["id"]]
    assert seen["due"] == due.strftime("%Y-%m-%dT%H:%M:%SZ") and seen["rescheduled"]["by"] == "chief"
    # an extra plan for the same hours is a plan of its own (M2), and desks can be added
    extra = http.post("/api/plans", json=dict(PLAN, extra=True), headers=chief).json()
    assert extra["plan_id"] != preview["plan_id"] and extra["created"] == 6
    added = http.post(f"/api/plans/{extra['plan_id']}/desks", json={"desks": 1}, headers=chief).json()
    assert added["places"] == 6
    figures = http.get("/api/figures?procedure=first_application&site=beziers", headers=chief).json()
    assert figures["figures"] == [{"procedure": "first_application", "site": "beziers", "scheduled": 30,
                                   "released": 0, "booked": 0, "free": 0, "freed": 0, "waiting": 0}]
    actions = [e["action"] for e in http.get("/api/audit?person=chief", headers=chief).json()["entries"]]
    assert {"plan_created", "extra_plan_opened", "desks_added", "release_rescheduled"} <= set(actions)


def test_figures_count_booked_freed_waiting_and_release_speed(counter):
    chief = counter.bearer("chief")
    kept = counter.book()
    given_back = counter.book(family_name="Haddad", given_names="Karim")  # one booking a person
    counter.rpc.booking.cancel(given_back["reference"], given_back["token"])
    answer = counter.http.get("/api/figures?procedure=renewal&site=montpellier", headers=chief).json()
    [row] = answer["figures"]
    assert (row["booked"], row["freed"], row["waiting"]) == (1, 1, 1)
    assert row["released"] == row["booked"] + row["free"]
    assert kept["reference"]
    # plans opened "now" have no release batch: released batches come from the schedule
    assert answer["releases"] == []


@pytest.fixture
def with_fraud(counter, container_factory, counter_config):
    from services.fraud.service import FraudService

    container_factory(FraudService, dict(counter_config, FRAUD_FAST_SECONDS=0,
                                         FRAUD_QUICK_SECONDS=0)).start()
    return counter


def _book(counter, slot, family, given, email, ip):
    created = counter.rpc.booking.create(applicant(slot, family_name=family, given_names=given,
                                                   email=email, birth_date="1985-02-03"),
                                         {"ip": ip, "user_agent": "Firefox"})
    counter.rpc.booking.confirm(created["reference"], created["confirm_token"])
    return created["reference"]


def test_a_case_decision_cancels_exactly_the_bookings_of_that_case(with_fraud):
    counter = with_fraud
    slots = counter.rpc.slots.list_open("renewal", date.today().isoformat(),
                                        (date.today() + timedelta(days=10)).isoformat())["slots"]
    people = [("Kaya", "Ayse"), ("Demir", "Mustafa"), ("Sahin", "Elif"), ("Celik", "Huseyin"),
              ("Aydin", "Emre")]
    cluster = [_book(counter, slots[i]["id"], f, g, f"person{i}@example.org", "203.0.113.66")
               for i, (f, g) in enumerate(people)]
    honest = _book(counter, slots[6]["id"], "Mensah", "Kwame", "kwame@example.org", "192.0.2.10")
    chief = counter.bearer("chief")

    def open_cases():
        cases = counter.http.get("/api/review/cases", headers=chief).json()["cases"]
        return cases if cases and len(cases[0]["bookings"]) == 5 else None
    assert wait_until(open_cases, timeout=20)
    [case] = open_cases()
    assert sorted(b["reference"] for b in case["bookings"]) == sorted(cluster)
    assert all(b["status"] == "active" and b["summary"] for b in case["bookings"])
    answer = counter.http.post("/api/review/decide", json={
        "case_id": case["id"], "decision": "cancel", "note": "cybercafé, vérifié"}, headers=chief)
    assert answer.status_code == 200, answer.text
    statuses = lambda: counter.rpc.booking.statuses(cluster + [honest])  # noqa: E731
    assert wait_until(lambda: all(statuses()[r]["status"] == "cancelled" for r in cluster), timeout=20)
    assert statuses()[honest]["status"] == "active"
    [entry] = counter.http.get(f"/api/audit?object=review_case:{case['id']}", headers=chief).json()["entries"]
    assert entry["who"] == "chief" and entry["after"]["decision"] == "cancel"
    assert entry["after"]["note"] == "cybercafé, vérifié"
    assert counter.http.get("/api/review/cases", headers=chief).json()["cases"] == []
    # the page decides one booking with its note (here: nothing open any more)
    page_session(counter.http, "chief")
    assert "Aucun cas ouvert" in counter.http.get("/review").text


def test_allow_list_with_expiry_and_removal(with_fraud):
    counter, chief = with_fraud, with_fraud.bearer("chief")
    until = (date.today() + timedelta(days=90)).isoformat()
    answer = counter.http.post("/api/allow-list", json={
        "kind": "client", "value": "198.51.100.20", "why": "Cimade, permanence", "until": until},
        headers=chief)
    assert answer.status_code == 201, answer.text
    assert answer.json()["until"].startswith(until) or answer.json()["until"] > until
    entries = counter.http.get("/api/allow-list", headers=chief).json()["entries"]
    assert [(e["value"], e["by"], e["expired"]) for e in entries] == [("198.51.100.20", "chief", False)]
    past = counter.http.post("/api/allow-list", json={"kind": "email", "value": "a@example.org",
                                                      "why": "x", "until": "2001-01-01"}, headers=chief)
    assert past.status_code == 400 and "until" in past.json()["fields"]
    removed = counter.http.post("/api/allow-list/remove", json={"kind": "client", "value": "198.51.100.20"},
                                headers=chief)
    assert removed.status_code == 200
    assert counter.http.get("/api/allow-list", headers=chief).json()["entries"] == []
    again = counter.http.post("/api/allow-list/remove", json={"kind": "client", "value": "198.51.100.20"},
                              headers=chief)
    assert again.status_code == 404
    counts = counter.http.get(f"/api/fraud/counts?since={date.today()}&until={date.today()}",
                              headers=chief).json()
    assert counts["counts"] == {}


def test_an_expired_allow_list_entry_no_longer_spares(mongo):
    from services.fraud.store import FraudStore

    store = FraudStore(mongo("fraud"))
    store.allow({"_id": "client:1.2.3.4", "kind": "client", "value": "1.2.3.4", "until_ts": 100.0})
    store.allow({"_id": "client:5.6.7.8", "kind": "client", "value": "5.6.7.8", "until_ts": None})
    assert store.allowed_among({"client:1.2.3.4", "client:5.6.7.8"}, now_ts=99.0) == {
        "client:1.2.3.4", "client:5.6.7.8"}
    assert store.allowed_among({"client:1.2.3.4", "client:5.6.7.8"}, now_ts=101.0) == {"client:5.6.7.8"}


def _attempt(counter, email, number):
    """An attempt as recorded (nothing bookable for `first_application` here)."""
    return counter.rpc.booking.record_attempt({"procedure": "first_application", "email": email,
                                               "foreigner_number": number})


def test_waiver_both_sides_of_the_limit_with_and_without_evidence(counter):
    chief = counter.bearer("chief")
    recorded = _attempt(counter, "late.filer@example.org", "1112223334")
    day = datetime.fromisoformat(recorded["at"].replace("Z", "+00:00")).astimezone(PARIS).date()
    expiry = day  # the attempt was on the expiry day: it counts
    ask = lambda **body: counter.http.post("/api/waiver", json=body, headers=chief).json()  # noqa: E731
    inside = ask(foreigner_number="1112223334", expiry=expiry.isoformat(),
                 filing=(expiry + timedelta(days=20)).isoformat())
    assert inside["waived"] and inside["in_time"]["holds"] and inside["evidence"]["holds"]
    assert [a["reference"] for a in inside["evidence"]["attempts"]] == [recorded["reference"]]
    last_day = date.fromisoformat(inside["deadline"])
    assert ask(foreigner_number="1112223334", expiry=expiry.isoformat(), filing=last_day.isoformat())["waived"]
    late = ask(foreigner_number="1112223334", expiry=expiry.isoformat(),
               filing=(last_day + timedelta(days=1)).isoformat())
    assert not late["waived"] and not late["in_time"]["holds"] and late["evidence"]["holds"]
    # by e-mail, for someone with no foreigner number: the same attempts
    assert ask(email="LATE.filer@example.org", expiry=expiry.isoformat(),
               filing=last_day.isoformat())["waived"]
    # an expiry before the attempt: it does not count
    early = ask(foreigner_number="1112223334", expiry=(expiry - timedelta(days=1)).isoformat(),
                filing=(expiry + timedelta(days=3)).isoformat())
    assert not early["waived"] and not early["evidence"]["holds"] and early["evidence"]["after_expiry"]
    nobody = ask(foreigner_number="9998887776", expiry=expiry.isoformat(), filing=last_day.isoformat())
    assert not nobody["waived"] and nobody["evidence"]["attempts"] == []
    [entry] = counter.http.get("/api/audit?object=waiver", headers=chief).json()["entries"][:1]
    assert "1112223334" not in json.dumps(entry) and "late.filer" not in json.dumps(entry)


def test_booking_answers_the_waiver_the_page_shows(counter):
    """M7 is answered by booking, which holds the attempts (services/common/penalty_waiver.py);
    the staff gateway only shows its answer."""
    chief = counter.bearer("chief")
    recorded = _attempt(counter, "asked.twice@example.org", "2223334445")
    expiry = datetime.fromisoformat(recorded["at"].replace("Z", "+00:00")).astimezone(PARIS).date()
    filing = (expiry + timedelta(days=10)).isoformat()
    answer = counter.rpc.booking.penalty_waiver("2223334445", None, expiry.isoformat(), filing)
    assert answer["waived"] and answer["late"] and answer["days_late"] == 10
    assert [a["reference"] for a in answer["evidence"]["attempts"]] == [recorded["reference"]]
    shown = counter.http.post("/api/waiver", headers=chief, json={
        "foreigner_number": "2223334445", "expiry": expiry.isoformat(), "filing": filing})
    assert shown.json() == answer
    by_email = counter.rpc.booking.penalty_waiver(email="Asked.Twice@example.org",
                                                  expiry=expiry.isoformat(), filing=filing)
    assert by_email == answer
    not_late = counter.rpc.booking.penalty_waiver("2223334445", None, filing, filing)
    assert not not_late["late"] and not not_late["waived"]
    for who, day, field in ((None, filing, "foreigner_number"), ("2223334445", "soon", "filing")):
        with pytest.raises(InvalidRequest) as caught:
            counter.rpc.booking.penalty_waiver(who, None, expiry.isoformat(), day)
        assert field in caught.value.fields


def test_attestation_genuine_and_forged(counter):
    chief = counter.bearer("chief")
    recorded = _attempt(counter, "holder@example.org", "4445556667")
    genuine = counter.rpc.booking.attestation(recorded["reference"], recorded["token"])
    answer = counter.http.post("/api/attestations/verify", json=genuine, headers=chief).json()
    assert answer["valid"] and answer["signature_valid"] and answer["attempts_on_record"]
    stranger = signing.load_private_key(signing.new_private_key_text())
    invented = dict(genuine["attestation"], attempts=[dict(genuine["attestation"]["attempts"][0],
                                                           reference="ATT-ZZZZ-ZZZZ")])
    for forged in ({"attestation": invented, "signature": genuine["signature"]},
                   {"attestation": invented, "signature": signing.sign(stranger, invented)}):
        answer = counter.http.post("/api/attestations/verify", json=forged, headers=chief).json()
        assert not answer["valid"] and not answer["signature_valid"]
    # the page too
    token = page_session(counter.http, "chief")
    page = counter.http.post("/waiver", data={"csrf": token, "action": "verify",
                                              "attestation": json.dumps(genuine)})
    assert page.status_code == 200 and "Attestation valide" in page.text
    page = counter.http.post("/waiver", data={"csrf": token, "action": "verify",
                                              "attestation": json.dumps({"attestation": invented,
                                                                         "signature": genuine["signature"]})})
    assert "Attestation refusée" in page.text
    page = counter.http.post("/waiver", data={"csrf": token, "action": "verify", "attestation": "{"})
    assert page.status_code == 400 and "JSON" in page.text


def test_the_supervisor_checks_an_attestation_by_its_code_typed_or_scanned(counter, mongo):
    recorded = _attempt(counter, "holder@example.org", "4445556667")
    genuine = counter.rpc.booking.attestation(recorded["reference"], recorded["token"])
    code = genuine["code"]
    token = page_session(counter.http, "chief")

    def check(typed):
        return counter.http.post("/waiver", data={"csrf": token, "action": "verify",
                                                  "attestation": typed})
    page = check(code.lower().replace("-", ""))  # typed as it comes
    assert page.status_code == 200 and "Attestation valide" in page.text
    assert recorded["reference"] in page.text and "4445556667" in page.text  # what it attests
    assert "holder@example.org" in page.text and "Première demande" in page.text
    scanned = check(f"http://127.0.0.1:8000/attestations/verify?code={code}")  # the QR's content
    assert scanned.status_code == 200 and "Attestation valide" in scanned.text
    unknown = check("0000-0000-0000-0000")
    assert unknown.status_code == 200 and "Aucune attestation ne correspond" in unknown.text
    assert recorded["reference"] not in unknown.text
    malformed = check("ABC")
    assert malformed.status_code == 400 and "16 lettres et chiffres" in malformed.text
    assert 'value="ABC"' in malformed.text  # the input kept
    # the record under the code edited: refused, and nothing shown from it
    mongo("booking").attestations.update_one(
        {"_id": code}, {"$set": {"attestation.applicant.foreigner_number": "9999999999"}})
    edited = check(code)
    assert "Attestation refusée" in edited.text and "signature invalide" in edited.text
    assert "9999999999" not in edited.text


def test_notifications_status_failed_and_resend(counter, sink):
    chief = counter.bearer("chief")
    counter.book()
    sink.wait_for(1)
    answer = counter.http.get("/api/notifications", headers=chief).json()
    assert answer["status"]["done"] >= 1 and answer["failed"] == []
    missing = counter.http.post("/api/notifications/resend", json={"key": "nothing-here"}, headers=chief)
    assert missing.status_code == 404


def test_reset_password_forces_a_new_one_at_next_login(counter):
    chief, http = counter.bearer("chief"), counter.http
    agent = counter.bearer("agent")
    reset = http.post("/api/accounts/agent/reset-password", headers=chief).json()
    temporary = reset["temporary_password"]
    assert reset["must_change_password"] and len(temporary) >= 12
    assert http.get("/api/me", headers=agent).status_code == 401  # sessions ended
    assert http.post("/api/login", json={"username": "agent", "password": PASSWORD}).status_code == 401
    login = http.post("/api/login", json={"username": "agent", "password": temporary}).json()
    assert login["must_change_password"]
    bearer = {"Authorization": f"Bearer {login['token']}"}
    blocked = http.get("/api/day", headers=bearer)
    assert blocked.status_code == 403 and blocked.json()["error"] == "password_change_required"
    short = http.post("/api/password", json={"password": "short"}, headers=bearer)
    assert short.status_code == 400 and "password" in short.json()["fields"]
    assert http.post("/api/password", json={"password": "a brand new passphrase"},
                     headers=bearer).status_code == 200
    assert http.get("/api/me", headers=bearer).status_code == 200
    assert http.post("/api/login", json={"username": "agent", "password": "a brand new passphrase"}
                     ).json()["must_change_password"] is False
    actions = [e["action"] for e in http.get("/api/audit?object=account:agent", headers=chief).json()["entries"]]
    assert "password_reset" in actions and "password_changed" in actions
    assert temporary not in json.dumps(http.get("/api/audit", headers=chief).json())
    assert http.post("/api/accounts/nobody/reset-password", headers=chief).status_code == 404
    # the page way: log-in with a temporary password leads to the password form
    temporary = http.post("/api/accounts/agent/reset-password", headers=chief).json()["temporary_password"]
    fresh = type(http)()
    form = fresh.get("/login")
    answer = fresh.post("/login", data={"csrf": csrf_of(form.text), "username": "agent",
                                        "password": temporary}, allow_redirects=False)
    assert answer.headers["Location"] == "/password"
    assert fresh.get("/day", allow_redirects=False).headers["Location"] == "/password"


def test_plan_page_previews_then_creates_and_schedule_page_moves_a_batch(counter):
    token = page_session(counter.http, "chief")
    form = {"csrf": token, "site": "beziers", "procedure": "first_application", "from": PLAN["from"],
            "to": PLAN["to"], "weekdays": ["monday", "tuesday"], "hours": "09:00-10:00",
            "slot_minutes": "20", "desks": "2"}
    page = counter.http.post("/plans", data=dict(form, action="preview"))
    assert page.status_code == 200 and "6 créneaux, 12 places" in page.text
    bad = counter.http.post("/plans", data=dict(form, action="preview", hours="10-9"))
    assert bad.status_code == 400 and "HH:MM-HH:MM" in bad.text
    page = counter.http.post("/plans", data=dict(form, action="create"))
    assert "Plan enregistré" in page.text
    releases = counter.http.get("/releases?procedure=first_application")
    assert "rel-" in releases.text
    batch = releases.text.split('name="batch_id" value="')[1].split('"')[0]
    local = (datetime.now(PARIS) + timedelta(days=3)).replace(second=0, microsecond=0)
    moved = counter.http.post("/releases", data={"csrf": token, "batch_id": batch,
                                                 "due": local.strftime("%Y-%m-%dT%H:%M")},
                              allow_redirects=False)
    assert moved.status_code == 303
    [seen] = [b for b in counter.rpc.slots.schedule_for(procedure="first_application")["batches"]
              if b["id"] == batch]
    assert datetime.fromisoformat(seen["due"].replace("Z", "+00:00")) == local
