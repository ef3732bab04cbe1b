"""Validation shared by the gateways and the services that receive the same requests.

Every string field refuses what looks like a MongoDB operator ("$gt"), control, formatting and
other invisible characters, and absurd lengths; unknown keys (including "$where" and friends) are refused by marshmallow's
default RAISE; a dict where a string is expected fails the String type check.
"""
import re
import unicodedata
from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.common.contract import LANGS
from services.common.reference_data import PROCEDURES


# control (Cc), formatting (Cf: zero-width, bidi overrides), line and paragraph separators
# (Zl, Zp), private use (Co) and lone surrogates (Cs): invisible on a convocation, able to
# add lines to a calendar file or a mail header, or to make two equal-looking names differ.
# Spaces, apostrophes, hyphens and combining accents (Mn) stay allowed.
INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs"}


def invisible_characters(text):
    """The code points of `text` in the refused categories, as U+XXXX, in order."""
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in INVISIBLE]


class SafeString(fields.String):
    default_error_messages = {
        "operator": "Must not start with '$'.",
        "control": "Must not contain control, formatting or invisible characters (found {found}).",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if text.lstrip().startswith("$"):
            raise self.make_error("operator")
        found = invisible_characters(text)
        if found:
            raise self.make_error("control", found=", ".join(dict.fromkeys(found)))
        return text


class AsciiEmail(fields.Email):
    """An address our mail relay can deliver to: the SMTPUTF8 extension that addresses with
    accents or other scripts need is not offered by every relay, and a booking whose
    confirmation can never be sent is worse than a clear refusal before booking."""

    default_error_messages = {
        "not_ascii": "Use an e-mail address written with unaccented Latin letters, digits and "
                     "signs only (our mail server cannot deliver to this one). / Utilisez une "
                     "adresse e-mail sans accents ni autres alphabets.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.isascii():
            raise self.make_error("not_ascii")
        return text


def no_future_date(value):
    if value > date.today():
        raise ValidationError("Must not be in the future.")
    if value.year < 1900:
        raise ValidationError("Must be after 1900.")


SLOT_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Not a valid slot id.")
REFERENCE = validate.Regexp(r"^RDV-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not a valid booking reference.")
FOREIGNER_NUMBER = re.compile(r"^\d{10}$")
PHONE = validate.Regexp(r"^\+?[0-9][0-9 .()-]{5,24}$", error="Not a valid phone number.")


class ApplicantSchema(Schema):
    """Who the applicant is and how to reach them, as given (DESIGN.md section 3): shared by a
    booking and a request (services/requests), with the procedure it is for."""

    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    family_name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    # some passports carry no given name: an empty string is allowed, a missing field is not
    given_names = SafeString(required=True, validate=validate.Length(max=150))
    birth_date = fields.Date(required=True, validate=no_future_date)
    email = AsciiEmail(required=True, validate=validate.Length(max=254))
    phone = SafeString(load_default=None, allow_none=True, validate=PHONE)
    foreigner_number = SafeString(load_default=None, allow_none=True)
    # the language of the pages used: the links of the e-mails that follow open them in it
    lang = SafeString(load_default="fr", validate=validate.OneOf(LANGS))

    @validates("family_name")
    def _family_name_not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Give your family name exactly as on your passport or permit.")

    @validates("foreigner_number")
    def _foreigner_number_digits(self, value, **kwargs):
        if value is not None and not FOREIGNER_NUMBER.match(value):
            raise ValidationError("The foreigner number (AGDREF) has exactly 10 digits.")

    @validates_schema
    def _foreigner_number_for_renewals(self, data, **kwargs):
        entry = PROCEDURES.get(data.get("procedure"))
        if entry and entry["requires_foreigner_number"] and not data.get("foreigner_number"):
            raise ValidationError(
                "Required for renewals: the 10-digit number on your residence permit.",
                "foreigner_number",
            )


class BookingRequestSchema(ApplicantSchema):
    """What an applicant gives to book a slot."""

    slot_id = SafeString(required=True, validate=SLOT_ID)


class ClientSchema(Schema):
    """The client as the gateway saw it (its address behind the trusted proxy, user agent)."""

    ip = SafeString(required=True, validate=validate.Length(max=64))
    user_agent = fields.String(load_default="", validate=validate.Length(max=1024))


def load_or_raise(schema, data, error_cls):
    """Validate with `schema`; raise `error_cls(message, fields)` with per-field reasons."""
    if not isinstance(data, dict):
        raise error_cls("The request body must be a JSON object.", {"_schema": ["Not an object."]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise error_cls("Some fields are not valid.", _flatten(messages))


def _flatten(messages):
    flat = {}
    for key, value in messages.items():
        if isinstance(value, dict):
            for sub, reasons in _flatten(value).items():
                flat[f"{key}.{sub}"] = reasons
        else:
            flat[key] = list(value) if isinstance(value, (list, tuple)) else [str(value)]
    return flat


class ListingSchema(Schema):
    """The arguments of a staff listing: how many, at most 500."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


def validated(schema, error_cls=None, **arguments):
    """RPC arguments checked with `schema`: the loaded values, or InvalidRequest with fields."""
    from services.common.errors import InvalidRequest

    return load_or_raise(schema, arguments, error_cls or InvalidRequest)


ATTEMPT_REFERENCE = validate.Regexp(r"^ATT-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not a valid attempt reference.")


class AttemptRequestSchema(Schema):
    """M7: an applicant records that nothing was bookable for a procedure.

    Who: the foreigner number (AGDREF) when they have one, else the e-mail; the e-mail is
    always given, the receipt goes there.
    """

    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    email = fields.Email(required=True, validate=validate.Length(max=254))
    foreigner_number = SafeString(load_default=None, allow_none=True)
    # the language of the pages used: the receipt is written in it (issue 21)
    lang = SafeString(load_default="fr", validate=validate.OneOf(LANGS))

    @validates("foreigner_number")
    def _foreigner_number_digits(self, value, **kwargs):
        if value is not None and not FOREIGNER_NUMBER.match(value):
            raise ValidationError("The foreigner number (AGDREF) has exactly 10 digits.")


class AttemptAccessSchema(Schema):
    """An attempt reference and the secret token of its receipt."""

    reference = SafeString(required=True, validate=ATTEMPT_REFERENCE)
    token = SafeString(required=True, validate=validate.Length(min=1, max=128))


class AttestationSchema(Schema):
    """A signed attestation as the applicant downloaded it, sent back for verification."""

    attestation = fields.Dict(required=True)
    signature = SafeString(required=True, validate=validate.Length(min=1, max=200))
    # its verification code, as downloaded; not what is checked (derived from the signature)
    code = SafeString(load_default=None, allow_none=True, validate=validate.Length(max=40))


class FiguresSchema(Schema):
    """Domain figures over the last `days` days (monitoring, fairness page)."""
    days = fields.Integer(load_default=56, strict=True, validate=validate.Range(min=1, max=366))


class ApplicantLookupSchema(Schema):
    """Staff look an applicant's M7 evidence up: the foreigner number, or else the e-mail."""

    foreigner_number = SafeString(load_default=None, allow_none=True)
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))

    @validates("foreigner_number")
    def _foreigner_number_digits(self, value, **kwargs):
        if value is not None and not FOREIGNER_NUMBER.match(value):
            raise ValidationError("The foreigner number (AGDREF) has exactly 10 digits.")

    @validates_schema
    def _one_of_them(self, data, **kwargs):
        if not data.get("foreigner_number") and not data.get("email"):
            raise ValidationError("Give the foreigner number or the e-mail.", "foreigner_number")


class PenaltyWaiverSchema(ApplicantLookupSchema):
    """M7: who (foreigner number, or e-mail), the permit's expiry date and the filing date; the
    staff gateway's form and booking's `penalty_waiver` RPC read it alike."""

    expiry = fields.Date(required=True)
    filing = fields.Date(required=True)


# A caller's idempotency key (an HTTP `Idempotency-Key`, a form's hidden field, a gateway's
# per-request UUID): the same key with the same request is the same booking, however often
# the request is delivered or sent again. Random enough to be unguessable, short enough to log
# nowhere by accident.
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")
IDEMPOTENCY_REASON = "16 to 128 letters, digits, '-' or '_' (a random value, new for each new request)."


def idempotency_key(value, error_cls, field="idempotency_key"):
    """`value` if it is a well-formed key, None if absent; else `error_cls` naming `field`."""
    if value is None:
        return None
    if not isinstance(value, str) or not IDEMPOTENCY_KEY.fullmatch(value):
        raise error_cls("Invalid idempotency key.", {field: [IDEMPOTENCY_REASON]})
    return value
