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
