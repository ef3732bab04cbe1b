"""The public JSON API over real HTTP, in front of the real slots and booking services."""
import re
import time

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.slots.service import SlotsService
from tests.helpers import applicant, confirm_token_of, plan, scheduled_slot_id, wait_until


@pytest.fixture
def gateway_config(config, request):
    return dict(config, **getattr(request, "param", {}))


@pytest.fixture
def gateway(container_factory, gateway_config):
    container = container_factory(PublicGateway, gateway_config)
    container.start()
    return container


@pytest.fixture
def services(container_factory, config, gateway, request):
    # settings of the slots and booking services for one test (indirect parametrize)
    overrides = getattr(request, "param", {})
    started = {cls.name: container_factory(cls, dict(config, **overrides))
               for cls in (SlotsService, BookingService)}
    for container in started.values():
        container.start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        rpc.slots.create_from_plan(plan(procedure="renewal_10y", desks=1), release="now")
    return started


def first_slot_id(http, procedure="renewal"):
    response = http.get("/api/slots", params={"procedure": procedure})
    assert response.status_code == 200
    return response.json()["slots"][0]["id"]


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"]
    assert "Traceback" not in response.text
    return body


def test_health_and_procedures(http, gateway):
    assert http.get("/health").json() == {"status": "ok"}
    body = http.get("/api/procedures").json()
    by_code = {p["code"]: p for p in body["procedures"]}
    assert {"first_application", "renewal", "renewal_10y", "change_of_status", "duplicate"} <= set(by_code)
    assert by_code["renewal"]["label_fr"] and by_code["renewal"]["label_en"]
    walk_in = by_code["renewal_10y"]["walk_in"]
    assert "wednesday" not in walk_in["weekdays"] and "mercredi" in walk_in["fr"]
    assert "walk_in" not in by_code["renewal"]
    assert "gratuits" in body["notice"]["fr"] and "free" in body["notice"]["en"]


# the register checks as deployed: an empty setting means its default (tests/conftest.py turns
# both off for the other tests), and as another deployment might set them
DEPLOYED = {"VISA_CHECKED_PROCEDURES": "", "REGISTER_CHECKED_PROCEDURES": ""}
CHANGED = {"VISA_CHECKED_PROCEDURES": "change_of_status",
           "REGISTER_CHECKED_PROCEDURES": "duplicate"}
VISA = {"field": "visa_number", "checked_against": "visas"}
PERMIT = {"field": "foreigner_number", "checked_against": "permits"}
UNCHECKED_NUMBER = {"field": "foreigner_number", "checked_against": None}


@pytest.mark.parametrize("gateway_config, expected", [
    (DEPLOYED, {"first_application": [VISA], "renewal": [PERMIT], "renewal_10y": [PERMIT],
                "change_of_status": [], "duplicate": []}),
    (CHANGED, {"first_application": [], "renewal": [UNCHECKED_NUMBER],
               "renewal_10y": [UNCHECKED_NUMBER], "change_of_status": [VISA],
               "duplicate": [PERMIT]}),
], indirect=["gateway_config"])
def test_procedures_say_what_a_request_must_carry_under_the_settings(http, gateway, expected):
    """request_requires follows VISA_CHECKED_PROCEDURES and REGISTER_CHECKED_PROCEDURES, the
    settings the requests service checks by; the fields clients read before stay as they were."""
    body = http.get("/api/procedures").json()
    by_code = {p["code"]: p for p in body["procedures"]}
    assert {code: p["request_requires"] for code, p in by_code.items()} == expected
    assert by_code["renewal"]["requires_foreigner_number"] is True
    assert by_code["first_application"]["requires_foreigner_number"] is False
    assert set(by_code["renewal"]) == {"code", "label_fr", "label_en", "label_ar",
                                       "requires_foreigner_number", "request_requires"}
    assert "gratuits" in body["notice"]["fr"]


@pytest.mark.parametrize("gateway_config, services, expected", [
    (DEPLOYED, {"PROCEDURE_MODE_DEFAULT": "requests"},
     {"first_application": {"visa_number"}, "renewal": {"foreigner_number"},
      "change_of_status": set(), "duplicate": set()}),
    (CHANGED, {"PROCEDURE_MODE_DEFAULT": "requests"},
     {"first_application": set(), "renewal": {"foreigner_number"},
      "change_of_status": {"visa_number"}, "duplicate": {"foreigner_number"}}),
], indirect=["gateway_config", "services"])
def test_the_request_form_asks_what_the_settings_require(http, services, expected):
    """The request form asks for the identifiers GET /api/procedures names (one rule)."""
    listed = {p["code"]: {r["field"] for r in p["request_requires"]}
              for p in http.get("/api/procedures").json()["procedures"]}
    for code, fields in expected.items():
        page = http.get(f"/request/{code}")
        assert page.status_code == 200, page.text
        asked = {f for f in ("visa_number", "foreigner_number") if f'name="{f}"' in page.text}
        assert asked == fields == listed[code], code


def test_list_slots(http, services):
    body = http.get("/api/slots", params={"procedure": "renewal", "per_page": 3}).json()
    assert len(body["slots"]) == 3 and body["has_more"]
    slot = body["slots"][0]
    assert set(slot) == {"id", "site", "procedure", "start", "end", "free"}
    assert slot["start"].endswith(("+01:00", "+02:00"))  # shown in Europe/Paris
    assert [s["start"] for s in body["slots"]] == sorted(s["start"] for s in body["slots"])
    assert "walk_in" not in body
    assert "walk_in" in http.get("/api/slots", params={"procedure": "renewal_10y"}).json()


@pytest.mark.parametrize("params, field", [
    ({}, "procedure"),
    ({"procedure": "renewal", "from": "2027-13-01"}, "from"),
    ({"procedure": "renewal", "from": "2027-02-01", "to": "2027-01-01"}, "to"),
    ({"procedure": "renewal", "per_page": "lots"}, "per_page"),
    ({"procedure": "$gt"}, "procedure"),
    ({"procedure": "renewal", "$where": "1"}, "$where"),
])
def test_list_slots_bad_query(http, gateway, params, field):
    body = assert_error(http.get("/api/slots", params=params), 400, "invalid_request")
    assert field in body["fields"]


def test_book_read_and_cancel(http, services, bus):
    listener = bus("booking", "booking_created")
    slot_id = first_slot_id(http)
    response = http.post("/api/bookings", json=applicant(slot_id),
                         headers={"X-Forwarded-For": "198.51.100.23", "User-Agent": "Firefox/140"})
    assert response.status_code == 201, response.text
    booked = response.json()
    assert booked["reference"].startswith("RDV-") and booked["token"]
    assert booked["slot"]["id"] == slot_id and booked["slot"]["site_address"]
    assert "gratuits" in booked["notice"]["fr"] and "free" in booked["notice"]["en"]
    # the client address behind the trusted (loopback) proxy reaches the booking event
    _, event = listener.wait_for()
    assert event["client"] == {"ip": "198.51.100.23", "user_agent": "Firefox/140"}

    assert booked["status"] == "pending" and "not final" in booked["not_final"]["en"]
    assert "pas encore définitif" in booked["not_final"]["fr"] and booked["confirm_by"]
    url = f"/api/bookings/{booked['reference']}"
    seen = http.get(url, headers={"X-Booking-Token": booked["token"]}).json()
    assert seen["status"] == "pending" and seen["family_name"] == "Benali"
    assert_error(http.post(f"{url}/confirm", headers={"X-Booking-Token": "x" * 43}), 404, "not_found")
    # the booker's own token does not confirm: only the e-mail's link proves the mailbox
    assert "confirm_token" not in booked and "confirm_token" not in seen
    assert_error(http.post(f"{url}/confirm", headers={"X-Booking-Token": booked["token"]}), 409,
                 "refused")
    assert http.get(url, headers={"X-Booking-Token": booked["token"]}).json()["status"] == "pending"
    confirmed = http.post(f"{url}/confirm", headers={"X-Booking-Token": event["confirm_token"]})
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "active"
    assert "not_final" not in confirmed.json()
    assert http.get(url, params={"token": booked["token"]}).status_code == 200

    cancelled = http.delete(url, headers={"X-Booking-Token": booked["token"]})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = http.delete(url, headers={"X-Booking-Token": booked["token"]})
    assert again.status_code == 200 and again.json()["cancel_reason"] == "applicant"
    # the place is given back, but not listed at once (tests/integration/test_releases.py)
    listed = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"]
    assert slot_id not in [s["id"] for s in listed]


def test_unknown_booking_and_wrong_token_get_the_same_404(http, services):
    booked = http.post("/api/bookings", json=applicant(first_slot_id(http))).json()
    wrong_token = http.get(f"/api/bookings/{booked['reference']}", headers={"X-Booking-Token": "x" * 43})
    unknown = http.get("/api/bookings/RDV-0000-0000", headers={"X-Booking-Token": booked["token"]})
    assert_error(wrong_token, 404, "not_found")
    assert wrong_token.json() == unknown.json() and unknown.status_code == 404
    assert_error(http.delete(f"/api/bookings/{booked['reference']}", params={"token": "x"}), 404, "not_found")
    assert http.get(f"/api/bookings/{booked['reference']}",
                    headers={"X-Booking-Token": booked["token"]}).json()["status"] == "pending"


def test_a_second_booking_on_a_confirmed_email_is_409_naming_the_reference_not_the_name(http, services,
                                                                                       mongo):
    first, other = [s["id"] for s in http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][:2]]
    booked = http.post("/api/bookings", json=applicant(first)).json()
    http.post(f"/api/bookings/{booked['reference']}/confirm",
              headers={"X-Booking-Token": confirm_token_of(mongo, booked["reference"])})
    second = http.post("/api/bookings", json=applicant(other, email="Yasmine.Benali@example.org",
                                                       family_name="Diallo", given_names="Awa"))
    body = assert_error(second, 409, "email_has_booking")
    assert booked["reference"] in body["message"] and "Benali" not in second.text
    assert "une adresse par personne" in body["message"] and "one e-mail address per person" in body["message"]
    assert "email" in body["fields"]


@pytest.mark.parametrize("services", [{"SLOTS_DECOY_SHARE": 0.2}], indirect=True)
def test_the_json_api_shows_decoys_like_any_slot_and_the_pages_listing_does_not(http, services, config):
    with ClusterRpcProxy(config, timeout=20) as rpc:
        listed = http.get("/api/slots", params={"procedure": "renewal", "per_page": 200}).json()["slots"]
        from datetime import date, timedelta
        today = date.today()
        for_pages = rpc.slots.list_open("renewal", today.isoformat(),
                                        (today + timedelta(days=91)).isoformat(), 1, 200)["slots"]
        everything = rpc.slots.list_open("renewal", today.isoformat(),
                                         (today + timedelta(days=91)).isoformat(), 1, 200,
                                         include_decoys=True)["slots"]
    decoys = {s["id"] for s in everything if s["decoy"]}
    assert decoys and decoys <= {s["id"] for s in listed}
    assert not decoys & {s["id"] for s in for_pages}
    # nothing in the JSON tells a decoy from a slot
    assert {tuple(sorted(s)) for s in listed} == {("end", "free", "id", "procedure", "site", "start")}


def test_full_slot_is_409(http, services):
    slot_id = first_slot_id(http)
    assert http.post("/api/bookings", json=applicant(slot_id)).status_code == 201
    body = assert_error(http.post("/api/bookings", json=applicant(slot_id, email="b@example.org")),
                        409, "slot_full")
    assert "full" in body["message"]


@pytest.mark.parametrize("gateway_config", [{"SLOT_VIEW_SECONDS": 30}], indirect=True)
def test_the_winner_of_the_last_place_tells_the_gateway_to_refuse_the_next_attempts(http, services):
    slot_id = first_slot_id(http)
    booked = http.post("/api/bookings", json=applicant(slot_id))
    assert booked.status_code == 201 and "slot_full" not in booked.json()  # internal, not for applicants
    services["booking"].kill()
    # the booking service is gone: only the gateway's own view can answer 409 (not 503)
    assert_error(http.post("/api/bookings", json=applicant(slot_id, email="b@example.org")), 409, "slot_full")
    other = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][0]["id"]
    assert_error(http.post("/api/bookings", json=applicant(other, email="c@example.org")), 503,
                 "service_unavailable")


def test_walk_in_rule_on_10_year_card_booking(http, services):
    slot_id = first_slot_id(http, "renewal_10y")
    booked = http.post("/api/bookings", json=applicant(slot_id, procedure="renewal_10y")).json()
    assert "mercredi" in booked["walk_in"]["fr"] and "Wednesday" in booked["walk_in"]["en"]


@pytest.mark.parametrize("body, field", [
    ({"procedure": "renewal"}, "slot_id"),
    (dict(applicant("abc"), email={"$gt": ""}), "email"),
    (dict(applicant("abc"), **{"$where": "1"}), "$where"),
    (dict(applicant("abc"), birth_date="2999-01-01"), "birth_date"),
    (dict(applicant("abc"), foreigner_number="12"), "foreigner_number"),
    (dict(applicant("abc"), family_name="x" * 5000), "family_name"),
])
def test_bad_booking_input_is_400_with_fields(http, services, body, field):
    found = assert_error(http.post("/api/bookings", json=body), 400, "invalid_request")
    assert field in found["fields"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_bodies(http, gateway, raw):
    assert_error(http.post("/api/bookings", data=raw, headers={"Content-Type": "application/json"}),
                 400, "invalid_request")


def test_oversized_body_is_413(http, gateway):
    body = assert_error(http.post("/api/bookings", data=b"{" + b" " * 20000 + b"}",
                                  headers={"Content-Type": "application/json"}),
                        413, "payload_too_large")
    assert "_body" in body["fields"]


def test_wrong_procedure_for_slot_is_400(http, services):
    slot_id = first_slot_id(http, "renewal_10y")
    body = assert_error(http.post("/api/bookings", json=applicant(slot_id)), 400, "invalid_request")
    assert "slot_id" in body["fields"]


def test_unknown_slot_is_404(http, services):
    assert_error(http.post("/api/bookings", json=applicant("0123456789abcdef")), 404, "not_found")


def test_a_slot_not_released_yet_is_booked_as_an_unknown_one(http, services, config):
    """POST /api/bookings answers a scheduled slot's id exactly as an unknown id: 404."""
    hidden, unknown = scheduled_slot_id(config), "0123456789abcdef"
    answers = [http.post("/api/bookings", json=applicant(slot_id)) for slot_id in (hidden, unknown)]
    assert_error(answers[0], 404, "not_found")
    assert answers[0].json() == answers[1].json()


def test_unknown_routes_and_methods_answer_json(http, gateway):
    assert_error(http.get("/api/nothing"), 404, "not_found")
    assert_error(http.put("/api/procedures"), 405, "method_not_allowed")


def test_routing_answers_keep_their_headers(http, gateway):
    """A redirect says where to (Location), a 405 what is allowed (Allow), in JSON still."""
    moved = http.get("/api//procedures", allow_redirects=False)
    assert moved.status_code == 308 and moved.json()["error"] == "permanent_redirect"
    assert moved.headers["Location"].endswith("/api/procedures"), moved.headers
    assert moved.headers["Content-Type"].startswith("application/json")
    assert http.get("/api//procedures").json()["procedures"]  # a client follows it
    refused = http.put("/api/procedures")
    assert_error(refused, 405, "method_not_allowed")
    assert "GET" in refused.headers["Allow"]


def test_service_never_started_is_503_at_once(http, gateway):
    started = time.monotonic()
    body = assert_error(http.get("/api/slots", params={"procedure": "renewal"}), 503,
                        "service_unavailable")
    assert "slots" in body["message"]
    assert time.monotonic() - started < 3


def test_service_stopped_is_503_within_the_rpc_timeout(http, services, container_factory, config,
                                                       mongo):
    slot_id = first_slot_id(http)
    services["booking"].stop()  # its queue remains: the call would wait forever unbounded
    started = time.monotonic()
    body = assert_error(http.post("/api/bookings", json=applicant(slot_id)), 503, "service_unavailable")
    elapsed = time.monotonic() - started
    assert 2.5 < elapsed < 6, elapsed  # RPC_TIMEOUT is 3 s in tests
    assert "booking" in body["message"]
    # the request the applicant was told failed expired in the queue: when booking comes
    # back it does not book behind their back
    container_factory(BookingService, config).start()
    # the given-up request is ahead of this one on booking's queue: the broker dropped it (its
    # TTL) or booking's consumer did, before taking the next message (its deadline has passed)
    with ClusterRpcProxy(config, timeout=20) as rpc:
        assert rpc.booking.health()
    assert mongo("booking")["bookings"].count_documents({}) == 0
    slot = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][0]
    assert (slot["id"], slot["free"]) == (slot_id, 1)


@pytest.mark.parametrize("gateway_config", [{"SLOT_VIEW_SECONDS": 1}], indirect=True)
def test_a_place_freed_after_full_is_bookable_once_the_view_has_looked(http, services, mongo):
    slot_id = first_slot_id(http)
    first = http.post("/api/bookings", json=applicant(slot_id)).json()
    assert http.post("/api/bookings", json=applicant(slot_id, email="b@example.org")).status_code == 409
    http.delete(f"/api/bookings/{first['reference']}", headers={"X-Booking-Token": first["token"]})
    # its secret return, brought to now (epoch seconds in $set are safe on the stand-in)
    mongo("slots")["slots"].update_one({"_id": slot_id}, {"$set": {"rerelease_ts": time.time()}})
    assert wait_until(lambda: slot_id in [s["id"] for s in http.get(
        "/api/slots", params={"procedure": "renewal"}).json()["slots"]])
    time.sleep(1.1)  # SLOT_VIEW_SECONDS: the gateway's view no longer says "full"
    assert http.post("/api/bookings", json=applicant(slot_id, email="b@example.org")).status_code == 201


def test_the_link_in_the_e_mail_shows_the_booking_and_cancelling_takes_a_confirmed_post(http, services):
    booked = http.post("/api/bookings", json=applicant(first_slot_id(http))).json()
    page = http.get(f"/bookings/{booked['reference']}", params={"token": booked["token"]})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert booked["reference"] in page.text and "Benali" in page.text and "gratuits" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    # cancelling is a link to a confirmation step (tests/pages/ try it), never a GET that cancels
    assert f'href="/bookings/{booked["reference"]}/cancel"' in page.text
    # opening the link twice (or a mail client prefetching it) cancels nothing
    assert http.get(f"/api/bookings/{booked['reference']}",
                    headers={"X-Booking-Token": booked["token"]}).json()["status"] == "pending"
    http.cookies.clear()
    wrong = http.post(f"/bookings/{booked['reference']}/cancel", data={"token": booked["token"]})
    assert wrong.status_code == 404 and "Introuvable" in wrong.text  # a token in the form is no key
    assert http.get(f"/bookings/{booked['reference']}", params={"token": "x"}).status_code == 404


def test_the_confirmation_link_shows_a_button_and_only_its_post_confirms(http, services, mongo):
    booked = http.post("/api/bookings", json=applicant(first_slot_id(http))).json()
    api = f"/api/bookings/{booked['reference']}"
    link = f"/bookings/{booked['reference']}/confirm"
    for _ in range(2):  # a mail client or a scanner fetching the link ahead
        page = http.get(link, params={"token": confirm_token_of(mongo, booked["reference"])})
        assert page.status_code == 200 and "Confirmer mon rendez-vous" in page.text
        assert "pas encore définitif" in page.text
        assert "token=" not in page.url  # moved into this booking's cookie, out of the address
        assert f'action="{link}"' in page.text
    assert http.get(api, headers={"X-Booking-Token": booked["token"]}).json()["status"] == "pending"
    # a post without the form's CSRF token (another site's form) confirms nothing
    assert http.post(link, data={}).status_code == 400
    assert http.get(api, headers={"X-Booking-Token": booked["token"]}).json()["status"] == "pending"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    done = http.post(link, data={"csrf_token": csrf})
    assert done.status_code == 200 and "Votre rendez-vous est confirmé" in done.text
    assert "Confirmer mon rendez-vous" not in done.text
    assert http.get(api, headers={"X-Booking-Token": booked["token"]}).json()["status"] == "active"
    http.cookies.clear()
    assert http.get(link).status_code == 404
    assert http.get(link, params={"token": "x"}).status_code in (400, 404)


def test_pages_escape_what_applicants_typed(http, services):
    booked = http.post("/api/bookings", json=applicant(first_slot_id(http),
                                                       family_name="<script>alert(1)</script>")).json()
    page = http.get(f"/bookings/{booked['reference']}", params={"token": booked["token"]})
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text


@pytest.mark.parametrize("gateway_config", [{"SLOT_VIEW_SECONDS": 1}], indirect=True)
def test_the_gateway_s_view_stops_listing_the_slot_whose_last_place_it_booked(http, services):
    # a plan opened at once is no release on the bus: the view's next look brings it
    assert wait_until(lambda: http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"])
    slot_id = first_slot_id(http)
    assert http.post("/api/bookings", json=applicant(slot_id)).status_code == 201
    # learnt from the booking's answer (or the view's next look): never shown again as free
    assert first_slot_id(http) != slot_id
    assert http.post("/api/bookings", json=applicant(slot_id, email="b@example.org")).status_code == 409
