"""M4: real names from many countries pass, filler does not.

Two parts per table (tests/data/): the development part the rule was written against
(real_names.txt, placeholder_names.txt) and a held-out part written before the rule and never
used to tune it (*.heldout.txt). Both parts' figures are printed whatever pytest's capture
setting; the held-out part is allowed a small, documented number of misses.
"""
import warnings
from pathlib import Path

import pytest

from services.common import exact_names as names
from services.common.exact_names import name_problem

DATA = Path(__file__).resolve().parent.parent / "data"

# A real name refused costs a person their appointment; a filler accepted still fails at the
# counter. So the held-out bar is strict on real names and looser on fillers. Fixed before the
# held-out part was first measured.
# First measurement, left untuned: 1 real name refused (Singaporean "Ee", two equal letters),
# 91 of 97 fillers caught.
HELDOUT_MAX_REAL_REFUSED = 3          # of 279, about 1 %
HELDOUT_MIN_FILLER_CAUGHT = 0.75


def rows(name):
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            yield line.split("|")


REAL = {part: list(rows(f"real_names{suffix}.txt"))
        for part, suffix in (("dev", ""), ("held-out", ".heldout"))}
FILLER = {part: list(rows(f"placeholder_names{suffix}.txt"))
          for part, suffix in (("dev", ""), ("held-out", ".heldout"))}


def figures(part):
    refused = [(r, name_problem(r[0], r[1], "applicant@example.org", "renewal"))
               for r in REAL[part]]
    refused = [(r, why) for r, why in refused if why]
    accepted = [r for r in FILLER[part] if not name_problem(r[0], r[1], r[2], "renewal")]
    return refused, accepted


def test_both_parts_report_their_figures(capsys):
    lines = []
    for part in ("dev", "held-out"):
        refused, accepted = figures(part)
        caught = len(FILLER[part]) - len(accepted)
        lines.append(f"M4 names, {part} part: {len(refused)} of {len(REAL[part])} real names "
                     f"refused; {caught} of {len(FILLER[part])} fillers caught, "
                     f"{len(accepted)} accepted")
    # shown with or without -s, and kept in the warnings summary of CI logs
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    for line in lines:
        warnings.warn(line, UserWarning)
    assert all(len(REAL[p]) >= 150 and len(FILLER[p]) >= 80 for p in REAL)


def test_held_out_part_stays_within_its_documented_bounds():
    refused, accepted = figures("held-out")
    assert len(refused) <= HELDOUT_MAX_REAL_REFUSED, refused
    caught = 1 - len(accepted) / len(FILLER["held-out"])
    assert caught >= HELDOUT_MIN_FILLER_CAUGHT, accepted


@pytest.mark.parametrize("family, given", REAL["dev"], ids=[f"{f}|{g}" for f, g in REAL["dev"]])
def test_dev_real_names_pass(family, given):
    assert name_problem(family, given, "applicant@example.org", "renewal") is None


@pytest.mark.parametrize("family, given, email", FILLER["dev"],
                         ids=[f"{f}|{g}" for f, g, _ in FILLER["dev"]])
def test_dev_fillers_are_caught(family, given, email):
    assert name_problem(family, given, email, "renewal") is not None


def test_reasons_name_the_field():
    assert name_problem("test", "Awa") == ("family_name", "placeholder")
    assert name_problem("Sow", "Awa2") == ("given_names", "digits_or_symbols")
    assert name_problem("Sow", "awa.sow", "awa.sow@example.org") == ("given_names", "login")
    assert name_problem("Sow", "awa_sow", "awa_sow@example.org") == ("given_names",
                                                                     "digits_or_symbols")
    assert name_problem("Diallo", "Qsdfgh") == ("given_names", "keyboard_run")
    assert name_problem("Lalala", "Awa") == ("family_name", "repeated_syllables")
    assert name_problem("Sow", "Kdjfhs") == ("given_names", "no_vowel_pattern")
    # filler only as a whole identity: either word alone is someone's name
    assert name_problem("Truc", "Machin") == ("family_name", "placeholder")
    assert name_problem("Machin", "Stephen") is None
    assert name_problem("Nguyen", "Thanh Truc") is None
    # Mr Dupont whose address is dupont@... is just Mr Dupont
    assert name_problem("Dupont", "Jean", "dupont@example.org") is None
    assert name_problem("Suharto", "") is None  # one name only, as on his passport


@pytest.mark.parametrize("family, given", [
    ("Mohamed", "MOHAMED"), ("Diallo", "Diallo"), ("Ali", "Ali"), ("N'Diaye", "Ndiaye")])
def test_the_same_name_in_both_fields_is_never_a_reason(family, given):
    assert name_problem(family, given, "applicant@example.org") is None
    # and the rule still looks at such names: the same filler twice is still filler
    assert name_problem("Azerty", "Azerty") is not None


@pytest.mark.parametrize("word, expected", [
    ("azerty", True), ("poiuy", True), ("asdfasdf", True), ("qsdqsd", True), ("qazwsx", True),
    ("aqwzsx", True), ("poilkj", True), ("reza", False), ("azer", False), ("fred", False),
    ("salah", False), ("haddad", False), ("wertheimer", False),
])
def test_keyboard_runs(word, expected):
    assert names._is_keyboard_run(word) is expected


@pytest.mark.parametrize("word, expected", [
    ("tatata", True), ("hahaha", True), ("bnbnbn", True), ("blablabla", True),
    ("jingjing", False), ("tsitsi", False), ("bongbong", False), ("nana", False),
    ("papa", False), ("yaya", False),
])
def test_repeated_syllables(word, expected):
    assert names._repeats_a_syllable(word) is expected


@pytest.mark.parametrize("word, expected", [
    ("sdfg", True), ("kjhkjh", True), ("xcvbn", True), ("fjdkslaz", True),
    # few vowels, yet names: Cantonese, Hokkien, Czech, Croatian, Welsh, Armenian, Polish,
    # Georgian, Tigrinya, Bangladeshi passports
    ("ng", False), ("hng", False), ("vlk", False), ("krk", False), ("smrz", False),
    ("brnabic", False), ("cwm", False), ("llwyd", False), ("mkrtchyan", False),
    ("brzeczyszczykiewicz", False), ("mtskheta", False), ("kbrom", False), ("md", False),
    ("kirchschlager", False), ("nietzsche", False),
])
def test_vowel_patterns(word, expected):
    assert names._no_vowel_pattern(word) is expected


def test_other_scripts_are_not_shape_checked():
    # Arabic script omits short vowels; Cyrillic and CJK have their own rules
    assert name_problem("محمد", "علي") is None
    assert name_problem("Иванов", "Сергей") is None
    assert name_problem("王", "小明") is None
