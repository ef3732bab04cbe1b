"""The allocation of requests (issue 12, DESIGN.md section 11): the order of the draw and who
gets which place, as plain functions (no I/O). The requests service calls them on each
`slots_released` and when a place comes back; the draw record is kept for audits.

Order: permits by expiry date, earliest first (a permit already expired within the two-month
grace of M7 is the earliest of all, so it sorts first); then requests with no permit (first
applications) and permits expired beyond the grace, by the week they were filed; then the
people sent to the back after a second missed offer (`rules.after_missed_offer` sets their
`back_day`), by the week they were sent back. Within one date or one week, a draw: each request
gets a random number from a generator seeded with an unpredictable seed (`secrets`). The draw
record (inputs, seed, result) lets an audit replay it with `replay()`.

Allocation is greedy in that order: each request takes the earliest place left that is at a
site and a time of week it said it can come; one place per request.
"""
import hashlib
import random
import secrets
from datetime import date

# M7's grace (services/common/penalty_waiver.py): an expired permit within it is first in line
from services.common.penalty_waiver import within_grace
from services.common.timeutil import PARIS, as_utc
from services.common.timeutil import WEEKDAYS

# tiers of the order
PERMIT, BY_WEEK, BACK = 0, 1, 2


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
    return _fits(availability, _local({"site": site, "start": start, "end": end}))


def _local(place):
    """What can_come compares of a place, worked out once: (site, weekday, begins, ends) in
    local minutes, or None when it spans two local days (nobody can come then)."""
    local_start = as_utc(place["start"]).astimezone(PARIS)
    local_end = as_utc(place["end"]).astimezone(PARIS)
    if local_start.date() != local_end.date():
        return None
    return (place["site"], WEEKDAYS[local_start.weekday()],
            local_start.hour * 60 + local_start.minute, local_end.hour * 60 + local_end.minute)


def _fits(availability, local):
    if local is None:
        return False
    site, day, begins, ends = local
    if site not in (availability.get("sites") or ()):
        return False
    return any(window["weekday"] == day and _minutes(window["from"]) <= begins
               and ends <= _minutes(window["to"])
               for window in availability.get("times") or ())


def allocate(ordered_requests, places):
    """[(request id, slot id)]: each request in order takes the earliest place it can come to.

    ordered_requests: [{"_id", "availability"}] in draw order; places: [{"id", "site", "start",
    "end", "free"}] (start/end aware datetimes). One place per request; a slot gives at most
    `free` places. Stops once every place is given (20,000 waiting for 1,000 places).
    """
    left = {p["id"]: p["free"] for p in places if p["free"] > 0}
    open_places, seen = [], set()
    for place in sorted(places, key=lambda p: (p["start"], p["id"])):
        if place["id"] in left and place["id"] not in seen:  # a slot listed twice: one entry
            seen.add(place["id"])
            open_places.append((place["id"], _local(place)))
    offers = []
    for request in ordered_requests:
        if not open_places:
            break
        for n, (place_id, local) in enumerate(open_places):
            if _fits(request["availability"], local):
                left[place_id] -= 1
                if not left[place_id]:
                    del open_places[n]  # full: nobody after this one looks at it
                offers.append((request["_id"], place_id))
                break
    return offers
