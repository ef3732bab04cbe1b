#!/usr/bin/env python3
"""Fraud latency during a booking burst (`make run` in another terminal).

Mixes honest applicants (real names, own e-mail, own address) with scripted traffickers (one
e-mail for many names; placeholder names; one address for many identities), fires them over
HTTP at --rate bookings/s, and prints the time from `booking_created` to the cancellation
(p50/p95/p99, from the events' own timestamps), how many trafficker bookings were cancelled
and how many honest ones were (must be 0).

Two latencies are printed. "From its own booking" counts from each cancelled booking's
creation: the first booking on a reseller's e-mail looks like anyone's until the second
arrives, so it includes waiting for evidence that did not exist yet. "From the evidence"
counts from the newest booking_created among those the decision cites (the cancelled booking
and its evidence): the part the fraud service is answerable for.

    .venv/bin/python tests/bench/fraud_latency.py --honest 600 --rate 200
"""
import email
import http.client
import json
import random
import re
import sys
import threading
import time
from email import policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from booking_burst import CpuSteal, pct, print_machine, release_slots, system_parser  # noqa: E402
from deploy.run import VAR  # noqa: E402
from services.common.timeutil import parse_iso  # noqa: E402
from tests.helpers import BusListener  # noqa: E402


def real_names():
    rows = (ROOT / "tests" / "data" / "real_names.txt").read_text(encoding="utf-8").splitlines()
    return [r.split("|") for r in rows if r and not r.startswith("#") and r.split("|")[1]]


def requests_mix(slot_ids, honest):
    names = real_names()
    run = f"{random.getrandbits(32):08x}"  # the database outlives a run: same people, new addresses
    jobs = []  # (kind, ip, body)

    def body(i, family, given, email, birth="1985-06-15"):
        return {"procedure": "duplicate", "slot_id": random.choice(slot_ids), "family_name": family,
                "given_names": given, "birth_date": birth, "email": email}

    for i in range(honest):
        family, given = names[i % len(names)]
        jobs.append(("honest", f"10.{int(run[:2], 16)}.{i // 250}.{i % 250 + 1}",
                     body(i, family, given, f"honest{i}-{run}@example.org", f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}")))
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


def fire(host, port, jobs, rate, clients):
    """Send jobs at `rate` per second from `clients` connections; {reference: kind}."""
    booked, lock, errors = {}, threading.Lock(), []
    links = MailLinks()
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
                              "X-Booking-Token": links.token(answer["reference"]) or ""})
                confirmed = conn.getresponse()
                confirmed.read()
            with lock:
                if response.status == 201:
                    booked[answer["reference"]] = kind
                else:
                    errors.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return booked, errors, time.monotonic() - start


class MailLinks:
    """The confirmation links of the e-mails `make run`'s mail sink keeps (var/mail/new/): a
    booking is confirmed with its e-mail's link, never with the token its booker got."""
    LINK = re.compile(r"/bookings/(RDV-[0-9A-Z]{4}-[0-9A-Z]{4})/confirm\?token=([\w-]+)")

    def __init__(self, maildir=VAR / "mail" / "new"):
        self.maildir, self.seen, self.tokens = maildir, set(), {}
        self.lock = threading.Lock()

    def token(self, reference, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if reference not in self.tokens:
                    for path in self.maildir.iterdir() if self.maildir.exists() else ():
                        if path.name not in self.seen:
                            self.seen.add(path.name)
                            mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
                            found = self.LINK.search(mail.get_body(("plain",)).get_content())
                            if found:
                                self.tokens[found.group(1)] = found.group(2)
                if reference in self.tokens:
                    return self.tokens[reference]
            time.sleep(0.05)
        return None


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--honest", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--clients", type=int, default=60)
    args = parser.parse_args()

    host, port = args.url.split("://")[1].split(":")
    _, slot_ids = release_slots(args.amqp_uri, 100, 20)  # 2000 places: nobody is refused
    listener = BusListener(args.amqp_uri, "booking", "#")
    jobs = requests_mix(slot_ids, args.honest)
    steal = CpuSteal()
    booked, errors, elapsed = fire(host, int(port), jobs, args.rate, args.clients)
    stolen = steal.percent()

    created, cancelled = {}, {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for event_type, event in listener.drain(settle=3):
            at = parse_iso(event["occurred_at"]).timestamp()
            (created if event_type == "booking_created" else cancelled)[event["reference"]] = (
                at, event.get("reason"), event.get("evidence") or {})
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
          f"{len(errors)} refused {sorted(set(errors))}")
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
    print_machine(stolen)


if __name__ == "__main__":
    main()
