"""The staff gateway over real HTTP and a real RabbitMQ: access, the counter, audit."""
import uuid
from datetime import date, datetime, timedelta

from services.common import signing
from services.common.timeutil import PARIS
from services.common.outbox import Outbox
from tests.helpers import wait_until
from tests.integration.conftest import PASSWORD, paris
from tests.unit.test_admin_input import DESK_INPUT, one_per_route

JSON_ENDPOINTS = [
    ("POST", "/api/logout"), ("GET", "/api/me"), ("GET", "/api/day"), ("POST", "/api/checkin"),
    ("POST", "/api/walk-ins"), ("GET", "/api/accounts"), ("POST", "/api/accounts"),
    ("POST", "/api/accounts/agent/lock"), ("POST", "/api/accounts/agent/unlock"),
    ("GET", "/api/audit"), ("POST", "/api/register/import"), ("GET", "/api/register"),
]
PAGES = [("GET", "/day"), ("GET", "/checkin"), ("POST", "/checkin"), ("GET", "/walk-in"),
         ("POST", "/walk-in"), ("GET", "/audit"), ("GET", "/accounts"), ("POST", "/accounts"),
         ("POST", "/logout"), ("GET", "/register"), ("POST", "/register")]
SUPERVISOR_ONLY = [("GET", "/api/accounts"), ("POST", "/api/accounts"),
                   ("POST", "/api/accounts/beziers/lock"), ("GET", "/api/audit"),
                   ("POST", "/api/register/import"), ("GET", "/api/register")]


def page_session(http, username):
    """Log in through the form, as a browser does; the session cookie stays in `http`."""
    form = http.get("/login")
    token = form.text.split('name="csrf" value="')[1].split('"')[0]
    answer = http.post("/login", data={"csrf": token, "username": username, "password": PASSWORD},
                       allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/day", answer.text
    return csrf_of(http.get("/checkin").text)


def csrf_of(html):
    return html.split('name="csrf" value="')[1].split('"')[0]


def test_every_endpoint_without_a_session_is_refused(counter):
    http = counter.http
    for method, path in JSON_ENDPOINTS:
        for headers in ({}, {"Authorization": "Bearer forged.token"}, {"Authorization": "Basic x"}):
            answer = http.request(method, path, json={}, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"] == "unauthenticated"
    for method, path in PAGES:
        answer = http.request(method, path, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login", (method, path)
    # a page cookie does not open the API, nor a bearer token the pages
    page_session(http, "chief")
    assert http.get("/api/me").status_code == 401
    assert http.get("/day", allow_redirects=False).status_code == 200
    bearer = counter.bearer("chief")
    fresh = type(http)()
    assert fresh.get("/day", headers=bearer, allow_redirects=False).status_code == 303
    assert fresh.get("/api/me", headers=bearer).json() == {
        "username": "chief", "role": "supervisor", "site": "montpellier"}


def test_agents_get_403_on_supervisor_work(counter):
    agent = counter.bearer("agent")
    for method, path in SUPERVISOR_ONLY:
        answer = counter.http.request(method, path, json={}, headers=agent)
        assert answer.status_code == 403, (method, path)
        assert answer.json()["error"] == "forbidden"
    # an agent reads the bookings of their own site only
    assert counter.http.get("/api/day?site=beziers", headers=agent).status_code == 403
    assert counter.http.get("/api/day?site=montpellier", headers=agent).status_code == 200
    assert counter.http.get("/api/day?site=beziers", headers=counter.bearer("chief")).status_code == 200
    page_session(counter.http, "agent")
    for path in ("/audit", "/accounts"):
        answer = counter.http.get(path, allow_redirects=False)
        assert answer.status_code == 403 and "Accès refusé" in answer.text


def test_bad_input_reaches_the_client_as_400_with_the_field(counter):
    # every case is a unit test of its route (tests/unit/test_admin_input.py); one per route here
    for method, path, body, field in one_per_route(DESK_INPUT):
        answer = counter.http.request(method, path, json=body, headers=counter.bearer("chief"))
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"] == "invalid_request"
        assert field in answer.json()["fields"], (path, answer.json())


def test_login_refuses_bad_input(counter):
    # a body that is not declared JSON is refused as such (gateway/http.py: 415)
    assert counter.http.post("/api/login", data="not json").status_code == 415
    assert counter.http.post("/api/login", data="not json",
                             headers={"Content-Type": "application/json"}).status_code == 400
    answer = counter.http.post("/api/login", json={"username": {"$ne": ""}, "password": "x"})
    assert answer.status_code == 400 and "username" in answer.json()["fields"]


def test_forms_without_the_csrf_token_are_refused(counter):
    http = counter.http
    token = page_session(http, "chief")
    for path, data in [("/checkin", {"code": "x", "family_name": "y"}), ("/walk-in", {"family_name": "y"}),
                       ("/accounts", {"username": "new.agent", "password": "x" * 12}),
                       ("/logout", {})]:
        for bad in ({}, {"csrf": "forged"}, {"csrf": token + "x"}):
            answer = http.post(path, data=dict(data, **bad), allow_redirects=False)
            assert answer.status_code == 403 and "formulaire a expiré" in answer.text, (path, bad)
    # nothing happened: the account was not created, the session still works
    assert "new.agent" not in http.get("/accounts").text
    assert http.get("/day", allow_redirects=False).status_code == 200
    # the log-in form too, before there is any session
    fresh = type(http)()
    answer = fresh.post("/login", data={"username": "chief", "password": PASSWORD},
                        allow_redirects=False)
    assert answer.status_code == 403 and "staff_session" not in answer.headers.get("Set-Cookie", "")
    # and with the token, the form works
    answer = http.post("/accounts", data={"csrf": token, "username": "new.agent", "password": "x" * 12,
                                          "role": "agent", "site": "beziers"}, allow_redirects=False)
    assert answer.status_code == 303
    assert "new.agent" in http.get("/accounts").text


def test_session_cookie_is_httponly_strict_and_logout_revokes_it(counter):
    http = counter.http
    form = http.get("/login")
    answer = http.post("/login", data={"csrf": csrf_of(form.text), "username": "agent",
                                       "password": PASSWORD}, allow_redirects=False)
    cookie = answer.headers["Set-Cookie"]
    assert "staff_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    stolen = http.cookies.get("staff_session")
    token = csrf_of(http.get("/day").text)
    assert http.post("/logout", data={"csrf": token}, allow_redirects=False).status_code == 303
    replay = type(http)()
    replay.cookies.set("staff_session", stolen)
    assert replay.get("/day", allow_redirects=False).status_code == 303  # revoked server-side
    bearer = counter.bearer("agent")
    assert http.post("/api/logout", headers=bearer).status_code == 200
    assert http.get("/api/me", headers=bearer).status_code == 401


def test_repeated_failures_lock_the_account_until_a_supervisor_unlocks(counter):
    http = counter.http
    wrong = {"username": "agent", "password": "wrong password!"}
    assert [http.post("/api/login", json=wrong).status_code for _ in range(3)] == [401, 401, 423]
    # locked: even the right password is refused
    answer = http.post("/api/login", json={"username": "agent", "password": PASSWORD})
    assert answer.status_code == 423 and answer.json()["error"] == "account_locked"
    # an unknown user gets the same answer as a wrong password
    unknown = http.post("/api/login", json={"username": "my secret password", "password": "x"})
    assert unknown.status_code == 401 and unknown.json()["message"] == \
        http.post("/api/login", json={"username": "beziers", "password": "x"}).json()["message"]
    chief = counter.bearer("chief")
    accounts = {a["id"]: a for a in http.get("/api/accounts", headers=chief).json()["accounts"]}
    assert accounts["agent"]["locked"] and "password_hash" not in accounts["agent"]
    assert http.post("/api/accounts/agent/unlock", headers=chief).json()["locked"] is False
    agent = counter.bearer("agent")
    # a supervisor's lock revokes the sessions at once
    assert http.post("/api/accounts/agent/lock", headers=chief).json()["locked"] is True
    assert http.get("/api/me", headers=agent).status_code == 401
    assert http.post("/api/login", json={"username": "agent", "password": PASSWORD}).status_code == 423
    actions = [e["action"] for e in http.get("/api/audit?object=account:agent", headers=chief).json()["entries"]]
    assert actions[:4] == ["login_refused_locked", "account_locked", "login", "account_unlocked"]
    assert actions.count("login_failed") == 2
    # a password typed into the username field does not end up in the audit log
    everything = http.get("/api/audit", headers=chief).json()["entries"]
    assert "my secret password" not in str(everything)
    assert ("unknown", "login_failed", "account:unknown") in {
        (e["who"], e["action"], e["object"]) for e in everything}


def test_check_in_with_the_exact_name_dispatches_booking_checked_in(counter, bus, sink, mongo):
    listener = bus("booking", "booking_checked_in")
    conv = counter.book(family_name="N'Diaye", given_names="Aïssatou Marie")
    agent = counter.bearer("agent")
    body = {"code": conv["code"], "family_name": "NDIAYE", "given_names": "aissatou-marie"}
    answer = counter.http.post("/api/checkin", json=body, headers=agent)
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["result"] == "checked_in"
    assert outcome["booking"]["id"] == conv["reference"] and outcome["booking"]["status"] == "checked_in"
    assert outcome["booking"]["checked_in_by"] == "agent"
    _, event = listener.wait_for()
    assert event["reference"] == conv["reference"] and event["checked_in_by"] == "agent"
    assert set(event) == {"event_id", "occurred_at", "reference", "site", "slot_start",
                          "procedure", "checked_in_by"}
    # twice is harmless: no second event, no change
    again = counter.http.post("/api/checkin", json=body, headers=agent).json()
    assert again["result"] == "already_checked_in"
    # the first one's event marked sent (no relay copy to come) and the second answered:
    # what either published is on the bus
    assert wait_until(lambda: mongo("booking")["bookings"].find_one(
        {"_id": conv["reference"]})["outbox"]["checked_in"]["state"] == "done", timeout=15)
    assert listener.fenced() == []
    day = counter.http.get(f"/api/day?date={counter.day}", headers=agent).json()
    [seen] = [b for b in day["bookings"] if b["id"] == conv["reference"]]
    assert seen["status"] == "checked_in" and seen["start"].endswith("Z")
    assert day["counts"]["checked_in"] == 1
    entries = counter.http.get(f"/api/audit?object=booking:{conv['reference']}",
                               headers=counter.bearer("chief")).json()["entries"]
    assert [(e["who"], e["action"], e["before"], e["after"]) for e in entries] == [
        ("agent", "check_in", {"status": "active"}, {"status": "checked_in", "by": "code"})]
    assert "Aïssatou" not in str(entries)  # no personal data in the audit log


def test_a_name_mismatch_cancels_and_notify_tells_the_applicant_why(counter, bus, sink):
    listener = bus("booking", "booking_cancelled")
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    sink.wait_for(2)  # "to be confirmed", then "confirmed"
    # the second, explicit decision after a first look (tests/integration/test_admin_counter.py)
    answer = counter.http.post("/api/checkin", headers=counter.bearer("agent"), json={
        "code": conv["code"], "family_name": "Haddad", "given_names": "Yasmine",
        "confirm_mismatch": True})
    assert answer.status_code == 409, answer.text
    outcome = answer.json()
    assert (outcome["error"], outcome["result"], outcome["reason"]) == (
        "check_in_refused", "refused", "name_mismatch")
    # both names, side by side
    assert outcome["typed"] == {"family_name": "Haddad", "given_names": "Yasmine"}
    assert (outcome["booking"]["family_name"], outcome["booking"]["status"],
            outcome["booking"]["cancel_reason"]) == ("Benali", "cancelled", "name_mismatch")
    _, event = listener.wait_for()
    assert event["reason"] == "name_mismatch" and event["cancelled_by"] == "agent"
    messages = sink.wait_for(3)
    [cancellation] = [m for m in messages if "annulé" in m["Subject"]]
    text = cancellation.get_body(("plain",)).get_content()
    assert "ne correspondait pas à la pièce d'identité" in text
    assert "did not match the identity document" in text
    # the place went back to the slot
    assert counter.rpc.slots.get(counter.slot["id"])["booked"] == 0


def test_forged_and_edited_convocations_are_refused(counter):
    conv = counter.book()
    other = counter.book(email="someone.else@example.org", family_name="Haddad")
    agent = counter.bearer("agent")
    reference, signature = conv["code"].split(".")
    stranger = signing.load_private_key(signing.new_private_key_text())
    fields = {k: conv[k] for k in ("reference", "family_name", "given_names", "slot_id", "slot_start")}
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    codes = {
        "forged with another key": f"{reference}.{signing.sign(stranger, fields)}",
        "signature of another booking": f"{reference}.{other['code'].split('.')[1]}",
        "reference edited": f"{other['reference']}.{signature}",
        "signature edited": f"{reference}.{flipped}",
        "unknown reference": f"RDV-0000-0000.{signature}",
    }
    for what, code in codes.items():
        answer = counter.http.post("/api/checkin", headers=agent, json={
            "code": code, "family_name": "Benali", "given_names": "Yasmine"})
        assert answer.status_code == 400, what
        assert "code" in answer.json()["fields"] and "invalide" in answer.json()["message"], what
    # the genuine code still works: nothing was cancelled by the attempts
    genuine = counter.http.post("/api/checkin", headers=agent, json={
        "code": conv["code"], "family_name": "Benali", "given_names": "Yasmine"})
    assert genuine.json()["result"] == "checked_in"


def test_bookings_of_another_day_or_site_are_refused_with_the_reason(counter):
    conv = counter.book()
    body = {"code": conv["code"], "family_name": "Benali", "given_names": "Yasmine"}
    counter.desk_clock.at = paris(counter.day + timedelta(days=1), 10)
    answer = counter.http.post("/api/checkin", json=body, headers=counter.bearer("agent"))
    assert answer.status_code == 409 and answer.json()["reason"] == "other_day"
    assert "pas aujourd'hui" in answer.json()["message"]
    counter.desk_clock.at = paris(counter.day, 10)
    answer = counter.http.post("/api/checkin", json=body, headers=counter.bearer("beziers"))
    assert answer.status_code == 409 and answer.json()["reason"] == "other_site"
    # refused, not cancelled: it is still active and can be checked in at the right desk
    assert answer.json()["booking"]["status"] == "active"
    answer = counter.http.post("/api/checkin", json=body, headers=counter.bearer("agent"))
    assert answer.json()["result"] == "checked_in"


def test_a_booking_cancelled_for_fraud_shows_its_reason_and_evidence(counter):
    conv = counter.book()
    counter.rpc.booking.system_cancel(conv["reference"], "multiple_bookings_same_email",
                                      {"other_bookings": ["RDV-AAAA-BBBB"]}, "fraud")
    answer = counter.http.post("/api/checkin", headers=counter.bearer("agent"), json={
        "code": conv["code"], "family_name": "Benali", "given_names": "Yasmine"})
    assert answer.status_code == 409
    outcome = answer.json()
    assert outcome["reason"] == "cancelled"
    assert outcome["booking"]["cancel_reason"] == "multiple_bookings_same_email"
    assert outcome["booking"]["cancel_evidence"] == {"other_bookings": ["RDV-AAAA-BBBB"]}
    # fraud is not running here: its detail is missing, the booking's own evidence is shown
    assert outcome["fraud_decisions"] is None


WALK_IN = {"procedure": "renewal_10y", "family_name": "Okafor", "given_names": "Chidi",
           "birth_date": "1975-06-01", "foreigner_number": "0987654321"}


def test_walk_ins_only_on_allowed_mornings(counter):
    tuesday = date(2027, 3, 2)
    agent = counter.bearer("agent")
    for moment, words in [(paris(tuesday + timedelta(days=1), 9), "mercredi"),
                          (paris(tuesday, 15), "15:00")]:
        counter.booking_clock.at = moment
        answer = counter.http.post("/api/walk-ins", json=WALK_IN, headers=agent)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "refused"
        assert words in answer.json()["message"] and "sauf le mercredi" in answer.json()["message"]
    counter.booking_clock.at = paris(tuesday, 9, 40)
    answer = counter.http.post("/api/walk-ins", json=dict(WALK_IN, procedure="renewal"), headers=agent)
    assert answer.status_code == 409 and "que sur rendez-vous" in answer.json()["message"]
    answer = counter.http.post("/api/walk-ins", json=WALK_IN, headers=agent)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["walk_in"] and created["status"] == "checked_in"
    assert created["start"] == "2027-03-02T08:40:00Z"
    day = counter.http.get("/api/day?date=2027-03-02", headers=agent).json()
    assert [b["id"] for b in day["bookings"]] == [created["id"]]
    assert day["counts"] == {"total": 1, "pending": 0, "active": 0, "checked_in": 1, "cancelled": 0,
                             "walk_ins": 1, "absent": 0, "excused": 0}
    # nothing was registered by the refused attempts
    assert counter.http.get("/api/day?date=2027-03-03", headers=agent).json()["counts"]["total"] == 0


def test_day_view_lists_by_time_with_states(counter):
    first = counter.book(family_name="Alpha")
    second = counter.book(family_name="Beta")
    counter.rpc.booking.cancel(second["reference"], second["token"])
    day = counter.http.get(f"/api/day?date={counter.day}&site=montpellier",
                           headers=counter.bearer("agent")).json()
    assert {(b["id"], b["status"], b["cancel_reason"]) for b in day["bookings"]} == {
        (first["reference"], "active", None), (second["reference"], "cancelled", "applicant")}
    starts = [b["start"] for b in day["bookings"]]
    assert starts == sorted(starts)
    assert day["counts"]["active"] == 1 and day["counts"]["cancelled"] == 1
    assert all("_id" not in b and "email" not in b for b in day["bookings"])


def test_audit_is_filtered_by_person_object_and_day(counter):
    chief = counter.bearer("chief")
    counter.bearer("agent")
    entries = counter.http.get("/api/audit?person=agent", headers=chief).json()["entries"]
    assert {e["who"] for e in entries} == {"agent"} and entries[0]["action"] == "login"
    assert entries[0]["at"].endswith("Z") and entries[0]["id"]
    today = datetime.now(PARIS).date().isoformat()  # the audit's days are Paris days
    assert len(counter.http.get(f"/api/audit?day={today}", headers=chief).json()["entries"]) >= 2
    assert counter.http.get("/api/audit?day=2001-01-01", headers=chief).json()["entries"] == []
    assert counter.http.get("/api/audit?object=account:chief", headers=chief).json()["entries"][0]["action"] == "login"


def test_a_service_that_does_not_answer_gives_503(container_factory, counter_config, mongo, http):
    from gateway.admin.service import AdminGateway
    from tests.integration.conftest import add_staff

    container_factory(AdminGateway, counter_config).start()  # booking is not running
    add_staff(mongo)
    token = http.post("/api/login", json={"username": "agent", "password": PASSWORD}).json()["token"]
    answer = http.get("/api/day", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503 and answer.json()["error"] == "service_unavailable"
    form = http.post("/login", data={})  # no CSRF cookie: refused, but a page, not a crash
    assert form.status_code == 403
    http.get("/login")
    page = http.post("/login", data={"csrf": csrf_of(http.get("/login").text), "username": "agent",
                                     "password": PASSWORD})
    assert page.status_code == 503 and "momentanément indisponible" in page.text


def test_routing_answers_keep_their_headers(container_factory, counter_config, http):
    """As on the public gateway (gateway/http.py): a redirect's Location, a 405's Allow."""
    from gateway.admin.service import AdminGateway

    container_factory(AdminGateway, counter_config).start()
    moved = http.get("/api//me", allow_redirects=False)
    assert moved.status_code == 308 and moved.headers["Location"].endswith("/api/me")
    assert moved.headers["Content-Type"].startswith("application/json")
    refused = http.put("/health")
    assert refused.status_code == 405 and refused.json()["error"] == "method_not_allowed"
    assert "GET" in refused.headers["Allow"]


def test_pages_show_the_form_again_with_the_reason(counter):
    http = counter.http
    token = page_session(http, "agent")
    answer = http.post("/checkin", data={"csrf": token, "code": "RDV-AAAA-BBBB.forged",
                                         "family_name": "Benali", "given_names": "Yasmine"})
    assert answer.status_code == 400
    assert "Ce n&#39;est pas un code de convocation" in answer.text and 'value="Benali"' in answer.text
    counter.booking_clock.at = paris(date(2027, 3, 3), 9)  # a Wednesday morning
    answer = http.post("/walk-in", data=dict(WALK_IN, csrf=token))
    assert answer.status_code == 409
    assert "Pas d&#39;accueil sans rendez-vous le mercredi" in answer.text
    assert 'value="Okafor"' in answer.text  # what was typed is kept
    counter.booking_clock.at = paris(date(2027, 3, 2), 9)
    answer = http.post("/walk-in", data=dict(WALK_IN, csrf=token))
    assert answer.status_code == 200 and "Enregistré sans rendez-vous" in answer.text


def test_the_outbox_relay_sends_a_check_in_whose_dispatch_was_lost(counter, bus, mongo):
    listener = bus("booking", "booking_checked_in")
    conv = counter.book()
    bookings = mongo("booking")["bookings"]
    # as if the process died between the write and the dispatch: the document alone
    stored = bookings.find_one({"_id": conv["reference"]})
    lost = str(uuid.uuid4())
    stored.update(status="checked_in", checked_in={
        "by": "agent", "at": stored["created_at"] - timedelta(minutes=1)})
    stored["outbox"]["checked_in"] = Outbox.entry(lost, 0.0, 0.0)  # written, never dispatched
    bookings.replace_one({"_id": conv["reference"]}, stored)
    _, event = listener.wait_for(lambda t, e: e["event_id"] == lost, timeout=20)
    assert event["reference"] == conv["reference"] and event["checked_in_by"] == "agent"
    assert wait_until(lambda: bookings.find_one(
        {"_id": conv["reference"]})["outbox"]["checked_in"]["state"] == "done")


def test_fraud_evidence_is_shown_from_the_fraud_service(counter, container_factory, counter_config):
    from services.fraud.service import FraudService

    container_factory(FraudService, counter_config).start()
    # M4: filler instead of a name (a second person on one e-mail is now refused up front)
    first = counter.book(family_name="Test", given_names="Test")
    assert wait_until(lambda: counter.rpc.booking.statuses([first["reference"]])[
        first["reference"]]["status"] == "cancelled", timeout=20)
    answer = counter.http.post("/api/checkin", headers=counter.bearer("agent"), json={
        "code": first["code"], "family_name": "Test", "given_names": "Test"})
    assert answer.status_code == 409 and answer.json()["reason"] == "cancelled"
    [decision] = answer.json()["fraud_decisions"]
    assert decision["rule"] == "name_not_exact" and decision["evidence"]
    page_session(counter.http, "agent")
    token = csrf_of(counter.http.get("/checkin").text)
    page = counter.http.post("/checkin", data={"csrf": token, "code": first["code"],
                                               "family_name": "Test", "given_names": "Test"})
    assert page.status_code == 409
    assert "Motif et éléments" in page.text and "nom non exact (M4)" in page.text
