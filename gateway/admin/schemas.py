"""What staff send to the admin gateway (JSON bodies, forms, query strings)."""
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from gateway.admin.accounts import MIN_PASSWORD_LENGTH, ROLES
from services.common.booking_schemas import ATTENDANCE_STATES, CODE, REFERENCE, SITE
from services.common.reference_data import PROCEDURES
from services.common.schemas import SafeString
from services.common.reference_data import MODES

USERNAME = validate.Regexp(r"^[a-z0-9][a-z0-9._-]{2,31}$",
                           error="3 to 32 characters: lower-case letters, digits, '.', '_', '-'.")


# the counter's pages are French: their reasons too
REQUIRED_FR = {"required": "Obligatoire.", "null": "Obligatoire.", "invalid": "Valeur invalide."}


class BlankIsAbsent(Schema):
    """A page's form sends its empty fields as '': an empty field is one not given."""

    @pre_load
    def _blank_is_absent(self, data, **kwargs):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data


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


class CheckInBodySchema(BlankIsAbsent):
    """The signed code as scanned, or the reference and birth date when it does not scan;
    `confirm_mismatch`: the second, explicit decision that the names differ (it cancels)."""

    code = SafeString(load_default=None, allow_none=True, validate=validate.Regexp(
        CODE.regex, error="Ce n'est pas un code de convocation."), error_messages=REQUIRED_FR)
    reference = SafeString(load_default=None, allow_none=True, validate=validate.Regexp(
        REFERENCE.regex, error="Une référence s'écrit RDV-XXXX-XXXX."), error_messages=REQUIRED_FR)
    birth_date = fields.Date(load_default=None, allow_none=True, error_messages=dict(
        REQUIRED_FR, invalid="Une date (jour, mois, année)."))
    family_name = SafeString(required=True, validate=validate.Length(
        min=1, max=100, error="Entre 1 et 100 caractères."), error_messages=REQUIRED_FR)
    given_names = SafeString(load_default="", validate=validate.Length(
        max=150, error="150 caractères au plus."), error_messages=REQUIRED_FR)
    confirm_mismatch = fields.Boolean(load_default=False, error_messages=REQUIRED_FR)

    @validates_schema
    def _code_or_reference(self, data, **kwargs):
        if data.get("code"):
            return
        if not data.get("reference"):
            raise ValidationError("Scannez le code, ou tapez la référence et la date de "
                                  "naissance.", "code")
        if not data.get("birth_date"):
            raise ValidationError("La date de naissance va avec la référence tapée.", "birth_date")


class UndoBodySchema(Schema):
    why = SafeString(required=True, validate=validate.Length(
        min=3, max=500, error="Dites pourquoi (3 à 500 caractères)."), error_messages=REQUIRED_FR)


class AttendanceBodySchema(Schema):
    state = SafeString(required=True, validate=validate.OneOf(
        ATTENDANCE_STATES, error="absent, excused ou expected."), error_messages=REQUIRED_FR)


class DaySearchSchema(Schema):
    """The day view's search (a name or a reference) and which people to show."""

    q = SafeString(load_default="", validate=validate.Length(max=100))
    show = SafeString(load_default="all", validate=validate.OneOf(
        ("all", "expected", "checked_in", "cancelled")))


class WalkInBodySchema(Schema):
    procedure = SafeString(load_default="renewal_10y", validate=validate.OneOf(
        sorted(PROCEDURES), error="Démarche inconnue."), error_messages=REQUIRED_FR)
    family_name = SafeString(required=True, validate=validate.Length(
        min=1, max=100, error="Entre 1 et 100 caractères."), error_messages=REQUIRED_FR)
    given_names = SafeString(load_default="", validate=validate.Length(
        max=150, error="150 caractères au plus."), error_messages=REQUIRED_FR)
    birth_date = fields.Date(required=True, error_messages=dict(
        REQUIRED_FR, invalid="Une date (jour, mois, année)."))
    foreigner_number = SafeString(required=True, validate=validate.Regexp(
        r"^\d{10}$", error="Le numéro étranger (AGDREF) a exactement 10 chiffres."),
        error_messages=REQUIRED_FR)


class AuditQuerySchema(BlankIsAbsent):
    person = SafeString(load_default=None, validate=validate.Length(max=64))
    object = SafeString(load_default=None, validate=validate.Length(max=80))
    day = fields.Date(load_default=None)


# -- supervisors (gateway/admin/supervision.py) ---------------------------------------------------

PLAN_ID = validate.Regexp(r"^plan-[0-9a-f]{12}$", error="Not a valid plan id.")


class PlanExtraSchema(Schema):
    extra = fields.Boolean(load_default=False)


class DesksSchema(Schema):
    plan_id = SafeString(required=True, validate=PLAN_ID)
    desks = fields.Integer(required=True, validate=validate.Range(min=1, max=50))
    date_from = fields.Date(load_default=None, allow_none=True)
    date_to = fields.Date(load_default=None, allow_none=True)


class BatchDueSchema(Schema):
    batch_id = SafeString(required=True, validate=validate.Regexp(
        r"^rel-[0-9a-f]{12}$", error="Not a valid batch id."))
    due = fields.AwareDateTime(required=True)


class FiguresSchema(Schema):
    procedure = SafeString(load_default=None, validate=validate.OneOf(sorted(PROCEDURES)))
    site = SafeString(load_default=None, validate=SITE)
    plan_id = SafeString(load_default=None, validate=PLAN_ID)
    include_released = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class DecisionSchema(Schema):
    """Keep (clear) or cancel a whole review case, or one booking of it, with a note."""

    case_id = SafeString(load_default=None, validate=validate.Length(min=1, max=400))
    reference = SafeString(load_default=None, validate=validate.Regexp(
        r"^RDV-[0-9A-Z]{4}-[0-9A-Z]{4}$", error="Not a valid booking reference."))
    decision = SafeString(required=True, validate=validate.OneOf(("cancel", "clear")))
    note = SafeString(load_default="", validate=validate.Length(max=1000))

    @validates_schema
    def _one_target(self, data, **kwargs):
        if bool(data.get("case_id")) == bool(data.get("reference")):
            raise ValidationError("Give a case_id or a booking reference (one of them).", "case_id")


ALLOW_KINDS = ("client", "email", "booking")


class AllowSchema(Schema):
    kind = SafeString(required=True, validate=validate.OneOf(ALLOW_KINDS))
    value = SafeString(required=True, validate=validate.Length(min=1, max=320))
    why = SafeString(required=True, validate=validate.Length(min=1, max=500))
    until = fields.Date(load_default=None, allow_none=True)  # last day it holds (Paris)


class DisallowSchema(Schema):
    kind = SafeString(required=True, validate=validate.OneOf(ALLOW_KINDS))
    value = SafeString(required=True, validate=validate.Length(min=1, max=320))


class PeriodSchema(Schema):
    """Paris days, both included."""

    since = fields.Date(required=True)
    until = fields.Date(required=True)

    @validates_schema
    def _order(self, data, **kwargs):
        if "since" in data and "until" in data and data["until"] < data["since"]:
            raise ValidationError("Must not be before 'since'.", "until")


class ResendSchema(Schema):
    key = SafeString(required=True, validate=validate.Length(min=1, max=200))


class PasswordSchema(Schema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    again = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=256))


# -- allocation by request (gateway/admin/allocation.py, issue 12) ------------------------------

class ModeSwitchSchema(Schema):
    """A procedure switched between direct booking (`open`) and allocation by request."""

    procedure = SafeString(required=True, validate=validate.OneOf(sorted(PROCEDURES)))
    mode = SafeString(required=True, validate=validate.OneOf(MODES))


class DrawQuerySchema(Schema):
    draw_id = SafeString(required=True, validate=validate.Regexp(
        r"^DRW-[0-9a-f]{12}$", error="Not a valid draw id (DRW- and 12 hexadecimal digits)."))
