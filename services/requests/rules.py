"""Requests' other rules as plain functions (no I/O): the states of requests and offers, the
per-procedure modes, an offer's deadline, what a missed offer changes, and small views. The
order of the draw and the allocation of places are in services/requests/allocation.py.
"""
from datetime import datetime, timedelta

from services.common.timeutil import PARIS, as_utc

# the days of a request's availability

# request states
UNCONFIRMED, WAITING, OFFERED, BOOKED, EXPIRED, WITHDRAWN = (
    "unconfirmed", "waiting", "offered", "booked", "expired", "withdrawn")
STATES = (UNCONFIRMED, WAITING, OFFERED, BOOKED, EXPIRED, WITHDRAWN)
OPEN_STATES = (UNCONFIRMED, WAITING, OFFERED)
# closed for good (`closed_ts`): erased REQUEST_RETENTION_DAYS later (services/common/retention.py)
CLOSED_STATES = (BOOKED, EXPIRED, WITHDRAWN)

# offer states; ACCEPTING: taken by an acceptance in progress, out of reach of the lapse
HOLDING, MADE, ACCEPTING, ACCEPTED, DECLINED, LAPSED, VOID = (
    "holding", "offered", "accepting", "accepted", "declined", "lapsed", "void")
# an offer in these holds its place: made, and not ended since
LIVE_AFTER_HOLDING = (MADE, ACCEPTING, ACCEPTED)



def offer_deadline(now, start, hours, margin_hours, floor_hours):
    """When an offer made at `now` for a place starting at `start` must be answered; None when
    the place starts too soon to be offered at all.

    `hours` from now, but no later than `margin_hours` before the place starts (a declined or
    lapsed place can still go to the next person), and never less than `floor_hours` from now
    (time to read the e-mail and answer). A place so close that the margin cannot be kept is
    offered with the floor, if whoever accepts at that deadline still has the floor before it
    starts; closer than that, nobody could answer and come: it is not offered.
    """
    floor = now + timedelta(hours=floor_hours)
    deadline = min(now + timedelta(hours=hours), start - timedelta(hours=margin_hours))
    if deadline >= floor:
        return deadline
    if floor <= start - timedelta(hours=floor_hours):
        return floor
    return None


def after_missed_offer(request, today):
    """What a declined or lapsed offer changes: the first time the person keeps their place in
    the line; after that they go to the back (the week it happened)."""
    if request.get("missed", 0) >= 1:
        return {"missed": request.get("missed", 0) + 1, "back_day": today.isoformat()}
    return {"missed": request.get("missed", 0) + 1}


def paris_today(now):
    return as_utc(now).astimezone(PARIS).date()


def slot_times(slot):
    """A slots-service view's start and end as aware datetimes."""
    return datetime.fromisoformat(slot["start"]), datetime.fromisoformat(slot["end"])


def expiry_month(request):
    return request["permit_expiry"][:7] if request.get("permit_expiry") else "none"


