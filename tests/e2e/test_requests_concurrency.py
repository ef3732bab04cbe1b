"""Issue 12 under concurrency, each service its own `nameko run` process: two requests
instances allocating the same releases at once (their lease made too short to keep them apart,
the first stalled mid-pass so that the second takes over, then woken up beside it), and the
only instance killed in the middle of an allocation, then started again. Either way no
place is offered twice, no request holds two places, and every place finds a request."""
import itertools
import os
import signal
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from services.common.errors import InvalidRequest
from tests.helpers import plan, wait_until

FAMILIES = ["Diallo", "Nguyen", "Haddad", "Popescu", "Mensah", "Kaya", "Traoré", "Benali",
            "Silva", "Ivanova", "Okafor", "Rahman"]
GIVEN = ["Aminata", "Karim", "Andrei", "Kofi", "Elif", "Moussa", "Fatima", "Ana", "Olga", "Chinedu"]
WEEK = [{"weekday": day, "from": "08:00", "to": "18:00"}
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday")]
# a week: 5 weekdays x 6 half-hours x 2 desks = 60 places, in several release batches, for
# more people than places
PLACES = plan(days=7, desks=2, hours=["09:00-12:00"])
PEOPLE = 75
LIVE = ("holding", "offered", "accepting", "accepted")  # offer states that hold a place


def file_confirmed(rpc, count):
    """`count` people, each with a request filed and confirmed, who can come any weekday."""
    people = itertools.islice(itertools.product(FAMILIES, GIVEN), count)
    for i, (family, given) in enumerate(people):
        filed = rpc.requests.file({
            "procedure": "renewal", "family_name": family, "given_names": given,
            "birth_date": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 10}",
            "email": f"person{i}@example.org", "foreigner_number": f"{7000000000 + i}",
            "permit_expiry": (date.today() + timedelta(days=i % 90)).isoformat(),
            "availability": {"sites": ["montpellier"], "times": WEEK}})
        assert rpc.requests.confirm(filed["reference"], filed["token"])["state"] == "waiting"


def release_now(rpc, places_plan):
    """Places through the secret schedule, every batch moved to now: one slots_released each."""
    rpc.slots.create_from_plan(places_plan, release="schedule")
    for batch in rpc.slots.schedule_for(procedure="renewal")["batches"]:
        try:
            rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
        except InvalidRequest:  # its random instant came already
            pass


def check_invariants(db, slots_db, settled=True):
    """No place offered twice, no request holding two places, no slot hold without its offer;
    once settled, what the offers say they hold is exactly what the slots hold. Returns the
    number of offers holding a place."""
    live = list(db["offers"].find({"state": {"$in": list(LIVE)}}))
    per_request = Counter(o["request_id"] for o in live)
    assert max(per_request.values(), default=0) <= 1, per_request.most_common(3)
    by_slot = {}
    for offer in live:
        by_slot.setdefault(offer["slot_id"], set()).add(offer["_id"])
    for slot in slots_db["slots"].find({"procedure": "renewal"}):
        held = set(slot.get("holds") or {})
        offers = by_slot.get(slot["_id"], set())
        assert len(held) <= slot["capacity"] and held <= offers, (slot["_id"], held, offers)
        if settled:
            assert held == offers, (slot["_id"], held, offers)
    for request in db["requests"].find({"state": "offered"}):
        offer = db["offers"].find_one({"_id": request["offer_id"]})
        assert offer["state"] in LIVE and offer["request_id"] == request["_id"]
    return len(live)


def places_of(slots_db):
    return sum(s["capacity"] for s in slots_db["slots"].find({"procedure": "renewal",
                                                             "decoy": {"$ne": True}}))


def settled(db, expected):
    return (db["offers"].count_documents({"state": "offered"}) == expected
            and db["offers"].count_documents({"state": "holding"}) == 0)


@pytest.fixture
def requests_system(system):
    system.env.update(REQUEST_TIMER_SECONDS="0.5", REQUEST_HOLDING_GRACE_SECONDS="2",
                      RELEASE_TIMER_SECONDS="0.5", MAX_WORKERS="20")
    system.start("slots")
    system.start("booking")
    system.wait_consuming("rpc-slots")
    system.wait_consuming("rpc-booking")
    return system


def test_two_allocators_at_once_never_offer_a_place_twice(requests_system, mongo):
    system = requests_system
    # a lease shorter than one pass: both instances allocate side by side, the conditional
    # updates and slots' holds alone keep them from offering a place twice
    system.env.update(REQUEST_LEASE_SECONDS="0.05")
    system.start("requests", instances=2)
    system.wait_consuming("rpc-requests", consumers=2)
    db, slots_db = mongo("requests"), mongo("slots")
    with system.rpc() as rpc:
        rpc.requests.set_mode("renewal", "requests", by="chief")
        file_confirmed(rpc, PEOPLE)
        release_now(rpc, PLACES)
        places = places_of(slots_db)
        assert places == 60
        # whoever allocates first is stalled mid-pass, its lease runs out, the other takes
        # over; then the first wakes up and goes on with its pass beside the second
        assert wait_until(lambda: db["offers"].count_documents({}) > 0, timeout=60, step=0.01)
        first_pid = int(db["offers"].find_one({})["made_by"].split(":")[1])
        [stalled] = [p for p in system.procs if p.pid == first_pid]
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            assert db["offers"].count_documents({"state": {"$in": list(LIVE)}}) < places
            assert wait_until(lambda: len(db["offers"].distinct("made_by")) == 2, timeout=60), \
                system.logs()
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        assert wait_until(lambda: settled(db, places), timeout=120), system.logs()
        assert check_invariants(db, slots_db) == places
        assert db["requests"].count_documents({"state": "offered"}) == places
        assert db["requests"].count_documents({"state": "waiting"}) == PEOPLE - places


def test_an_allocator_killed_mid_pass_leaves_nothing_half_done(requests_system, mongo):
    system = requests_system
    system.env.update(REQUEST_LEASE_SECONDS="3")
    system.start("requests")
    system.wait_consuming("rpc-requests")
    killed = system.procs[-1]
    db, slots_db = mongo("requests"), mongo("slots")
    with system.rpc() as rpc:
        rpc.requests.set_mode("renewal", "requests", by="chief")
        file_confirmed(rpc, PEOPLE)
        release_now(rpc, PLACES)
        assert wait_until(lambda: db["offers"].count_documents({}) > 0, timeout=60, step=0.01)
        killed.kill()  # SIGKILL: no clean stop, its lease runs out on its own
        killed.wait(10)
        at_kill = db["offers"].count_documents({"state": "offered"})
        places = places_of(slots_db)
        assert at_kill < places, "the pass ended before the kill: nothing was cut short"
        check_invariants(db, slots_db, settled=False)  # what the kill left is consistent already
        time.sleep(1)
        system.start("requests")  # the restart
        assert wait_until(lambda: settled(db, places), timeout=120), system.logs()
        assert check_invariants(db, slots_db) == places
        assert db["requests"].count_documents({"state": "offered"}) == places
