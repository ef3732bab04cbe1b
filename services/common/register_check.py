"""Renewals checked against the prefecture's register of current permits (issue 24): what
requests and the pages share with the register service.

A renewal request must match a permit in the register: the foreigner number, the birth date
and the family name folded as M4 folds names (services/common/exact_names.py). The refusal
is one message whichever of them is wrong, so that it tells nothing of what the register
holds; it says what to check and how to come in without the internet.
"""
from services.common.exact_names import normalise_name
from services.common.reference_data import SITES
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


def match_key(foreigner_number, birth_date, family_name):
    """What a renewal must share with a register entry: the number, the birth date
    (YYYY-MM-DD) and the family name folded (case, accents, hyphens, apostrophes, spaces)."""
    return "|".join((foreigner_number or "", birth_date or "", normalise_name(family_name)))


def checked_procedures(config):
    """The procedures whose requests must match the register (REGISTER_CHECKED_PROCEDURES,
    comma-separated; `none` for none: an empty value means the default)."""
    return {p.strip() for p in setting(config, "REGISTER_CHECKED_PROCEDURES").split(",")
            if p.strip() and p.strip() != "none"}
