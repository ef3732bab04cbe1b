#!/usr/bin/env python3
"""Release burst: 500 places released at an instant the clients do not know, 200 clients
polling and booking; then freed places that must not go back to whoever is waiting for them.

Phase 1: a plan of `--slots` x `--desks` places is created scheduled (not listed); its
batches are all moved to one instant a few seconds ahead, known only to this script. Each
client polls `GET /api/slots` and books what it sees (a fresh applicant each time) until the
listing stays empty. Printed: time from the release to the first and the last booking,
attempts/s, latency p50/p95/p99, overbooked places (must be 0).

Phase 2: `--freed` bookings are cancelled while every slot is full, and every client tries at
once, for `--watch` seconds, to book the slots those places were freed on (by id, not
through the listing, as a trafficker who let one go would). Printed: freed places re-booked
within a second of being freed (must be 0) and the places held back.

Against a running system (`make run` in another terminal):
    .venv/bin/python tests/bench/release_burst.py
Or self-contained, starting its own processes, stores and vhost on free ports:
    .venv/bin/python tests/bench/release_burst.py --start
"""
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from nameko.standalone.rpc import ClusterRpcProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.booking_burst import CpuSteal, pct, system_parser  # noqa: E402
from tests.bench.harness import People, run_on_system  # noqa: E402

PROCEDURE, SITE = "duplicate", "beziers"


def schedule_places(rpc, n_slots, desks, release_in):
    """A scheduled plan of n_slots on a far weekday, all its batches moved to one instant."""
    minutes, start_h = 5, 8
    end_total = start_h * 60 + n_slots * minutes
    for _ in range(30):
        day = date.today() + timedelta(days=random.randint(60, 360))
        if day.weekday() >= 5:
            continue
        plan = {"site": SITE, "procedure": PROCEDURE, "from": day.isoformat(), "to": day.isoformat(),
                "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "hours": [f"{start_h:02d}:00-{end_total // 60:02d}:{end_total % 60:02d}"],
                "slot_minutes": minutes, "desks": desks}
        created = rpc.slots.create_from_plan(plan)
        if created["scheduled"] == n_slots:
            break
    else:
        raise SystemExit("no free day found for the release")
    due = datetime.now(timezone.utc) + timedelta(seconds=release_in)
    batches = rpc.slots.schedule_for(plan_id=created["plan_id"], limit=1000)["batches"]
    for batch in batches:
        rpc.slots.reschedule(batch["id"], due.isoformat(), by="release_burst")
    return day, created["plan_id"], batches


PEOPLE = People()


def applicant(slot_id, i):
    """Person i, a different person each time, from an address of their own."""
    return json.dumps(PEOPLE.booking(i, PROCEDURE, slot_id)).encode(), PEOPLE.address(i)


class Client(threading.Thread):
    """Polls the listing, books what it sees; records every booking attempt."""

    counter = iter(range(10_000_000))
    lock = threading.Lock()
    refused = Counter()  # error code of each refused booking

    def __init__(self, host, port, day, results, stop, poll, mailbox):
        super().__init__(daemon=True)
        self.host, self.port, self.day = host, port, day
        self.results, self.stop, self.poll, self.mailbox = results, stop, poll, mailbox
        self.booked = []  # (reference, token, slot_id)
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method, path, body=None, headers=None):
        try:
            self.conn.request(method, path, body, dict({"Content-Type": "application/json"}, **(headers or {})))
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            return "error", b""

    def book(self, slot_id):
        with self.lock:
            i = next(self.counter)
        payload, address = applicant(slot_id, i)
        started = time.time()
        status, body = self.request("POST", "/api/bookings", payload, {"X-Forwarded-For": address})
        ended = time.time()
        self.results.append((status, started, ended, slot_id))
        if status == 201:
            answer = json.loads(body)
            self.booked.append((answer["reference"], answer["token"], slot_id))
            self.confirm(answer["reference"], address)
        else:
            Client.note_refusal(status, body)
        return status

    @classmethod
    def note_refusal(cls, status, body):
        try:
            code = json.loads(body).get("error", status)
        except ValueError:
            code = status
        with cls.lock:
            cls.refused[code] += 1

    def confirm(self, reference, address):
        """At once, from the e-mail's link: a place held by a pending booking counts against
        the release's share (UNCONFIRMED_RELEASE_SHARE), and people do confirm."""
        token = self.mailbox.booking_confirm_token(reference)
        self.request("POST", f"/api/bookings/{reference}/confirm", b"",
                     {"X-Forwarded-For": address, "X-Booking-Token": token})

    def listed(self):
        status, body = self.request("GET", f"/api/slots?procedure={PROCEDURE}&from={self.day}&to={self.day}")  # the default page: 50 slots
        return [s["id"] for s in json.loads(body)["slots"]] if status == 200 else []

    def run(self):
        while not self.stop.is_set():
            slots = self.listed()
            if not slots:
                time.sleep(self.poll * random.uniform(0.5, 1.5))
                continue
            random.shuffle(slots)
            for slot_id in slots[:3]:
                self.book(slot_id)


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--desks", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between two polls of a client")
    parser.add_argument("--freed", type=int, default=20)
    parser.add_argument("--watch", type=float, default=3.0)
    parser.add_argument("--start", action="store_true", help="start an own system on free ports")
    parser.add_argument("--release-within", type=float, default=20,
                        help="the release comes at a random instant up to this many seconds after start")
    args = parser.parse_args()

    # two slots instances, one booking, one gateway: as measured in the README
    run_on_system(args, run_bench, {"slots": 2, "booking": 1, "public_gateway": 1}, "release_burst",
                  RELEASE_TIMER_SECONDS=0.5, MAX_WORKERS=20,
                  PROCEDURE_MODE_DEFAULT="open")  # it measures booking slots directly


def run_bench(args, mailbox, pids=None):
    url, amqp_uri = args.url, args.amqp_uri
    host, port = url.split("://")[1].split(":")
    port = int(port)
    places = args.slots * args.desks
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
        release_in = random.uniform(min(8, args.release_within), args.release_within)  # the clients are not told
        day, plan_id, batches = schedule_places(rpc, args.slots, args.desks, release_in)
        n_batches = len(batches)
        # decoys (SLOTS_DECOY_SHARE) are listed by the JSON API too and booked like any slot,
        # but hold no desk's place: "every place booked" counts the real ones
        decoys = {sid for b in batches for sid in b["slot_ids"] if rpc.slots.get(sid)["decoy"]}
        results, stop = [], threading.Event()
        clients = [Client(host, port, day.isoformat(), results, stop, args.poll, mailbox) for _ in range(args.clients)]
        steal = CpuSteal()
        for client in clients:
            client.start()
        # phase 1: until every place is booked and a while after
        deadline = time.time() + release_in + 180
        while time.time() < deadline:
            time.sleep(1)
            if sum(sid not in decoys for c in clients for _, _, sid in c.booked) >= places:
                break
        time.sleep(2)
        stop.set()
        for client in clients:
            client.join(30)
        released = rpc.slots.schedule_for(plan_id=plan_id, include_released=True, limit=1000)["batches"]
        release_at = min(datetime.fromisoformat(b["released"].replace("Z", "+00:00")).timestamp()
                         for b in released if b.get("released"))
        slot_ids = sorted({sid for b in released for sid in b["slot_ids"]})
        stolen = steal.percent()

        booked_at = sorted(end for status, _, end, _ in results if status == 201)
        attempts = [(s, start, end) for s, start, end, _ in results]
        span = max(e for _, _, e in attempts) - min(st for _, st, _ in attempts) if attempts else 1
        latencies = sorted(end - start for _, start, end in attempts)
        statuses = Counter(s for s, _, _ in attempts)
        slots = [rpc.slots.get(sid) for sid in slot_ids if sid not in decoys]
        overbooked = sum(max(0, s["booked"] - s["capacity"]) for s in slots)
        early = sum(1 for _, start, _, _ in results if start < release_at - 0.01)
        early_ok = sum(1 for s, start, end, _ in results if s == 201 and end < release_at)

        print(f"released {len(slot_ids)} slots x {args.desks} desks = {places} places in "
              f"{n_batches} batches moved to one instant {release_in:.1f} s after start (secret to clients)")
        print(f"{args.clients} clients polling every ~{args.poll:g} s; {len(attempts)} booking attempts")
        if booked_at:
            print(f"first booking     {booked_at[0] - release_at:8.2f} s after the release")
            print(f"last booking      {booked_at[-1] - release_at:8.2f} s after the release")
        print(f"attempts/s        {len(attempts) / max(span, 1e-9):8.1f}  (over {span:.1f} s)")
        print(f"statuses          {dict(statuses)}")
        print(f"refused           {dict(Client.refused)}")
        for q in (50, 95, 99):
            print(f"latency p{q:<2}       {pct(latencies, q) * 1000:8.1f} ms")
        print(f"booked places     {sum(s['booked'] for s in slots)} of {places}")
        print(f"decoy bookings    {sum(sid in decoys for c in clients for _, _, sid in c.booked)}"
              f"  ({len(decoys)} decoy slot(s) listed by the JSON API)")
        print(f"overbooked        {overbooked}")
        print(f"booked before the release: {early_ok} (attempts sent before it: {early})")

        # phase 2: freed places while everything is full
        holders = [(c, b) for c in clients for b in c.booked if b[2] not in decoys]
        random.shuffle(holders)
        freed_results, stop2 = [], threading.Event()
        freed = []
        for client, (reference, token, slot_id) in holders[:args.freed]:
            status, _ = client.request("DELETE", f"/api/bookings/{reference}", headers={"X-Booking-Token": token})
            if status == 200:
                freed.append((slot_id, time.time()))
        freed_slots = [sid for sid, _ in freed]

        def grab(client):
            while not stop2.is_set():
                slot_id = random.choice(freed_slots)
                with Client.lock:
                    i = next(Client.counter)
                payload, address = applicant(slot_id, i)
                started = time.time()
                status, _ = client.request("POST", "/api/bookings", payload, {"X-Forwarded-For": address})
                freed_results.append((status, started, time.time(), slot_id))

        grabbers = [threading.Thread(target=grab, args=(c,), daemon=True) for c in clients if freed_slots]
        for thread in grabbers:
            thread.start()
        time.sleep(args.watch)
        stop2.set()
        for thread in grabbers:
            thread.join(30)
        first_freed = {}
        for sid, at in freed:
            first_freed.setdefault(sid, at)
        rebooked_1s = sum(1 for s, _, end, sid in freed_results
                          if s == 201 and end - first_freed[sid] <= 1.0)
        rebooked = sum(1 for s, _, _, _ in freed_results if s == 201)
        after = [rpc.slots.get(sid) for sid in set(freed_slots)]
        print(f"freed places      {len(freed)} (cancelled while every slot was full)")
        print(f"take-back tries   {len(freed_results)} in {args.watch:g} s by {args.clients} clients")
        print(f"re-booked within 1 s of being freed: {rebooked_1s}  (within {args.watch:g} s: {rebooked})")
        print(f"held back now     {sum(s['held_back'] for s in after)}")
        print(f"CPU steal         {stolen:8.1f} %  (the machine is shared with other engineers' runs)")


if __name__ == "__main__":
    main()
