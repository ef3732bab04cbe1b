#!/usr/bin/env python3
"""The single-process baseline of issue 22: one plain threaded HTTP server doing what the
whole system does for a booking, a slot listing and a full-slot attempt (the same validation
schemas, the same atomic hold update, the booking insert) on the same store, with no bus, no
second process and no e-mail. booking_cost.py starts it beside the system and fires the same
requests at both in one run, so that the ratio is measured under the same load.

    .venv/bin/python tests/bench/baseline.py --mongo-uri mongodb://127.0.0.1:27017 --port 8100 \
        --slots 200 --desks 5

Answers: GET /api/slots (as the gateway's JSON API), POST /api/bookings (201 or 409
slot_full), GET /slot-ids (its slots' ids, for the bench).
"""
import argparse
import json
import sys
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pymongo import MongoClient, ReturnDocument  # noqa: E402

from gateway.public.schemas import SlotQuerySchema  # noqa: E402
from services.common.errors import InvalidRequest  # noqa: E402
from services.common.reference_data import FREE_NOTICE  # noqa: E402
from services.common.schemas import BookingRequestSchema, load_or_raise  # noqa: E402
from services.common.timeutil import PARIS, iso_paris  # noqa: E402

SLOT_QUERY, BOOKING_REQUEST = SlotQuerySchema(), BookingRequestSchema()


def seed(db, n_slots, desks, procedure="duplicate", site="beziers"):
    """n_slots open slots of `desks` places on one far weekday; their ids."""
    day = datetime.now(PARIS).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=30)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    docs = []
    for i in range(n_slots):
        start = (day + timedelta(minutes=5 * i)).astimezone(timezone.utc)
        docs.append({"_id": f"b{uuid.uuid4().hex[:14]}", "procedure": procedure, "site": site,
                     "state": "open", "start": start, "end": start + timedelta(minutes=5),
                     "capacity": desks, "free": desks, "booked": 0, "decoy": False})
    db.slots.insert_many(docs)
    db.slots.create_index([("procedure", 1), ("state", 1), ("start", 1)])
    db.bookings.create_index([("email_normalised", 1)])
    return [d["_id"] for d in docs], day.date()


def make_handler(db, slot_ids):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/slot-ids":
                return self.answer(200, {"ids": slot_ids})
            if url.path != "/api/slots":
                return self.answer(404, {"error": "not_found"})
            try:
                query = load_or_raise(SLOT_QUERY, dict(parse_qsl(url.query)), InvalidRequest)
            except InvalidRequest as error:
                return self.answer(400, {"error": "invalid_request", "fields": error.fields})
            first = datetime.combine(query["from_"], datetime.min.time(), tzinfo=PARIS)
            last = datetime.combine(query["to"] + timedelta(days=1), datetime.min.time(), tzinfo=PARIS)
            per_page = query["per_page"]
            found = list(db.slots.find({"procedure": query["procedure"], "state": "open",
                                        "free": {"$gt": 0},
                                        "start": {"$gte": max(first, datetime.now(timezone.utc)),
                                                  "$lt": last}})
                         .sort([("start", 1), ("_id", 1)])
                         .skip((query["page"] - 1) * per_page).limit(per_page + 1))
            self.answer(200, {"slots": [{"id": s["_id"], "site": s["site"],
                                         "procedure": s["procedure"],
                                         "start": iso_paris(s["start"]), "end": iso_paris(s["end"]),
                                         "free": s["free"]} for s in found[:per_page]],
                              "page": query["page"], "per_page": per_page,
                              "has_more": len(found) > per_page, "notice": FREE_NOTICE})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/api/bookings":
                return self.answer(404, {"error": "not_found"})
            try:
                body = load_or_raise(BOOKING_REQUEST, json.loads(raw), InvalidRequest)
            except (ValueError, InvalidRequest) as error:
                return self.answer(400, {"error": "invalid_request",
                                         "fields": getattr(error, "fields", {})})
            hold_id = uuid.uuid4().hex
            now = datetime.now(timezone.utc)
            slot = db.slots.find_one_and_update(
                {"_id": body["slot_id"], "procedure": body["procedure"], "state": "open",
                 "free": {"$gt": 0}, "start": {"$gt": now}},
                {"$inc": {"free": -1, "booked": 1}, "$set": {f"holds.{hold_id}": now.timestamp()}},
                projection={"holds": 0}, return_document=ReturnDocument.AFTER)
            if slot is None:
                return self.answer(409, {"error": "slot_full", "message": "This slot is full."})
            reference = f"BL-{uuid.uuid4().hex[:10].upper()}"
            db.bookings.insert_one({"_id": reference, "slot_id": slot["_id"], "hold_id": hold_id,
                                    "email_normalised": body["email"].strip().lower(),
                                    "family_name": body["family_name"],
                                    "given_names": body["given_names"],
                                    "birth_date": str(body["birth_date"]), "status": "active",
                                    "created_at": now})
            self.answer(201, {"reference": reference, "status": "active",
                              "slot": {"id": slot["_id"], "free": slot["free"]},
                              "notice": FREE_NOTICE})

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mongo-uri", required=True)
    parser.add_argument("--db", default=f"baseline_{uuid.uuid4().hex[:6]}")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=200)
    parser.add_argument("--desks", type=int, default=5)
    args = parser.parse_args()
    db = MongoClient(args.mongo_uri, maxPoolSize=200)[args.db]
    slot_ids, _ = seed(db, args.slots, args.desks)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(db, slot_ids))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
