"""The applicants' languages, in one place: French first, English, Arabic (issue 21).

Wording stays beside its translation as `t(fr, en)` in the pages, the e-mails and the code;
every other language comes from a gettext catalogue keyed by the English text
(`services/common/locale/<lang>/LC_MESSAGES/messages.po`, read with Babel at import, so no
compiled .mo has to be kept in step). `make messages` extracts every `t(...)` call into
`messages.pot` and merges it into the catalogues; tests/unit/test_catalogue.py fails on any
English text without a translation.
"""
import logging
import re
from pathlib import Path

from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

# the order the language switch offers them; the first is the default
LANGS = ("fr", "en", "ar")
DEFAULT = "fr"
NAMES = {"fr": "Français", "en": "English", "ar": "العربية"}
RTL = frozenset({"ar"})
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"


def _load(lang):
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    with open(path, "rb") as handle:
        catalog = read_po(handle, locale=lang)
    # a fuzzy entry is a guess `pybabel update` made: not a translation yet
    return {message.id: message.string for message in catalog
            if message.id and message.string and not message.fuzzy}


CATALOGUES = {lang: _load(lang) for lang in LANGS if lang not in ("fr", "en")}
_warned = set()


def translate(lang, fr, en):
    """The text in `lang`: French and English as written, other languages from their
    catalogue by the English text. A text missing there reads in French (and is logged
    once: the catalogue test should have caught it)."""
    if lang == "en":
        return en
    catalogue = CATALOGUES.get(lang)
    if catalogue is None:
        return fr
    text = catalogue.get(en)
    if text is None:
        if (lang, en) not in _warned:
            _warned.add((lang, en))
            log.warning("no %s translation for %r", lang, en[:80])
        return fr
    return text


def pick(texts, lang):
    """A {fr, en} text of the reference data in `lang` (its own when it has one)."""
    return texts[lang] if lang in texts else translate(lang, texts["fr"], texts["en"])


def with_langs(texts):
    """{fr, en} -> {fr, en, ar...}: data that templates read as `texts[lang]`."""
    return {**texts, **{lang: pick(texts, lang) for lang in LANGS if lang not in texts}}


def direction(lang):
    return "rtl" if lang in RTL else "ltr"


# Unicode isolates for plain text (e-mails): a reference, an address or a date inside an
# Arabic sentence keeps its own left-to-right order (LRI ... PDI)
LRI, PDI = "\u2066", "\u2069"


def isolate(value):
    return f"{LRI}{value}{PDI}"


ARABIC_LETTER = re.compile(r"[\u0600-\u06ff]")


def is_arabic(text):
    return bool(ARABIC_LETTER.search(text or ""))
