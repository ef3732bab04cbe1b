"""Reminders (issue 21): which appointments to remind, two working days ahead.

Plain functions over dates, so that tests ask them directly. Working days are Monday to
Friday in Europe/Paris, without France's public holidays (the `holidays` package keeps the
list, Easter-dependent days included): an appointment on Thursday is reminded on Tuesday, one
on Monday the Thursday before, one on the Wednesday after Easter Monday the Friday before.
"""
from datetime import timedelta
from functools import lru_cache

import holidays

from services.booking.events import identity_fields
from services.booking.views import day_bounds
from services.common import contract
from services.common.timeutil import PARIS, as_utc, iso_utc

WORKING_DAYS_AHEAD = 2


@lru_cache(maxsize=8)
def _french_holidays(year):
    return frozenset(holidays.country_holidays("FR", years=[year]))


def is_working_day(day, holiday_list=None):
    """Monday to Friday and not a public holiday (France's, unless a list is given)."""
    off = holiday_list if holiday_list is not None else _french_holidays(day.year)
    return day.weekday() < 5 and day not in off


def add_working_days(day, count, holiday_list=None):
    """The date `count` working days after `day` (before it when count < 0)."""
    step = 1 if count >= 0 else -1
    left = abs(count)
    while left:
        day += timedelta(days=step)
        if is_working_day(day, holiday_list):
            left -= 1
    return day


def reminder_day(appointment_day, ahead=WORKING_DAYS_AHEAD, holiday_list=None):
    """The day an appointment on `appointment_day` is reminded: `ahead` working days before."""
    return add_working_days(appointment_day, -ahead, holiday_list)


def horizon(now, ahead=WORKING_DAYS_AHEAD, holiday_list=None):
    """The UTC instant before which every appointment may be due for its reminder today:
    the end of the Paris day `ahead` working days from today (a pass looks no further)."""
    today = as_utc(now).astimezone(PARIS).date()
    last = add_working_days(today, ahead, holiday_list)
    return day_bounds(last)[1]


def due(booking, now, ahead=WORKING_DAYS_AHEAD, holiday_list=None):
    """True when this active booking should be reminded at `now`.

    Its reminder day has come (or passed: a pass missed while every instance was down catches
    up) and the appointment has not begun. A booking made on or after its reminder day is not
    reminded: its confirmation, sent just before, carries the same links.
    """
    start = as_utc(booking["slot"]["start"])
    if start <= as_utc(now):
        return False
    today = as_utc(now).astimezone(PARIS).date()
    remind_on = reminder_day(start.astimezone(PARIS).date(), ahead, holiday_list)
    booked_on = as_utc(booking["created_at"]).astimezone(PARIS).date()
    return remind_on <= today and booked_on < remind_on


def record(now):
    """What the booking keeps of its reminder (shown in the staff day view)."""
    return {"at": now}


def reminder_event(booking, token):
    """`booking_reminder_due`, rebuilt identically on every (re)send from the booking."""
    slot = booking["slot"]
    return contract.build(
        "booking_reminder_due",
        event_id=booking["outbox"]["reminder"]["event_id"],
        occurred_at=booking["reminded"]["at"],
        reference=booking["_id"],
        procedure=booking["procedure"],
        site=slot["site"],
        slot_id=slot["id"],
        slot_start=iso_utc(slot["start"]),
        slot_end=iso_utc(slot["end"]),
        email=booking["email"],
        identity=identity_fields(booking),
        token=token,
        reminded_at=iso_utc(booking["reminded"]["at"]),
        # the links open the pages in the language the person booked in
        lang=booking.get("lang") or "fr",
    )
