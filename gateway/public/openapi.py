"""The OpenAPI 3 document of the public JSON API, built from the marshmallow schemas (apispec).

Request schemas are the ones the gateway validates with; answers are described in
gateway/public/schemas.py. Built once at import: it never changes while the gateway runs.
"""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway.public.schemas import (BookingCreatedSchema, BookingSchema, ErrorSchema,
                                    HealthSchema, ProceduresSchema, SlotListSchema, SlotQuerySchema)
from services.common.schemas import IDEMPOTENCY_KEY, BookingRequestSchema

ERRORS = {
    400: "invalid input: `fields` gives the reason per field",
    404: "unknown booking or slot, or wrong token (the same answer)",
    409: "the slot is full or no longer bookable (`slot_full`, `slot_not_bookable`), or one "
         "e-mail or one person already holds a confirmed booking (`email_has_booking`, "
         "`person_has_booking`), or a booking erased past its retention cannot be cancelled "
         "(`refused`)",
    429: "too_many_unconfirmed: too many bookings wait for their confirmation (from this "
         "address, at this e-mail domain, or in this release); nothing was held",
    503: "a service did not answer in time",
}


def _json(schema):
    return {"application/json": {"schema": schema}}


def _answers(ok_status, ok_schema, description, *errors):
    answers = {str(ok_status): {"description": description, "content": _json(ok_schema)}}
    for status in errors:
        answers[str(status)] = {"description": ERRORS[status], "content": _json("Error")}
    return answers


def build():
    spec = APISpec(
        title="Rendez-vous étrangers – public API", version="1.0.0", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Book a free appointment at the Hérault prefecture's foreigners' "
                             "desk. Errors are JSON {error, message, fields}."})
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("BookingRequest", schema=BookingRequestSchema)
    token_parameters = [
        {"in": "path", "name": "reference", "required": True,
         "schema": {"type": "string", "pattern": "^RDV-[0-9A-Z]{4}-[0-9A-Z]{4}$"}},
        {"in": "header", "name": "X-Booking-Token", "required": False, "schema": {"type": "string"},
         "description": "the token given when booking"},
        {"in": "query", "name": "token", "required": False, "schema": {"type": "string"},
         "description": "the token, for links in e-mails; prefer the header"},
    ]
    spec.path("/health", operations={"get": {
        "summary": "liveness", "responses": _answers(200, HealthSchema, "up")}})
    spec.path("/api/procedures", operations={"get": {
        "summary": "procedures, their labels, what a request for each must carry and the "
                   "10-year-card walk-in rule",
        "responses": _answers(200, ProceduresSchema, "the procedures")}})
    spec.path("/api/slots", operations={"get": {
        "summary": "bookable slots, by start",
        "parameters": [{"in": "query", "schema": SlotQuerySchema}],
        "responses": _answers(200, SlotListSchema, "a page of slots", 400, 503)}})
    spec.path("/api/bookings", operations={"post": {
        "summary": "book a slot",
        "parameters": [{
            "in": "header", "name": "Idempotency-Key", "required": False,
            "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
            "description": "a random key of yours: the same key with the same body answers the "
                           "same booking and never books twice (send it again after a 503)"}],
        "requestBody": {"required": True, "content": _json("BookingRequest")},
        "responses": _answers(201, BookingCreatedSchema, "booked", 400, 404, 409, 429, 503)}})
    spec.path("/api/bookings/{reference}", operations={
        "get": {"summary": "your booking", "parameters": token_parameters,
                "responses": _answers(200, BookingSchema, "the booking", 400, 404, 503)},
        "delete": {"summary": "cancel your booking (again: no error)",
                   "parameters": token_parameters,
                   "responses": _answers(200, BookingSchema, "the booking, cancelled", 400, 404,
                                         409, 503)},
    })
    return spec.to_dict()


DOCUMENT = build()
