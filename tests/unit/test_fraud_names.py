"""M4, table-driven: real names from many countries pass, placeholders and filler do not."""
from pathlib import Path

import pytest

from services.fraud.names import name_problem

DATA = Path(__file__).resolve().parent.parent / "data"


def rows(name):
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            yield line.split("|")


REAL = list(rows("real_names.txt"))
FILLER = list(rows("placeholder_names.txt"))


def test_tables_are_large_and_report_their_counts(capsys):
    rejected_real = [r for r in REAL if name_problem(r[0], r[1], "someone@example.org")]
    passed_filler = [r for r in FILLER if not name_problem(*r)]
    with capsys.disabled():
        print(f"\nM4 names: {len(REAL)} real names, {len(rejected_real)} wrongly refused; "
              f"{len(FILLER)} placeholders, {len(passed_filler)} wrongly accepted")
    assert len(REAL) >= 300 and len(FILLER) >= 90


@pytest.mark.parametrize("family, given", REAL, ids=[f"{f}|{g}" for f, g in REAL])
def test_real_names_pass(family, given):
    assert name_problem(family, given, "applicant@example.org", "renewal") is None


@pytest.mark.parametrize("family, given, email", FILLER, ids=[f"{f}|{g}" for f, g, _ in FILLER])
def test_placeholders_are_caught(family, given, email):
    assert name_problem(family, given, email, "renewal") is not None


def test_reasons_name_the_field():
    assert name_problem("test", "Awa") == ("family_name", "placeholder")
    assert name_problem("Sow", "Awa2") == ("given_names", "digits_or_symbols")
    assert name_problem("Diallo", "diallo") == ("given_names", "same_as_family_name")
    assert name_problem("Sow", "awa.sow", "awa.sow@example.org") == ("given_names", "same_as_email")
    # Mr Dupont whose address is dupont@... is just Mr Dupont
    assert name_problem("Dupont", "Jean", "dupont@example.org") is None
    assert name_problem("Suharto", "") is None  # one name only, as on his passport
