"""What applicants and supervisors send to the requests service (the gateway checks the same)."""
from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import ApplicantSchema, AsciiEmail, SafeString
from services.common.reference_data import MODES
from services.common.timeutil import WEEKDAYS

REQUEST_REFERENCE = validate.Regexp(r"^REQ-[0-9A-Z]{4}-[0-9A-Z]{4}$",
                                    error="Not a valid request reference.")
# the reason given for the field (email, foreigner_number) another open request claims: the
# gateway's forms turn it into the page's message
CLAIM_TAKEN = "Another confirmed request is open with this value."
# a long-stay visa's number as typed (issue 24: first applications; spaces, dots and hyphens
# are folded away before it is compared with the register)
VISA_NUMBER = validate.Regexp(r"^(?=(?:[ .-]*[A-Za-z0-9]){6,20}[ .-]*$)[A-Za-z0-9 .-]{6,30}$",
                              error="The visa number: 6 to 20 letters and digits.")
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


class InvitationRefSchema(Schema):
    """The renewal invitation's link (issue 24): its id and token, checked by the register."""
    id = SafeString(required=True, validate=validate.Regexp(r"^INV-[0-9A-F]{24}$",
                                                            error="Not a valid invitation."))
    token = SafeString(required=True, validate=validate.Length(min=1, max=128))


class RequestFilingSchema(ApplicantSchema):
    """A request for a procedure in `requests` mode (issue 12): the applicant as for a
    booking, the permit's expiry, and when and where they can come."""
    permit_expiry = fields.Date(load_default=None, allow_none=True,
                                metadata={"doc": "the current permit's end of validity"})
    availability = fields.Nested(AvailabilitySchema, required=True)
    visa_number = SafeString(load_default=None, allow_none=True, validate=VISA_NUMBER,
                             metadata={"doc": "the long-stay visa's number (first applications, "
                                              "VISA_CHECKED_PROCEDURES)"})
    invitation = fields.Nested(InvitationRefSchema, load_default=None, allow_none=True,
                               metadata={"doc": "a renewal invitation's id and token: filed "
                                                "from the invited mailbox, no confirmation"})

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


# -- filed on someone's behalf (issue 24 partners, issue 21 desk) ----------------------------

MAILBOXES = ("beneficiary", "partner")
PARTNER_REF = validate.Regexp(r"^PTN-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not a partner id.")


class QuotasField(fields.Dict):
    """{procedure: filings a week}, known procedures only, 0 to 500."""

    def __init__(self, **kwargs):
        super().__init__(keys=SafeString(validate=validate.OneOf(sorted(PROCEDURES))),
                         values=fields.Integer(strict=True, validate=validate.Range(0, 500)),
                         **kwargs)


class PartnerSchema(Schema):
    """An accredited partner as a supervisor creates it."""
    name = SafeString(required=True, validate=validate.Length(min=2, max=120))
    contact_email = AsciiEmail(required=True, validate=validate.Length(max=254))
    contact_phone = SafeString(load_default=None, allow_none=True,
                               validate=validate.Length(max=40))
    quotas = QuotasField(required=True, validate=validate.Length(min=1))
    expires = fields.Date(required=True)
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))


class PartnerChangeSchema(Schema):
    partner_id = SafeString(required=True, validate=PARTNER_REF)
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))
    expires = fields.Date(load_default=None, allow_none=True)
    quotas = QuotasField(load_default=None, allow_none=True)


class PartnerFilingSchema(RequestFilingSchema):
    """A partner files for a beneficiary: the beneficiary's identity, and whose mailbox gets
    the offers: the beneficiary's (`email` then required) or the partner's own."""
    mailbox = SafeString(required=True, validate=validate.OneOf(MAILBOXES))
    email = AsciiEmail(load_default=None, allow_none=True, validate=validate.Length(max=254))

    @validates_schema
    def _mailbox_given(self, data, **kwargs):
        if data.get("mailbox") == "beneficiary" and not data.get("email"):
            raise ValidationError("The beneficiary's e-mail, or choose the partner's mailbox.",
                                  "email")


class PersonFilingSchema(RequestFilingSchema):
    """An agent files at the desk or on the phone for a person without e-mail (issue 21): a
    phone or a postal address instead (loaded with `exclude=("email",)`)."""
    channel = SafeString(required=True, validate=validate.OneOf(("desk", "phone")))
    postal_address = SafeString(load_default=None, allow_none=True,
                                validate=validate.Length(max=300))

    @validates_schema
    def _a_way_to_reach(self, data, **kwargs):
        if not (data.get("phone") or (data.get("postal_address") or "").strip()):
            raise ValidationError("Donnez une adresse postale ou un numéro de téléphone. / "
                                  "Give a postal address or a phone number.", "postal_address")
