"""Expand an opening plan into slots. Opening hours are local (Europe/Paris); slots are UTC."""
import hashlib
from datetime import datetime, time, timedelta

from services.common.timeutil import PARIS, as_utc

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def slot_id(site, procedure, start_utc, variant=""):
    """Stable id: loading the same plan twice creates nothing new.

    variant: an extra plan's id (M2), so that its slots stay apart from the regular ones at
    the same hours.
    """
    key = f"{site}|{procedure}|{as_utc(start_utc).isoformat()}"
    if variant:
        key += f"|{variant}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def expand_plan(plan, variant=""):
    """Yield slot documents for each opening window of each chosen weekday in [from, to].

    plan: site, procedure, from/to (dates), weekdays (names), hours [(start, end) times],
    slot_minutes, desks (places per slot).
    """
    length = timedelta(minutes=plan["slot_minutes"])
    weekdays = {WEEKDAYS.index(day) for day in plan["weekdays"]}
    day = plan["from"]
    while day <= plan["to"]:
        if day.weekday() in weekdays:
            for opens, closes in plan["hours"]:
                start = datetime.combine(day, opens, tzinfo=PARIS)
                end_of_window = datetime.combine(day, closes, tzinfo=PARIS)
                while start + length <= end_of_window:
                    start_utc = as_utc(start)
                    yield {
                        "_id": slot_id(plan["site"], plan["procedure"], start_utc, variant),
                        "site": plan["site"],
                        "procedure": plan["procedure"],
                        "start": start_utc,
                        "end": as_utc(start + length),
                        "capacity": plan["desks"],
                        "booked": 0,
                        "free": plan["desks"],
                    }
                    start += length
        day += timedelta(days=1)


def parse_hours(text):
    """'08:30-12:00' -> (time(8, 30), time(12, 0))."""
    opens, closes = text.split("-")
    return time.fromisoformat(opens.strip()), time.fromisoformat(closes.strip())
