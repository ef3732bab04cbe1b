"""Issue 24, accredited partners, and issue 21, requests filed at the desk for a person without
e-mail: on a real bus (RabbitMQ vhost), real stores, both gateways over real HTTP, a real SMTP
sink. Supervisors create partners; partners file with their key (JSON API) and their pages; the
weekly quota holds under concurrent filings; suspended and expired partners are refused; the
partner's address is no evidence against its beneficiaries; an agent files for a person
without e-mail and accepts the offer for them; every new staff endpoint needs a session, the
right role and (pages) a CSRF token."""
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
import requests as http_client
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.admin.service import AdminGateway
from gateway.admin.store import AdminStore
from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.fraud.service import FraudService
from services.notify.service import NotifyService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.browser import DESK, PHONE, browser, new_page, screenshot  # noqa: F401 (fixtures)
from tests.conftest import free_port
from tests.helpers import plan, wait_until
from tests.integration.conftest import add_staff
from tests.integration.test_admin_gateway import csrf_of, page_session
from tests.integration.conftest import PASSWORD
from tests.integration.test_admin_every_page import STATUS_JS, blocking_violations
from tests.integration.test_admin_pages import fits
from tests.pages.browser_flows import axe_url  # noqa: F401 (fixture)

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
AVAILABLE = {"sites": ["montpellier"],
             "times": [{"weekday": d, "from": "08:00", "to": "18:00"} for d in WEEKDAYS]}
PARTNER_IP = "198.51.100.23"  # the association's office


class Stack:
    def __init__(self, rpc, staff, public, mongo):
        self.rpc, self.staff, self.public, self.mongo = rpc, staff, public, mongo

    def bearer(self, username):
        answer = self.staff.post("/api/login", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def partner(self, quotas=None, expires=None, name="Cimade Hérault"):
        answer = self.staff.post("/api/partners", headers=self.bearer("chief"), json={
            "name": name, "contact_email": "permanence@cimade.example.org",
            "quotas": quotas or {"renewal": 5},
            "expires": (expires or date.today() + timedelta(days=365)).isoformat()})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def file(self, key, n, mailbox="partner", email=None, **overrides):
        body = dict(person(n), mailbox=mailbox, **overrides)
        if email:
            body["email"] = email
        return self.public.post("/api/partner/requests", json=body, headers={
            "Authorization": f"Bearer {key}", "X-Forwarded-For": PARTNER_IP})


class Http(http_client.Session):
    def __init__(self, port):
        super().__init__()
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 30)
        return super().request(method, self.base + url, *args, **kwargs)


PEOPLE = [("Okafor", "Chinedu"), ("Rahman", "Nusrat"), ("Moreau", "Léa"), ("Traoré", "Issa"),
          ("Kovalenko", "Olena"), ("Mendes", "Rui"), ("Haddad", "Samir"), ("Nguyen", "Thi Lan"),
          ("Popescu", "Ioana"), ("Diallo", "Mamadou"), ("Benali", "Yasmine"), ("Sow", "Aminata")]


def person(n):
    family, given = PEOPLE[n % len(PEOPLE)]
    return {"procedure": "renewal", "family_name": family, "given_names": given,
            "birth_date": f"1985-03-{n + 1:02d}", "foreigner_number": f"55544433{n:02d}",
            "permit_expiry": (date.today() + timedelta(days=40 + n)).isoformat(),
            "availability": AVAILABLE}


@pytest.fixture
def stack(container_factory, config, mongo, web_port, tmp_path):
    cfg = dict(config, REQUEST_TIMER_SECONDS=0.3, REQUEST_OFFER_FLOOR_HOURS=1,
               SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_TIMEOUT=1,
               FRAUD_FAST_SECONDS=0, FRAUD_QUICK_SECONDS=0)
    for cls in (SlotsService, BookingService, NotifyService, FraudService, RequestsService,
                AdminGateway):
        container_factory(cls, cfg).start()
    public_port = free_port()
    container_factory(PublicGateway, dict(cfg, WEB_SERVER_ADDRESS=f"127.0.0.1:{public_port}")).start()
    add_staff(mongo)
    with ClusterRpcProxy(cfg, timeout=20) as rpc, Http(web_port) as staff, Http(public_port) as public:
        rpc.slots.create_from_plan(plan(desks=2, days=21, start=date.today() + timedelta(days=3)),
                                   release="now")
        yield Stack(rpc, staff, public, mongo)


def requests_mode(stack, procedure="renewal"):
    stack.rpc.requests.set_mode(procedure, "requests", "chief")


def offer_of(stack, reference, partner_key=None):
    """The request's offer, once the allocator made it (the timer allocates every 0.3 s)."""
    found = {}

    def offered():
        if partner_key:
            mine = stack.public.get("/api/partner/requests",
                                    headers={"Authorization": f"Bearer {partner_key}"}).json()["requests"]
        else:
            mine = stack.staff.get("/api/desk/offers", headers=stack.bearer("agent")).json()["offers"]
        request = next((r for r in mine if r["reference"] == reference), None)
        if request and request.get("offer"):
            found.update(request)
            return True
        return False
    assert wait_until(offered, timeout=30), reference
    return found


def test_a_supervisor_creates_a_partner_who_files_with_its_key_and_its_pages(stack):
    requests_mode(stack)
    made = stack.partner(quotas={"renewal": 5})
    key = made["api_key"]
    assert made["state"] == "active" and made["usage"]["renewal"] == {"quota": 5, "used": 0, "left": 5}
    # the key is shown once: never stored in clear, never in the audit log, never listed
    stored = stack.mongo("requests")["partners"].find_one({"_id": made["id"]})
    assert key.split(".")[1] not in str(stored) and stored["key_hash"].startswith("$argon2")
    audit = AdminStore(stack.mongo("admin")).find_audit(who="chief")
    entry = next(e for e in audit if e["action"] == "partner_created")
    assert entry["object"] == f"partner:{made['id']}" and key not in str(entry)
    listed = stack.staff.get("/api/partners", headers=stack.bearer("chief")).json()["partners"]
    assert [p["id"] for p in listed] == [made["id"]] and "api_key" not in listed[0]
    # the key opens the partner's API; another does not
    me = stack.public.get("/api/partner", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["name"] == "Cimade Hérault"
    for header in ({}, {"Authorization": f"Bearer {made['id']}.{'x' * 43}"},
                   {"Authorization": "Bearer nonsense"}):
        refused = stack.public.get("/api/partner", headers=header)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
    # through the API: born confirmed (waiting), who filed it recorded
    filed = stack.file(key, 0)
    assert filed.status_code == 201, filed.text
    assert filed.json()["state"] == "waiting" and filed.json()["filed_by"]["name"] == "Cimade Hérault"
    assert "token" not in filed.json()
    filings = stack.staff.get(f"/api/partners/{made['id']}/filings", headers=stack.bearer("chief"))
    assert [(f["reference"], f["partner_name"]) for f in filings.json()["filings"]] == [
        (filed.json()["reference"], "Cimade Hérault")]
    # through its pages: log in with the key (CSRF checked), then the form
    login = stack.public.get("/partners/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    wrong = stack.public.post("/partners/login", data={"csrf_token": token, "api_key": "PTN-0000-0000.x"})
    assert wrong.status_code == 401
    stale = stack.public.post("/partners/login", data={"csrf_token": "forged", "api_key": key})
    assert stale.status_code == 400 and "partner_session" not in stack.public.cookies
    opened = stack.public.post("/partners/login", data={"csrf_token": token, "api_key": key},
                               allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == "/partners"
    home = stack.public.get("/partners")
    assert home.status_code == 200 and "Cimade Hérault" in home.text and "1 / 5" in home.text
    form = dict(person(1), mailbox="beneficiary", email="nusrat.rahman@example.org",
                csrf_token=re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1),
                idempotency_key=re.search(r'name="idempotency_key" value="([^"]+)"', home.text).group(1),
                sites="montpellier", times=["monday-morning", "tuesday-afternoon"])
    del form["availability"]
    sent = stack.public.post("/partners", data=form)
    assert sent.status_code == 200 and 'id="filed"' in sent.text, sent.text[:3000]
    again = stack.public.post("/partners", data=form)  # the form sent twice: one request
    assert again.status_code == 200
    usage = stack.public.get("/api/partner", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["usage"]["renewal"]["used"] == 2
    assert stack.mongo("requests")["requests"].count_documents({"filed_by.id": made["id"]}) == 2
    # its page accepts an offer for the beneficiary (CSRF checked), then shows the convocation
    reference = filed.json()["reference"]
    offer_of(stack, reference, key)
    home = stack.public.get("/partners").text
    assert "Accepter pour la personne" in home
    forged = stack.public.post(f"/partners/requests/{reference}/accept", data={"csrf_token": "x"})
    assert forged.status_code == 400 and "booked" != stack.rpc.requests.partner_requests(made["id"])[-1]["state"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', home).group(1)
    accepted = stack.public.post(f"/partners/requests/{reference}/accept", data={"csrf_token": token},
                                 allow_redirects=False)
    assert accepted.status_code == 303 and "/convocation" in accepted.headers["Location"], accepted.text[:500]
    convocation = stack.public.get(accepted.headers["Location"])
    assert convocation.status_code == 200 and "OKAFOR" in convocation.text.upper()
    mine = {r["reference"]: r for r in stack.rpc.requests.partner_requests(made["id"])}
    assert mine[reference]["state"] == "booked"
    # log out (CSRF checked): the pages ask for the key again
    stack.public.post("/partners/logout", data={"csrf_token": token})
    assert stack.public.get("/partners", allow_redirects=False).headers["Location"] == "/partners/login"


def test_the_quota_is_a_clear_refusal_and_concurrent_filings_never_pass_it(stack):
    requests_mode(stack)
    key = stack.partner(quotas={"renewal": 3})["api_key"]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda n: stack.file(key, n), range(10)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 3 and codes.count(429) == 7, [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 429).json()
    assert refused["error"] == "quota_reached" and "procedure" in refused["fields"]
    assert "3" in refused["message"]
    filed = stack.mongo("requests")["requests"].count_documents({"filed_by.kind": "partner"})
    assert filed == 3
    usage = stack.public.get("/api/partner", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["usage"]["renewal"] == {"quota": 3, "used": 3, "left": 0}
    # the same filing sent again with its Idempotency-Key (a lost answer): the same request, and
    # the quota counts it once even when it is full
    roomy = stack.partner(quotas={"renewal": 2}, name="Secours Catholique")["api_key"]
    headers = {"Authorization": f"Bearer {roomy}", "Idempotency-Key": "partner-filing-0001"}
    first = stack.public.post("/api/partner/requests", json=dict(person(10), mailbox="partner"), headers=headers)
    second = stack.public.post("/api/partner/requests", json=dict(person(10), mailbox="partner"), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["reference"] == second.json()["reference"]
    assert stack.public.get("/api/partner", headers=headers).json()["usage"]["renewal"]["used"] == 1
    # a procedure without a quota: refused naming the procedure, nothing filed
    other = stack.file(key, 11, procedure="first_application", foreigner_number=None)
    assert other.status_code == 403 and "procedure" in other.json()["fields"]


def test_suspended_and_expired_partners_file_nothing(stack):
    requests_mode(stack)
    made = stack.partner()
    chief = stack.bearer("chief")
    suspended = stack.staff.post(f"/api/partners/{made['id']}/suspend", headers=chief)
    assert suspended.status_code == 200 and suspended.json()["state"] == "suspended"
    refused = stack.file(made["api_key"], 0)
    assert refused.status_code == 403 and refused.json()["error"] == "partner_not_allowed"
    assert "partner" in refused.json()["fields"]
    renewed = stack.staff.post(f"/api/partners/{made['id']}/renew", headers=chief, json={
        "expires": (date.today() + timedelta(days=30)).isoformat()})
    assert renewed.status_code == 200 and renewed.json()["state"] == "active"
    assert stack.file(made["api_key"], 0).status_code == 201
    # a page session opened with the key of the moment...
    login = stack.public.get("/partners/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    stack.public.post("/partners/login", data={"csrf_token": token, "api_key": made["api_key"]})
    assert stack.public.get("/partners", allow_redirects=False).status_code == 200
    # a new key: the old one opens nothing any more, and its page session ends
    rotated = stack.staff.post(f"/api/partners/{made['id']}/renew", headers=chief, json={"new_key": True})
    assert rotated.json()["api_key"] != made["api_key"]
    assert stack.file(made["api_key"], 1).status_code == 401
    ended = stack.public.get("/partners", allow_redirects=False)
    assert ended.status_code == 303 and ended.headers["Location"] == "/partners/login"
    assert stack.file(rotated.json()["api_key"], 1).status_code == 201
    expired = stack.partner(expires=date.today() - timedelta(days=1), name="Secours Populaire")
    late = stack.file(expired["api_key"], 2)
    assert late.status_code == 403 and "expired" in late.json()["message"]
    actions = [e["action"] for e in AdminStore(stack.mongo("admin")).find_audit(who="chief")]
    assert "partner_suspended" in actions and actions.count("partner_renewed") == 2
    assert stack.mongo("requests")["requests"].count_documents({"filed_by.kind": "partner"}) == 2


def test_identity_rules_still_apply_to_the_beneficiaries(stack):
    requests_mode(stack)
    key = stack.partner(quotas={"renewal": 10})["api_key"]
    placeholder = stack.file(key, 0, family_name="Test", given_names="Test")
    assert placeholder.status_code == 400 and "family_name" in placeholder.json()["fields"]
    assert stack.file(key, 0).status_code == 201
    # the same person again, typed otherwise: one open request per person (its place given back)
    twin = stack.file(key, 0, family_name="OKAFOR", foreigner_number="1212121212")
    assert twin.status_code == 409 and "identity" in twin.json()["fields"], twin.text
    # one e-mail, one person (M3) when the beneficiary's own mailbox is given
    assert stack.file(key, 1, mailbox="beneficiary", email="shared@example.org").status_code == 201
    shared = stack.file(key, 2, mailbox="beneficiary", email="shared@example.org")
    assert shared.status_code == 409 and "email" in shared.json()["fields"]
    # the partner's own mailbox is shared by all its beneficiaries: never M3 between them
    assert stack.file(key, 3).status_code == 201 and stack.file(key, 4).status_code == 201
    usage = stack.public.get("/api/partner", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["usage"]["renewal"]["used"] == 4  # refusals gave their place back


def test_the_partners_address_is_no_evidence_against_its_beneficiaries(stack):
    requests_mode(stack)
    key = stack.partner(quotas={"renewal": 10})["api_key"]
    references = []
    for n in range(4):  # four people filed from the one office address
        mailbox = {"mailbox": "beneficiary", "email": f"person{n}@example.org"} if n % 2 else {}
        answer = stack.file(key, n, **mailbox)
        assert answer.status_code == 201, answer.text
        references.append(answer.json()["reference"])
    bookings = []
    for reference in references:
        offer_of(stack, reference, key)
        accepted = stack.public.post(f"/api/partner/requests/{reference}/accept",
                                     headers={"Authorization": f"Bearer {key}",
                                              "X-Forwarded-For": PARTNER_IP})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] == "booked"
        bookings.append(accepted.json()["booking"]["reference"])
    stored = {b["_id"]: b for b in stack.mongo("booking")["bookings"].find({"_id": {"$in": bookings}})}
    assert len(stored) == 4
    for n, reference in enumerate(bookings):
        booking = stored[reference]
        assert booking["status"] == "active"
        assert PARTNER_IP not in str(booking.get("client"))  # no network address kept
        if n % 2:  # the beneficiary's mailbox: a booking like any, with its e-mail (M3 on it)
            assert booking["email"] == f"person{n}@example.org"
        else:  # the partner's mailbox: no e-mail on the booking, who filed it recorded
            assert booking["email"] is None and booking["channel"] == "partner"
            assert booking["by"].startswith("partner:PTN-")
    # each offer went to the mailbox chosen at filing: the partner's, or the person's own
    messages = stack.mongo("notify")["messages"]
    assert wait_until(lambda: messages.count_documents({"event_type": "offer_made"}) == 4, timeout=30)
    offered_to = sorted(m["to"] for m in messages.find({"event_type": "offer_made"}))
    assert offered_to == sorted(["permanence@cimade.example.org"] * 2
                                + ["person1@example.org", "person3@example.org"])
    # fraud screened the e-mailed ones (M3, M4) and holds nothing about the office's address
    fraud = stack.mongo("fraud")
    assert wait_until(lambda: fraud["bookings"].count_documents({"_id": {"$in": bookings}}) == 2,
                      timeout=30)
    assert fraud["groups"].count_documents({"_id": {"$regex": re.escape(PARTNER_IP)}}) == 0
    assert fraud["cases"].count_documents({}) == 0


def test_an_agent_files_for_a_person_without_email_and_accepts_for_them(stack):
    requests_mode(stack)
    agent = stack.bearer("agent")
    body = dict(person(5), channel="phone", phone="04 67 00 00 00")
    filed = stack.staff.post("/api/desk/requests", headers=agent, json=body)
    assert filed.status_code == 201, filed.text
    reference = filed.json()["reference"]
    assert filed.json()["state"] == "waiting" and filed.json()["channel"] == "phone"
    # one open request per person, whatever the channel
    again = stack.staff.post("/api/desk/requests", headers=agent,
                             json=dict(body, channel="desk", foreigner_number="1212121212",
                                       family_name="MENDES", postal_address="1 rue X, 34000 Montpellier"))
    assert again.status_code == 409 and "identity" in again.json()["fields"]
    open_mode = stack.staff.post("/api/desk/requests", headers=agent, json=dict(
        person(9), procedure="first_application", foreigner_number=None, channel="desk", phone="0467000001"))
    assert open_mode.status_code == 409 and "procedure" in open_mode.json()["fields"]  # book at /desk
    no_way = stack.staff.post("/api/desk/requests", headers=agent, json=dict(person(6), channel="desk"))
    assert no_way.status_code == 400 and "postal_address" in no_way.json()["fields"]
    offer = offer_of(stack, reference)
    assert offer["phone"] == "04 67 00 00 00" and offer["family_name"] == "Mendes"
    # nothing mailed: the person has no e-mail
    request_doc = stack.mongo("requests")["requests"].find_one({"_id": reference})
    assert request_doc["email"] is None and request_doc["filed_by"] == {"kind": "agent", "id": "agent",
                                                                         "name": "agent"}
    # nor is anything composed for it once notify has handled its offer: agents tell the person
    handled = stack.mongo("notify")["inbox"]
    assert wait_until(lambda: handled.count_documents({"event_type": "offer_made", "state": "done"}) == 1,
                      timeout=30)
    assert stack.mongo("notify")["messages"].count_documents({"reference": reference}) == 0
    # the letter to print (page), then the person calls back and says yes
    page_session(stack.staff, "agent")
    letter = stack.staff.get(f"/desk/requests/{reference}/letter")
    assert letter.status_code == 200 and reference in letter.text and "gratuit" in letter.text
    accepted = stack.staff.post(f"/api/desk/requests/{reference}/accept", headers=agent)
    assert accepted.status_code == 200, accepted.text
    booking_ref = accepted.json()["booking"]["reference"]
    booking = stack.mongo("booking")["bookings"].find_one({"_id": booking_ref})
    assert booking["status"] == "active" and booking["email"] is None
    assert booking["channel"] == "phone" and booking["by"] == "agent"
    assert booking["phone"] == "04 67 00 00 00"
    # accepted again (a double click): the same booking, no second place
    twice = stack.staff.post(f"/api/desk/requests/{reference}/accept", headers=agent)
    assert twice.status_code == 200 and twice.json()["booking"]["reference"] == booking_ref
    actions = {e["action"]: e for e in AdminStore(stack.mongo("admin")).find_audit(who="agent")}
    assert actions["desk_request"]["after"]["channel"] == "phone"
    assert actions["desk_offer_accepted"]["after"]["booking"] == booking_ref
    assert "Mendes" not in str(list(actions.values()))
    pdf = stack.staff.get(f"/desk/bookings/{booking_ref}/convocation.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_every_new_staff_endpoint_needs_a_session_its_role_and_csrf(stack):
    requests_mode(stack)
    made = stack.partner()
    pid = made["id"]
    supervisor_json = [("GET", "/api/partners"), ("POST", "/api/partners"),
                       ("GET", f"/api/partners/{pid}/filings"),
                       ("POST", f"/api/partners/{pid}/suspend"), ("POST", f"/api/partners/{pid}/renew")]
    agent_json = [("POST", "/api/desk/requests"), ("GET", "/api/desk/offers"),
                  ("POST", "/api/desk/requests/REQ-0000-0000/accept")]
    for method, path in supervisor_json + agent_json:
        answer = stack.staff.request(method, path, json={})
        assert answer.status_code == 401, (method, path)
    agent = stack.bearer("agent")
    for method, path in supervisor_json:
        answer = stack.staff.request(method, path, json={}, headers=agent)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", (method, path)
    for method, path in (("GET", "/partners"), ("POST", "/partners"), ("GET", "/desk/requests"),
                         ("POST", "/desk/requests"), ("GET", "/desk/offers"),
                         ("POST", "/desk/offers/REQ-0000-0000/accept")):
        answer = stack.staff.request(method, path, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login", (method, path)
    page_session(stack.staff, "agent")
    assert stack.staff.get("/partners").status_code == 403
    assert stack.staff.get("/desk/requests").status_code == 200
    # no CSRF token: refused, nothing filed
    form = dict(person(7), channel="desk", phone="0467000000", sites="montpellier", times="monday-morning")
    del form["availability"]
    assert stack.staff.post("/desk/requests", data=form).status_code == 403
    assert stack.mongo("requests")["requests"].count_documents({}) == 0
    page = stack.staff.get("/desk/requests").text
    sent = stack.staff.post("/desk/requests", data=dict(form, csrf=csrf_of(page), key=re.search(
        r'name="key" value="([^"]+)"', page).group(1)))
    assert sent.status_code == 200 and "Demande déposée" in sent.text, sent.text[:2000]
    # a supervisor's page: suspend needs the token too
    chief = Http(stack.staff.base[len("http://127.0.0.1:"):])
    page_session(chief, "chief")
    assert chief.post("/partners", data={"action": "suspend", "partner_id": pid}).status_code == 403
    assert stack.rpc.requests.partner(pid)["state"] == "active"
    page = chief.get("/partners").text
    assert chief.post("/partners", data={"action": "suspend", "partner_id": pid,
                                         "csrf": csrf_of(page)}).status_code == 200
    assert stack.rpc.requests.partner(pid)["state"] == "suspended"
    hostile = stack.staff.post("/api/partners", headers=stack.bearer("chief"),
                               json={"name": {"$gt": ""}, "contact_email": "a@example.org",
                                     "quotas": {"renewal": {"$gt": 0}}, "expires": "2030-01-01"})
    assert hostile.status_code == 400 and {"name", "quotas.renewal.value"} <= set(hostile.json()["fields"])
    filing = stack.public.post("/api/partner/requests", json=dict(person(8), mailbox="partner",
                                                                  family_name={"$ne": ""}),
                               headers={"Authorization": f"Bearer {made['api_key']}"})
    assert filing.status_code == 400 and "family_name" in filing.json()["fields"]
    bad = chief.post("/partners", data={"action": "create", "csrf": csrf_of(page), "name": "X",
                                        "contact_email": "nope", "expires": "soon"})
    assert bad.status_code == 400 and "contact_email" in bad.text
    good = chief.post("/partners", data={"action": "create", "csrf": csrf_of(page), "name": "Réseau Éducation",
                                         "contact_email": "contact@resf.example.org", "quota_renewal": "4",
                                         "expires": (date.today() + timedelta(days=90)).isoformat()})
    assert good.status_code == 200 and 'id="api-key"' in good.text
    shown = re.search(r"<code>(PTN-[^<]+)</code>", good.text).group(1)
    assert stack.public.get("/api/partner", headers={"Authorization": f"Bearer {shown}"}).json()["quotas"] == {"renewal": 4}
    assert shown not in chief.get("/partners").text  # shown once


def test_the_fairness_page_shows_the_partners_quotas_and_their_use(stack):
    requests_mode(stack)
    key = stack.partner(quotas={"renewal": 5})["api_key"]
    stack.partner(quotas={"renewal": 2}, name="Secours Populaire")
    assert stack.file(key, 0).status_code == 201
    page = stack.public.get("/fairness")
    assert page.status_code == 200
    section = page.text.split('id="h-renewal"')[1].split("</section>")[0]
    assert re.search(r'class="partners">1 / 7 \(2 partenaires', section), section


@pytest.mark.parametrize("viewport, width", [(DESK, "desk"), (PHONE, "320")])
def test_the_partners_pages_in_a_browser(stack, new_page, viewport, width, axe_url):
    """Log in with the key, file for a beneficiary, see the quota's use and the refusal once it
    is used: in Chromium at desk width and 320 px, no sideways scrolling, no serious axe-core
    violation, screenshots in var/screenshots/."""
    requests_mode(stack)
    key = stack.partner(quotas={"renewal": 1})["api_key"]
    base = stack.public.base
    page = new_page(viewport=viewport)
    axe = new_page(viewport=viewport, bypass_csp=True)
    assert blocking_violations(axe, base + "/partners/login", axe_url) == []
    page.goto(base + "/partners")
    page.wait_for_url("**/partners/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/partners")
    assert "0 / 1" in page.inner_text("#usage") and fits(page)
    screenshot(page, f"partner-home-{width}")
    axe.context.add_cookies(page.context.cookies())
    assert blocking_violations(axe, base + "/partners", axe_url) == []
    def file_for(someone, then):
        for field in ("family_name", "given_names", "birth_date", "foreigner_number"):
            page.fill(f"#{field}", someone[field])
        page.check("#sites")
        page.check("#times")
        page.click("text=Déposer la demande")
        page.wait_for_selector(then)

    file_for(person(0), "#filed")
    assert "1 / 1" in page.inner_text("#usage") and fits(page)
    screenshot(page, f"partner-filed-{width}")
    two = person(1)
    file_for(two, ".error-summary")
    assert page.evaluate(STATUS_JS) == 429
    assert "Quota hebdomadaire atteint" in page.inner_text("main") and fits(page)
    assert page.input_value("#family_name") == two["family_name"]  # nothing typed is lost
    screenshot(page, f"partner-quota-reached-{width}")
