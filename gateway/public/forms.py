"""The booking form as plain functions: what it posts, how its errors read, slots by day.

The form posts to the booking RPC exactly what the JSON API would; the reasons the schema gives
(in English, for API clients) become, for a person, one message per field in French and English.
"""
from itertools import groupby

from services.common.i18n import translate
from services.common.reference_data import PROCEDURES
from services.common.schemas import IDEMPOTENCY_KEY
from services.common.timeutil import PARIS, long_date, parse_iso
from services.common.request_schemas import CLAIM_TAKEN

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
                "Required for renewals: the 10-digit number on your residence permit.": "missing",
                # the requests service's Refused (one open request per e-mail and number)
                CLAIM_TAKEN: "taken"}
GENERAL = ("Vérifiez ce champ.", "Check this field.")
# the form shown again after its slot was taken, sent without a time ticked
CHOOSE_ANOTHER_TIME = ("Choisissez l'un des horaires encore libres.", "Choose one of the times still free.")


def _kind(reason):
    if reason.startswith("Not an exact name"):  # M4, said by the requests service
        return "not_exact"
    return REASON_KINDS.get(reason)


# the hidden field of the booking, attempt and request forms: made when the form is shown, so
# that the form sent twice (a second click, the browser resending it, the person sending it
# again after "no answer") is one booking, one attempt, one request
KEY_FIELD = "idempotency_key"


def idempotency_key_of(form):
    """The form's key, or None when it has none or not a well-formed one (a form from before
    the field existed: the gateway makes one for the request)."""
    value = form.get(KEY_FIELD, "")
    return value if IDEMPOTENCY_KEY.fullmatch(value) else None


def booking_request(procedure, slot_id, form, lang):
    """The JSON API's booking body from the form's fields (strings, trimmed of outer spaces
    only where a person cannot mean them: e-mail, phone, numbers); `lang`, the page's
    language, for the links of the e-mails."""
    return dict({"procedure": procedure, "slot_id": slot_id, "lang": lang},
                **applicant(procedure, form))


def applicant(procedure, form):
    """Who the person is, from a booking or request form's fields (ApplicantSchema's)."""
    body = {}
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
    errors, other = {}, []
    for field, reasons in (fields or {}).items():
        if field not in known:
            other.extend(reasons)
            continue
        if not str(form.get(field, "")).strip():
            kind = "missing"
        else:
            kind = next((_kind(r) for r in reasons if _kind(r)), "invalid")
        errors[field] = translate(lang, *(messages.get((field, kind)) or messages.get((field, "invalid"))
                                          or GENERAL))
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


def attempt_request(form, lang="fr"):
    """The JSON API's attempt body from the form (an empty foreigner number: none); `lang`,
    the page's language, for the receipt."""
    number = form.get("foreigner_number", "").strip()
    return {"procedure": form.get("procedure", ""), "email": form.get("email", "").strip(),
            "foreigner_number": number or None, "lang": lang}


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


# issue 12: the request form (the JSON API's POST /api/requests body) and its availability
# grid: each weekday the desks open, morning or afternoon (opening hours 08:30-12:00 and
# 13:30-16:30, deploy/demo_plan.json; a window holds a slot only when the slot fits in it)
HALF_DAYS = (("morning", "08:00", "13:00", "matin", "morning"),
             ("afternoon", "13:00", "18:00", "après-midi", "afternoon"))
GRID_DAYS = (("monday", "Lundi", "Monday"), ("tuesday", "Mardi", "Tuesday"),
             ("wednesday", "Mercredi", "Wednesday"), ("thursday", "Jeudi", "Thursday"),
             ("friday", "Vendredi", "Friday"))
REQUEST_FIELDS = FIELDS + ("permit_expiry", "visa_number")
REQUEST_MESSAGES = {
    **MESSAGES,
    ("family_name", "not_exact"): (
        "Écrivez votre vrai nom de famille, exactement comme sur votre passeport ou votre titre de séjour.",
        "Write your real family name, exactly as on your passport or residence permit."),
    ("given_names", "not_exact"): (
        "Écrivez vos vrais prénoms, exactement comme sur votre passeport ou votre titre de séjour.",
        "Write your real given names, exactly as on your passport or residence permit."),
    ("email", "taken"): (
        "Une demande confirmée est déjà en cours avec cette adresse électronique pour cette démarche.",
        "A confirmed request is already open with this e-mail address for this procedure."),
    ("foreigner_number", "taken"): (
        "Une demande confirmée est déjà en cours avec ce numéro d'étranger pour cette démarche.",
        "A confirmed request is already open with this foreigner number for this procedure."),
    ("visa_number", "missing"): (
        "Indiquez le numéro de votre visa de long séjour : il est inscrit sur la vignette collée dans votre passeport.",
        "Enter your long-stay visa's number: it is on the sticker in your passport."),
    ("visa_number", "invalid"): (
        "Le numéro du visa compte de 6 à 20 lettres et chiffres, tel qu'il est inscrit sur la vignette.",
        "The visa number has 6 to 20 letters and digits, as written on the sticker."),
    ("permit_expiry", "invalid"): (
        "La date de fin du titre doit être une vraie date (jour, mois, année), ou restez vide.",
        "The permit's end date must be a real date (day, month, year), or leave it empty."),
    ("sites", "missing"): (
        "Cochez au moins un lieu où vous pouvez venir.",
        "Tick at least one place you can come to."),
    ("sites", "invalid"): ("Choisissez un lieu dans la liste.", "Choose a place from the list."),
    ("times", "missing"): (
        "Cochez au moins une demi-journée où vous pouvez venir.",
        "Tick at least one half-day when you can come."),
    ("times", "invalid"): ("Choisissez des demi-journées dans la grille.",
                           "Choose half-days from the grid."),
}


def grid_cells(lang):
    """[(weekday, day label, [(cell key, half-day label)])] for the availability grid."""
    return [(day, translate(lang, *labels), [(f"{day}-{half[0]}", translate(lang, *half[3:]))
                                             for half in HALF_DAYS])
            for day, *labels in GRID_DAYS]


def _values(form, name):
    getlist = getattr(form, "getlist", None)
    values = getlist(name) if getlist else form.get(name, [])
    return [values] if isinstance(values, str) else list(values)


def availability(form):
    """The AvailabilitySchema body from the ticked boxes: `sites` (site codes) and `times`
    (cell keys such as "monday-morning"; unknown keys are passed on for the schema to refuse)."""
    windows = {f"{day}-{key}": (day, start, end) for day, *_ in GRID_DAYS
               for key, start, end, *_ in HALF_DAYS}
    times = []
    for cell in dict.fromkeys(_values(form, "times")):
        day, start, end = windows.get(cell, (cell, "", ""))
        times.append({"weekday": day, "from": start, "to": end})
    return {"sites": list(dict.fromkeys(_values(form, "sites"))), "times": times}


def ticked(availability_doc):
    """The grid's cells an availability covers (a window overlapping a half-day ticks it)."""
    cells = set()
    for window in (availability_doc or {}).get("times") or ():
        for key, start, end, *_ in HALF_DAYS:
            if window.get("from", "") < end and window.get("to", "") > start:
                cells.add(f"{window.get('weekday')}-{key}")
    return cells


def request_filing(procedure, form, lang):
    """The JSON API's request body from the request form's fields (`lang`: as for a booking)."""
    expiry = form.get("permit_expiry", "").strip()
    body = dict({"procedure": procedure, "lang": lang}, **applicant(procedure, form),
                permit_expiry=expiry or None, availability=availability(form))
    visa = form.get("visa_number", "").strip()
    if visa:  # a first application's long-stay visa (issue 24): the requests service checks it
        body["visa_number"] = visa
    if form.get("invitation") or form.get("invitation_token"):
        # a renewal invitation's link (issue 24): the requests service checks it
        body["invitation"] = {"id": form.get("invitation", ""),
                              "token": form.get("invitation_token", "")}
    return body


def request_errors(fields, form, lang):
    """InvalidRequest or Refused fields of a request -> {form field: message}, and the rest.
    The availability's reasons (availability.sites, availability.times.0.to...) go to their
    group of boxes: "missing" when none is ticked."""
    grouped, boxes = {}, {}
    for field, reasons in (fields or {}).items():
        parts = field.split(".")
        if parts[0] == "availability" and len(parts) > 1 and parts[1] in ("sites", "times"):
            boxes[parts[1]] = True
        elif field == "availability":
            boxes.update(sites=True, times=True)
        else:
            grouped[field] = reasons
    errors, other = field_errors(grouped, form, lang, REQUEST_MESSAGES, REQUEST_FIELDS)
    for group in boxes:
        kind = "invalid" if _values(form, group) else "missing"
        errors[group] = translate(lang, *REQUEST_MESSAGES[(group, kind)])
    return errors, other
