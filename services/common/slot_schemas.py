"""Validation of opening plans sent by staff (to slots, through the staff gateway)."""
from datetime import time

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import SafeString
from services.common.timeutil import WEEKDAYS


def parse_hours(text):
    """'08:30-12:00' -> (time(8, 30), time(12, 0))."""
    opens, closes = text.split("-")
    return time.fromisoformat(opens.strip()), time.fromisoformat(closes.strip())


def _hours(value):
    try:
        opens, closes = parse_hours(value)
    except ValueError:
        raise ValidationError("Use HH:MM-HH:MM, for example 08:30-12:00.")
    if opens >= closes:
        raise ValidationError("Opening must come before closing.")


class OpeningPlanSchema(Schema):
    site = SafeString(required=True, validate=validate.OneOf(sorted(SITES)))
    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    from_ = fields.Date(required=True, data_key="from")
    to = fields.Date(required=True)
    weekdays = fields.List(SafeString(validate=validate.OneOf(WEEKDAYS)), required=True,
                           validate=validate.Length(min=1, max=7))
    hours = fields.List(SafeString(validate=_hours), required=True,
                        validate=validate.Length(min=1, max=6))
    slot_minutes = fields.Integer(required=True, validate=validate.Range(min=5, max=240))
    desks = fields.Integer(required=True, validate=validate.Range(min=1, max=50))

    @validates_schema
    def _range(self, data, **kwargs):
        if "from_" in data and "to" in data:
            if data["to"] < data["from_"]:
                raise ValidationError("Must not be before 'from'.", "to")
            if (data["to"] - data["from_"]).days > 366:
                raise ValidationError("A plan covers at most one year.", "to")

    @post_load
    def _shape(self, data, **kwargs):
        data["from"] = data.pop("from_")
        data["hours"] = [parse_hours(h) for h in data["hours"]]
        return data


def _release_option(value):
    if value in ("now", "schedule"):
        return
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = -1
    if not 0 <= share <= 1:
        raise ValidationError("'schedule', 'now', or the share (0 to 1) released at once.")


class PlanReleaseSchema(Schema):
    """How a new plan's slots are released: scheduled (default), at once, or a share at once."""

    release = fields.Raw(load_default="schedule", validate=_release_option)


class AddDesksSchema(Schema):
    plan_id = SafeString(required=True, validate=validate.Regexp(r"^plan-[0-9a-f]{12}$",
                                                                 error="Not a valid plan id."))
    desks = fields.Integer(required=True, validate=validate.Range(min=1, max=50))
    date_from = fields.Date(load_default=None, allow_none=True)
    date_to = fields.Date(load_default=None, allow_none=True)


class ScheduleQuerySchema(Schema):
    procedure = SafeString(load_default=None, allow_none=True,
                           validate=validate.OneOf(sorted(PROCEDURES)))
    plan_id = SafeString(load_default=None, allow_none=True,
                         validate=validate.Regexp(r"^plan-[0-9a-f]{12}$", error="Not a valid plan id."))
    include_released = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class RescheduleSchema(Schema):
    batch_id = SafeString(required=True, validate=validate.Regexp(r"^rel-[0-9a-f]{12}$",
                                                                  error="Not a valid batch id."))
    due = fields.AwareDateTime(required=True)
    by = SafeString(load_default="supervisor", validate=validate.Length(min=1, max=100))


class FiguresQuerySchema(Schema):
    """Supervisors: which procedure and site the capacity figures and last releases cover."""

    procedure = SafeString(load_default=None, allow_none=True,
                           validate=validate.OneOf(sorted(PROCEDURES)))
    site = SafeString(load_default=None, allow_none=True, validate=validate.OneOf(sorted(SITES)))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class PreviewSchema(Schema):
    extra = fields.Boolean(load_default=False)
