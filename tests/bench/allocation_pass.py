#!/usr/bin/env python3
"""Allocation pass (issue 12's requests mode): how long one requests instance takes to offer the
places of a release to the waiting requests and announce them.

Self-contained: its own vhost, stores and slots, booking and requests processes on free ports
(tests/bench/harness.py's OwnSystem). Puts --requests confirmed requests for `renewal`
(switched to requests mode), creates --slots x --desks places through the secret schedule and
moves every batch to now, then prints the time from the release to the last offer made and to
the last `offer_made` event on the bus (the announcement notify mails from), offers per second,
and the checks that must hold whatever the load: no place offered twice, no request holding two
places, every offer from a recorded draw that replays.

    .venv/bin/python tests/bench/allocation_pass.py --requests 300 --slots 30 --desks 3
    .venv/bin/python tests/bench/allocation_pass.py --requests 20000 --slots 200 --desks 5 --filing store

Filing is set-up, not what is measured. `--filing rpc` (the default) files and confirms each
request over RPC as the gateway does, from --clients parallel clients; `--filing store` writes
the same confirmed requests through the requests service's own code (the document `file`
stores, its claims taken) in a few bulk writes: 20,000 in seconds instead of many minutes.
Renewals are not checked against the register in either (the harness sets
REGISTER_CHECKED_PROCEDURES=none, and the store set-up never files): the register is read at
filing only, never by the allocation pass measured here; the typed expiry stands for the one
the register would give.
"""
import argparse
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from kombu import Connection, Queue
from nameko.standalone.events import get_event_exchange
from nameko.standalone.rpc import ClusterRpcProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from booking_burst import CpuSteal, print_machine  # noqa: E402
from services.common.errors import InvalidRequest  # noqa: E402
from services.common.mongo import connect  # noqa: E402
from services.requests import allocation, rules  # noqa: E402
from services.common.exact_names import name_problem  # noqa: E402
from tests.bench.harness import OwnSystem, People, real_names  # noqa: E402
from tests.helpers import plan  # noqa: E402

WEEK = [{"weekday": day, "from": "08:00", "to": "18:00"}
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday")]
# an offer is made once its place is held (HOLDING: written, its place not yet held)
MADE = (rules.MADE, rules.ACCEPTING, rules.ACCEPTED)
HOURS = "09:00-14:00"  # ten half-hours a weekday: --slots 200 --desks 5 is 1,000 places
PER_DAY = 10


def filing(people, i):
    """Request i as the applicant's page sends it: a real name, their own birth date, number
    and mailbox (harness.People), a permit expiring within three months."""
    return dict(people.identity(i), procedure="renewal",
                permit_expiry=(date.today() + timedelta(days=i % 90)).isoformat(),
                availability={"sites": ["montpellier"], "times": WEEK})


def file_over_rpc(amqp_uri, people, count, clients):
    """File and confirm each request over RPC, from `clients` parallel clients."""
    def run(part):
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
            for i in range(part, count, clients):
                filed = rpc.requests.file(filing(people, i))
                rpc.requests.confirm(filed["reference"], filed["token"])

    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(run, part) for part in range(clients)]:
            done.result()


def file_in_store(system, people, count):
    """Set-up only: the confirmed requests `file` and `confirm` would store (the service's own
    schema, M4 check, claim keys and document), written in bulk with their claims."""
    from services.common import one_email
    from services.common.tokens import TokenSigner, new_salt
    from services.requests.schemas import RequestFilingSchema
    from services.requests.service import _code, claim_keys_of, request_document
    from services.requests.store import RequestStore

    store = RequestStore(connect(system.uris["requests"])[f"{system.env['MONGO_DB_PREFIX']}requests"])
    signer, schema, now = TokenSigner(system.env["REQUEST_TOKEN_SECRET"]), RequestFilingSchema(), \
        datetime.now(timezone.utc)
    docs, claims, taken, i = [], [], set(), -1
    while len(docs) < count:
        i += 1
        data = schema.load(filing(people, i))
        assert name_problem(data["family_name"], data["given_names"], data["email"]) is None
        reference, salt = "REQ-" + _code(), new_salt()
        email_key = one_email.mailbox_key(data["email"], {})
        keys = claim_keys_of(data, email_key)
        if taken.intersection(keys):
            continue  # two people's numbers met (a hash of their identity): the next person
        taken.update(keys)
        doc = request_document(reference, data, email_key, keys,
                               TokenSigner.hash_token(signer.token_for(reference, salt)), salt,
                               now, 48, {})
        doc.update(state=rules.WAITING, confirmed_ts=now.timestamp())
        docs.append(doc)
        claims.extend({"_id": key, "request_id": reference} for key in keys)
    for chunk in range(0, count, 1000):
        store.requests.insert_many(docs[chunk:chunk + 1000], ordered=False)
    for chunk in range(0, len(claims), 3000):
        store.claims.insert_many(claims[chunk:chunk + 3000], ordered=False)


class Announcements:
    """`offer_made` events as notify would receive them: a queue of the bench's own, bound
    before the release; the instant each distinct offer was announced."""

    def __init__(self, amqp_uri):
        self.at, self.ready, self.stopping, self.error = {}, threading.Event(), False, None
        self.thread = threading.Thread(target=self._consume, args=(amqp_uri,), daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _consume(self, amqp_uri):
        queue = Queue("bench-offer-made", exchange=get_event_exchange("requests", {}),
                      routing_key="offer_made", auto_delete=True, exclusive=True)
        with Connection(amqp_uri) as conn:
            def received(body, message):
                payload = json.loads(body) if isinstance(body, (str, bytes)) else body
                self.at.setdefault(payload["offer_id"], time.monotonic())
                message.ack()

            try:
                with conn.Consumer(queue, callbacks=[received], accept=["json"]):
                    self.ready.set()
                    while not self.stopping:
                        try:
                            conn.drain_events(timeout=0.5)
                        except TimeoutError:
                            pass
            except Exception as error:  # said, so that a bench waiting for nothing ends
                self.error = error
                self.ready.set()
                raise

    def stop(self):
        self.stopping = True
        self.thread.join(5)


def weekdays_from(first, count):
    """The last day of `count` weekdays from `first`."""
    day, seen = first, 0
    while True:
        if day.weekday() < 5:
            seen += 1
            if seen == count:
                return day
        day += timedelta(days=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--slots", type=int, default=30,
                        help=f"at least this many slots (whole weekdays of {PER_DAY} half-hours)")
    parser.add_argument("--desks", type=int, default=3)
    parser.add_argument("--filing", choices=("rpc", "store"), default="rpc",
                        help="set-up: file and confirm over RPC, or write them in bulk")
    parser.add_argument("--clients", type=int, default=4, help="parallel RPC clients filing")
    args = parser.parse_args()
    # M4 refuses a few real names of the list (a one-letter-twice family name): left out here,
    # the filing would refuse them and the bench measures allocation, not that
    people = People([n for n in real_names() if name_problem(*n) is None])
    with OwnSystem({"slots": 1, "booking": 1, "requests": 1}, name="alloc",
                   REQUEST_TIMER_SECONDS=2, RELEASE_TIMER_SECONDS=0.5, SLOTS_DECOY_SHARE=0) as system:
        db = connect(system.uris["requests"])[f"{system.env['MONGO_DB_PREFIX']}requests"]
        with ClusterRpcProxy({"AMQP_URI": system.amqp_uri}, timeout=60) as rpc:
            rpc.requests.set_mode("renewal", "requests", by="bench")
            started = time.monotonic()
            if args.filing == "rpc":
                file_over_rpc(system.amqp_uri, people, args.requests, args.clients)
            else:
                file_in_store(system, people, args.requests)
            print(f"{args.requests} requests filed and confirmed in {time.monotonic() - started:.1f} s"
                  f" ({args.filing}, set-up)")
            first_day = date.today() + timedelta(days=10)
            last_day = weekdays_from(first_day, -(-args.slots // PER_DAY))
            rpc.slots.create_from_plan(plan(days=(last_day - first_day).days + 1, desks=args.desks,
                                            hours=[HOURS], start=first_day))
            batches = rpc.slots.schedule_for(procedure="renewal", limit=1000)["batches"]
            places = sum(len(b["slot_ids"]) for b in batches) * args.desks
            expected = min(places, args.requests)
            announced = Announcements(system.amqp_uri)
            steal = CpuSteal()
            released_at = time.monotonic()
            for batch in batches:
                try:
                    rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
                except InvalidRequest:  # its random instant came already
                    pass
            # followed on the bus, not by counting the store: the stand-in serialises its
            # work, and a count every 50 ms slowed the very pass it timed
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and len(announced.at) < expected:
                if announced.error is not None:
                    raise SystemExit(f"offer_made not followed: {announced.error!r}")
                time.sleep(0.2)
            stolen = steal.percent()
            announced.stop()
        made = list(db["offers"].find({"state": {"$in": list(MADE)}},
                                      {"request_id": 1, "slot_id": 1, "draw_id": 1}))
        per_request = Counter(o["request_id"] for o in made)
        per_slot = Counter(o["slot_id"] for o in made)
        draws = {d["_id"]: d for d in db["draws"].find({"_id": {"$in": list({o.get("draw_id") for o in made})}})}
        times = sorted(announced.at.values())
        done = len(times) >= expected
        print(f"places released       {places} ({len(batches)} batches) for {args.requests} requests")
        if times:
            # an offer is announced as soon as its place is held and its state moved to offered
            print(f"first offer           {times[0] - released_at:.2f} s after the release")
        if done:
            print(f"last offer            {times[-1] - released_at:.2f} s after the release"
                  f"  (its offer_made on the bus)")
            print(f"offers/s              {expected / max(times[-1] - times[0], 1e-3):.1f}  (first to last)")
        print(f"offers made           {len(made)} of {expected}")
        print(f"offers announced      {len(times)} of {expected}")
        print(f"requests with 2 places {sum(1 for c in per_request.values() if c > 1)}")
        print(f"places over capacity  {sum(1 for c in per_slot.values() if c > args.desks)}")
        print(f"draws recorded        {len(draws)}, replaying {sum(allocation.replay(d) for d in draws.values())},"
              f" {sum(len(d['result']) for d in draws.values())} requests drawn")
        print(f"offers without draw   {sum(1 for o in made if o.get('draw_id') not in draws)}")
        print_machine(stolen, system.pids())
    return 0 if done and len(made) >= expected else 1


if __name__ == "__main__":
    sys.exit(main())
