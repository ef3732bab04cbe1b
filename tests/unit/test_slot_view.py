"""The public gateway's view of free places (gateway/public/slot_view.py), with clocks of the
test's own: when it answers, what it refuses, and what it learns from slots and bookings."""
from datetime import datetime, timedelta

import pytest

from gateway.public.slot_view import OVERLAP_SECONDS, SlotView
from services.common.timeutil import PARIS, iso_paris

DAY = datetime(2031, 3, 4, tzinfo=PARIS)  # a Tuesday
WALL = (DAY - timedelta(days=1)).timestamp()


def slot(slot_id, hour, free=1, procedure="renewal", site="montpellier", decoy=False,
         state="open"):
    """A row of slots.view_since for a slot the gateway is told of in full."""
    start = DAY.replace(hour=hour)
    return {"id": slot_id, "site": site, "procedure": procedure, "start": iso_paris(start),
            "end": iso_paris(start + timedelta(minutes=30)), "capacity": 1, "booked": 1 - free,
            "free": free, "held_back": 0, "state": state, "published_at": None, "decoy": decoy}


def change(slot_id, free):
    """A row of slots.view_since for a slot the gateway has: what changes."""
    return {"id": slot_id, "state": "open", "free": free}


class Clocks:
    def __init__(self):
        self.mono, self.wall = 1000.0, WALL


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def view(clocks):
    return SlotView(1.0, clock=lambda: clocks.mono, wall=lambda: clocks.wall)


def look(view, slots, full=True, modes=None):
    """One look at a slots service that read `slots` just now (as_of: the view's wall clock)."""
    asked = []

    def ask(since):
        asked.append(since)
        return {"as_of": view.wall(), "full": full, "slots": slots, "modes": modes or {}}
    assert view.sync(ask)
    return asked


def test_it_answers_only_while_its_last_look_is_younger_than_the_bound(view, clocks):
    assert view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50) is None  # never looked
    look(view, [slot("a", 9), slot("b", 10, free=0)])
    listed = view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50)
    assert [s["id"] for s in listed["slots"]] == ["a"]  # a full slot is not listed
    assert view.known_full("b") and not view.known_full("a") and not view.known_full("unknown")
    clocks.wall += 1.01  # what it read is older than the bound
    assert view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50) is None
    assert not view.known_full("b")  # stale: the attempt goes to slots


def test_a_look_after_the_first_asks_for_the_changes_with_an_overlap(view, clocks):
    assert look(view, [slot("a", 9, free=0)]) == [None]
    first = clocks.wall
    clocks.mono += 0.5
    clocks.wall += 0.5
    # "a" got a place back, "b" was closed
    assert look(view, [change("a", free=1), {"id": "b", "state": "scheduled"}],
                full=False) == [first - OVERLAP_SECONDS]
    assert not view.known_full("a")
    assert view.slot("a")["free"] == 1 and view.slot("a")["start"] == slot("a", 9)["start"]
    assert set(view.slot("a")) == set(slot("a", 9))
    assert view.slot("b") is None


def test_a_change_for_a_slot_it_never_saw_opened_makes_it_rebuild(view, clocks):
    look(view, [slot("a", 9)])
    look(view, [change("z", free=1)], full=False)
    assert not view.fresh()  # it misses a slot: not used until rebuilt
    assert look(view, [slot("a", 9), slot("z", 10)], full=False) == [None]
    assert view.fresh() and view.slot("z") is not None


def test_a_full_look_replaces_everything(view):
    look(view, [slot("a", 9), slot("b", 10)])
    look(view, [slot("b", 10)])
    assert view.slot("a") is None and view.slot("b") is not None


def test_a_full_learnt_from_a_booking_is_dropped_when_a_look_began_meanwhile(view, clocks):
    look(view, [slot("a", 9, free=2), slot("b", 10, free=2), slot("c", 11, free=2)])
    clocks.mono += 0.1
    began = view.began()
    view.learnt_full("a", began)
    assert view.known_full("a")
    # a look that began during a booking may have read the slot after its hold: what the
    # booking learnt may be older than the look
    late = view.began()
    clocks.mono += 0.1
    look(view, [slot("b", 10, free=2)], full=False)
    view.learnt_full("b", late)
    assert not view.known_full("b")
    # a look that began before the booking and ended during it read the slot before the hold:
    # what the booking learnt stands (under load a look ends while bookings are under way)
    during = []

    def ask(since):
        clocks.mono += 0.1
        during.append(view.began())  # a booking begins while the look reads
        return {"as_of": view.wall(), "full": False, "slots": [change("c", 2)], "modes": {}}
    clocks.mono += 0.1
    assert view.sync(ask)
    view.learnt_full("c", during[0])
    assert view.known_full("c")


def test_listing_filters_sorts_and_pages_as_slots_does(view, clocks):
    slots = [slot("c", 11), slot("a", 9), slot("b", 10, decoy=True),
             slot("d", 12, site="beziers"), slot("e", 13, procedure="duplicate")]
    look(view, slots)
    listed = view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 2, include_decoys=True)
    assert [s["id"] for s in listed["slots"]] == ["a", "b"] and listed["has_more"]
    assert set(listed["slots"][0]) == {"id", "site", "procedure", "start", "end", "capacity",
                                       "booked", "free", "held_back", "state", "published_at",
                                       "decoy"}
    second = view.list_open("renewal", "2031-03-04", "2031-03-04", 2, 2, include_decoys=True)
    assert [s["id"] for s in second["slots"]] == ["c", "d"] and not second["has_more"]
    assert [s["id"] for s in view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50)["slots"]] \
        == ["a", "c", "d"]  # no decoys for the pages
    assert [s["id"] for s in view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50,
                                            site="beziers")["slots"]] == ["d"]
    assert view.list_open("renewal", "2031-03-05", "2031-03-06", 1, 50)["slots"] == []
    # a slot that has started is neither listed nor answered
    clocks.wall = DAY.replace(hour=10).timestamp()
    look(view, slots)
    assert [s["id"] for s in view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50)["slots"]] \
        == ["c", "d"]
    assert view.slot("a") is None


def test_a_procedure_allocated_by_request_lists_nothing(view):
    look(view, [slot("a", 9), slot("e", 13, procedure="duplicate")],
         modes={"renewal": "requests", "duplicate": "open"})
    assert view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50)["slots"] == []
    assert view.list_open("duplicate", "2031-03-04", "2031-03-04", 1, 50)["slots"]
    look(view, [], full=False, modes={"renewal": "open"})  # switched back to open
    assert view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50)["slots"]


def test_off_it_never_answers(clocks):
    view = SlotView(0, clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    assert view.sync(lambda since: pytest.fail("an off view asks nothing")) is False
    assert view.list_open("renewal", "2031-03-04", "2031-03-04", 1, 50) is None
    assert not view.known_full("a")


def test_a_failed_look_leaves_it_stale(view, clocks):
    look(view, [slot("a", 9, free=0)])

    def down(since):
        raise OSError("slots away")
    clocks.wall += 0.6
    with pytest.raises(OSError):
        view.sync(down)
    assert view.syncing is None
    clocks.wall += 0.5
    assert not view.known_full("a")


def test_it_is_in_use_only_while_asked(view, clocks):
    assert not view.in_use()  # the timer asks slots nothing for an idle gateway
    look(view, [slot("a", 9)])
    view.known_full("a")
    assert view.in_use()
    clocks.mono += 31
    assert not view.in_use()
