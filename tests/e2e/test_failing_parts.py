"""Services stalled (SIGSTOP) or killed (-9) in the middle of bookings, as `make run` runs them.

What must hold afterwards: an applicant told 503 has no booking, and every slot's ledger adds
up (booked == the holds written in the slot == its active bookings == its live hold records).
"""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import requests

from tests.helpers import applicant, plan, wait_until

# the statuses of a booking that holds its place (pending: not yet confirmed from its e-mail)
HOLDING = ["pending", "active", "checked_in"]
# short enough for a test to see the sweeper act, still well above RPC_TIMEOUT
FAST_RECOVERY = dict(RPC_TIMEOUT="2", HOLD_MAX_AGE_SECONDS="5", HOLD_SWEEP_SECONDS="0.5")


def a_tuesday():
    day = date.today() + timedelta(days=7)
    while day.weekday() != 1:
        day += timedelta(days=1)
    return day


def open_slots(system, desks, hours):
    day = a_tuesday()
    with system.rpc() as rpc:
        rpc.slots.create_from_plan(dict(plan(procedure="renewal", desks=desks, days=1, start=day,
                                             hours=hours)), release="now")
        return rpc.slots.list_open("renewal", day.isoformat(), day.isoformat(), 1, 200)["slots"]


def person(slot_id, n):
    return applicant(slot_id, email=f"applicant{n}@example.org",
                     family_name="Diallo" + "abcdefghij"[n % 10] * (1 + n // 10))


def post(base, body):
    try:
        response = requests.post(f"{base}/api/bookings", json=body, timeout=60)
        return response.status_code, response.json()
    except requests.RequestException as exc:  # the gateway itself is never killed here
        return None, {"error": str(exc)}


def ledger_problems(mongo, slot_ids):
    """What does not add up, slot by slot (empty when the ledger is right)."""
    slots_db, bookings = mongo("slots"), mongo("booking")["bookings"]
    problems = []
    for slot_id in slot_ids:
        slot = slots_db["slots"].find_one({"_id": slot_id})
        in_slot = set(slot.get("holds") or {})
        active = {b["_id"] for b in bookings.find({"slot.id": slot_id, "status": {"$in": HOLDING}})}
        live = {h["_id"] for h in slots_db["holds"].find(
            {"slot_id": slot_id, "state": {"$in": ["held", "booked"]}})}
        if not (slot["booked"] == len(in_slot) == len(active) == len(live)
                and in_slot == active == live
                and slot["booked"] + slot["free"] + slot.get("held_back", 0) == slot["capacity"]
                and 0 <= slot["booked"] <= slot["capacity"]):
            problems.append((slot_id, slot["booked"], slot["free"], sorted(in_slot),
                             sorted(active), sorted(live)))
    return problems


def test_an_applicant_told_503_gets_no_booking_behind_their_back(system, config, mongo):
    system.env.update(FAST_RECOVERY)
    system.start("slots")
    system.start("booking")
    booking = system.procs[-1]
    system.start("public_gateway")
    system.wait_ready()
    slot = open_slots(system, desks=2, hours=["09:00-09:30"])[0]
    base = f"http://{config['WEB_SERVER_ADDRESS']}"

    os.kill(booking.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda n: post(base, person(slot["id"], n)), [1, 2]))
        time.sleep(1)  # stalled well past the callers' deadline
    finally:
        os.kill(booking.pid, signal.SIGCONT)
    assert [status for status, _ in answers] == [503, 503], answers
    # the gateway cannot tell a request never served from a reply lost: it says to send the
    # same request again (same Idempotency-Key), which books once whatever happened
    assert all("Send the same request again" in body["message"] for _, body in answers)

    # positive sign that booking went through its queue since: a new attempt is served
    status, body = post(base, person(slot["id"], 3))
    assert status == 201, (body, system.logs())
    stored = list(mongo("booking")["bookings"].find({}, {"_id": 1}))
    assert stored == [{"_id": body["reference"]}]
    assert ledger_problems(mongo, [slot["id"]]) == []
    assert mongo("slots")["slots"].find_one({"_id": slot["id"]})["free"] == 1


def test_the_ledger_adds_up_after_stalls_and_kills_mid_burst(system, config, mongo):
    system.env.update(FAST_RECOVERY)
    system.start("slots")
    slots_proc = system.procs[-1]
    system.start("booking", instances=2)
    booking_a = system.procs[-2]
    system.start("public_gateway")
    system.wait_ready()
    found = open_slots(system, desks=2, hours=["09:00-12:00"])  # 6 slots of 2 places
    slot_ids = [s["id"] for s in found]
    base = f"http://{config['WEB_SERVER_ADDRESS']}"
    bodies = [person(slot_ids[n % len(slot_ids)], n) for n in range(90)]

    results = []
    go = threading.Event()

    def burst():
        with ThreadPoolExecutor(15) as pool:
            go.set()
            results.extend(pool.map(lambda b: post(base, b), bodies))

    runner = threading.Thread(target=burst)
    # slots stalls past the callers' deadline as the burst begins: stopped a moment after it
    # began, it missed a burst that ended first (the gateway answers 409 at once for a slot it
    # knows is full), and the test then saw no 503 at all
    os.kill(slots_proc.pid, signal.SIGSTOP)
    runner.start()
    go.wait()
    time.sleep(3)
    os.kill(slots_proc.pid, signal.SIGCONT)
    time.sleep(0.3)
    booking_a.kill()  # -9, mid-burst
    system.start("booking")
    time.sleep(0.5)
    slots_proc.kill()  # -9
    system.start("slots")
    runner.join(120)
    assert not runner.is_alive()

    statuses = [status for status, _ in results]
    assert set(statuses) <= {201, 409, 503}, results
    # some bookings went through the storm, some did not
    assert 201 in statuses and 503 in statuses, statuses

    # after recovery every slot adds up: nothing lost, nothing overbooked
    assert wait_until(lambda: ledger_problems(mongo, slot_ids) == [], timeout=60), (
        ledger_problems(mongo, slot_ids), system.logs())
    made = {body["reference"] for status, body in results if status == 201}
    active = {b["_id"] for b in mongo("booking")["bookings"].find({"status": {"$in": HOLDING}})}
    assert made <= active
    # and the places given back are bookable again, at once or after their re-release
    slots = [mongo("slots")["slots"].find_one({"_id": s}) for s in slot_ids]
    assert sum(s["free"] + s.get("held_back", 0) for s in slots) == 2 * len(slot_ids) - len(active)
