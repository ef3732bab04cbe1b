"""Renewals checked against the prefecture's register of current permits, and first
applications against its register of long-stay visas (issue 24): what requests and the pages
share with the register service.

A renewal request must match a permit in the register: the foreigner number, the birth date
and the family name folded as M4 folds names (services/common/exact_names.py). A first
application must likewise match a long-stay visa: the visa number, the birth date and the
folded family name. The refusal is one message whichever of them is wrong, so that it tells
nothing of what the register holds; it says what to check and how to come in without the
internet (or without a visa: an agent at the desk files the request).
"""
import re
from datetime import date, timedelta

from services.common.exact_names import normalise_name
from services.common.reference_data import PROCEDURES, SITES
from services.common.settings import setting

# the fields a refusal names: always all three, never the one that differed
MISMATCH_FIELD = "identity"
_DESKS_FR = " ; ".join(f"{site['label']}, {site['address']}" for site in SITES.values())

MISMATCH = (
    "Nous ne trouvons pas de titre de séjour en cours qui corresponde à ces informations. "
    "Vérifiez le numéro d'étranger (10 chiffres, sur votre titre), la date de naissance et le "
    "nom de famille tel qu'il est écrit sur votre titre. Si tout est exact, présentez-vous "
    f"avec votre titre à l'accueil du guichet des étrangers ({_DESKS_FR}) ou appelez "
    "l'accueil de la préfecture : un agent dépose la demande pour vous. / We find no current "
    "residence permit matching this information. Check the foreigner number (10 digits, on "
    "your permit), the birth date and the family name as written on your permit. If all is "
    "right, come with your permit to the foreigners' desk reception (addresses above) or call "
    "the prefecture's reception: an agent files the request for you.")
MISMATCH_REASON = ("Check the foreigner number, the birth date and the family name as written "
                   "on the permit.")

# a first application whose long-stay visa is not in the register: the same one refusal
VISA_MISMATCH_FIELD = "visa"
VISA_MISMATCH = (
    "Nous ne trouvons pas de visa de long séjour qui corresponde à ces informations. Vérifiez "
    "le numéro du visa (sur la vignette collée dans votre passeport), la date de naissance et "
    "le nom de famille tel qu'il est écrit sur le visa. Si tout est exact, ou si vous n'êtes "
    "pas entré en France avec un visa de long séjour, présentez-vous avec votre passeport à "
    f"l'accueil du guichet des étrangers ({_DESKS_FR}) ou appelez l'accueil de la préfecture : "
    "un agent dépose la demande pour vous. / We find no long-stay visa matching this "
    "information. Check the visa number (on the sticker in your passport), the birth date and "
    "the family name as written on the visa. If all is right, or if you did not come to France "
    "with a long-stay visa, come with your passport to the foreigners' desk reception "
    "(addresses above) or call the prefecture's reception: an agent files the request for you.")
VISA_MISMATCH_REASON = ("Check the visa number, the birth date and the family name as written "
                        "on the visa.")
VISA_MISSING = "Required for this procedure: the number of your long-stay visa."
# a procedure checked against the permits that is not a renewal (the schema asks renewals for
# it): the number is required there too, said before the register is asked
FOREIGNER_NUMBER_MISSING = ("Required for this procedure: the 10-digit foreigner number on "
                            "your residence permit.")
_NOT_VISA_CHARACTERS = re.compile(r"[\s.-]")

# the kinds of permit in the register and the procedure that renews each (the register's
# rules read them from here: services/register/rules.py PERMIT_KINDS)
RENEWED_BY = {
    "temporary": "renewal",      # carte de séjour temporaire (1 year)
    "multi_year": "renewal",     # carte de séjour pluriannuelle
    "resident_10y": "renewal_10y",  # carte de résident (10 years)
}
RENEWALS = frozenset(RENEWED_BY.values())
# a renewal whose permit matched but is renewed by another procedure: the field of its refusal,
# whose one reason is that procedure's code (the pages link to its form)
WRONG_PROCEDURE_FIELD = "permit_procedure"


def wrong_renewal(requested, renewed_by):
    """True when a request for `requested` matched a permit that `renewed_by` renews, and
    `requested` is another renewal: the person must file for `renewed_by` instead. A procedure
    that is not a renewal (a supervisor checked it against the permits too) is not compared."""
    return requested in RENEWALS and requested != renewed_by


def wrong_procedure(renewed_by):
    """(message, fields) of the refusal of a renewal filed for the other procedure. Only told
    once the foreigner number, birth date and family name matched the permit: who knows them
    may learn how the permit is renewed, never anybody else (they get MISMATCH)."""
    labels = PROCEDURES[renewed_by]
    message = (f"Ce titre de séjour se renouvelle par la démarche « {labels['label_fr']} » : "
               "choisissez-la et déposez votre demande pour elle. Rien n'a été déposé. / This "
               f"permit is renewed through the procedure \"{labels['label_en']}\": choose it and "
               "file your request for it. Nothing was filed.")
    return message, {WRONG_PROCEDURE_FIELD: [renewed_by]}


def visa_in_time(validity_end, today, grace_days):
    """True when a long-stay visa valid until `validity_end` (YYYY-MM-DD, as the register
    keeps it) may still lead to a first application on `today` (a date): it has not ended, or
    ended at most `grace_days` ago (VISA_VALIDITY_GRACE_DAYS). A visa long expired is refused
    with the one visa mismatch: the refusal tells nothing of what the register holds."""
    return date.fromisoformat(validity_end) >= today - timedelta(days=grace_days)


def match_key(foreigner_number, birth_date, family_name):
    """What a renewal must share with a register entry: the number, the birth date
    (YYYY-MM-DD) and the family name folded (case, accents, hyphens, apostrophes, spaces)."""
    return "|".join((foreigner_number or "", birth_date or "", normalise_name(family_name)))


def visa_number(text):
    """A visa number as the register keys it: upper case, without spaces, dots or hyphens
    (as people copy it from the sticker)."""
    return _NOT_VISA_CHARACTERS.sub("", text or "").upper()


def visa_match_key(number, birth_date, family_name):
    """What a first application must share with a visa: as match_key, with the visa number."""
    return "|".join(("visa", visa_number(number), birth_date or "", normalise_name(family_name)))


def _procedures(config, key):
    return {p.strip() for p in setting(config, key).split(",") if p.strip() and p.strip() != "none"}


def visa_checked_procedures(config):
    """The procedures whose requests must match a long-stay visa (VISA_CHECKED_PROCEDURES,
    comma-separated; `none` for none: an empty value means the default)."""
    return _procedures(config, "VISA_CHECKED_PROCEDURES")


def checked_procedures(config):
    """The procedures whose requests must match the register (REGISTER_CHECKED_PROCEDURES,
    comma-separated; `none` for none: an empty value means the default)."""
    return _procedures(config, "REGISTER_CHECKED_PROCEDURES")


def register_books(procedure, config):
    """Which of the register's books a request for `procedure` must match under `config`, in
    the order the requests service checks them: "visas" (VISA_CHECKED_PROCEDURES), then
    "permits" (REGISTER_CHECKED_PROCEDURES). The one rule: the requests service checks by it,
    and GET /api/procedures and the request form say what to bring by it (request_requires),
    so what they say follows each deployment's settings."""
    books = []
    if procedure in visa_checked_procedures(config):
        books.append("visas")
    if procedure in checked_procedures(config):
        books.append("permits")
    return tuple(books)


# the identifier each book is matched by (the book's names are the requests' `verified_by`)
BOOK_FIELDS = {"visas": "visa_number", "permits": "foreigner_number"}


def request_requires(procedure, config):
    """The identifiers a request for `procedure` must carry besides the person's identity:
    [{"field": "visa_number" | "foreigner_number", "checked_against": "visas" | "permits" |
    None}], [] for none. A list: the two settings are independent, so one procedure may be in
    both. A renewal's foreigner number is required even when no register checks it (the staff
    find the file by it: reference_data's requires_foreigner_number), `checked_against` None."""
    required = [{"field": BOOK_FIELDS[book], "checked_against": book}
                for book in register_books(procedure, config)]
    if PROCEDURES[procedure]["requires_foreigner_number"] and \
            not any(r["field"] == "foreigner_number" for r in required):
        required.append({"field": "foreigner_number", "checked_against": None})
    return required
