#!/usr/bin/env python3
"""Fraud latency during a booking burst (`make run` in another terminal, or --start for its
own slots, booking, fraud and gateway processes, stores and vhost on free ports).

Mixes honest applicants (distinct people: real names, own e-mail at a large provider, own
address) with scripted traffickers (one
e-mail for many names; placeholder names; one address for many identities), fires them over
HTTP at --rate bookings/s, and prints the time from `booking_created` to the cancellation
(p50/p95/p99, from the events' own timestamps), how many trafficker bookings were cancelled
and how many honest ones were (must be 0). Traffickers meet the bounds on unconfirmed bookings
(per address, per domain of their own) and one booking per e-mail: their refusals are printed
by reason. Everybody confirms from the e-mail's link at once: fraud screens confirmed bookings.

Two latencies are printed. "From its own booking" counts from each cancelled booking's
creation: the first booking on a reseller's e-mail looks like anyone's until the second
arrives, so it includes waiting for evidence that did not exist yet. "From the evidence"
counts from the newest booking_created among those the decision cites (the cancelled booking
and its evidence): the part the fraud service is answerable for.

    .venv/bin/python tests/bench/fraud_latency.py --honest 600 --rate 200
"""
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from booking_burst import CpuSteal, pct, print_machine, release_slots, system_parser  # noqa: E402
from services.common.timeutil import parse_iso  # noqa: E402
from tests.bench.harness import People, real_names, run_on_system  # noqa: E402
from tests.helpers import BusListener  # noqa: E402


def requests_mix(slot_ids, honest):
    names = real_names(heldout=False)
    people = People(names)
    run = people.run  # the database outlives a run: new addresses each time
    jobs = []  # (kind, ip, body)

    def body(i, family, given, email, birth="1985-06-15"):
        return {"procedure": "duplicate", "slot_id": random.choice(slot_ids), "family_name": family,
                "given_names": given, "birth_date": birth, "email": email}

    for i in range(honest):
        jobs.append(("honest", people.address(i), people.booking(i, "duplicate", random.choice(slot_ids))))
    for seller in range(5):  # one e-mail, many names
        for j in range(4):
            family, given = names[(seller * 7 + j * 13) % len(names)]
            jobs.append(("trafficker", f"172.16.{seller}.{j + 1}",
                         body(0, family, given, f"seller{seller}.{run}+{j}@gmail.com", f"197{j}-02-0{j + 1}")))
    for j in range(20):  # placeholders
        jobs.append(("trafficker", f"172.17.0.{j + 1}", body(0, random.choice(["test", "xxx", "Nom", "client"]),
                                                           "rdv", f"holder{j}-{run}@example.org")))
    for cafe in range(2):  # one address, many identities
        for j in range(15):
            family, given = names[(cafe * 50 + j * 3 + 5) % len(names)]
            jobs.append(("trafficker", f"203.0.113.{cafe + 10}",
                         body(0, family, given, f"cafe{cafe}-{j}-{run}@example.org", f"19{70 + j}-03-0{1 + cafe}")))
    random.shuffle(jobs)
    return jobs


def fire(host, port, jobs, rate, clients, mailbox):
    """Send jobs at `rate` per second from `clients` connections; {reference: kind} and the
    refusals, {(kind, error code): count}."""
    booked, lock, errors = {}, threading.Lock(), Counter()
    start = time.monotonic() + 0.5
    queue = list(enumerate(jobs))

    def client():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                i, (kind, ip, body) = queue.pop(0)
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.request("POST", "/api/bookings", json.dumps(body).encode(),
                         {"Content-Type": "application/json", "X-Forwarded-For": ip,
                          "User-Agent": f"bench-{kind}-{i % 7}"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            if response.status == 201:
                # confirmed from the e-mail's link as soon as it arrives, as a script reading
                # its mailboxes would: fraud screens confirmed bookings only
                conn.request("POST", f"/api/bookings/{answer['reference']}/confirm", b"",
                             {"Content-Type": "application/json", "X-Forwarded-For": ip,
                              "X-Booking-Token": mailbox.booking_confirm_token(answer["reference"])})
                confirmed = conn.getresponse()
                confirmed.read()
            with lock:
                if response.status == 201:
                    booked[answer["reference"]] = kind
                else:
                    errors[(kind, answer.get("error", response.status))] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return booked, errors, time.monotonic() - start


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--honest", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--slots", type=int, default=100, help="slots of the release")
    parser.add_argument("--desks", type=int, default=20, help="places per slot")
    parser.add_argument("--start", action="store_true", help="start an own system on free ports")
    args = parser.parse_args()

    run_on_system(args, measure, {"slots": 1, "booking": 1, "fraud": 1, "public_gateway": 1},
                  "fraud_latency", PROCEDURE_MODE_DEFAULT="open")  # it measures booking slots directly


def measure(args, mailbox, pids=None):
    host, port = args.url.split("://")[1].split(":")
    # by default 2000 places: nobody is refused for want of one
    _, slot_ids = release_slots(args.amqp_uri, args.slots, args.desks)
    listener = BusListener(args.amqp_uri, "booking", "#")
    jobs = requests_mix(slot_ids, args.honest)
    steal = CpuSteal()
    booked, errors, elapsed = fire(host, int(port), jobs, args.rate, args.clients, mailbox)
    stolen = steal.percent()

    created, cancelled = {}, {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for event_type, event in listener.drain(settle=3):
            # booking_confirmed (and any other event of booking) is neither
            found = {"booking_created": created, "booking_cancelled": cancelled}.get(event_type)
            if found is not None:
                found[event["reference"]] = (parse_iso(event["occurred_at"]).timestamp(),
                                             event.get("reason"), event.get("evidence") or {})
        if set(booked) <= set(created):
            break
    listener.close()

    traffickers = [r for r, k in booked.items() if k == "trafficker"]
    honest = [r for r, k in booked.items() if k == "honest"]
    latencies = sorted(cancelled[r][0] - created[r][0] for r in cancelled if r in created)

    def from_evidence(reference):
        at, _, evidence = cancelled[reference]
        cited = {reference, *evidence.get("bookings", ()), *evidence.get("bookings_from_address", ())}
        return at - max(created[r][0] for r in cited if r in created)

    detection = sorted(from_evidence(r) for r in cancelled if r in created)
    print(f"{len(booked)} bookings in {elapsed:.2f} s ({len(booked) / elapsed:.1f} bookings/s), "
          f"{sum(errors.values())} refused")
    for kind in ("honest", "trafficker"):
        print(f"{kind} refused by reason{' ' * (11 - len(kind))}"
              f"{ {error: n for (k, error), n in sorted(errors.items(), key=str) if k == kind} }")
    print(f"trafficker bookings cancelled  {sum(r in cancelled for r in traffickers)} of {len(traffickers)}")
    print(f"honest bookings cancelled      {sum(r in cancelled for r in honest)} of {len(honest)}")
    reasons = {}
    for r in cancelled:
        reasons[cancelled[r][1]] = reasons.get(cancelled[r][1], 0) + 1
    print(f"cancellations by reason        {reasons}")
    for title, values, of in (("from its own booking", latencies, lambda r: cancelled[r][0] - created[r][0]),
                              ("from the evidence", detection, from_evidence)):
        if not values:
            continue
        print(f"booking_created -> cancelled, {title}: p50 {pct(values, 50) * 1000:.0f} ms, "
              f"p95 {pct(values, 95) * 1000:.0f} ms, p99 {pct(values, 99) * 1000:.0f} ms")
        for reason in sorted({cancelled[r][1] for r in cancelled}):
            of_reason = sorted(of(r) for r in cancelled if r in created and cancelled[r][1] == reason)
            print(f"  {reason:28s} p50 {pct(of_reason, 50) * 1000:.0f} ms, "
                  f"p95 {pct(of_reason, 95) * 1000:.0f} ms")
    print_machine(stolen, pids)


if __name__ == "__main__":
    main()
