"""Holds with no booking behind them go back; a booking never appears after its hold did.

Real slots and booking containers on a real vhost and the store; the sweeper runs with a short
age limit so that a test sees it act.
"""
import time
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo.errors import DuplicateKeyError

from services.booking.service import BookingService
from services.booking.store import BookingStore
from services.slots.service import SlotsService, sweep
from services.slots.store import SlotStore
from tests.helpers import applicant, plan, wait_until

CLIENT = {"ip": "203.0.113.7", "user_agent": "pytest"}


@pytest.fixture
def sweep_config(config):
    return dict(config, HOLD_MAX_AGE_SECONDS=1, HOLD_SWEEP_SECONDS=0.3)


def a_slot(rpc, desks=2):
    rpc.slots.create_from_plan(plan(desks=desks), release="now")
    today = datetime.now(timezone.utc).date()
    return rpc.slots.list_open("renewal", today.isoformat(),
                               (today + timedelta(days=30)).isoformat())["slots"][0]


def given_back(rpc, slot_id):
    """Places not held by anyone: bookable now, or held back until their re-release."""
    slot = rpc.slots.get(slot_id)
    return slot["free"] + slot["held_back"]


def sweeps_done(mongo, passes=2):
    """Until the sweeper has renewed its lease `passes` more times: proof that it ran."""
    leases = mongo("slots")["leases"]
    seen = []

    def renewed():
        doc = leases.find_one({"_id": "sweep_holds"})
        if doc and (not seen or doc["until_ts"] != seen[-1]):
            seen.append(doc["until_ts"])
        return len(seen) > passes

    return wait_until(renewed, timeout=15)


def test_an_abandoned_hold_is_given_back_and_a_booked_one_kept(container_factory, sweep_config,
                                                                 mongo):
    container_factory(SlotsService, sweep_config).start()
    container_factory(BookingService, sweep_config).start()
    with ClusterRpcProxy(sweep_config, timeout=20) as rpc:
        slot = a_slot(rpc)
        booked = rpc.booking.create(applicant(slot["id"]), CLIENT)
        # a hold whose booking never came (its booking process died after the hold)
        rpc.slots.hold(slot["id"], "RDV-LOST-0001", "renewal")
        assert rpc.slots.get(slot["id"])["free"] == 0

        # given back: held back for a random later re-release (a freed place), not lost
        assert wait_until(lambda: given_back(rpc, slot["id"]) == 1, timeout=15)
        assert rpc.slots.holds(slot["id"]) == [booked["reference"]]
        holds = {h["_id"]: h["state"] for h in mongo("slots")["holds"].find()}
        assert holds == {booked["reference"]: "booked", "RDV-LOST-0001": "released"}
        # the booked one stays, pass after pass
        assert sweeps_done(mongo)
        assert rpc.slots.get(slot["id"])["booked"] == 1
        assert rpc.booking.get(booked["reference"], booked["token"])["status"] == "pending"


def test_nothing_is_given_back_while_booking_does_not_answer(container_factory, sweep_config,
                                                             mongo):
    container_factory(SlotsService, sweep_config).start()
    with ClusterRpcProxy(sweep_config, timeout=20) as rpc:
        slot = a_slot(rpc)
        rpc.slots.hold(slot["id"], "RDV-MAYBE-0001", "renewal")
        time.sleep(1.2)  # older than HOLD_MAX_AGE_SECONDS
        assert sweeps_done(mongo)  # swept several times, with no booking service to ask
        assert rpc.slots.holds(slot["id"]) == ["RDV-MAYBE-0001"]

        container_factory(BookingService, sweep_config).start()
        assert wait_until(lambda: rpc.slots.holds(slot["id"]) == [], timeout=15)
        assert given_back(rpc, slot["id"]) == 2


def test_a_booking_is_never_stored_after_its_hold_was_judged_abandoned(mongo):
    store = BookingStore(mongo("booking"))
    store.insert({"_id": "RDV-KEPT-0001", "status": "active"})
    now = datetime.now(timezone.utc)
    assert store.holds_in_use(["RDV-KEPT-0001", "RDV-LATE-0001"], now) == ["RDV-KEPT-0001"]
    # the booking process wakes up and tries to store the booking: refused, atomically
    with pytest.raises(DuplicateKeyError):
        store.insert({"_id": "RDV-LATE-0001", "status": "active"})
    assert store.get("RDV-LATE-0001") is None  # the marker is not a booking
    assert store.get_many(["RDV-LATE-0001", "RDV-KEPT-0001"]) == [
        {"_id": "RDV-KEPT-0001", "status": "active"}]
    # asked again: still not in use
    assert store.holds_in_use(["RDV-LATE-0001"], now) == []


def test_a_late_booking_gives_its_place_back_and_says_it_was_not_made(
        container_factory, sweep_config, mongo):
    """Booking's hold outlives the sweeper's age limit (the RPC is slow): no booking."""
    from services.common.errors import ServiceUnavailable

    container_factory(SlotsService, sweep_config).start()
    container_factory(BookingService, dict(sweep_config, HOLD_MAX_AGE_SECONDS=0.2)).start()
    with ClusterRpcProxy(sweep_config, timeout=20) as rpc:
        slot = a_slot(rpc, desks=1)
        # the age limit (0.2 s) leaves less than the insert margin: given up before the insert
        with pytest.raises(ServiceUnavailable) as caught:
            rpc.booking.create(applicant(slot["id"]), CLIENT)
        assert "not made" in caught.value.message
        assert given_back(rpc, slot["id"]) == 1
        # no booking: only the marker that fences its reference
        assert mongo("booking")["bookings"].find_one({"abandoned_hold": {"$ne": True}}) is None


class FakeHolds:
    """The store as sweep() sees it, in memory."""

    def __init__(self, holds):
        self.holds = {h["_id"]: dict(h, state="held") for h in holds}

    def stale_holds(self, older_than_ts, limit):
        return [h for h in self.holds.values()
                if h["state"] == "held" and h["at_ts"] < older_than_ts][:limit]

    def mark_booked(self, ids):
        for hold_id in ids:
            self.holds[hold_id]["state"] = "booked"

    def end_hold(self, hold_id):
        self.holds[hold_id]["state"] = "released"


def test_sweep_releases_only_old_holds_without_a_booking_in_batches():
    store = FakeHolds([{"_id": f"h{i}", "at_ts": i} for i in range(7)])
    released, asked = [], []

    def in_use(ids):
        asked.append(list(ids))
        return [i for i in ids if i in ("h1", "h3")]

    count = sweep(store, in_use, now_ts=105, max_age=100, release=lambda h: released.append(h["_id"]) or True,
                  batch=2)
    assert count == 3 and released == ["h0", "h2", "h4"]  # h5, h6 are too young
    assert asked == [["h0", "h1"], ["h2", "h3"], ["h4"]]
    assert store.holds["h1"]["state"] == store.holds["h3"]["state"] == "booked"


def test_sweep_releases_nothing_when_booking_does_not_answer():
    store = FakeHolds([{"_id": "h0", "at_ts": 0}])

    def down(ids):
        raise OSError("no answer")

    assert sweep(store, down, now_ts=1000, max_age=100, release=pytest.fail) == 0
    assert store.holds["h0"]["state"] == "held"


def test_the_slot_ledger_survives_a_death_between_record_and_take(mongo):
    """The hold record is written before the place is taken: the sweeper can always find it."""
    store = SlotStore(mongo("slots"))
    store.ensure_indexes()
    now = datetime.now(timezone.utc)
    store.slots.insert_one({"_id": "s1", "procedure": "renewal", "state": "open", "capacity": 1,
                            "booked": 0, "free": 1, "start": now + timedelta(days=1)})
    # died after the record, before the take: releasing gives nothing back
    assert store.record_hold("h-dead", "s1", now) is None
    assert store.give_place_back("s1", "h-dead", 0) is False
    # a hold that took its place gives it back once, however often asked
    assert store.record_hold("h-live", "s1", now) is None
    assert store.take_place("s1", "h-live", "renewal", now)["free"] == 0
    assert store.take_place("s1", "h-live", "renewal", now) is None  # retried: no second place
    assert store.give_place_back("s1", "h-live", 0) is True
    assert store.give_place_back("s1", "h-live", 0) is False
    slot = store.slots.find_one({"_id": "s1"})
    # back, held until its re-release (services/slots/freed_places.py), once
    assert (slot["free"], slot["held_back"], slot["booked"], slot["holds"]) == (0, 1, 0, {})


def test_an_expired_request_is_dropped_before_any_work(container_factory, config):
    """A request still delivered after its caller's deadline takes no place and gets no reply."""
    import uuid

    from kombu import Connection, Exchange, Producer

    from services.common.rpc import DEADLINE_HEADER

    container_factory(SlotsService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        slot = a_slot(rpc, desks=2)
        with Connection(config["AMQP_URI"]) as conn:
            producer = Producer(conn.channel(), exchange=Exchange("nameko-rpc", type="topic",
                                                                  durable=True))
            for hold_id, deadline in [("expired", time.time() - 1), ("alive", time.time() + 30)]:
                producer.publish({"args": [slot["id"], hold_id, "renewal"], "kwargs": {}},
                                 routing_key="slots.hold", serializer="json",
                                 headers={DEADLINE_HEADER: deadline},
                                 reply_to="nobody", correlation_id=str(uuid.uuid4()))
        # positive sign: the live request sent after the expired one was carried out
        assert wait_until(lambda: rpc.slots.holds(slot["id"]) == ["alive"], timeout=10)
        assert rpc.slots.get(slot["id"])["free"] == 1


def test_a_booking_stored_after_its_callers_deadline_is_withdrawn(container_factory, config,
                                                                   mongo, monkeypatch):
    """The insert itself outlasts the caller's wait: the booking is undone, its place freed."""
    import uuid

    from kombu import Connection, Exchange, Producer

    from services.common.rpc import DEADLINE_HEADER

    slow_insert = BookingStore.insert

    def insert(store, booking):
        slow_insert(store, booking)
        time.sleep(1.0)  # the store answers late (green sleep under nameko test)

    monkeypatch.setattr(BookingStore, "insert", insert)
    container_factory(SlotsService, config).start()
    container_factory(BookingService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        slot = a_slot(rpc, desks=1)
        with Connection(config["AMQP_URI"]) as conn:
            producer = Producer(conn.channel(), exchange=Exchange("nameko-rpc", type="topic",
                                                                  durable=True))
            producer.publish({"args": [applicant(slot["id"]), CLIENT], "kwargs": {}},
                             routing_key="booking.create", serializer="json",
                             headers={DEADLINE_HEADER: time.time() + 0.9},
                             reply_to="nobody", correlation_id=str(uuid.uuid4()))
        bookings = mongo("booking")["bookings"]
        # positive sign: the booking was stored, then its place came back
        assert wait_until(lambda: bookings.find_one({}) is not None, timeout=10)
        assert wait_until(lambda: given_back(rpc, slot["id"]) == 1, timeout=10)
        stored = bookings.find_one({})
        assert stored["abandoned_hold"] is True and "email" not in stored
        assert rpc.slots.holds(slot["id"]) == []
