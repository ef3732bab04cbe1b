"""The OpenAPI document of the JSON API, and schemathesis against the real gateway with it.

A bounded run (EXAMPLES per operation and generation mode) against the gateway, slots and
booking services on RabbitMQ: no answer may be a 5xx, have an undocumented status or content
type, or break the documented schema.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance,
                                 status_code_conformance)

from gateway.public.openapi import DOCUMENT

EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def test_the_document_describes_every_json_operation_and_its_errors():
    paths = DOCUMENT["paths"]
    assert DOCUMENT["openapi"].startswith("3.")
    assert set(paths) == {"/health", "/api/procedures", "/api/slots", "/api/bookings",
                          "/api/bookings/{reference}"}
    booking = paths["/api/bookings"]["post"]
    assert set(booking["responses"]) == {"201", "400", "404", "409", "429", "503"}
    assert booking["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BookingRequest"}
    request = DOCUMENT["components"]["schemas"]["BookingRequest"]
    assert {"procedure", "slot_id", "family_name", "given_names", "birth_date", "email"} <= set(request["required"])
    error = DOCUMENT["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "fields"}
    assert {p["name"] for p in paths["/api/slots"]["get"]["parameters"]} == {
        "procedure", "from", "to", "page", "per_page"}


def test_the_gateway_serves_it(http, site):
    served = http.get("/api/openapi.json")
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("application/json")
    assert served.json() == DOCUMENT


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error_nor_schema_break(site, mode):
    schema = schemathesis.openapi.from_url(f"{site}/api/openapi.json")
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case):
            response = case.call(base_url=site, timeout=10)
            case.validate_response(response, checks=CHECKS)
            tried.append((operation.label, response.status_code))

        try:
            exercise()
        except Unsatisfiable:
            # nothing to get wrong in an operation without input (GET /health, /api/procedures)
            assert mode == GenerationMode.NEGATIVE and not operation.query and not operation.body
    statuses = {status for _, status in tried}
    operations = {label for label, _ in tried}
    assert len(operations) == (6 if mode == GenerationMode.POSITIVE else 4), operations
    assert statuses & ({200, 201} if mode == GenerationMode.POSITIVE else {400})
