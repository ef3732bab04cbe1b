"""Validation of the staff RPCs' arguments (the admin gateway checks them first, and so do we)."""
from marshmallow import Schema, ValidationError, fields, validate, validates

from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import FOREIGNER_NUMBER, SafeString, no_future_date

SITE = validate.OneOf(sorted(SITES))
# reference, a dot, an Ed25519 signature in unpadded base64url (86 characters)
CODE = validate.Regexp(r"^\s*RDV-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}\.[A-Za-z0-9_-]{20,120}\s*$",
                       error="Not a convocation code.")
AGENT = validate.Length(min=1, max=64)


class DayQuerySchema(Schema):
    site = SafeString(required=True, validate=SITE)
    day = fields.Date(required=True)


class CheckInSchema(Schema):
    code = SafeString(required=True, validate=CODE)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    given_names = SafeString(required=True, validate=validate.Length(max=150))
    site = SafeString(required=True, validate=SITE)
    day = fields.Date(required=True)
    agent = SafeString(required=True, validate=AGENT)

    @validates("family_name")
    def _not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Type the family name read on the identity document.")


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
