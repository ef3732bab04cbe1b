"""M6 walk-ins from one source (services/common/walk_ins.py): the days and the mornings of the
rule are what every message says and what the counter applies."""
import pytest

from services.common import walk_ins
from services.common.reference_data import procedure_view


def test_the_public_notice_and_the_counter_say_the_days_of_the_rule(monkeypatch):
    view = procedure_view("renewal_10y")["walk_in"]
    assert view == walk_ins.notice("renewal_10y")
    assert view["mornings_only"] and "matin" in view["fr"] and "morning" in view["en"]
    assert "sauf le mercredi" in view["fr"] and "except Wednesday" in view["en"]
    assert view["ar"].startswith("لتجديد بطاقة المقيم") and "ما عدا يوم الأربعاء" in view["ar"]
    # another closed day in the data is said everywhere at once, never a word written apart
    rule = dict(walk_ins.RULES["renewal_10y"], weekdays=["monday", "tuesday", "thursday"])
    monkeypatch.setitem(walk_ins.RULES, "renewal_10y", rule)
    notice = walk_ins.notice("renewal_10y")
    assert "sauf le mercredi et le vendredi" in notice["fr"]
    assert "except Wednesday and Friday" in notice["en"]
    assert "ما عدا يوم الأربعاء ويوم الجمعة." in notice["ar"]  # issue 21: in Arabic too
    text = walk_ins.rule_text("08:30-12:00")
    assert "sauf le mercredi et le vendredi" in text and "never on Wednesday or Friday" in text


@pytest.mark.parametrize("hours", ["08:30-12:30", "13:30-16:00"])
def test_hours_past_noon_are_refused_for_a_rule_of_mornings_only(hours):
    with pytest.raises(ValueError, match="morning"):
        walk_ins.checked_hours(hours)
    assert walk_ins.checked_hours("08:30-12:00") == ((8, 30), (12, 0))
