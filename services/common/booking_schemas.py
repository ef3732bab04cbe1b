"""Validation of the staff RPCs' arguments (the admin gateway checks them first, and so do we)."""
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import (FOREIGNER_NUMBER, SLOT_ID, ApplicantSchema, SafeString,
                                     no_future_date)

SITE = validate.OneOf(sorted(SITES))
# reference, a dot, an Ed25519 signature in unpadded base64url (86 characters)
CODE = validate.Regexp(r"^\s*RDV-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}\.[A-Za-z0-9_-]{20,120}\s*$",
                       error="Not a convocation code.")
REFERENCE = validate.Regexp(r"^\s*[Rr][Dd][Vv]-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}\s*$",
                            error="Not a booking reference (RDV-XXXX-XXXX).")
AGENT = validate.Length(min=1, max=64)


class DayQuerySchema(Schema):
    site = SafeString(required=True, validate=SITE)
    day = fields.Date(required=True)


class CheckInSchema(Schema):
    """The signed code as scanned, or (when it does not scan) the reference and birth date;
    `confirm_mismatch`: the agent's second, explicit decision that the names differ."""

    code = SafeString(load_default=None, allow_none=True, validate=CODE)
    reference = SafeString(load_default=None, allow_none=True, validate=REFERENCE)
    birth_date = fields.Date(load_default=None, allow_none=True)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    given_names = SafeString(required=True, validate=validate.Length(max=150))
    site = SafeString(required=True, validate=SITE)
    day = fields.Date(required=True)
    agent = SafeString(required=True, validate=AGENT)
    confirm_mismatch = fields.Boolean(load_default=False)

    @validates_schema
    def _code_or_reference(self, data, **kwargs):
        if data.get("code"):
            return
        if not data.get("reference"):
            raise ValidationError("Scan the code, or type the reference and the birth date.", "code")
        if not data.get("birth_date"):
            raise ValidationError("The birth date goes with a typed reference.", "birth_date")

    @validates("family_name")
    def _not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Type the family name read on the identity document.")


class UndoSchema(Schema):
    """A supervisor undoes a cancellation made by mistake at the counter, and says why."""

    reference = SafeString(required=True, validate=REFERENCE)
    by = SafeString(required=True, validate=AGENT)
    why = SafeString(required=True, validate=validate.Length(min=3, max=500))


ATTENDANCE_STATES = ("absent", "excused", "expected")


class AttendanceSchema(Schema):
    """The day view marks a person absent or excused (or expected again)."""

    reference = SafeString(required=True, validate=REFERENCE)
    state = SafeString(required=True, validate=validate.OneOf(ATTENDANCE_STATES))
    site = SafeString(required=True, validate=SITE)
    agent = SafeString(required=True, validate=AGENT)


class WalkInSchema(Schema):
    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    site = SafeString(required=True, validate=SITE)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    given_names = SafeString(required=True, validate=validate.Length(max=150))
    birth_date = fields.Date(required=True, validate=no_future_date)
    foreigner_number = SafeString(required=True)
    agent = SafeString(required=True, validate=AGENT)

    @validates("family_name")
    def _not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Type the family name read on the identity document.")

    @validates("foreigner_number")
    def _digits(self, value, **kwargs):
        if not FOREIGNER_NUMBER.match(value):
            raise ValidationError("The foreigner number (AGDREF) has exactly 10 digits.")


class OfferHoldSchema(Schema):
    """An accepted offer (services/requests): the booking's reference and the offer's hold."""
    reference = SafeString(required=True, validate=validate.Regexp(
        r"^RDV-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not a valid booking reference."))
    hold_id = SafeString(required=True, validate=validate.Regexp(
        r"^OFR-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not an offer's hold id."))


CHANNELS = ("web", "desk", "phone", "partner")  # how a booking came in; web: the public site
STAFF_CHANNELS = ("desk", "phone")


class DeskBookingSchema(ApplicantSchema):
    """A booking an agent makes for a person without e-mail (issue 21), at the reception desk
    or on the phone line: the person's identity, and a postal address or a phone instead of
    an e-mail (the convocation is printed or posted). Loaded with `exclude=("email",)`."""
    slot_id = SafeString(required=True, validate=SLOT_ID)
    channel = SafeString(required=True, validate=validate.OneOf(STAFF_CHANNELS))
    postal_address = SafeString(load_default=None, allow_none=True,
                                validate=validate.Length(max=300))
    agent = SafeString(required=True, validate=AGENT)

    @validates_schema
    def _a_way_to_reach(self, data, **kwargs):
        if not (data.get("phone") or (data.get("postal_address") or "").strip()):
            raise ValidationError(
                "Donnez une adresse postale ou un numéro de téléphone. / "
                "Give a postal address or a phone number.", "postal_address")


class OnBehalfBookingSchema(DeskBookingSchema):
    """The booking of an offer to a request filed on someone's behalf (issues 21, 24): by an
    agent (`desk`, `phone`), or by an accredited partner (`partner`, whose office is the way to
    reach the person: no phone or postal address required then)."""
    channel = SafeString(required=True, validate=validate.OneOf(STAFF_CHANNELS + ("partner",)))

    @validates_schema
    def _a_way_to_reach(self, data, **kwargs):
        if data.get("channel") != "partner":
            DeskBookingSchema._a_way_to_reach(self, data, **kwargs)

