"""Issue 21: which appointments are reminded, and when (services/booking/reminders.py)."""
from datetime import date, datetime, timedelta, timezone

from services.booking import reminders
from services.common.timeutil import PARIS


def at(day, hour, minute=0):
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=PARIS).astimezone(timezone.utc)


def booking(start, created):
    return {"slot": {"start": start}, "created_at": created}


def test_two_working_days_before():
    assert reminders.reminder_day(date(2027, 3, 4)) == date(2027, 3, 2)   # Thursday -> Tuesday
    assert reminders.reminder_day(date(2027, 3, 8)) == date(2027, 3, 4)   # Monday -> Thursday
    assert reminders.reminder_day(date(2027, 3, 9)) == date(2027, 3, 5)   # Tuesday -> Friday


def test_french_public_holidays_are_not_working_days():
    # Easter Monday 2027 is 29 March: the Wednesday after is reminded on the Friday before
    assert not reminders.is_working_day(date(2027, 3, 29))
    assert reminders.reminder_day(date(2027, 3, 31)) == date(2027, 3, 26)
    # 14 July 2027 is a Wednesday
    assert reminders.reminder_day(date(2027, 7, 15)) == date(2027, 7, 12)
    # a list of one's own replaces the country's
    assert reminders.reminder_day(date(2027, 3, 31), holiday_list=frozenset()) == date(2027, 3, 29)


def test_due_from_the_reminder_day_until_the_appointment():
    start = at(date(2027, 3, 4), 9, 30)  # Thursday
    made = at(date(2027, 2, 1), 12)
    assert not reminders.due(booking(start, made), at(date(2027, 3, 1), 23, 59))
    assert reminders.due(booking(start, made), at(date(2027, 3, 2), 0, 1))
    # a pass missed on Tuesday catches up on Wednesday, never after the appointment began
    assert reminders.due(booking(start, made), at(date(2027, 3, 3), 12))
    assert not reminders.due(booking(start, made), start + timedelta(minutes=1))


def test_a_booking_made_on_or_after_its_reminder_day_is_not_reminded():
    start = at(date(2027, 3, 4), 9, 30)
    late = at(date(2027, 3, 2), 8)  # its confirmation, just sent, carries the same links
    assert not reminders.due(booking(start, late), at(date(2027, 3, 2), 10))
    assert reminders.due(booking(start, at(date(2027, 3, 1), 18)), at(date(2027, 3, 2), 10))


def test_the_horizon_reaches_the_end_of_the_second_working_day():
    # Thursday: appointments until the end of Monday may be due
    end = reminders.horizon(at(date(2027, 3, 4), 10))
    assert end == at(date(2027, 3, 9), 0)
