"""M7 waiver rule: two calendar months after expiry, and attempts on record before it."""
from datetime import date

import pytest

from services.common.penalty_waiver import add_months, filing_deadline, waiver

BEFORE = {"reference": "ATT-AAAA-BBBB", "procedure": "renewal", "at": "2026-03-10T09:00:00Z"}
# 23:30 UTC on 31 March is 1 April in Paris: after a 31 March expiry
AFTER = {"reference": "ATT-CCCC-DDDD", "procedure": "renewal", "at": "2026-03-31T22:30:00Z"}


@pytest.mark.parametrize("day, expected", [
    (date(2026, 3, 15), date(2026, 5, 15)),
    (date(2025, 12, 31), date(2026, 2, 28)),   # no 31 February: its last day
    (date(2027, 12, 31), date(2028, 2, 29)),   # leap year
    (date(2026, 11, 30), date(2027, 1, 30)),   # across the year
    (date(2026, 3, 31), date(2026, 5, 31)),
])
def test_two_calendar_months(day, expected):
    assert add_months(day, 2) == expected == filing_deadline(day)


def test_on_the_last_day_with_evidence_the_penalty_is_waived():
    answer = waiver(date(2026, 3, 31), date(2026, 5, 31), [BEFORE])
    assert answer["waived"] and answer["late"] and answer["in_time"]["holds"]
    assert answer["evidence"]["holds"] and answer["evidence"]["attempts"] == [BEFORE]
    assert answer["deadline"] == "2026-05-31"


def test_the_day_after_the_limit_is_too_late_even_with_evidence():
    answer = waiver(date(2026, 3, 31), date(2026, 6, 1), [BEFORE])
    assert not answer["waived"] and not answer["in_time"]["holds"]
    assert answer["evidence"]["holds"]  # the other condition still said to hold
    assert "non remplie" in answer["in_time"]["text"]


def test_in_time_without_evidence_is_not_waived():
    answer = waiver(date(2026, 3, 31), date(2026, 4, 20), [])
    assert not answer["waived"] and answer["in_time"]["holds"] and not answer["evidence"]["holds"]
    assert "Aucune tentative" in answer["evidence"]["text"]


def test_attempts_after_the_expiry_do_not_count():
    answer = waiver(date(2026, 3, 31), date(2026, 4, 20), [AFTER])
    assert not answer["waived"] and not answer["evidence"]["holds"]
    assert answer["evidence"]["after_expiry"] == [AFTER]
    # the same instant counts for a permit expiring on 1 April (Paris day)
    assert waiver(date(2026, 4, 1), date(2026, 4, 20), [AFTER])["waived"]


def test_filing_before_expiry_is_not_late():
    answer = waiver(date(2026, 3, 31), date(2026, 3, 31), [])
    assert not answer["late"] and not answer["waived"] and "Pas de retard" in answer["summary"]
