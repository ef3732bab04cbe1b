"""The order of the draw and the allocation of places, as plain functions (no I/O).

Order (issue 12): permits by expiry date, earliest first (a permit already expired within the
two-month grace of M7 is the earliest of all, so it sorts first); then requests with no permit
(first applications) and permits expired beyond the grace, by the week they were filed; then
the people sent to the back after a second missed offer, by the week they were sent back.
Within one date or one week, a draw: each request gets a random number from a generator seeded
with an unpredictable seed (`secrets`). The draw record (inputs, seed, result) lets an audit
replay it with `replay()`.

Allocation is greedy in that order: each request takes the earliest place left that is at a
site and a time of week it said it can come; one place per request.
"""
import hashlib
import random
import secrets
from datetime import date, datetime

from services.common.timeutil import PARIS, as_utc

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
GRACE_MONTHS = 2  # M7: no late-filing penalty within two months of expiry

# tiers of the order
PERMIT, BY_WEEK, BACK = 0, 1, 2

# request states
UNCONFIRMED, WAITING, OFFERED, BOOKED, EXPIRED, WITHDRAWN = (
    "unconfirmed", "waiting", "offered", "booked", "expired", "withdrawn")
STATES = (UNCONFIRMED, WAITING, OFFERED, BOOKED, EXPIRED, WITHDRAWN)
OPEN_STATES = (UNCONFIRMED, WAITING, OFFERED)

# offer states; ACCEPTING: taken by an acceptance in progress, out of reach of the lapse
HOLDING, MADE, ACCEPTING, ACCEPTED, DECLINED, LAPSED, VOID = (
    "holding", "offered", "accepting", "accepted", "declined", "lapsed", "void")

MODES = ("open", "requests")


def add_months(day, months):
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue


def within_grace(expiry, today):
    """An expired permit whose holder still escapes the late-filing penalty (M7)."""
    return expiry < today <= add_months(expiry, GRACE_MONTHS)


def week_start(day):
    """The Monday of the ISO week of `day`, as an ordinal (weeks compare by it)."""
    return day.toordinal() - day.weekday()


def place_in_line(request, today):
    """(tier, key) of a request: the order before the draw. `request` is the stored document
    or its draw input: permit_expiry (YYYY-MM-DD or None), filed_day, back_day (YYYY-MM-DD)."""
    if request.get("back_day"):
        return BACK, week_start(date.fromisoformat(request["back_day"]))
    expiry = request.get("permit_expiry")
    if expiry:
        expiry = date.fromisoformat(expiry)
        if expiry >= today or within_grace(expiry, today):
            return PERMIT, expiry.toordinal()
    return BY_WEEK, week_start(date.fromisoformat(request["filed_day"]))


def draw_inputs(requests, today):
    """What the draw depends on, in a stable order (by id): the audit record's inputs."""
    rows = []
    for request in sorted(requests, key=lambda r: r["_id"]):
        tier, key = place_in_line(request, today)
        rows.append({"id": request["_id"], "tier": tier, "key": key})
    return rows


def new_seed():
    return secrets.token_hex(16)


def order(inputs, seed):
    """Request ids in allocation order, from draw_inputs() rows and a seed (replayable)."""
    rng = random.Random(seed)
    ties = {row["id"]: rng.random() for row in inputs}  # inputs come sorted by id
    return [row["id"] for row in sorted(inputs, key=lambda r: (r["tier"], r["key"], ties[r["id"]]))]


def draw(requests, today, seed=None):
    """The draw record: {inputs, seed, result, digest}. seed: a fresh secret one unless given."""
    inputs = draw_inputs(requests, today)
    seed = seed or new_seed()
    result = order(inputs, seed)
    return {"inputs": inputs, "seed": seed, "result": result, "today": today.isoformat(),
            "digest": hashlib.sha256(repr((inputs, seed, result)).encode()).hexdigest()}


def replay(record):
    """True when the recorded result follows from the recorded inputs and seed."""
    return order(record["inputs"], record["seed"]) == record["result"]


def _minutes(text):
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def can_come(availability, site, start, end):
    """Did the person say they can come to `site` for a slot from start to end (UTC)?"""
    if site not in (availability.get("sites") or ()):
        return False
    local_start, local_end = as_utc(start).astimezone(PARIS), as_utc(end).astimezone(PARIS)
    if local_start.date() != local_end.date():
        return False
    day = WEEKDAYS[local_start.weekday()]
    begins = local_start.hour * 60 + local_start.minute
    ends = local_end.hour * 60 + local_end.minute
    return any(window["weekday"] == day and _minutes(window["from"]) <= begins
               and ends <= _minutes(window["to"])
               for window in availability.get("times") or ())


def allocate(ordered_requests, places):
    """[(request id, slot id)]: each request in order takes the earliest place it can come to.

    ordered_requests: [{"_id", "availability"}] in draw order; places: [{"id", "site", "start",
    "end", "free"}] (start/end aware datetimes). One place per request; a slot gives at most
    `free` places.
    """
    left = {p["id"]: p["free"] for p in places}
    by_start = sorted(places, key=lambda p: (p["start"], p["id"]))
    offers = []
    for request in ordered_requests:
        for place in by_start:
            if left[place["id"]] > 0 and can_come(request["availability"], place["site"],
                                                  place["start"], place["end"]):
                left[place["id"]] -= 1
                offers.append((request["_id"], place["id"]))
                break
    return offers


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


