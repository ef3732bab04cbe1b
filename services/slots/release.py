"""M1, releases at secret random weekday instants: plain functions taking a random source.

The prefecture no longer publishes on a fixed day and hour: each plan's slots are split into
batches of random size and each batch gets a random instant, uniform over the weekday release
windows (Monday to Friday, Europe/Paris) between the earliest moment a slot may be published
(`advance` before its start) and the latest (`lead` before its start, so that nobody has to
book a slot in the minutes before it and none is wasted). A place given back comes back at a
random later instant too (services/slots/freed_places.py); places added to open slots (M2,
services/slots/extra_capacity.py) at an instant drawn here like a batch's.

Production draws from `secrets.SystemRandom()` (nobody can replay the sequence); tests pass a
seeded `random.Random`.
"""
import secrets
from datetime import datetime, time, timedelta, timezone

from services.common.timeutil import PARIS, as_utc

WEEKDAYS = range(0, 5)  # Monday to Friday


def secret_random():
    return secrets.SystemRandom()


def parse_windows(text):
    """'09:00-12:00,14:00-17:30' -> [(time(9), time(12)), (time(14), time(17, 30))]; ValueError."""
    windows = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        opens, closes = (time.fromisoformat(t.strip()) for t in part.split("-"))
        if opens >= closes:
            raise ValueError(f"release window {part!r}: opening must come before closing")
        windows.append((opens, closes))
    if not windows:
        raise ValueError("no release window")
    return sorted(windows)


class Policy:
    """The release settings (deploy/config.yaml, RELEASE_*, and FREED_PLACE_* for
    services/slots/freed_places.py), with their meaning."""

    def __init__(self, windows=((time(9), time(12)), (time(14), time(17, 30))), lead_hours=48.0,
                 advance_days=21.0, batch_min=1, batch_max=25, freed_min_seconds=1800.0,
                 freed_max_seconds=5400.0, demo_minutes=0.0):
        self.windows = list(windows)
        self.lead = timedelta(hours=lead_hours)          # latest release: this before the slot
        self.advance = timedelta(days=advance_days)      # earliest release: this before the slot
        self.batch_min, self.batch_max = max(1, batch_min), max(batch_min, batch_max)
        self.freed_min, self.freed_max = freed_min_seconds, max(freed_min_seconds, freed_max_seconds)
        self.demo_minutes = demo_minutes                 # > 0: compressed schedule for a demo

    @classmethod
    def from_config(cls, config):
        from services.common.settings import setting

        return cls(
            windows=parse_windows(setting(config, "RELEASE_WINDOWS")),
            lead_hours=setting(config, "RELEASE_LEAD_HOURS"),
            advance_days=setting(config, "RELEASE_ADVANCE_DAYS"),
            batch_min=setting(config, "RELEASE_BATCH_MIN"),
            batch_max=setting(config, "RELEASE_BATCH_MAX"),
            freed_min_seconds=setting(config, "FREED_PLACE_MIN_SECONDS"),
            freed_max_seconds=setting(config, "FREED_PLACE_MAX_SECONDS"),
            demo_minutes=setting(config, "RELEASE_DEMO_MINUTES"),
        )


def window_intervals(start, end, windows):
    """The (from, to) UTC intervals of weekday release windows inside [start, end]."""
    start, end = as_utc(start), as_utc(end)
    intervals = []
    day = start.astimezone(PARIS).date() - timedelta(days=1)
    while day <= end.astimezone(PARIS).date():
        if day.weekday() in WEEKDAYS:
            for opens, closes in windows:
                lo = max(start, as_utc(datetime.combine(day, opens, tzinfo=PARIS)))
                hi = min(end, as_utc(datetime.combine(day, closes, tzinfo=PARIS)))
                if lo < hi:
                    intervals.append((lo, hi))
        day += timedelta(days=1)
    return intervals


def instant_in_windows(start, end, windows, rng):
    """A uniform random instant over the window time inside [start, end]; None if there is none."""
    intervals = window_intervals(start, end, windows)
    total = sum((hi - lo).total_seconds() for lo, hi in intervals)
    if total <= 0:
        return None
    point = rng.random() * total
    for lo, hi in intervals:
        length = (hi - lo).total_seconds()
        if point < length:
            return lo + timedelta(seconds=point)
        point -= length
    return intervals[-1][1]


def batch_sizes(count, policy, rng):
    """Random sizes in [batch_min, batch_max] adding up to `count`."""
    sizes = []
    while count > 0:
        size = min(count, rng.randint(policy.batch_min, policy.batch_max))
        sizes.append(size)
        count -= size
    return sizes


def release_instant(first_start, now, policy, rng):
    """When a batch whose earliest slot starts at `first_start` is released.

    Inside the windows between `advance` and `lead` before the slot; when the lead time is
    already past or no window is left before it, at the first timer pass (now): a late
    release is better than a wasted slot.
    """
    now, first_start = as_utc(now), as_utc(first_start)
    latest = first_start - policy.lead
    earliest = max(now, first_start - policy.advance)
    if latest <= now:
        return now
    return instant_in_windows(earliest, latest, policy.windows, rng) or \
        instant_in_windows(now, latest, policy.windows, rng) or now


def draw_batches(slots, now, policy, rng):
    """[(due, [slot ids])]: the slots (dicts with _id and start) cut into batches with instants.

    Slots are taken in start order so a batch is a stretch of neighbouring slots (as a person
    opening a week of agenda would publish), its size random; each batch then gets its own
    instant. In demo mode (policy.demo_minutes > 0) batches come every few minutes from now.
    """
    ordered = sorted(slots, key=lambda s: (as_utc(s["start"]), s["_id"]))
    batches, position = [], 0
    for number, size in enumerate(batch_sizes(len(ordered), policy, rng)):
        members = ordered[position:position + size]
        position += size
        if policy.demo_minutes > 0:
            due = as_utc(now) + timedelta(minutes=policy.demo_minutes * (number + rng.random()))
            due = min(due, as_utc(members[0]["start"]) - timedelta(minutes=1))
        else:
            due = release_instant(members[0]["start"], now, policy, rng)
        batches.append((due, [s["_id"] for s in members]))
    return batches


def to_ts(moment):
    return as_utc(moment).timestamp()


def from_ts(ts):
    return datetime.fromtimestamp(ts, timezone.utc)
