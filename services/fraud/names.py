"""M4: is this a person's exact name, or filler typed to hold a slot?

Plain functions, checked against several hundred real names from many countries (accents,
particles, apostrophes, two-letter family names, passport transliterations) and placeholders
(tests/unit/test_fraud_names.py).
"""
import re
import unicodedata

from services.common.normalise import normalise_name
from services.common.reference_data import PROCEDURES

# Words that are never anyone's name. Not here, because they are real family names
# somewhere: Na, No (Korean), Ok, Baz (Turkish), Tata (Indian), Tutu, Bar, Sans.
PLACEHOLDERS = frozenset(normalise_name(w) for w in """
    test tests testing essai nom prenom prénom noms prenoms name names firstname lastname
    surname fullname client clients rdv rendezvous rendez-vous inconnu inconnue unknown anonyme
    anonymous personne person user usager utilisateur none null nil nd néant neant vide
    empty aucun toto titi foo demo démo exemple example sample xxx xx
    xyz abc abcd azerty qwerty qwertz asdf monsieur madame mademoiselle mr mme mlle m mrs ms
    etranger étranger famille family prefecture préfecture oui non yes
""".split())

# one-letter family names that exist (Korean O, Chinese E, Burmese U); other single letters
# are initials or filler
REAL_SINGLE_LETTERS = frozenset({"o", "e", "u"})

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "azertyuiop", "qsdfghjklm", "wxcvbn",
                 "abcdefghijklmnopqrstuvwxyz", "qwertzuiop", "yxcvbnm")

APOSTROPHES = "'’ʼ‘`´"
ALLOWED_PUNCTUATION = set(" -‐‑" + APOSTROPHES + ".")

PROCEDURE_WORDS = frozenset(
    normalise_name(text) for code, entry in PROCEDURES.items()
    for text in (code, entry["label_fr"], entry["label_en"])
) | frozenset(normalise_name(w) for w in (
    "titre de séjour", "titre de sejour", "carte de séjour", "carte de résident", "renouvellement",
    "premiere demande", "première demande", "duplicata", "changement de statut", "renewal",
    "residence permit", "naturalisation", "séjour", "sejour"))


def _is_keyboard_run(folded):
    if len(folded) < 4 and folded not in {"qwe", "asd", "zxc", "aze", "qsd", "wxc", "abc", "xyz"}:
        return False
    # backwards only from 5 letters: "Reza" is "azer" reversed on an AZERTY keyboard
    return any(folded in row or (len(folded) >= 5 and folded in row[::-1]) for row in KEYBOARD_ROWS)


def _bad_characters(raw):
    return [c for c in raw if not (unicodedata.category(c)[0] in "LM" or c in ALLOWED_PUNCTUATION)]


def field_problem(raw, required=True):
    """Why this one name field is not a person's exact name, or None."""
    if raw is None or not raw.strip():
        return "empty" if required else None
    if _bad_characters(raw):
        return "digits_or_symbols"
    if not any(unicodedata.category(c)[0] == "L" for c in raw):
        return "no_letters"
    folded = normalise_name(raw)
    words = [normalise_name(w) for w in re.split(r"[\s\-‐‑]+", raw.strip()) if w]
    if folded in PLACEHOLDERS or (words and all(w in PLACEHOLDERS for w in words)):
        return "placeholder"
    if len(folded) == 1 and folded not in REAL_SINGLE_LETTERS:
        return "single_letter"
    if len(folded) >= 2 and len(set(folded)) == 1 and folded != "oo":
        return "repeated_character"
    if _is_keyboard_run(folded):
        return "keyboard_run"
    if folded in PROCEDURE_WORDS:
        return "procedure_name"
    return None


def name_problem(family_name, given_names, email="", procedure=None):
    """The first reason the identity given is not an exact name: (field, reason) or None."""
    for field, value, required in (("family_name", family_name, True),
                                   ("given_names", given_names, False)):
        reason = field_problem(value, required)
        if reason:
            return field, reason
    family, given = normalise_name(family_name), normalise_name(given_names or "")
    if given and family == given:
        return "given_names", "same_as_family_name"
    local = (email or "").split("@", 1)[0].strip().lower()
    # a handle typed as a name ("jean.dupont", "k_diallo"); "dupont@..." for Mr Dupont is fine
    if local and re.search(r"[^a-z\u00c0-\uffff]", local):
        for field, value in (("family_name", family_name), ("given_names", given_names or "")):
            if value.strip().lower() == local:
                return field, "same_as_email"
    return None
