"""The texts applicants read, gathered for the catalogues (issue 21): `make messages`.

Every `t(fr, en)` call in the public pages (templates and Python) and in the e-mails, found by
Babel's extractors (Jinja's for templates), and the reference data written as (fr, en) pairs
(procedures, documents, form messages, notices). Writes services/common/locale/messages.pot,
keyed by the English text with the French as a comment for translators, and merges it into each
language's messages.po (new texts empty, texts gone marked obsolete), which people translate.
tests/unit/test_catalogue.py checks the catalogues against `texts()`.

    .venv/bin/python -m deploy.messages          # write messages.pot, update every .po
"""
import sys
from datetime import datetime, timezone
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_python
from babel.messages.pofile import read_po, write_po
from jinja2.ext import babel_extract

from services.common import i18n

ROOT = Path(__file__).resolve().parent.parent
# where applicants' wording lives; t(...) anywhere under these is a text to translate
SOURCES = [ROOT / "gateway" / "public", ROOT / "services" / "notify" / "templates"]
JINJA_OPTIONS = {"trim_blocks": "true", "lstrip_blocks": "true"}
# constant: running `make messages` again changes no line of the files unless a text changed
CREATED = datetime(2026, 12, 7, tzinfo=timezone.utc)
HEADER = dict(project="prefecture-rdv", version="1", copyright_holder="Préfecture de l'Hérault",
              msgid_bugs_address="", charset="utf-8", creation_date=CREATED,
              revision_date=CREATED, fuzzy=False)


def calls(path):
    """[(line, fr, en)] for every t(...) call of a file; (line, None, None) for a call whose
    texts are not written out (t(*pair), t(x, y)): those must come from data_pairs()."""
    with open(path, "rb") as handle:
        if path.suffix == ".py":
            found = extract_python(handle, ["t"], [], {})
        else:
            found = babel_extract(handle, ["t"], [], JINJA_OPTIONS)
        out = []
        for line, _, args, _ in found:
            if isinstance(args, tuple) and len(args) == 2 and None not in args:
                out.append((line, args[0], args[1]))
            else:
                out.append((line, None, None))
        return out


def source_files():
    for base in SOURCES:
        for path in sorted(base.rglob("*")):
            if path.suffix in (".py", ".j2"):
                yield path


def data_pairs():
    """(fr, en, where) of the texts kept as data rather than as t(...) calls."""
    from gateway.public import fairness, forms
    from services.booking.views import NOT_FINAL
    from services.common import walk_ins
    from services.common.reference_data import DOCUMENTS, FREE_NOTICE, PROCEDURES, WAIVER_RULE

    pairs = []
    for name, table in (("forms.MESSAGES", forms.MESSAGES),
                        ("forms.ATTEMPT_MESSAGES", forms.ATTEMPT_MESSAGES),
                        ("forms.REQUEST_MESSAGES", forms.REQUEST_MESSAGES)):
        pairs += [(fr, en, f"gateway/public/forms.py#{name}") for fr, en in table.values()]
    pairs += [(*forms.GENERAL, "gateway/public/forms.py#GENERAL"),
              (*forms.CHOOSE_ANOTHER_TIME, "gateway/public/forms.py#CHOOSE_ANOTHER_TIME")]
    pairs += [(fr, en, "gateway/public/forms.py#GRID_DAYS") for _, fr, en in forms.GRID_DAYS]
    pairs += [(half[3], half[4], "gateway/public/forms.py#HALF_DAYS") for half in forms.HALF_DAYS]
    pairs += [(fr, en, "gateway/public/fairness.py#KINDS") for _, _, fr, en in fairness.KINDS]
    data = "services/common/reference_data.py"
    for code, entry in PROCEDURES.items():
        pairs.append((entry["label_fr"], entry["label_en"], f"{data}#PROCEDURES.{code}"))
    # M6: the walk-in notice is made of these (services/common/walk_ins.py, notice())
    rules = "services/common/walk_ins.py"
    pairs += [(*walk_ins.NOTICE, f"{rules}#NOTICE"), (*walk_ins.ANY_MORNING, f"{rules}#ANY_MORNING"),
              (*walk_ins.ANY_DAY, f"{rules}#ANY_DAY")]
    pairs += [(rule["purpose"]["fr"], rule["purpose"]["en"], f"{rules}#RULES.{code}.purpose")
              for code, rule in walk_ins.RULES.items()]
    for code, items in DOCUMENTS.items():
        pairs += [(fr, en, f"{data}#DOCUMENTS.{code}") for fr, en in items]
    for name, texts in ((f"{data}#FREE_NOTICE", FREE_NOTICE), (f"{data}#WAIVER_RULE", WAIVER_RULE),
                        ("services/booking/views.py#NOT_FINAL", NOT_FINAL)):
        pairs.append((texts["fr"], texts["en"], name))
    # the e-mails' "<date> at <time>" (services/notify/compose.py)
    pairs.append(("%(date)s à %(time)s", "%(date)s at %(time)s", "services/notify/compose.py#_at"))
    return pairs


def texts():
    """{English: (French, [where...])} of every text applicants read, and the t(...) calls
    whose texts are not written out ([where...])."""
    found, dynamic = {}, []
    for path in source_files():
        where = str(path.relative_to(ROOT))
        for line, fr, en in calls(path):
            if en is None:
                dynamic.append(f"{where}:{line}")
                continue
            found.setdefault(en, (fr, []))[1].append(f"{where}:{line}")
    for fr, en, where in data_pairs():
        found.setdefault(en, (fr, []))[1].append(where)
    return found, dynamic


def template_catalog():
    catalog = Catalog(**HEADER)
    for en, (fr, places) in sorted(texts()[0].items()):
        catalog.add(en, auto_comments=[f"fr: {fr}"],
                    locations=[(place.rsplit(":", 1)[0], int(place.rsplit(":", 1)[1]))
                               if ":" in place else (place, None) for place in places],
                    flags=("python-format",) if "%(" in en else ())
    return catalog


def main():
    template = template_catalog()
    with open(i18n.LOCALE_DIR / f"{i18n.DOMAIN}.pot", "wb") as handle:
        write_po(handle, template, width=100)
    for lang in i18n.CATALOGUES:
        path = i18n.LOCALE_DIR / lang / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with open(path, "rb") as handle:
                catalog = read_po(handle, locale=lang)
        else:
            catalog = Catalog(locale=lang, **HEADER)
        # no fuzzy guesses: an untranslated text must show as missing, not as a near miss
        catalog.update(template, no_fuzzy_matching=True)
        catalog.project, catalog.version, catalog.msgid_bugs_address = "prefecture-rdv", "1", ""
        catalog.copyright_holder, catalog.revision_date = HEADER["copyright_holder"], CREATED
        catalog.last_translator = catalog.language_team = "prefecture-rdv"
        with open(path, "wb") as handle:  # texts gone are dropped, not kept as comments
            write_po(handle, catalog, width=100, ignore_obsolete=True)
        missing = [m.id for m in catalog if m.id and not m.string]
        print(f"{path.relative_to(ROOT)}: {len(catalog)} texts, {len(missing)} to translate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
