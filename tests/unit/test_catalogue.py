"""Arabic for applicants (issue 21): every text a page or an e-mail shows has its translation.

The texts are found the way `make messages` finds them (deploy/messages.py: Babel's extractors
over every t(fr, en) call in the public pages' templates and Python and in the e-mails'
templates, plus the reference data kept as (fr, en) pairs), and checked against the Arabic
catalogue (services/common/locale/ar/LC_MESSAGES/messages.po).
"""
import logging
import re
from datetime import date

import pytest
from babel.messages.pofile import read_po

from deploy import messages
from gateway.public import forms
from services.common import i18n
from services.common.reference_data import DOCUMENTS, documents, procedure_view
from services.common.timeutil import long_date

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# texts made only of placeholders and punctuation: the same in every language
NOTHING_TO_TRANSLATE = re.compile(r"^[\s%()\w:,.;-]*$")


def catalogue(lang="ar"):
    path = i18n.LOCALE_DIR / lang / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with open(path, "rb") as handle:
        return {m.id: m for m in read_po(handle, locale=lang) if m.id}


def test_every_text_of_the_pages_and_e_mails_has_an_arabic_translation():
    texts, _ = messages.texts()
    assert len(texts) > 300  # the extraction found the templates (a broken path finds nothing)
    ar = catalogue()
    missing = [f"{en!r} ({', '.join(places[:2])})" for en, (_, places) in texts.items()
               if en not in ar or not ar[en].string or ar[en].fuzzy]
    assert not missing, "no Arabic for:\n" + "\n".join(missing)
    not_arabic = [en for en in texts if not i18n.is_arabic(ar[en].string)
                  and not PLACEHOLDER.sub("", en).strip(" :,.()") == ""]
    assert not not_arabic, not_arabic


def test_translations_keep_their_placeholders_and_balance_their_isolates():
    texts, _ = messages.texts()
    ar = catalogue()
    for en, (fr, _) in texts.items():
        text = ar[en].string
        given = set(PLACEHOLDER.findall(en)) | set(PLACEHOLDER.findall(fr))
        assert set(PLACEHOLDER.findall(en)) <= set(PLACEHOLDER.findall(text)), (en, text)
        assert set(PLACEHOLDER.findall(text)) <= given, (en, text)
        assert "%" not in PLACEHOLDER.sub("", text), (en, text)  # no stray format sign
        assert text.count(i18n.LRI) == text.count(i18n.PDI), (en, text)


def test_templates_call_t_with_their_texts_written_out():
    """A t(x, y) with variables would escape the check above: only data pairs may, in Python."""
    _, dynamic = messages.texts()
    assert all(place.endswith(".py") or ".py:" in place for place in dynamic), dynamic


def test_the_template_catalogue_is_up_to_date():
    """messages.pot is what `make messages` writes: run it after changing a text."""
    with open(i18n.LOCALE_DIR / f"{i18n.DOMAIN}.pot", "rb") as handle:
        written = {m.id for m in read_po(handle) if m.id}
    assert written == set(messages.texts()[0])


def test_the_extraction_finds_a_new_text_and_translate_falls_back_to_french(tmp_path, caplog):
    template = tmp_path / "new.html.j2"
    template.write_text('<p>{{ t("Un texte tout neuf", "A brand new text") }}</p>\n'
                        '{% set x = t(a, b) %}\n')
    assert messages.calls(template) == [(1, "Un texte tout neuf", "A brand new text"),
                                        (2, None, None)]
    with caplog.at_level(logging.WARNING, logger="services.common.i18n"):
        assert i18n.translate("ar", "Un texte tout neuf", "A brand new text") == "Un texte tout neuf"
    assert "no ar translation" in caplog.text


def test_one_list_of_languages():
    from gateway.public import pages
    from services.common import contract, schemas
    assert i18n.LANGS == ("fr", "en", "ar")
    assert contract.LANGS is i18n.LANGS and pages.LANGS is i18n.LANGS
    assert schemas.LANGS is i18n.LANGS
    assert i18n.direction("ar") == "rtl" and i18n.direction("fr") == "ltr"


def test_texts_in_arabic_french_and_english():
    assert i18n.translate("fr", "Accueil", "Home") == "Accueil"
    assert i18n.translate("en", "Accueil", "Home") == "Home"
    assert i18n.translate("ar", "Accueil", "Home") == "الصفحة الرئيسية"
    # a language without a catalogue reads French, the default
    assert i18n.translate("xx", "Accueil", "Home") == "Accueil"


def test_reference_data_in_arabic():
    view = procedure_view("renewal_10y")
    assert i18n.is_arabic(view["label_ar"]) and "10" in view["label_ar"]
    assert view["label_fr"].startswith("Renouvellement")
    assert i18n.is_arabic(view["walk_in"]["ar"])
    listed = documents("first_application", "ar")
    assert len(listed) == len(DOCUMENTS["first_application"])
    assert all(i18n.is_arabic(item) for item in listed)
    assert documents("renewal", "fr")[0].startswith("votre passeport")


def test_dates_in_arabic_keep_western_digits():
    assert long_date(date(2027, 3, 4), "ar") == "الخميس 4 مارس 2027"
    assert long_date(date(2027, 3, 4), "fr") == "jeudi 4 mars 2027"


def test_form_errors_and_the_grid_in_arabic():
    errors, _ = forms.field_errors({"email": ["Not a valid email address."]},
                                   {"email": "x"}, "ar")
    assert i18n.is_arabic(errors["email"]) and "name@example.org" in errors["email"]
    cells = forms.grid_cells("ar")
    assert cells[0][1] == "الاثنين" and cells[0][2][0] == ("monday-morning", "صباحًا")
    assert forms.grid_cells("fr")[0][1] == "Lundi"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_french_and_english_need_no_catalogue(lang):
    assert lang not in i18n.CATALOGUES
