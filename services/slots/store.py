"""The slots database: slots and the holds taken on them.

A place is taken by one conditional update ({free > 0} -> free - 1): the database decides, so no
number of concurrent callers can book more places than a slot has. Each taken place is
recorded in `holds` under the caller's hold id, which makes giving it back idempotent.
"""
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.slots.rules import OPEN

HELD = "held"
RELEASED = "released"


class SlotStore:
    def __init__(self, db):
        self.slots = db["slots"]
        self.holds = db["holds"]

    def ensure_indexes(self):
        self.slots.create_index([("procedure", 1), ("state", 1), ("start", 1)])
        self.holds.create_index([("slot_id", 1)])

    def insert_new(self, slots, now):
        """Insert the slots not already there; return how many were new."""
        docs = [dict(slot, state=OPEN, published_at=now, created_at=now) for slot in slots]
        if not docs:
            return 0
        try:
            return len(self.slots.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            duplicates = [e for e in exc.details["writeErrors"] if e["code"] == 11000]
            if len(duplicates) != len(exc.details["writeErrors"]):
                raise
            return exc.details["nInserted"]

    def any_slot(self):
        return self.slots.find_one({}, {"_id": 1}) is not None

    def get(self, slot_id):
        return self.slots.find_one({"_id": slot_id})

    def list_open(self, procedure, start_from, start_before, skip, limit, site=None):
        query = {
            "procedure": procedure,
            "state": OPEN,
            "free": {"$gt": 0},
            "start": {"$gte": start_from, "$lt": start_before},
        }
        if site is not None:
            query["site"] = site
        cursor = self.slots.find(query).sort([("start", 1), ("_id", 1)]).skip(skip).limit(limit)
        return list(cursor)

    def take_place(self, slot_id, procedure, now):
        """Atomically take one place; the updated slot, or None if nothing was taken."""
        return self.slots.find_one_and_update(
            {"_id": slot_id, "procedure": procedure, "state": OPEN,
             "free": {"$gt": 0}, "start": {"$gt": now}},
            {"$inc": {"free": -1, "booked": 1}},
            return_document=ReturnDocument.AFTER,
        )

    def give_place_back(self, slot_id):
        self.slots.update_one({"_id": slot_id}, {"$inc": {"free": 1, "booked": -1}})

    def record_hold(self, hold_id, slot_id, now):
        """False when this hold id already holds a place (a retried call)."""
        try:
            self.holds.insert_one({"_id": hold_id, "slot_id": slot_id, "state": HELD, "at": now})
            return True
        except DuplicateKeyError:
            return False

    def end_hold(self, hold_id):
        """Mark a hold released exactly once; the hold as it was, or None if not held."""
        return self.holds.find_one_and_update(
            {"_id": hold_id, "state": HELD},
            {"$set": {"state": RELEASED}},
        )

    def holds_for(self, slot_id):
        return list(self.holds.find({"slot_id": slot_id, "state": HELD}))
