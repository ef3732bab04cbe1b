"""What staff send to the admin gateway (JSON bodies, forms, query strings)."""
from marshmallow import Schema, fields, validate

from gateway.admin.accounts import MIN_PASSWORD_LENGTH, ROLES
from services.booking.schemas import CODE, SITE
from services.common.reference_data import PROCEDURES
from services.common.schemas import SafeString

USERNAME = validate.Regexp(r"^[a-z0-9][a-z0-9._-]{2,31}$",
                           error="3 to 32 characters: lower-case letters, digits, '.', '_', '-'.")


class LoginSchema(Schema):
    username = SafeString(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class AccountSchema(Schema):
    username = SafeString(required=True, validate=USERNAME)
    password = fields.String(required=True,
                             validate=validate.Length(min=MIN_PASSWORD_LENGTH, max=256))
    role = SafeString(required=True, validate=validate.OneOf(ROLES))
    site = SafeString(required=True, validate=SITE)


class DayQuerySchema(Schema):
    site = SafeString(load_default=None, validate=SITE)
    date = fields.Date(load_default=None)


class CheckInBodySchema(Schema):
    code = SafeString(required=True, validate=CODE)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    given_names = SafeString(load_default="", validate=validate.Length(max=150))


class WalkInBodySchema(Schema):
    procedure = SafeString(load_default="renewal_10y", validate=validate.OneOf(sorted(PROCEDURES)))
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    given_names = SafeString(load_default="", validate=validate.Length(max=150))
    birth_date = fields.Date(required=True)
    foreigner_number = SafeString(required=True, validate=validate.Regexp(
        r"^\d{10}$", error="The foreigner number (AGDREF) has exactly 10 digits."))


class AuditQuerySchema(Schema):
    person = SafeString(load_default=None, validate=validate.Length(max=64))
    object = SafeString(load_default=None, validate=validate.Length(max=80))
    day = fields.Date(load_default=None)
