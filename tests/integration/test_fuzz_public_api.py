"""Generated requests against the real public gateway, slots and booking services on
RabbitMQ: no answer is a 5xx, every answer is JSON, and a refused request changes no slot's
booked count or holds (the slot ledger in the slots database)."""
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import applicant
from tests.integration.test_hostile_input import ledger
from tests.integration.test_public_gateway import (  # noqa: F401 (fixtures)
    first_slot_id, gateway, gateway_config, services)

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FIELDS = ["procedure", "slot_id", "family_name", "given_names", "birth_date", "email", "phone",
          "foreigner_number"]
# any text, with lone surrogates (st.text() never makes them: joined by hand), separators
# and controls
TEXT = st.lists(st.characters() | st.sampled_from("\ud800\udfff\u2028\u2029\x00$"),
                max_size=40).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)
# what requests can put in a header: latin-1, no line breaks, not starting with a space
HEADER = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                               exclude_characters="\x85\xa0"), max_size=60)
# mostly JSON, so that most bodies reach the parser and the schema rather than the 415
CONTENT_TYPES = st.integers(0, 9).flatmap(lambda n: st.just("application/json") if n < 7 else (
    st.sampled_from(["application/json; charset=utf-8", "text/plain", None]) | HEADER))


@st.composite
def booking_bodies(draw, slot_id):
    """Mostly a valid booking with a few fields changed, added or removed; sometimes junk."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        value = draw(JSON_VALUES)
    else:
        value = applicant(slot_id)
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
            action = draw(st.sampled_from(["replace", "delete", "append"]))
            if action == "delete":
                value.pop(field, None)
            elif action == "append" and isinstance(value.get(field), str):
                value[field] += draw(TEXT)
            else:
                value[field] = draw(JSON_VALUES)
        value.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=2)))
    return json.dumps(value).encode()  # ASCII escapes: lone surrogates travel as \\udXXX


def assert_sane(response):
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    if response.status_code >= 400:
        assert body["error"] and body["message"] and isinstance(body["fields"], dict)
    return body


@pytest.fixture
def slot_id(http, services):
    return first_slot_id(http)


def test_fuzz_booking_requests(http, services, mongo, slot_id):
    @FUZZ
    @given(body=booking_bodies(slot_id), content_type=CONTENT_TYPES,
           forwarded=st.none() | HEADER, agent=st.none() | HEADER, chunked=st.booleans())
    def book(body, content_type, forwarded, agent, chunked):
        headers = {key: value for key, value in [("Content-Type", content_type),
                                                 ("X-Forwarded-For", forwarded),
                                                 ("User-Agent", agent)] if value is not None}
        before = ledger(mongo)
        data = (body[i:i + 64] for i in range(0, len(body), 64)) if chunked and body else body
        response = http.post("/api/bookings", data=data, headers=headers)
        assert_sane(response)
        if response.status_code >= 400:
            assert ledger(mongo) == before, response.text

    book()


def test_fuzz_slot_search(http, services):
    keys = st.sampled_from(["procedure", "from", "to", "page", "per_page"]) | TEXT
    values = st.sampled_from(["renewal", "9999-12-31", "0001-01-01", "2027-02-30", "-1", "0",
                              "1e9", "$gt"]) | TEXT

    @FUZZ
    @given(params=st.dictionaries(keys, values, max_size=5), raw=st.none() | st.binary(max_size=60))
    def search(params, raw):
        if raw is not None:  # a query string as any bytes, percent-encoded
            response = http.get("/api/slots?" + quote(raw, safe="=&"))
        else:
            # surrogatepass: as a client that does not care for UTF-8's rules would send them
            response = http.get("/api/slots", params={
                k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                for k, v in params.items()})
        assert_sane(response)

    search()


def test_fuzz_booking_access(http, services, mongo, slot_id):
    booked = http.post("/api/bookings", json=applicant(slot_id)).json()
    references = st.sampled_from([booked["reference"], "RDV-0000-0000", "rdv-" + booked["reference"][4:]]) \
        | st.text(max_size=30)
    tokens = st.sampled_from([booked["token"], booked["token"][:-1], ""]) | HEADER

    @FUZZ
    @given(method=st.sampled_from(["GET", "DELETE"]), reference=references, token=tokens,
           in_query=st.booleans())
    def access(method, reference, token, in_query):
        before = ledger(mongo)
        path = "/api/bookings/" + quote(reference.encode("utf-8", "surrogatepass"), safe="")
        if in_query:
            response = http.request(method, path, params={"token": token})
        else:
            response = http.request(method, path, headers={"X-Booking-Token": token})
        body = assert_sane(response)
        if response.status_code >= 400:
            assert ledger(mongo) == before, response.text
        elif response.status_code == 200:
            assert body["reference"] == booked["reference"] and response.headers["Cache-Control"] == "no-store"

    access()
