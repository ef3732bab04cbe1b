"""M2's places added to open slots (services/slots/extra_capacity.py): when they come back,
drawn like a release batch's instant (M1) or like a freed place's, with a seeded source."""
import random
from datetime import datetime, timedelta, timezone

from services.common.timeutil import PARIS
from services.slots import release as draw
from services.slots.extra_capacity import added_places_return, within_dates
from tests.unit.test_release_draw import POLICY, in_windows


def test_places_added_to_an_open_slot_come_back_like_a_batch_or_like_a_freed_place():
    rng = random.Random(8)
    # a Tuesday, 10:00 in Paris: inside a release window
    now = datetime(2027, 3, 2, 10, tzinfo=PARIS).astimezone(timezone.utc)
    far = now + timedelta(days=10)
    returns = [draw.from_ts(added_places_return(far, now, POLICY, rng)) for _ in range(2000)]
    assert all(now <= r <= far - POLICY.lead and in_windows(r) for r in returns)
    # uniform over the window time left: inside the window open now too, even within a minute
    # of the adding (nothing waits a freed place's minimum here)
    assert min(returns) < now + timedelta(hours=2)
    assert len({r.date() for r in returns}) >= 5
    # past its lead time: a freed place's delay
    close = now + timedelta(hours=30)
    delays = [added_places_return(close, now, POLICY, rng) - draw.to_ts(now) for _ in range(500)]
    assert min(delays) >= POLICY.freed_min and max(delays) <= POLICY.freed_max


def test_desks_are_added_between_the_two_dates_of_paris():
    # 23:30 UTC on 1 March is already 2 March in Paris
    slot = {"start": datetime(2027, 3, 1, 23, 30, tzinfo=timezone.utc)}
    day = datetime(2027, 3, 2).date()
    assert within_dates(slot, day, day) and within_dates(slot) and within_dates(slot, None, day)
    assert not within_dates(slot, None, day - timedelta(days=1))
