"""The release draw (M1, services/slots/release.py) and the freed-place rule (freed_places.py),
as plain functions with a seeded source."""
import random
from collections import Counter
from datetime import datetime, time, timedelta, timezone

import pytest

from services.common.timeutil import PARIS, as_utc
from services.slots import freed_places, release as draw
from services.slots.plan import expand_plan

POLICY = draw.Policy(windows=[(time(9), time(12)), (time(14), time(17, 30))], lead_hours=48,
                     advance_days=21, batch_min=1, batch_max=25)


def paris(moment):
    return as_utc(moment).astimezone(PARIS)


def in_windows(moment, windows=POLICY.windows):
    local = paris(moment)
    return local.weekday() < 5 and any(o <= local.time() < c for o, c in windows)


def plan_slots(first_day, weeks=8, desks=3):
    return list(expand_plan({
        "site": "montpellier", "procedure": "renewal", "from": first_day,
        "to": first_day + timedelta(weeks=weeks), "weekdays": ["monday", "tuesday", "wednesday",
                                                               "thursday", "friday"],
        "hours": [(time(8, 30), time(12)), (time(13, 30), time(16, 30))],
        "slot_minutes": 20, "desks": desks}, "a-slot-id-key-for-tests"))


def many_draws(n_plans=60, seed=7):
    """Batches drawn for n_plans plans created at random moments over a year."""
    rng = random.Random(seed)
    results = []
    for _ in range(n_plans):
        now = datetime(2027, 1, 4, tzinfo=timezone.utc) + timedelta(seconds=rng.uniform(0, 300 * 86400))
        slots = plan_slots(paris(now).date() + timedelta(days=1))
        starts = {s["_id"]: s["start"] for s in slots}
        for due, ids in draw.draw_batches(slots, now, POLICY, rng):
            results.append((now, due, ids, starts))
    return results


DRAWS = many_draws()


def test_thousands_of_batches_are_drawn():
    assert len(DRAWS) > 3000


def test_every_slot_is_scheduled_once():
    rng = random.Random(1)
    now = datetime(2027, 3, 1, 10, tzinfo=timezone.utc)
    slots = plan_slots(date_after(now))
    batches = draw.draw_batches(slots, now, POLICY, rng)
    ids = [i for _, batch in batches for i in batch]
    assert sorted(ids) == sorted(s["_id"] for s in slots)


def date_after(now):
    return paris(now).date() + timedelta(days=1)


def test_releases_land_on_weekdays_inside_windows_unless_too_late_for_one():
    late = [(now, due) for now, due, ids, starts in DRAWS if not in_windows(due)]
    # the only releases outside windows are those whose lead time left no window: at `now`
    assert all(due == now for now, due in late)
    # and they are the few first slots of each plan (created tomorrow morning with a 48 h lead)
    assert len(late) < 0.05 * len(DRAWS)
    assert all(in_windows(due) for now, due, ids, starts in DRAWS if due != now)


def test_lead_time_respected_and_never_in_the_past():
    for now, due, ids, starts in DRAWS:
        assert due >= now
        first = min(starts[i] for i in ids)
        assert due <= first - POLICY.lead or due == now


def test_no_weekday_and_no_hour_of_the_week_takes_a_large_share():
    inside = [paris(due) for now, due, ids, starts in DRAWS if due != now]
    by_day = Counter(d.weekday() for d in inside)
    assert set(by_day) == {0, 1, 2, 3, 4}
    shares = [n / len(inside) for n in by_day.values()]
    assert max(shares) < 0.26 and min(shares) > 0.14  # a fair share is 0.20
    by_hour = Counter((d.weekday(), d.hour) for d in inside)
    # 5 days x 7 window hours (the 17:00 hour half) -> about 1/32.5 each
    assert len(by_hour) >= 35
    assert max(by_hour.values()) / len(inside) < 0.06


def test_batch_sizes_vary():
    sizes = Counter(len(ids) for now, due, ids, starts in DRAWS)
    assert len(sizes) >= 20
    assert max(sizes.values()) / sum(sizes.values()) < 0.15


def test_the_same_plan_drawn_twice_gets_different_instants():
    now = datetime(2027, 3, 1, 10, tzinfo=timezone.utc)
    slots = plan_slots(date_after(now))
    first = draw.draw_batches(slots, now, POLICY, draw.secret_random())
    second = draw.draw_batches(slots, now, POLICY, draw.secret_random())
    assert [d for d, _ in first] != [d for d, _ in second]


def test_a_slot_too_close_for_its_lead_is_released_at_once():
    now = datetime(2027, 3, 1, 10, tzinfo=timezone.utc)
    soon = now + timedelta(hours=5)
    assert draw.release_instant(soon, now, POLICY, random.Random(3)) == now


def test_demo_mode_releases_every_few_minutes():
    policy = draw.Policy(demo_minutes=2, batch_min=5, batch_max=10)
    now = datetime(2027, 3, 6, 23, tzinfo=timezone.utc)  # a Saturday night: windows ignored
    batches = draw.draw_batches(plan_slots(date_after(now)), now, policy, random.Random(2))
    dues = [d for d, _ in batches]
    assert dues == sorted(dues)
    assert now < dues[0] <= now + timedelta(minutes=2)
    assert dues[4] <= now + timedelta(minutes=10)


def test_windows_parse_and_refuse_garbage():
    assert draw.parse_windows("09:00-12:00, 14:00-17:30") == [(time(9), time(12)), (time(14), time(17, 30))]
    for bad in ("", "12:00-09:00", "nine-ten"):
        with pytest.raises(ValueError):
            draw.parse_windows(bad)


# -- freed places ----------------------------------------------------------------------------

def test_a_freed_place_comes_back_in_the_configured_range():
    now = datetime(2027, 3, 1, 10, tzinfo=timezone.utc)
    start = now + timedelta(days=3)
    rng = random.Random(5)
    delays = [freed_places.freed_place_delay(now, start, POLICY, rng) for _ in range(2000)]
    assert min(delays) >= POLICY.freed_min and max(delays) <= POLICY.freed_max
    # spread over the range, not one fixed delay a trafficker could wait out
    assert len({round(d / 300) for d in delays}) >= 10


def test_a_freed_place_on_a_close_slot_comes_back_in_what_is_left_never_at_once():
    now = datetime(2027, 3, 1, 10, tzinfo=timezone.utc)
    rng = random.Random(6)
    for minutes_left in (40, 20, 2):
        start = now + timedelta(minutes=minutes_left)
        for _ in range(300):
            delay = freed_places.freed_place_delay(now, start, POLICY, rng)
            assert delay <= minutes_left * 60
            assert delay >= min(POLICY.freed_min, minutes_left * 60 / 2)
    assert freed_places.freed_place_delay(now, now - timedelta(minutes=1), POLICY, rng) == 0.0
