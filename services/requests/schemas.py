"""What applicants and supervisors send to the requests service (the gateway checks the same)."""
from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import ApplicantSchema, SafeString
from services.requests.rules import MODES, WEEKDAYS

REQUEST_REFERENCE = validate.Regexp(r"^REQ-[0-9A-Z]{4}-[0-9A-Z]{4}$",
                                    error="Not a valid request reference.")
HHMM = validate.Regexp(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", error="A time HH:MM.")


class WindowSchema(Schema):
    weekday = SafeString(required=True, validate=validate.OneOf(WEEKDAYS))
    from_ = SafeString(required=True, data_key="from", validate=HHMM)
    to = SafeString(required=True, validate=HHMM)

    @validates_schema
    def _ordered(self, data, **kwargs):
        if data.get("from_") and data.get("to") and data["from_"] >= data["to"]:
            raise ValidationError("Must be after 'from'.", "to")


class AvailabilitySchema(Schema):
    """Where and when the person can come: sites, and windows of the week (Europe/Paris)."""
    sites = fields.List(SafeString(validate=validate.OneOf(sorted(SITES))), required=True,
                        validate=validate.Length(min=1, max=len(SITES)))
    times = fields.List(fields.Nested(WindowSchema), required=True,
                        validate=validate.Length(min=1, max=21))


def availability_doc(data):
    """The loaded availability as stored (the window's key is `from`)."""
    return {"sites": sorted(set(data["sites"])),
            "times": [{"weekday": w["weekday"], "from": w["from_"], "to": w["to"]}
                      for w in data["times"]]}


class RequestFilingSchema(ApplicantSchema):
    """A request for a procedure in `requests` mode (issue 12): the applicant as for a
    booking, the permit's expiry, and when and where they can come."""
    permit_expiry = fields.Date(load_default=None, allow_none=True,
                                metadata={"doc": "the current permit's end of validity"})
    availability = fields.Nested(AvailabilitySchema, required=True)

    @validates("permit_expiry")
    def _sensible_expiry(self, value, **kwargs):
        if value is not None and not date(2000, 1, 1) <= value <= date(2100, 1, 1):
            raise ValidationError("Not a plausible expiry date.")


class RequestAccessSchema(Schema):
    reference = SafeString(required=True, validate=REQUEST_REFERENCE)
    token = SafeString(required=True, validate=validate.Length(min=1, max=128))


class ModeSchema(Schema):
    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    mode = SafeString(required=True, validate=validate.OneOf(MODES))
    by = SafeString(load_default="supervisor", validate=validate.Length(min=1, max=100))
