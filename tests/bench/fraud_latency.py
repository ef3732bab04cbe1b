#!/usr/bin/env python3
"""Fraud latency during a booking burst (`make run` in another terminal, or --start for its
own system on free ports: every service `make run` starts, an SMTP sink for notify, a store per
service and a vhost of its own).

Mixes honest applicants (distinct people: real names, own e-mail at a large provider, own
address) with scripted traffickers (one
e-mail for many names; placeholder names; one address for many identities), fires them over
HTTP at --rate bookings/s, and prints the time to the cancellation (p50/p95/p99, from the
events' own timestamps), how many trafficker bookings were cancelled and how many honest ones
were (must be 0). Traffickers meet the bounds on unconfirmed bookings (per address, per domain
of their own) and one booking per e-mail: their refusals are printed by reason. Everybody
confirms from the e-mail's link at once: fraud screens confirmed bookings only.

Two latencies are printed. "From its own booking" counts from each cancelled booking's
`booking_created`: it includes the applicant's confirmation and, for the first booking on a
reseller's e-mail, waiting for evidence that did not exist yet. "From the evidence" counts
from the confirmation that completes the evidence: the newest `booking_confirmed` among the
bookings the decision cites (the cancelled booking and its evidence), the part the fraud
service is answerable for (issue 22: p95 under 1 s).

Whether the system keeps up at --rate: the bookings and confirmations per second achieved
(against the rate asked), and the messages waiting in each consumer's queues (sampled four
times a second by passive declare: ready messages, not those a consumer holds), peak and
left at the last confirmation, and when fraud's queues were empty after it.

    .venv/bin/python tests/bench/fraud_latency.py --start --honest 600 --rate 200
"""
import http.client
import json
import random
import sys
import threading
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from booking_burst import CpuSteal, pct, print_machine, release_slots, system_parser  # noqa: E402
from services.common.timeutil import parse_iso  # noqa: E402
from tests.bench.harness import API, People, free_port, real_names, run_on_system  # noqa: E402
from tests.helpers import BusListener  # noqa: E402


def requests_mix(slot_ids, honest, scripts=1):
    names = real_names(heldout=False)
    people = People(names)
    run = people.run  # the database outlives a run: new addresses each time
    jobs = []  # (kind, ip, body)

    def body(i, family, given, email, birth="1985-06-15"):
        return {"procedure": "duplicate", "slot_id": random.choice(slot_ids), "family_name": family,
                "given_names": given, "birth_date": birth, "email": email}

    for i in range(honest):
        jobs.append(("honest", people.address(i), people.booking(i, "duplicate", random.choice(slot_ids))))
    for seller in range(5 * scripts):  # one e-mail, many names
        for j in range(4):
            family, given = names[(seller * 7 + j * 13) % len(names)]
            jobs.append(("trafficker", f"172.16.{seller}.{j + 1}",
                         body(0, family, given, f"seller{seller}.{run}+{j}@gmail.com", f"197{j}-02-0{j + 1}")))
    for j in range(20 * scripts):  # placeholders
        jobs.append(("trafficker", f"172.17.{j // 250}.{j % 250 + 1}",
                     body(0, random.choice(["test", "xxx", "Nom", "client"]), "rdv",
                          f"holder{j}-{run}@example.org")))
    for cafe in range(2 * scripts):  # one address, many identities
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


class Backlog:
    """Messages waiting in the vhost's event and RPC queues, by consumer, sampled by passive
    declare (in real time, where the management API's statistics lag by seconds). Ready
    messages only: what a consumer holds unacknowledged (its prefetch) is not counted."""

    def __init__(self, amqp_uri, every=0.25):
        from kombu import Connection

        vhost = unquote(urlsplit(amqp_uri.replace("pyamqp://", "amqp://")).path[1:]) or "/"
        listed = requests.get(f"{API}/queues/{quote(vhost, safe='')}", params={"columns": "name,exclusive"},
                              timeout=10).json()
        # evt-<source>-<event>--<service>.<method>, rpc-<service>: fraud's, notify's, booking's...
        # a process's own exclusive queues (the gateway's view of releases) cannot be declared
        # from another connection, even passively
        self.names = {q["name"]: self.consumer(q["name"]) for q in listed
                      if not q.get("exclusive") and q["name"].startswith(("evt-", "rpc-"))
                      and self.consumer(q["name"])}
        self.connection = Connection(amqp_uri)
        self.samples = []  # (monotonic time, {consumer: ready})
        self.every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def consumer(name):
        if name.startswith("rpc-"):
            return name  # a service's RPC requests: its callers wait on them
        service = name.split("--", 1)[1].split(".", 1)[0] if "--" in name else ""
        return service

    def _run(self):
        channel = self.connection.channel()
        while not self._stop.is_set():
            ready = Counter()
            for name, consumer in list(self.names.items()):
                try:
                    ready[consumer] += channel.queue_declare(name, passive=True).message_count
                except Exception:  # gone (a reply queue): the broker closed the channel
                    del self.names[name]
                    channel = self.connection.channel()
            self.samples.append((time.monotonic(), ready))
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        self.connection.release()

    def at(self, when):
        """The sample taken last before `when` (monotonic)."""
        before = [ready for at, ready in self.samples if at <= when]
        return before[-1] if before else Counter()

    def peak(self):
        found = Counter()
        for _, ready in self.samples:
            for consumer, n in ready.items():
                found[consumer] = max(found[consumer], n)
        return found

    def empty_after(self, when, consumer):
        """Seconds from `when` to the first sample from then on with nothing waiting for
        `consumer`; None if none was taken."""
        for at, ready in self.samples:
            if at >= when and not ready.get(consumer):
                return at - when
        return None


class TimedListener(BusListener):
    """A BusListener that also notes when each event reached it: when it was on the bus, for
    any consumer (fraud's queue is on the same broker)."""

    def _on_message(self, body, message):
        payload = json.loads(body) if isinstance(body, (str, bytes)) else body
        payload["_received_ts"] = time.time()
        self.received.put((message.delivery_info["routing_key"], payload))
        message.ack()


EVERY_SERVICE = {"slots": 1, "booking": 1, "fraud": 1, "notify": 1, "requests": 1, "register": 1,
                 "public_gateway": 1, "admin_gateway": 1}


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--honest", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--scripts", type=int, default=1,
                        help="trafficker groups, in units of 5 resellers, 20 placeholders and 2 "
                             "cafés: more cancellations to take percentiles over")
    parser.add_argument("--slots", type=int, default=100, help="slots of the release")
    parser.add_argument("--desks", type=int, default=20, help="places per slot")
    parser.add_argument("--start", action="store_true", help="start an own system on free ports")
    parser.add_argument("--only", default="",
                        help="with --start, these services only (comma-separated; slots, booking, "
                             "fraud and public_gateway always): every service by default")
    args = parser.parse_args()

    from deploy import run

    services = EVERY_SERVICE
    if args.only:
        wanted = {"slots", "booking", "fraud", "public_gateway", *args.only.split(",")}
        unknown = wanted - set(EVERY_SERVICE)
        if unknown:
            parser.error(f"--only: no such service {', '.join(sorted(unknown))}")
        services = {name: 1 for name in EVERY_SERVICE if name in wanted}
    sink = None
    settings = {"PROCEDURE_MODE_DEFAULT": "open"}  # it measures booking slots directly
    if args.start:
        settings["ADMIN_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
        if "notify" in services:  # notify sends every e-mail of the burst, as it would
            sink_port = free_port()
            sink = run.start_mail_sink(Path(tempfile.mkdtemp(prefix="bench-fraud-mail-")) / "mail",
                                       sink_port)
            settings.update(SMTP_HOST="127.0.0.1", SMTP_PORT=sink_port)
    try:
        run_on_system(args, measure, services, "fraud_latency", **settings)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(10)


def measure(args, mailbox, pids=None):
    host, port = args.url.split("://")[1].split(":")
    # by default 2000 places: nobody is refused for want of one
    _, slot_ids = release_slots(args.amqp_uri, args.slots, args.desks)
    listener = TimedListener(args.amqp_uri, "booking", "#")
    jobs = requests_mix(slot_ids, args.honest, args.scripts)
    backlog = Backlog(args.amqp_uri)
    load_before = open("/proc/loadavg").read().split()[:3]
    steal = CpuSteal()
    booked, errors, elapsed = fire(host, int(port), jobs, args.rate, args.clients, mailbox)
    fired = time.monotonic()  # every booking answered, every confirmation answered
    stolen = steal.percent()

    created, confirmed, cancelled = {}, {}, {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event_type, event in listener.drain(settle=3):
            found = {"booking_created": created, "booking_confirmed": confirmed,
                     "booking_cancelled": cancelled}.get(event_type)
            if found is not None:
                found[event["reference"]] = (parse_iso(event["occurred_at"]).timestamp(),
                                             event.get("reason"), event.get("evidence") or {},
                                             event["_received_ts"])
        # fraud has handled every confirmation: 3 s without any event since
        if set(booked) <= set(confirmed) and not backlog.at(time.monotonic()).get("fraud"):
            break
    listener.close()
    backlog.stop()
    load_after = open("/proc/loadavg").read().split()[:3]

    traffickers = [r for r, k in booked.items() if k == "trafficker"]
    honest = [r for r, k in booked.items() if k == "honest"]

    def from_booking(reference):
        return cancelled[reference][0] - created[reference][0]

    def completing(reference):
        """The confirmation that completed the evidence: the newest among the bookings the
        decision cites (fraud screens confirmed bookings only)."""
        evidence = cancelled[reference][2]
        cited = {reference, *evidence.get("bookings", ()), *evidence.get("bookings_from_address", ())}
        return confirmed[max((r for r in cited if r in confirmed), key=lambda r: confirmed[r][0])]

    def from_evidence(reference):
        return cancelled[reference][0] - completing(reference)[0]

    def to_bus(reference):  # booking: from storing the confirmation to its event on the bus
        return completing(reference)[3] - completing(reference)[0]

    def from_bus(reference):  # fraud's screening, then booking's system_cancel
        return cancelled[reference][0] - completing(reference)[3]

    # cancelled by fraud (an applicant's own cancellation is none of its doing) and confirmed
    screened = [r for r in cancelled if r in created and r in confirmed]
    print(f"{len(booked)} bookings in {elapsed:.2f} s ({len(booked) / elapsed:.1f} bookings/s, "
          f"asked {args.rate:g}/s), {sum(errors.values())} refused")
    times = sorted(confirmed[r][0] for r in booked if r in confirmed)
    if len(times) > 1:
        print(f"{len(times)} confirmed in {times[-1] - times[0]:.2f} s "
              f"({(len(times) - 1) / max(1e-9, times[-1] - times[0]):.1f} confirmations/s)")
    for kind in ("honest", "trafficker"):
        print(f"{kind} refused by reason{' ' * (11 - len(kind))}"
              f"{ {error: n for (k, error), n in sorted(errors.items(), key=str) if k == kind} }")
    print(f"trafficker bookings cancelled  {sum(r in cancelled for r in traffickers)} of {len(traffickers)}")
    print(f"honest bookings cancelled      {sum(r in cancelled for r in honest)} of {len(honest)}")
    reasons = Counter(cancelled[r][1] for r in cancelled)
    print(f"cancellations by reason        {dict(reasons)}")
    for title, of in (("booking_created -> cancelled, from its own booking", from_booking),
                      ("booking_confirmed -> cancelled, from the evidence", from_evidence)):
        values = sorted(of(r) for r in screened)
        if not values:
            continue
        print(f"{title}: p50 {pct(values, 50) * 1000:.0f} ms, "
              f"p95 {pct(values, 95) * 1000:.0f} ms, p99 {pct(values, 99) * 1000:.0f} ms, "
              f"max {values[-1] * 1000:.0f} ms ({len(values)} cancellations)")
        if of is from_evidence:
            for part, of_part in (("confirmation -> its event on the bus", to_bus),
                                  ("event on the bus -> cancellation", from_bus)):
                parts = sorted(of_part(r) for r in screened)
                print(f"  {part:40s} p50 {pct(parts, 50) * 1000:.0f} ms, p95 {pct(parts, 95) * 1000:.0f} ms")
        for reason in sorted({cancelled[r][1] for r in screened}):
            of_reason = sorted(of(r) for r in screened if cancelled[r][1] == reason)
            print(f"  {reason:28s} p50 {pct(of_reason, 50) * 1000:.0f} ms, "
                  f"p95 {pct(of_reason, 95) * 1000:.0f} ms ({len(of_reason)})")
    peak, left = backlog.peak(), backlog.at(fired)
    print("messages waiting by consumer   peak " +
          (", ".join(f"{c} {n}" for c, n in sorted(peak.items()) if n) or "none"))
    print("  at the last answer           " +
          (", ".join(f"{c} {n}" for c, n in sorted(left.items()) if n) or "none"))
    caught_up = backlog.empty_after(fired, "fraud")
    print(f"fraud's queues empty          {caught_up:.2f} s after the last answer" if caught_up is not None
          else "fraud's queues empty          not seen")
    print(f"load average      {' '.join(load_before)} before, {' '.join(load_after)} after")
    print_machine(stolen, pids)


if __name__ == "__main__":
    main()
