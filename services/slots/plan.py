"""Expand an opening plan into slots. Opening hours are local (Europe/Paris); slots are UTC."""
import hashlib
import hmac
import random
from datetime import datetime, timedelta

from services.common.timeutil import PARIS, WEEKDAYS, as_utc

def slot_id(secret, site, procedure, start_utc, variant=""):
    """Stable id: loading the same plan twice creates nothing new. Keyed (SLOT_ID_SECRET): an
    id computed from the opening hours would let a script send bookings for a slot before
    anybody can see it, and book it the instant it is released.

    variant: an extra plan's id (M2), so that its slots stay apart from the regular ones at
    the same hours.
    """
    key = f"{site}|{procedure}|{as_utc(start_utc).isoformat()}"
    if variant:
        key += f"|{variant}"
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:16]


def expand_plan(plan, secret, variant=""):
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
                        "_id": slot_id(secret, plan["site"], plan["procedure"], start_utc, variant),
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


def decoy_slots(plan, real_slots, share, secret):
    """Decoys for a plan: about `share` of its real slots' number, on the plan's own grid just
    outside an opening window (one slot before opening, or at closing), so that no real desk's
    capacity is used and, in the JSON API, a decoy looks like any other slot (same id scheme,
    same capacity). Chosen by a generator seeded with the plan and the secret: loading a plan
    twice makes the same decoys, hence nothing new, and the plan alone does not tell them.
    """
    if share <= 0 or not real_slots:
        return []
    length = timedelta(minutes=plan["slot_minutes"])
    days = sorted({s["start"].astimezone(PARIS).date() for s in real_slots})
    candidates = []
    for day in days:
        for opens, closes in plan["hours"]:
            candidates.append(datetime.combine(day, opens, tzinfo=PARIS) - length)
            candidates.append(datetime.combine(day, closes, tzinfo=PARIS))
    real_starts = {s["start"] for s in real_slots}
    candidates = [c for c in candidates if as_utc(c) not in real_starts]
    count = min(len(candidates), max(1, round(share * len(real_slots))))
    rng = random.Random(f"{secret}|{plan['site']}|{plan['procedure']}|{plan['from']}|{plan['to']}")
    return [{
        "_id": slot_id(secret, plan["site"], plan["procedure"], as_utc(start)),
        "site": plan["site"],
        "procedure": plan["procedure"],
        "start": as_utc(start),
        "end": as_utc(start + length),
        "capacity": plan["desks"],
        "booked": 0,
        "free": plan["desks"],
        "decoy": True,
    } for start in sorted(rng.sample(candidates, count))]
