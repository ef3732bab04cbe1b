"""Per-day counters (services/common/daily_limit.py) and the M7 attempt limits built on them."""
from datetime import datetime, timezone

from services.booking import evidence
from services.common.daily_limit import day_key

UTC = timezone.utc


def test_the_day_is_the_paris_day_and_the_key_names_nobody():
    # 23:30 UTC on 4 January is already 5 January in Paris
    late = datetime(2027, 1, 4, 23, 30, tzinfo=UTC)
    assert day_key("mail:amina@example.org", late).endswith(":2027-01-05")
    assert day_key("mail:amina@example.org", datetime(2027, 1, 4, 22, 30, tzinfo=UTC)).endswith(":2027-01-04")
    assert "amina" not in day_key("mail:amina@example.org", late)
    assert day_key("a", late) != day_key("b", late)


def test_an_attempt_counts_for_the_number_and_for_the_e_mail():
    now = datetime(2027, 1, 4, 9, tzinfo=UTC)
    limits = evidence.daily_limits("0612345678", "Amina@Example.org", now, 3, 2)
    other_number = evidence.daily_limits("0699999999", "amina@example.org", now, 3, 2)
    # changing the number changes the person's counter, not the e-mail's
    assert limits[0] != other_number[0] and limits[1] == other_number[1]
    assert [limit for _, limit in limits] == [3, 2]
    # without a number the person is the e-mail: one counter, the tighter limit
    assert evidence.daily_limits(None, "amina@example.org", now, 3, 2) == [(limits[1][0], 2)]
