"""What the register's RPCs take (the staff gateway and requests check the same)."""
from marshmallow import Schema, fields, validate

from services.common.request_schemas import VISA_NUMBER
from services.common.schemas import SafeString

FOREIGNER_NUMBER = validate.Regexp(r"^[0-9]{10}$", error="Exactly 10 digits.")
INVITATION_ID = validate.Regexp(r"^INV-[0-9A-F]{24}$", error="Not a valid invitation.")


class ImportSchema(Schema):
    # the export as text; its size is bounded by the gateway (REGISTER_IMPORT_MAX_BYTES)
    csv = fields.String(required=True)
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))
    apply = fields.Boolean(load_default=True)


class MatchSchema(Schema):
    foreigner_number = SafeString(required=True, validate=FOREIGNER_NUMBER)
    birth_date = fields.Date(required=True)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=150))


class VisaMatchSchema(Schema):
    visa_number = SafeString(required=True, validate=VISA_NUMBER)
    birth_date = fields.Date(required=True)
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=150))


class InvitationSchema(Schema):
    invitation = SafeString(required=True, validate=INVITATION_ID)
    token = SafeString(required=True, validate=validate.Length(min=1, max=128))
