"""The booking form as plain functions: what it posts, how its errors read, slots by day.

The form posts to the booking RPC exactly what the JSON API would; the reasons the schema gives
(in English, for API clients) become, for a person, one message per field in French and English.
"""
from itertools import groupby

from services.common.reference_data import PROCEDURES
from services.common.timeutil import PARIS, long_date, parse_iso

FIELDS = ("family_name", "given_names", "birth_date", "email", "phone", "foreigner_number")
OPTIONAL = ("phone", "foreigner_number")  # empty in the form: not given (None in the JSON)

# (field, kind) -> (French, English). kind: "missing" when nothing was typed, else what the
# schema's reason says, else "invalid".
MESSAGES = {
    ("family_name", "missing"): (
        "Indiquez votre nom de famille, exactement comme sur votre passeport ou votre titre de séjour.",
        "Enter your family name, exactly as on your passport or residence permit."),
    ("family_name", "invalid"): (
        "Le nom de famille doit compter au plus 100 caractères, sans caractère de contrôle.",
        "The family name must be at most 100 characters, with no control characters."),
    ("given_names", "invalid"): (
        "Les prénoms doivent compter au plus 150 caractères, sans caractère de contrôle.",
        "Given names must be at most 150 characters, with no control characters."),
    ("birth_date", "missing"): (
        "Indiquez votre date de naissance.", "Enter your date of birth."),
    ("birth_date", "invalid"): (
        "La date de naissance doit être une vraie date (jour, mois, année).",
        "The date of birth must be a real date (day, month, year)."),
    ("birth_date", "future"): (
        "La date de naissance ne peut pas être dans le futur.",
        "The date of birth cannot be in the future."),
    ("birth_date", "old"): (
        "La date de naissance doit être après 1900.", "The date of birth must be after 1900."),
    ("email", "missing"): (
        "Indiquez votre adresse électronique : la convocation y sera envoyée.",
        "Enter your e-mail address: your appointment letter is sent there."),
    ("email", "invalid"): (
        "Indiquez une adresse électronique valide, par exemple nom@exemple.fr.",
        "Enter a valid e-mail address, for example name@example.org."),
    ("phone", "invalid"): (
        "Indiquez un numéro de téléphone valide, par exemple 06 12 34 56 78, ou laissez vide.",
        "Enter a valid phone number, for example +33 6 12 34 56 78, or leave it empty."),
    ("foreigner_number", "missing"): (
        "Indiquez votre numéro d'étranger : les 10 chiffres inscrits sur votre titre de séjour.",
        "Enter your foreigner number: the 10 digits on your residence permit."),
    ("foreigner_number", "invalid"): (
        "Le numéro d'étranger compte exactement 10 chiffres.",
        "The foreigner number has exactly 10 digits."),
}
# what the schema says (services/common/schemas.py) -> the kind of message above
REASON_KINDS = {"Must not be in the future.": "future", "Must be after 1900.": "old",
                "Required for renewals: the 10-digit number on your residence permit.": "missing"}
GENERAL = ("Vérifiez ce champ.", "Check this field.")


def booking_request(procedure, slot_id, form):
    """The JSON API's booking body from the form's fields (strings, trimmed of outer spaces
    only where a person cannot mean them: e-mail, phone, numbers)."""
    body = {"procedure": procedure, "slot_id": slot_id}
    for field in FIELDS:
        value = form.get(field, "")
        if field in ("email", "phone", "foreigner_number", "birth_date"):
            value = value.strip()
        if field in OPTIONAL and value == "":
            value = None
        if field == "foreigner_number" and not PROCEDURES[procedure]["requires_foreigner_number"] \
                and value is None:
            continue
        body[field] = value
    return body


def field_errors(fields, form, lang, messages=None, known=FIELDS):
    """InvalidRequest fields -> {form field: message in `lang`}, and the reasons for no field.
    `messages` and `known`: another form's (the attempt form's); the booking form's by default."""
    messages = messages or MESSAGES
    index = 0 if lang == "fr" else 1
    errors, other = {}, []
    for field, reasons in (fields or {}).items():
        if field not in known:
            other.extend(reasons)
            continue
        if not str(form.get(field, "")).strip():
            kind = "missing"
        else:
            kind = next((REASON_KINDS[r] for r in reasons if r in REASON_KINDS), "invalid")
        errors[field] = (messages.get((field, kind)) or messages.get((field, "invalid")) or GENERAL)[index]
    return errors, other


# M7: the form recording a failed attempt (the JSON API's POST /api/attempts body)
ATTEMPT_FIELDS = ("procedure", "email", "foreigner_number")
ATTEMPT_MESSAGES = {
    **{key: value for key, value in MESSAGES.items() if key[0] == "foreigner_number"},
    ("procedure", "missing"): ("Choisissez votre démarche.", "Choose your procedure."),
    ("procedure", "invalid"): ("Choisissez votre démarche dans la liste.",
                               "Choose your procedure from the list."),
    ("email", "missing"): (
        "Indiquez votre adresse électronique : le récépissé y sera envoyé.",
        "Enter your e-mail address: the receipt is sent there."),
    ("email", "invalid"): MESSAGES[("email", "invalid")],
    ("foreigner_number", "missing"): MESSAGES[("foreigner_number", "invalid")],
}


def attempt_request(form):
    """The JSON API's attempt body from the form (an empty foreigner number: none)."""
    number = form.get("foreigner_number", "").strip()
    return {"procedure": form.get("procedure", ""), "email": form.get("email", "").strip(),
            "foreigner_number": number or None}


def attempt_errors(fields, form, lang):
    return field_errors(fields, form, lang, ATTEMPT_MESSAGES, ATTEMPT_FIELDS)


def slots_by_day(slots, lang):
    """[(day label, [slot with its local 'time']...)] nearest day first, slots in start order."""
    local = []
    for slot in slots:
        start = parse_iso(slot["start"]).astimezone(PARIS)
        local.append(dict(slot, time=start.strftime("%H:%M"), day=start.date()))
    local.sort(key=lambda slot: (slot["day"], slot["time"]))
    return [(long_date(day, lang), list(group)) for day, group in groupby(local, key=lambda s: s["day"])]
