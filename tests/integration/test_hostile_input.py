"""Inputs a hostile or broken client sends to the public API: each answers 400, 413 or 415
with the field and a JSON body, never 5xx, and takes no place."""
import json

import pytest

from tests.helpers import applicant
from tests.integration.test_public_gateway import (  # noqa: F401 (fixtures)
    assert_error, first_slot_id, gateway, gateway_config, services)

JSON = {"Content-Type": "application/json"}


def ledger(mongo):
    """Each slot's booked count and live holds, as the slots database has them."""
    db = mongo("slots")
    held = {}
    for hold in db["holds"].find({"state": "held"}, {"slot_id": 1}):
        held[hold["slot_id"]] = held.get(hold["slot_id"], 0) + 1
    return {slot["_id"]: (slot.get("booked", 0), held.get(slot["_id"], 0))
            for slot in db["slots"].find({}, {"booked": 1})}


def booking_body(http, **overrides):
    return applicant(first_slot_id(http), **overrides)


def test_a_date_at_the_end_of_time_in_the_slot_search_is_400(http, services):
    for params, field in [({"from": "9999-12-31"}, "from"), ({"to": "9999-12-31"}, "to"),
                          ({"from": "9999-12-31", "to": "9999-12-31"}, "from")]:
        body = assert_error(http.get("/api/slots", params=dict(params, procedure="renewal")),
                            400, "invalid_request")
        assert field in body["fields"]


@pytest.mark.parametrize("raw", [
    "[" * 3000 + "]" * 3000,
    '{"family_name": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"a":' + '{"b":' * 2500 + "1" + "}" * 2501,
    '{"family_name": ' + "[" * 50 + "]" * 50 + "}",
])
def test_deeply_nested_json_is_400(http, gateway, raw):
    assert_error(http.post("/api/bookings", data=raw, headers=JSON), 400, "invalid_request")


def test_a_lone_surrogate_in_a_name_is_400_and_takes_no_place(http, services, mongo):
    body = booking_body(http)
    before = ledger(mongo)
    raw = json.dumps(body).replace('"Benali"', '"Ben\\ud800ali"')
    found = assert_error(http.post("/api/bookings", data=raw, headers=JSON), 400, "invalid_request")
    assert "family_name" in found["fields"]
    assert ledger(mongo) == before
    # the same request without it books: the refusal was about the surrogate
    assert http.post("/api/bookings", json=body).status_code == 201
    assert ledger(mongo) != before


def test_a_lone_surrogate_in_an_unknown_key_is_400_in_json(http, services):
    raw = json.dumps(booking_body(http))[:-1] + ', "\\udfffx": 1, "n\\ud800": {"\\ud800": "a"}}'
    found = assert_error(http.post("/api/bookings", data=raw, headers=JSON), 400, "invalid_request")
    assert "_body" in found["fields"]


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u200b", "\u202e", "\x00", "\ue000"])
def test_invisible_characters_in_names_are_400_with_the_field(http, services, mongo, char):
    before = ledger(mongo)
    found = assert_error(http.post("/api/bookings", json=booking_body(http, given_names=f"Yas{char}mine")),
                         400, "invalid_request")
    assert list(found["fields"]) == ["given_names"]
    assert ledger(mongo) == before


def test_an_internationalised_e_mail_address_is_refused_before_booking(http, services, mongo):
    before = ledger(mongo)
    found = assert_error(http.post("/api/bookings", json=booking_body(http, email="josé@exemple.fr")),
                         400, "invalid_request")
    assert "cannot deliver" in found["fields"]["email"][0]
    assert ledger(mongo) == before


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_json_bodies_only_as_application_json(http, services, mongo, content_type):
    """A web page can make a visitor's browser send text/plain or a form, not JSON."""
    before = ledger(mongo)
    headers = {"Content-Type": content_type} if content_type else {}
    request = http.post("/api/bookings", data=json.dumps(booking_body(http)).encode(), headers=headers)
    found = assert_error(request, 415, "unsupported_media_type")
    assert "Content-Type" in found["fields"]
    assert ledger(mongo) == before
    assert http.post("/api/bookings", data=json.dumps(booking_body(http)).encode(),
                     headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 201


def test_a_chunked_body_is_read_whole(http, services):
    raw = json.dumps(booking_body(http)).encode()
    chunks = (raw[i:i + 7] for i in range(0, len(raw), 7))  # a generator: requests sends chunks
    response = http.post("/api/bookings", data=chunks, headers=JSON)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201, response.text
    assert response.json()["reference"].startswith("RDV-")


def test_a_chunked_body_too_large_is_413(http, gateway):
    chunks = (b" " * 1024 for _ in range(40))
    response = http.post("/api/bookings", data=chunks, headers=JSON)
    assert_error(response, 413, "payload_too_large")


def test_answers_with_personal_data_are_not_stored_by_caches(http, services):
    created = http.post("/api/bookings", json=booking_body(http))
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    url = f"/api/bookings/{created.json()['reference']}"
    token = {"X-Booking-Token": created.json()["token"]}
    seen = http.get(url, headers=token)
    assert seen.json()["family_name"] == "Benali" and seen.headers["Cache-Control"] == "no-store"
    assert http.get(url, headers={"X-Booking-Token": "nope"}).headers["Cache-Control"] == "no-store"
    assert http.delete(url, headers=token).headers["Cache-Control"] == "no-store"
    # public answers stay cacheable by the browser's own rules
    assert "Cache-Control" not in http.get("/api/procedures").headers
