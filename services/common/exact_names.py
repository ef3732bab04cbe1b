"""M4 exact names, in one place: the rule that refuses filler typed to hold a slot
(`name_problem`, for fraud and requests), the folding by which one person is known
(`normalise_name`, `person_key`, `identity_key`) and the comparison at the counter
(`names_match`).

Is this a person's exact name, or filler typed to hold a slot?

The rule recognises shapes rather than listing entries: keyboard rows and mashes (AZERTY,
QWERTY, QWERTZ), repeated syllables, words with no plausible vowel pattern in any Latin
transliteration, filler words and phrases in French and English, logins and e-mail local
parts. It leans towards accepting: a filler booking still fails at the counter, a real name
refused costs a person their appointment. So it never refuses a name for being the same in
both fields ("Mohamed MOHAMED", "Diallo Diallo": some passports show one name in both fields,
and some families repeat it), and shape checks only look at plain Latin letters (Arabic script
omits short vowels, and other scripts have their own rules).

Measured against a development table it was written on and a held-out table it was not
(tests/data/*.txt and *.heldout.txt, tests/unit/test_fraud_names.py). Plain string work, a few
microseconds a name: it runs on every booking event.
"""
import re
import unicodedata

from services.common.reference_data import PROCEDURES


# -- the folding: one person, however their name is written (DESIGN.md section 3) ----------

_SEPARATORS = re.compile(r"[\s\-‐‑‒–—'’‘`´ʼ.]+")


def normalise_name(name):
    """Case, accents, hyphens, apostrophes and spaces folded away.

    "N'Diaye", "NDIAYE" and "Ndiaye" compare equal, as do "Jean-Pierre" and "Jean Pierre":
    the same person writes their name differently on different forms.
    """
    decomposed = unicodedata.normalize("NFKD", name or "")
    without_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = without_marks.casefold().replace("ß", "ss").replace("ø", "o").replace("æ", "ae")
    folded = folded.replace("œ", "oe").replace("ł", "l").replace("đ", "d").replace("ı", "i")
    return _SEPARATORS.sub("", folded)


def person_key(family_name, given_names, birth_date):
    """One person, as booking and fraud match them: folded family and given names and the birth
    date (YYYY-MM-DD). "N'DIAYE Awa" and "Ndiaye Awa", born the same day, are one person."""
    return "|".join((normalise_name(family_name), normalise_name(given_names), birth_date or ""))


def identity_key(identity):
    """`person_key` of an identity: the request's fields or a stored identity (birth date as a
    date or YYYY-MM-DD)."""
    birth = identity.get("birth_date")
    return person_key(identity.get("family_name"), identity.get("given_names"),
                      birth.isoformat() if hasattr(birth, "isoformat") else birth)


def names_match(booking, family_name, given_names):
    """At the counter: the names read on the identity document against the booking's, folded."""
    identity = booking["identity"]
    return (normalise_name(identity["family_name"]) == normalise_name(family_name)
            and normalise_name(identity["given_names"]) == normalise_name(given_names))


# -- the rule: an exact name or filler -------------------------------------------------------


def _folded(words):
    return frozenset(normalise_name(w) for w in words.split())


# Words no one is named, wherever they appear in a field: "Jean Test", "Bidon Jean".
NEVER_NAMES = _folded("""
    test tests testing testeur testeuse essai essais lorem ipsum dolor amet bidon bidule trucmuche
    tartempion quidam untel unetelle fictif fictive fake dummy placeholder blabla blablabla bla
    asdf azerty qwerty qwertz firstname lastname fullname surname forename username prenom prénom
    prenoms prénoms inconnu inconnue anonyme anonymous unknown nobody somebody someone anybody
""")

# Words that are not a name on their own: a field made only of these (with particles) is
# filler. Not here, because they are real names somewhere: Na, No (Korean), Ok, Baz (Turkish),
# Tata (Indian), Tutu, Bar, Sans, Root, Doe, Machin (English), Truc (Vietnamese Trúc).
PLACEHOLDERS = _folded("""
    nom noms name names client clients rdv rendezvous rendez-vous personne person user usager
    utilisateur none null nil nd néant neant vide empty aucun aucune toto titi foo demo démo exemple
    example sample xxx xx xyz abc abcd monsieur madame mademoiselle mr mme mlle m mrs ms etranger
    étranger famille family prefecture préfecture oui non yes admin administrateur administrator
    guest invite invité compte account random
""")

# Filler only when the whole identity is made of such words: "Truc Machin", "Foo Bar".
WEAK_FILLER = _folded("""
    truc machin chose muche doe bar baz tata tutu root faux rien quelqu'un quelquun
""")

# Words that neither make nor unmake a name: particles, and the "votre"/"my" of "votre nom".
NEUTRAL = _folded("""
    de du des la le les d l van von der den ter el al ben bin ibn ould mint da dos das di del della
    y e votre vos mon ma my your un une sans pas
""")

# Whole identities that are the standard placeholder for "some person", in either order.
PHRASES = frozenset({frozenset({"john", "doe"}), frozenset({"jane", "doe"})})

# one-letter family names that exist (Korean O, Chinese E, Burmese U); other single letters
# are initials or filler
REAL_SINGLE_LETTERS = frozenset({"o", "e", "u"})

# Rows of the keyboards applicants use, and alphabetical order, which fillers also type.
ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm",          # QWERTY
        "azertyuiop", "qsdfghjklm", "wxcvbn",          # AZERTY
        "qwertzuiop", "yxcvbnm")                       # QWERTZ
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
# Columns, typed downwards or upwards ("qazwsx", "aqwzsx").
COLUMNS = ("qaz", "wsx", "edc", "rfv", "tgb", "yhn", "ujm",             # QWERTY
           "aqw", "zsx", "edc", "rfv", "tgb", "yhn", "pm")              # AZERTY
SHORT_RUNS = frozenset({"qwe", "asd", "zxc", "aze", "qsd", "wxc", "abc", "xyz"})
# Real names that happen to be a run of four keys: Reza ("azer" backwards), Azer (Turkish).
REAL_RUNS = frozenset({"reza", "azer"})


def _chunks():
    """Every run of three or more neighbouring keys, both ways: the pieces of a mash."""
    found = set()
    for line in ROWS:
        for text in (line, line[::-1]):
            found.update(text[i:j] for i in range(len(text)) for j in range(i + 3, len(text) + 1))
    for column in COLUMNS:
        if len(column) == 3:
            found.update((column, column[::-1]))
    return frozenset(found)


KEY_CHUNKS = _chunks()

VOWELS = frozenset("aeiouy")
# Consonant letters written together for one sound (German, Slavic, Arabic and African
# transliterations): "Mkrtchyan" is m-k-r-tch, not six consonants.
DIGRAPHS = ("shch", "tsch", "sch", "tch", "dzh", "zh", "sh", "ch", "kh", "gh", "th", "ph", "dh",
            "bh", "jh", "rh", "wh", "ts", "tz", "dz", "cz", "sz", "rz", "zs", "dj", "ng", "ck")
# a doubled consonant is one sound too ("Ssempala", "Mmusi")
SOUND_RE = re.compile("|".join(DIGRAPHS + tuple(c + c for c in "bcdfghjklmnpqrstvwxz")) + "|.")
# Longest plausible run of consonant sounds between vowels in a Latin transliteration; real
# names reach four ("Kirchschläger": r-ch-sch-l).
MAX_CONSONANT_RUN = 5

APOSTROPHES = "'’ʼ‘`´"
ALLOWED_PUNCTUATION = set(" -‐‑" + APOSTROPHES + ".")
WORD_SPLIT = re.compile(r"[\s\-‐‑.]+")
# "jean.dupont", "k.mensah": a dot inside a word is a login, "Ma. Theresa" is an abbreviation
LOGIN_DOT = re.compile(r"\w\.\w", re.UNICODE)

PROCEDURE_WORDS = frozenset(
    normalise_name(text) for code, entry in PROCEDURES.items()
    for text in (code, entry["label_fr"], entry["label_en"])
) | frozenset(normalise_name(w) for w in (
    "titre de séjour", "titre de sejour", "carte de séjour", "carte de résident", "renouvellement",
    "premiere demande", "première demande", "duplicata", "changement de statut", "renewal",
    "residence permit", "naturalisation", "séjour", "sejour"))


def _is_keyboard_run(word):
    """A single run along a row ("azerty", "poiuy") or several runs typed one after another
    ("asdfasdf", "qsdqsd", "qazwsx", "poilkj")."""
    if word in REAL_RUNS:
        return False
    if word in SHORT_RUNS:
        return True
    if len(word) >= 4:
        for line in ROWS + (ALPHABET,):
            # backwards only from 5 letters, forwards from 4
            if word in line or (len(word) >= 5 and word in line[::-1]):
                return True
    return len(word) >= 6 and _splits_into_chunks(word)


def _splits_into_chunks(word):
    # reachable[i]: word[:i] is a sequence of key runs; two or more runs, each of three keys
    reachable = {0}
    for end in range(3, len(word) + 1):
        if any(word[start:end] in KEY_CHUNKS for start in reachable if end - start >= 3):
            reachable.add(end)
    return len(word) in reachable


def _repeats_a_syllable(word):
    """"tatata", "hahaha", "bnbnbn": one short unit three times or more. Two times is a name
    often enough ("Jingjing", "Tsitsi", "Bongbong")."""
    for size in range(1, 5):
        if len(word) >= 3 * size:
            unit = word[:size]
            if (unit * (len(word) // size + 1)).startswith(word):
                return True
    return False


def _consonant_units(word):
    """The word as sounds: "v" for a vowel or a syllabic consonant, "c" for a consonant."""
    units = SOUND_RE.findall(word)
    kinds = ["v" if unit in VOWELS else "c" for unit in units]
    # r and l between consonants carry the syllable in Czech, Slovak, Croatian and Serbian
    # ("Vlk", "Krk", "Brnabić", "Čtvrtník"; "Smrž" folds to s-m-rz); w does in Welsh ("Cwm").
    # Not at the start of a word, and with at most three consonants on either side.
    for i in range(1, len(units)):
        text = units[i]
        if kinds[i] == "c" and (text[0] in "rl" or text == "w") and kinds[i - 1] == "c" and (
                i == len(units) - 1 or kinds[i + 1] == "c") and (
                _run_before(kinds, i) <= 3 and _run_before(kinds[::-1], len(kinds) - 1 - i) <= 3):
            kinds[i] = "v"
    return kinds


def _run_before(kinds, i):
    run = 0
    while i - run - 1 >= 0 and kinds[i - run - 1] == "c":
        run += 1
    return run


def _no_vowel_pattern(word):
    """No syllable anywhere ("sdfg", "kjhkjh"), or more consonant sounds in a row than any
    language's names put together ("fjdkslaz")."""
    kinds = _consonant_units(word)
    if "v" not in kinds:
        # "Ng", "Hng" (Cantonese, Hokkien), "Md", "Sk" (Bangladeshi abbreviations): two sounds
        return len(kinds) >= 3
    run = longest = 0
    for kind in kinds:
        run = run + 1 if kind == "c" else 0
        longest = max(longest, run)
    return longest >= MAX_CONSONANT_RUN


def _shape_problem(word, one_word=True):
    """Why this word (folded, plain Latin letters) is not part of a name, or None. A field of
    several words is also checked joined ("Qwe Rty"), but not for vowels: consonants across a
    space are no cluster."""
    if len(word) >= 2 and len(set(word)) == 1 and word != "oo":
        return "repeated_character"
    if _is_keyboard_run(word):
        return "keyboard_run"
    if _repeats_a_syllable(word):
        return "repeated_syllables"
    if one_word and _no_vowel_pattern(word):
        return "no_vowel_pattern"
    return None


def _bad_characters(raw):
    return [c for c in raw if not (unicodedata.category(c)[0] in "LM" or c in ALLOWED_PUNCTUATION)]


def _words(raw):
    return [w for w in (normalise_name(part) for part in WORD_SPLIT.split(raw.strip())) if w]


def _only(words, *vocabularies):
    meaningful = [w for w in words if w not in NEUTRAL]
    return bool(meaningful) and all(any(w in v for v in vocabularies) for w in meaningful)


def field_problem(raw, required=True):
    """Why this one name field is not a person's exact name, or None."""
    if raw is None or not raw.strip():
        return "empty" if required else None
    if _bad_characters(raw):
        return "digits_or_symbols"
    if not any(unicodedata.category(c)[0] == "L" for c in raw):
        return "no_letters"
    if LOGIN_DOT.search(raw):
        return "login"
    folded = normalise_name(raw)
    words = _words(raw)
    if any(w in NEVER_NAMES for w in words + [folded]) or folded in PLACEHOLDERS or _only(
            words, PLACEHOLDERS):
        return "placeholder"
    # a Chinese character is a whole name ("王"), a Latin letter is an initial
    if len(folded) == 1 and folded.isascii() and folded not in REAL_SINGLE_LETTERS:
        return "single_letter"
    if folded in PROCEDURE_WORDS:
        return "procedure_name"
    checks = [(folded, len(words) <= 1)] + [(w, True) for w in words if len(words) > 1]
    for word, one_word in checks:
        if word.isascii() and word.isalpha():
            reason = _shape_problem(word, one_word)
            if reason:
                return reason
    return None


def name_problem(family_name, given_names, email="", procedure=None):
    """The first reason the identity given is not an exact name: (field, reason) or None.

    The same name in both fields is not a reason: real people carry it.
    """
    for field, value, required in (("family_name", family_name, True),
                                   ("given_names", given_names, False)):
        reason = field_problem(value, required)
        if reason:
            return field, reason
    family, given = _words(family_name), _words(given_names or "")
    if _only(family + given, PLACEHOLDERS, NEVER_NAMES, WEAK_FILLER) or (
            frozenset(family + given) in PHRASES):
        return "family_name", "placeholder"
    local = (email or "").split("@", 1)[0].strip().lower()
    # a handle typed as a name ("jean.dupont", "k_diallo"); "dupont@..." for Mr Dupont is fine
    if local and re.search(r"[^a-z\u00c0-\uffff]", local):
        for field, value in (("family_name", family_name), ("given_names", given_names or "")):
            if value.strip().lower() == local:
                return field, "same_as_email"
    return None
