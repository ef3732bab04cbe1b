"""Validation of what applicants send to the public gateway (query strings, paths, headers)."""
from datetime import date, datetime, timedelta

from marshmallow import Schema, ValidationError, fields, post_load, validate

from services.common.reference_data import PROCEDURES
from services.common.schemas import REFERENCE, SafeString
from services.common.timeutil import PARIS

MAX_RANGE_DAYS = 92
# far beyond any plan, and far enough from date.max that adding the range cannot overflow
SEARCHABLE = validate.Range(min=date(2000, 1, 1), max=date(2100, 12, 31),
                            error="Must be between 2000-01-01 and 2100-12-31.")


class SlotQuerySchema(Schema):
    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    from_ = fields.Date(data_key="from", load_default=None, validate=SEARCHABLE)
    to = fields.Date(load_default=None, validate=SEARCHABLE)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))

    @post_load
    def _range(self, data, **kwargs):
        first = data.get("from_") or datetime.now(PARIS).date()
        last = data.get("to") or first + timedelta(days=MAX_RANGE_DAYS - 1)
        if last < first:
            raise ValidationError("Must not be before 'from'.", "to")
        if (last - first).days >= MAX_RANGE_DAYS:
            raise ValidationError(f"At most {MAX_RANGE_DAYS} days at a time.", "to")
        data["from_"], data["to"] = first, last
        return data


class BookingAccessSchema(Schema):
    """A booking reference and the secret token that proves it is yours."""

    reference = SafeString(required=True, validate=REFERENCE)
    token = SafeString(required=True, validate=validate.Length(min=1, max=128))


# -- what the JSON API answers: described for the OpenAPI document (gateway/public/openapi.py) --

class NoticeSchema(Schema):
    fr = fields.String(required=True)
    en = fields.String(required=True)


class WalkInSchema(Schema):
    weekdays = fields.List(fields.String(), required=True)
    mornings_only = fields.Boolean(required=True)
    fr = fields.String(required=True)
    en = fields.String(required=True)
    ar = fields.String(required=True)


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "a code: invalid_request, not_found, slot_full..."})
    message = fields.String(required=True)
    fields = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True,
                         metadata={"description": "the reasons, per field of the request"})


class RequiredIdentifierSchema(Schema):
    field = fields.String(required=True, validate=validate.OneOf(["visa_number", "foreigner_number"]),
                          metadata={"description": "the field of POST /api/requests to fill"})
    checked_against = fields.String(
        required=True, allow_none=True, validate=validate.OneOf(["visas", "permits"]),
        metadata={"description": "the prefecture's register it must match (the long-stay "
                                 "visas, the current permits), null when none checks it"})


class ProcedureSchema(Schema):
    code = fields.String(required=True)
    label_fr = fields.String(required=True)
    label_en = fields.String(required=True)
    label_ar = fields.String(required=True)
    requires_foreigner_number = fields.Boolean(
        required=True, metadata={"description": "a booking (and a request) needs the foreigner number"})
    request_requires = fields.List(
        fields.Nested(RequiredIdentifierSchema), required=True,
        metadata={"description": "what a request (POST /api/requests) must carry besides the "
                                 "person's identity, under this deployment's settings; [] for "
                                 "nothing more"})
    walk_in = fields.Nested(WalkInSchema)


class ProceduresSchema(Schema):
    procedures = fields.List(fields.Nested(ProcedureSchema), required=True)
    notice = fields.Nested(NoticeSchema, required=True)


class SlotSchema(Schema):
    id = fields.String(required=True)
    site = fields.String(required=True)
    procedure = fields.String(required=True)
    start = fields.AwareDateTime(required=True, metadata={"description": "Europe/Paris offset"})
    end = fields.AwareDateTime(required=True)
    free = fields.Integer(required=True)


class SlotListSchema(Schema):
    slots = fields.List(fields.Nested(SlotSchema), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    has_more = fields.Boolean(required=True)
    notice = fields.Nested(NoticeSchema, required=True)
    walk_in = fields.Nested(WalkInSchema)


class BookedSlotSchema(Schema):
    id = fields.String(required=True)
    site = fields.String(required=True)
    procedure = fields.String()
    start = fields.AwareDateTime(required=True)
    end = fields.AwareDateTime(required=True)
    site_address = fields.String(allow_none=True)


class BookingCreatedSchema(Schema):
    reference = fields.String(required=True)
    token = fields.String(required=True, metadata={"description": "keep it: it proves the booking is yours"})
    status = fields.String(required=True)
    slot = fields.Nested(BookedSlotSchema, required=True)
    notice = fields.Nested(NoticeSchema, required=True)
    walk_in = fields.Nested(WalkInSchema)


class BookingSchema(Schema):
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["active", "cancelled", "checked_in"]))
    procedure = fields.String(required=True)
    slot = fields.Nested(BookedSlotSchema, required=True)
    # null once `erased` (past BOOKING_RETENTION_DAYS: services/common/retention.py)
    family_name = fields.String(required=True, allow_none=True)
    given_names = fields.String(required=True, allow_none=True)
    birth_date = fields.Date(required=True, allow_none=True)
    foreigner_number = fields.String(allow_none=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    erased = fields.Boolean(metadata={"description": "its personal data were erased at the end "
                                                    "of the retention period"})
    cancel_reason = fields.String()
    cancelled_at = fields.AwareDateTime()
    notice = fields.Nested(NoticeSchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
