#!/usr/bin/env python3
"""Erasure passes (services/common/retention.py): how long one bounded batch of the booking
service's erasure holds the store, against the embedded stand-in, with --bookings stored of
which --due are past BOOKING_RETENTION_DAYS.

Self-contained: its own stand-in on a free port, the booking service's own store code
(services/booking/store.py's erase_bookings, as the timer's pass calls it). Prints the time of
each batch (RETENTION_BATCH records at most), the batches needed, and a pass over a store with
nothing left to erase (which moves the watermark), then the next hour's pass (what every tick
costs once caught up: it reads from the watermark), with the CPU steal.

    .venv/bin/python tests/bench/retention_pass.py --bookings 5000 --due 2000 --batch 200
"""
import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from booking_burst import CpuSteal  # noqa: E402
from deploy import embedded_mongo  # noqa: E402
from services.booking.store import BookingStore  # noqa: E402
from services.common.mongo import connect  # noqa: E402
from tests.conftest import free_port  # noqa: E402

STATUSES = ("active", "cancelled", "checked_in")


def booking(i, start):
    return {"_id": f"RDV-{i:04X}-{uuid.uuid4().hex[:4].upper()}", "status": STATUSES[i % 3],
            "procedure": "renewal",
            "slot": {"id": f"s{i}", "site": "montpellier", "start": start,
                     "end": start + timedelta(minutes=20), "published_at": None, "decoy": False},
            "identity": {"family_name": f"Nom{i}", "given_names": "Prénom",
                         "birth_date": "1988-03-14", "foreigner_number": f"{i:010d}"},
            "email": f"p{i}@example.org", "email_key": f"p{i}@example.org",
            "person_key": f"nom{i}|prenom|1988-03-14", "phone": "+33 6 12 34 56 78",
            "postal_address": None, "client": {"ip": "203.0.113.9"}, "lang": "fr",
            "created_at": start - timedelta(days=30), "token_hash": "h", "token_salt": "s",
            "unconfirmed_claims": [], "outbox": {"created": {"state": "done"}}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=5000)
    parser.add_argument("--due", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retention-bench-"))
    proc, uri = embedded_mongo.start(work, free_port())
    try:
        client = connect(uri)
        store = BookingStore(client["bench_booking"])
        store.ensure_indexes()
        now = datetime.now(timezone.utc)
        old, recent = now - timedelta(days=400), now - timedelta(days=10)
        docs = [booking(i, old if i < args.due else recent) for i in range(args.bookings)]
        for first in range(0, len(docs), 1000):
            store.bookings.insert_many(docs[first:first + 1000])
        before = now - timedelta(days=365)
        steal, times, erased = CpuSteal(), [], 0
        while True:
            started = time.perf_counter()
            done = store.erase_bookings(before, time.time(), args.batch)
            times.append(time.perf_counter() - started)
            erased += done
            if done == 0:
                break
        caught_up = times.pop()  # found nothing: it moves the watermark
        # the next hour's pass: from the watermark (less a day), not from the beginning
        started = time.perf_counter()
        assert store.erase_bookings(before + timedelta(hours=1), time.time(), args.batch) == 0
        steady = time.perf_counter() - started
        print(f"bookings stored   {args.bookings:8d}  (due {args.due})")
        print(f"erased            {erased:8d}  in {len(times)} batches of at most {args.batch}")
        print(f"batch time        median {statistics.median(times) * 1000:8.1f} ms, "
              f"max {max(times) * 1000:8.1f} ms")
        print(f"records/s         {erased / sum(times):8.0f}")
        print(f"caught-up pass    {caught_up * 1000:8.1f} ms  (nothing left: reads them all once, "
              "then moves the watermark)")
        print(f"steady pass       {steady * 1000:8.1f} ms  (an hour later: from the watermark)")
        print(f"CPU steal         {steal.percent():8.1f} %")
        assert erased == args.due, (erased, args.due)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
