"""The slots database: slots and the holds taken on them.

A place is taken by one conditional update ({free > 0} -> free - 1): the database decides, so no
number of concurrent callers can book more places than a slot has. The same update writes the
hold's id into the slot (`holds.<hold id>: epoch seconds`) and giving back removes it, on the
condition that it is there: the slot alone says which holds have its places, so its ledger
(booked == number of entries) holds after any crash, and taking or giving back twice is a no-op.

The `holds` collection is the index the sweeper reads (holds by age): a hold is written there
before its place is taken and marked released after its place is given back, so a process
killed in between leaves a record the sweeper finds, never a place nobody can find.
States: held (young or not yet checked), booked (the booking service said a booking uses it),
released. Epoch numbers, not datetimes, for the times that are queried or set (the stand-in
mishandles datetimes in $set).
"""
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.slots.rules import OPEN

HELD = "held"
BOOKED = "booked"  # checked by the sweeper: a booking uses it
RELEASED = "released"
LIVE = [HELD, BOOKED]


class SlotStore:
    def __init__(self, db):
        self.slots = db["slots"]
        self.holds = db["holds"]
        self.leases = db["leases"]

    def ensure_indexes(self):
        self.slots.create_index([("procedure", 1), ("state", 1), ("start", 1)])
        self.holds.create_index([("slot_id", 1)])
        self.holds.create_index([("state", 1), ("at_ts", 1)])

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
        return self.slots.find_one({"_id": slot_id}, {"holds": 0})

    def slot_holds(self, slot_id):
        """{hold id: epoch seconds} of the holds that have a place on the slot (audits, tests)."""
        slot = self.slots.find_one({"_id": slot_id}, {"holds": 1})
        return (slot or {}).get("holds") or {}

    def list_open(self, procedure, start_from, start_before, skip, limit, include_decoys=False):
        query = {
            "procedure": procedure,
            "state": OPEN,
            "free": {"$gt": 0},
            "start": {"$gte": start_from, "$lt": start_before},
        }
        if not include_decoys:
            # null matches slots written without the field; the stand-in drops every match
            # of {"$ne": true} next to the indexed fields, so it is not used
            query["decoy"] = {"$in": [False, None]}
        cursor = self.slots.find(query, {"holds": 0}).sort([("start", 1), ("_id", 1)]).skip(skip).limit(limit)
        return list(cursor)

    def take_place(self, slot_id, hold_id, procedure, now):
        """Atomically take one place for `hold_id`; the updated slot, or None if nothing was
        taken (full, not bookable, or this hold has its place already)."""
        return self.slots.find_one_and_update(
            {"_id": slot_id, "procedure": procedure, "state": OPEN,
             "free": {"$gt": 0}, "start": {"$gt": now}, f"holds.{hold_id}": {"$exists": False}},
            {"$inc": {"free": -1, "booked": 1}, "$set": {f"holds.{hold_id}": now.timestamp()}},
            projection={"holds": 0},
            return_document=ReturnDocument.AFTER,
        )

    def has_place(self, slot_id, hold_id):
        """The slot, if `hold_id` has a place on it."""
        return self.slots.find_one({"_id": slot_id, f"holds.{hold_id}": {"$exists": True}},
                                   {"holds": 0})

    def give_place_back(self, slot_id, hold_id):
        """Give back the place of `hold_id`, if it has one; True when one was given back."""
        return self.slots.update_one(
            {"_id": slot_id, f"holds.{hold_id}": {"$exists": True}},
            {"$inc": {"free": 1, "booked": -1}, "$unset": {f"holds.{hold_id}": ""}},
        ).modified_count == 1

    def record_hold(self, hold_id, slot_id, now):
        """Record the hold before its place is taken; None when new, else the existing record
        (a retried call)."""
        try:
            self.holds.insert_one({"_id": hold_id, "slot_id": slot_id, "state": HELD, "at": now,
                                   "at_ts": now.timestamp()})
            return None
        except DuplicateKeyError:
            return self.holds.find_one({"_id": hold_id}) or {"state": RELEASED}

    def forget_hold(self, hold_id):
        """Drop the record of a hold that took no place (refused): its id may be tried again."""
        self.holds.delete_one({"_id": hold_id, "state": HELD})

    def get_hold(self, hold_id):
        return self.holds.find_one({"_id": hold_id})

    def end_hold(self, hold_id):
        """Mark a live hold released; the hold as it was, or None if it was not live."""
        return self.holds.find_one_and_update(
            {"_id": hold_id, "state": {"$in": LIVE}},
            {"$set": {"state": RELEASED}},
        )

    def holds_for(self, slot_id):
        return list(self.holds.find({"slot_id": slot_id, "state": {"$in": LIVE}}))

    def stale_holds(self, older_than_ts, limit):
        """Holds not yet known to be used by a booking, taken before `older_than_ts`."""
        return list(self.holds.find({"state": HELD, "at_ts": {"$lt": older_than_ts}})
                    .sort("at_ts", 1).limit(limit))

    def mark_booked(self, hold_ids):
        if hold_ids:
            self.holds.update_many({"_id": {"$in": list(hold_ids)}, "state": HELD},
                                   {"$set": {"state": BOOKED}})

    def published_since(self, since, fields, limit=200000):
        """Slots published from `since` on, with only `fields`: the domain figures."""
        return list(self.slots.find({"published_at": {"$gte": since}}, fields).limit(limit))

    def count_held(self, limit=10000):
        """Holds not yet known to be used by a booking (the sweeper's backlog)."""
        return len(list(self.holds.find({"state": HELD}, {"_id": 1}).limit(limit)))
