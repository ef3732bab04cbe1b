"""The public gateway's /ready, /metrics and /fairness, over real HTTP in front of the real
slots and booking services."""
import re

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client.parser import text_string_to_metric_families

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.common.metrics import UNMATCHED
from services.slots.service import SlotsService
from tests.browser import PHONE, browser, new_page, screenshot  # noqa: F401 (fixtures)
from tests.helpers import applicant, plan

EMAIL = "amina.diallo@example.org"


@pytest.fixture
def system(container_factory, config):
    started = {cls.name: container_factory(cls, config)
               for cls in (SlotsService, BookingService, PublicGateway)}
    for container in started.values():
        container.start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1, days=3), release="now")
    return started


def metrics(http):
    answer = http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def requests_count(families, route, method="GET", status="200"):
    return sum(s.value for s in families["http_requests"].samples
               if s.name == "http_requests_total" and s.labels == {
                   "route": route, "method": method, "status": status})


def book(http, email=EMAIL):
    slot_id = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][0]["id"]
    answer = http.post("/api/bookings", json=applicant(slot_id, email=email, family_name="Diallo",
                                                        given_names="Amina"))
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_metrics_parse_move_with_requests_and_carry_no_personal_data(system, http):
    before = metrics(http)
    for _ in range(3):
        assert http.get("/api/slots", params={"procedure": "renewal"}).status_code == 200
    created = book(http)
    reference, token = created["reference"], created["token"]
    assert http.get(f"/api/bookings/{reference}", headers={"X-Booking-Token": token}).status_code == 200
    assert http.get(f"/bookings/{reference}?token={token}").status_code == 200
    assert http.get(f"/no/such/{EMAIL}").status_code == 404
    after = metrics(http)

    # three, and the one book() made to find a slot
    assert requests_count(after, "/api/slots") - requests_count(before, "/api/slots") == 4
    assert requests_count(after, "/api/bookings", "POST", "201") == 1
    assert requests_count(after, "/api/bookings/<reference>") == 1
    assert requests_count(after, UNMATCHED, "GET", "404") == 1
    latency = [s for s in after["http_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["route"] == "/api/slots"]
    assert latency and latency[0].value >= 3
    rpc = {(s.labels["service"], s.labels["method"], s.labels["outcome"]): s.value
           for s in after["rpc_duration_seconds"].samples if s.name.endswith("_count")}
    assert rpc[("booking", "create", "ok")] == 1 and rpc[("slots", "list_open", "ok")] >= 4
    assert {s.labels["service"]: s.value for s in after["service_up"].samples} == {
        "slots": 1, "booking": 1}
    outbox = {(s.labels["kind"], s.labels["state"]): s.value for s in after["outbox_records"].samples}
    assert sum(outbox[("created", state)] for state in ("pending", "done")) == 1

    # no label carries the reference, the token, the e-mail or a raw path: routes are the
    # gateway's URL rules, everything else comes from the code's own vocabulary
    labels = {value for family in after.values() for s in family.samples
              for value in s.labels.values()}
    text = http.get("/metrics").text
    for secret in (reference, token, EMAIL, "Diallo", "Amina", "/no/such"):
        assert secret not in text
    route_values = {s.labels["route"] for s in after["http_requests"].samples}
    assert all(route == UNMATCHED or re.fullmatch(r"/[a-z/._<>-]*", route) for route in route_values)
    assert len(labels) < 200  # bounded: a handful of routes, services, methods and states


def test_ready_says_which_service_does_not_answer(system, http):
    answer = http.get("/ready")
    assert answer.status_code == 200 and answer.json()["status"] == "ready"
    system["booking"].stop()
    answer = http.get("/ready")
    assert answer.status_code == 503
    body = answer.json()
    assert body["error"] == "not_ready" and body["message"]
    assert body["services"]["booking"]["status"] == "unreachable"
    assert body["services"]["slots"]["status"] == "ok"
    assert http.get("/health").status_code == 200  # alive all the same


def test_the_fairness_page_shows_figures_and_no_personal_data(system, http, config, new_page):
    created = book(http)
    other = book(http, email="second.person@example.org")
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.booking.system_cancel(other["reference"], "slot_grabbing")
    page = http.get("/fairness")
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"].startswith("public")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    text = page.text
    assert "Renouvellement de titre de séjour" in text and "gratuit" in text
    english = http.get("/fairness", params={"lang": "en"}).text
    assert "Renewal of a residence permit" in english and "free" in english
    assert "<svg" in text and "<script" not in text and "style=" not in text
    # renewals (checked against the register) and first applications counted apart (issue 24)
    kinds = text.split('id="h-kinds"')[1].split("</section>")[0]
    assert 'id="kind-renewals"' in kinds and 'id="kind-first_applications"' in kinds
    renewal = text.split('id="h-renewal"')[1].split("<section")[0]
    assert re.search(r"Annulées pour trafic.*?<dd>1</dd>", renewal, re.S)
    for secret in (created["reference"], created["token"], EMAIL, "Diallo", "Amina",
                   "second.person"):
        assert secret not in text
    assert http.get("/static/site.css").status_code == 200

    phone = new_page(viewport=PHONE)
    phone.goto(f"{http.base}/fairness")
    screenshot(phone, "fairness-320")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert phone.evaluate("document.querySelectorAll('svg.plot').length") >= 1
    assert not [m for m in phone.console_messages() if "Content Security Policy" in m]
