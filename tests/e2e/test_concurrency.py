"""Many concurrent HTTP clients race for few places: never overbooked, every loser told 409.

Two slots and two booking processes serve the gateway, so the guard that holds is the
database's conditional update, not one process's scheduling.
"""
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import requests

from tests.helpers import applicant, plan


def race(base_url, requests_to_send, clients):
    """POST every (slot_id, body) at once from `clients` concurrent clients; the statuses."""
    start = threading.Barrier(len(requests_to_send))

    def attempt(body):
        with requests.Session() as session:
            start.wait()
            response = session.post(f"{base_url}/api/bookings", json=body, timeout=60)
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(attempt, requests_to_send))


def bodies(slot_ids, per_slot):
    return [applicant(slot_id, email=f"applicant{slot_n}-{i}@example.org",
                      family_name=f"Diallo{'a' * (i % 5)}")
            for slot_n, slot_id in enumerate(slot_ids) for i in range(per_slot)]


def test_races_never_overbook(system, config, mongo):
    system.start("slots", instances=2)
    system.start("booking", instances=2)
    system.start("public_gateway")
    system.wait_ready()
    day = date.today() + timedelta(days=7)
    while day.weekday() != 1:  # a Tuesday, so the one-day plans below make slots
        day += timedelta(days=1)
    with system.rpc() as rpc:
        rpc.slots.create_from_plan(dict(plan(procedure="renewal", desks=3, days=1, start=day,
                                             hours=["09:00-09:30"])), release="now")
        rpc.slots.create_from_plan(dict(plan(procedure="duplicate", desks=1, days=1, start=day,
                                             hours=["09:00-14:00"], slot_minutes=15)), release="now")
        big = rpc.slots.list_open("renewal", day.isoformat(), day.isoformat())["slots"]
        small = rpc.slots.list_open("duplicate", day.isoformat(), day.isoformat())["slots"]
    assert len(big) == 1 and len(small) == 20
    base = f"http://{config['WEB_SERVER_ADDRESS']}"

    # 120 clients for one slot of capacity 3
    results = race(base, bodies([big[0]["id"]], 120), clients=120)
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 3, 409: 117}, (statuses, system.logs())
    assert all(body["error"] == "slot_full" for status, body in results if status == 409)

    # 200 clients for 20 slots of capacity 1 (10 each)
    requests_to_send = [dict(b, procedure="duplicate", foreigner_number=None)
                        for b in bodies([s["id"] for s in small], 10)]
    results = race(base, requests_to_send, clients=200)
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 20, 409: 180}, (statuses, system.logs())
    winners = Counter(body["slot"]["id"] for status, body in results if status == 201)
    assert set(winners.values()) == {1} and len(winners) == 20

    # the places counted by the slots database are exactly the bookings stored
    slots_db, bookings_db = mongo("slots"), mongo("booking")
    for slot in big + small:
        stored = slots_db["slots"].find_one({"_id": slot["id"]})
        # pending: nobody confirmed them, they hold their places all the same
        bookings = list(bookings_db["bookings"].find({"slot.id": slot["id"], "status": "pending"}))
        holds = list(slots_db["holds"].find({"slot_id": slot["id"], "state": "held"}))
        assert stored["booked"] == len(bookings) == len(holds) == stored["capacity"]
        assert stored["free"] == 0
        assert {b["_id"] for b in bookings} == {h["_id"] for h in holds}
    # both booking processes took part (each stamps the bookings it makes)
    makers = {b["created_by"] for b in bookings_db["bookings"].find({}, {"created_by": 1})}
    assert len(makers) == 2, makers
