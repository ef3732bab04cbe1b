"""The slots database: plans, slots, the holds taken on them, and the release schedule.

A place is taken by one conditional update ({free > 0} -> free - 1): the database decides, so no
number of concurrent callers can book more places than a slot has. The same update writes the
hold's id into the slot (`holds.<hold id>: epoch seconds`) and giving back removes it, on the
condition that it is there: the slot alone says which holds have its places, so its ledger
(booked == number of entries) holds after any crash, and taking or giving back twice is a no-op.

The `holds` collection is the index the sweeper reads (holds by age): a hold is written there
before its place is taken and marked released after its place is given back, so a process
killed in between leaves a record the sweeper finds, never a place nobody can find.
States: held (young or not yet checked), booked (the booking service said a booking uses it),
released.

`free` counts the places bookable now; a place given back is not bookable at once but waits
in `held_back` until `rerelease_ts` (capacity == booked + free + held_back; booked == active
bookings + live holds). Releases are claimed with conditional single-document updates, so
that any number of instances release each batch, and each held-back place, exactly once.
Times written with $set are epoch seconds (`*_ts`): the embedded stand-in mishandles
datetimes in $set.

Every write that changes what the public may book (free places, state) stamps the slot's
`changed_ts` (this process's wall clock, not the service's possibly moved Clock) in the same
update: the public gateway's view of free places (gateway/public/slot_view.py) asks for the
slots changed since its last look, so it never misses one, events or not.
"""
import time

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.claims import Claims
from services.common.lease import Leases
from services.common.mongo import one_if_any
from services.common.outbox import Outbox
from services.slots.rules import OPEN, SCHEDULED

HELD = "held"
BOOKED = "booked"  # checked by the sweeper: a booking uses it
RELEASED = "released"
# taken by a holder that answers for it itself (the allocator's offers, issue 12): never swept
KEPT = "kept"
LIVE = [HELD, BOOKED, KEPT]

# a batch of the release schedule: due -> releasing (claimed) -> released
DUE, RELEASING = "due", "releasing"


class SlotStore:
    def __init__(self, db):
        self.slots = db["slots"]
        self.holds = db["holds"]
        self.plans = db["plans"]
        self.releases = db["releases"]
        self.leases = Leases(db["leases"])
        # per-procedure mode (issue 12): a procedure in `requests` mode is held by offers only
        self.modes = db["modes"]
        # `slots_released` for a batch rides on the batch, for a freed place on its slot
        self.batch_outbox = Outbox(self.releases, ("released",))
        self.slot_outbox = Outbox(self.slots, ("released",))
        self.pending = self.batch_outbox.pending + self.slot_outbox.pending
        # unconfirmed bookings' holds counted per release (rules.release_mark)
        self.claims = Claims(db["release_claims"])

    def ensure_indexes(self):
        self.slots.create_index([("procedure", 1), ("state", 1), ("start", 1)])
        self.slots.create_index([("plan_id", 1)])
        self.slots.create_index([("rerelease_ts", 1)])
        self.slots.create_index([("changed_ts", 1)])
        self.holds.create_index([("slot_id", 1)])
        self.holds.create_index([("state", 1), ("at_ts", 1)])
        self.releases.create_index([("state", 1), ("due_ts", 1)])
        self.releases.create_index([("procedure", 1), ("state", 1)])
        self.releases.create_index([("plan_id", 1)])
        self.releases.create_index([("state", 1), ("released_ts", -1)])
        self.batch_outbox.ensure_indexes()
        self.slot_outbox.ensure_indexes()

    # -- plans and slots ---------------------------------------------------------------------

    def save_plan(self, plan_doc):
        """Record a plan once (its id is a hash of its content)."""
        try:
            self.plans.insert_one(plan_doc)
        except DuplicateKeyError:
            pass

    def allocated_by_request(self, procedure, default):
        """default: the mode of a procedure never switched (PROCEDURE_MODE_DEFAULT)."""
        doc = self.modes.find_one({"_id": procedure})
        return (doc.get("mode") if doc else default) == "requests"

    def modes_all(self):
        """{procedure: mode} of the procedures ever switched (the others have the default)."""
        return {doc["_id"]: doc.get("mode") for doc in self.modes.find({})}

    def set_mode(self, procedure, mode):
        self.modes.update_one({"_id": procedure}, {"$set": {"mode": mode}}, upsert=True)

    def get_plan(self, plan_id):
        return self.plans.find_one({"_id": plan_id})

    def insert_new(self, slots, now, state=OPEN, published_ts=None, plan_id=None, release=None):
        """Insert the slots not already there; return the ids that were new. release: the
        mark of the release that opens them (open slots)."""
        docs = [dict(slot, state=state, created_at=now, plan_id=plan_id, held_back=0,
                     changed_ts=time.time(),
                     rerelease_ts=None, published_ts=published_ts if state == OPEN else None,
                     release=release if state == OPEN else None)
                for slot in slots]
        if not docs:
            return []
        try:
            self.slots.insert_many(docs, ordered=False)
            return [d["_id"] for d in docs]
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != 11000 for e in errors):
                raise
            failed = {e["index"] for e in errors}
            return [d["_id"] for i, d in enumerate(docs) if i not in failed]

    def any_slot(self):
        return self.slots.find_one({}, {"_id": 1}) is not None

    def get(self, slot_id):
        return self.slots.find_one({"_id": slot_id}, {"holds": 0})

    def slot_holds(self, slot_id):
        """{hold id: epoch seconds} of the holds that have a place on the slot (audits, tests)."""
        slot = self.slots.find_one({"_id": slot_id}, {"holds": 1})
        return (slot or {}).get("holds") or {}

    def starts_of_plan(self, plan_id):
        """The start times a plan already has slots at (ids may differ: a new SLOT_ID_SECRET)."""
        return {doc["start"] for doc in self.slots.find({"plan_id": plan_id}, {"start": 1})}

    def of_plan(self, plan_id, start_after):
        return list(self.slots.find({"plan_id": plan_id, "start": {"$gt": start_after}}))

    def list_open(self, procedure, start_from, start_before, skip, limit, include_decoys=False,
                  site=None):
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
        if site is not None:
            query["site"] = site
        cursor = self.slots.find(query, {"holds": 0}).sort([("start", 1), ("_id", 1)]).skip(skip).limit(limit)
        return list(cursor)

    def open_to_come(self, now):
        """Every open slot starting after `now`, full ones included (the gateway's view)."""
        return list(self.slots.find({"state": OPEN, "start": {"$gt": now}}, {"holds": 0}))

    def changed_since(self, since_ts):
        """Every slot whose bookable places or state changed at or after `since_ts`."""
        return list(self.slots.find({"changed_ts": {"$gte": since_ts}}, {"holds": 0}))

    def first_bookable(self, procedure, now):
        """One open real slot with a free place for `procedure`, or None (indexed, no count).

        Decoys do not count: they are always free, and no person could book them."""
        return self.slots.find_one({"procedure": procedure, "state": OPEN, "free": {"$gt": 0},
                                    "start": {"$gt": now}, "decoy": {"$in": [False, None]}},
                                   {"_id": 1})

    # -- holds -------------------------------------------------------------------------------

    def take_place(self, slot_id, hold_id, procedure, now):
        """Atomically take one place for `hold_id`; the updated slot, or None if nothing was
        taken (full, not bookable, or this hold has its place already)."""
        return self.slots.find_one_and_update(
            {"_id": slot_id, "procedure": procedure, "state": OPEN,
             "free": {"$gt": 0}, "start": {"$gt": now}, f"holds.{hold_id}": {"$exists": False}},
            {"$inc": {"free": -1, "booked": 1},
             "$set": {f"holds.{hold_id}": now.timestamp(), "changed_ts": time.time()}},
            projection={"holds": 0},
            return_document=ReturnDocument.AFTER,
        )

    def reclaim_place(self, slot_id, hold_id, now):
        """Take one place for `hold_id` among those waiting to be re-released, else among the
        free ones (one atomic update each; capacity == booked + free + held_back holds); the
        updated slot, or None when neither has one."""
        for source in ("held_back", "free"):
            slot = self.slots.find_one_and_update(
                {"_id": slot_id, source: {"$gt": 0}, f"holds.{hold_id}": {"$exists": False}},
                {"$inc": {source: -1, "booked": 1},
                 "$set": {f"holds.{hold_id}": now.timestamp(), "changed_ts": time.time()}},
                projection={"holds": 0}, return_document=ReturnDocument.AFTER)
            if slot is not None:
                return slot
        return None

    def has_place(self, slot_id, hold_id):
        """The slot, if `hold_id` has a place on it."""
        return self.slots.find_one({"_id": slot_id, f"holds.{hold_id}": {"$exists": True}},
                                   {"holds": 0})

    def give_place_back(self, slot_id, hold_id, rerelease_ts):
        """Give back the place of `hold_id`, if it has one; True when one was given back.

        The place waits in held_back; all waiting places come back at rerelease_ts. A later
        instant only ever pushes the return back ($max), so a place freed now never rides on
        an earlier place's nearer return.
        """
        return self.slots.update_one(
            {"_id": slot_id, f"holds.{hold_id}": {"$exists": True}},
            # `freed` counts every place ever given back (staff figures)
            {"$inc": {"booked": -1, "held_back": 1, "freed": 1}, "$unset": {f"holds.{hold_id}": ""},
             "$max": {"rerelease_ts": rerelease_ts}},
        ).modified_count == 1

    def record_hold(self, hold_id, slot_id, now, state=HELD, claim=None):
        """Record the hold before its place is taken; None when new, else the existing record
        (a retried call). claim: the release it is counted against while unconfirmed."""
        try:
            self.holds.insert_one({"_id": hold_id, "slot_id": slot_id, "state": state, "at": now,
                                   "at_ts": now.timestamp(), "claim": claim})
            return None
        except DuplicateKeyError:
            return self.holds.find_one({"_id": hold_id}) or {"state": RELEASED}

    def forget_hold(self, hold_id):
        """Drop the record of a hold that took no place (refused): its id may be tried again."""
        self.holds.delete_one({"_id": hold_id, "state": {"$in": [HELD, KEPT]}})

    def hand_over(self, slot_id, old_hold, new_hold, now_ts):
        """The place of `old_hold` now belongs to `new_hold`, in one single-document update
        (the ledger is untouched: booked stays, free stays); True when it was handed over."""
        return self.slots.update_one(
            {"_id": slot_id, f"holds.{old_hold}": {"$exists": True},
             f"holds.{new_hold}": {"$exists": False}},
            {"$unset": {f"holds.{old_hold}": ""}, "$set": {f"holds.{new_hold}": now_ts}},
        ).modified_count == 1

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

    # -- freed places coming back ------------------------------------------------------------

    def due_rereleases(self, now_ts, limit=200):
        return list(self.slots.find({"rerelease_ts": {"$lte": now_ts}, "held_back": {"$gt": 0}},
                                    {"held_back": 1, "rerelease_ts": 1}).limit(limit))

    def rerelease(self, slot, now_ts, outbox_entry, release=None):
        """Make the held-back places of `slot` bookable; the slot after, or None if another
        instance did it first (the update only matches the state we read)."""
        return self.slots.find_one_and_update(
            {"_id": slot["_id"], "held_back": slot["held_back"], "rerelease_ts": slot["rerelease_ts"]},
            {"$inc": {"held_back": -slot["held_back"], "free": slot["held_back"]},
             "$set": {"rerelease_ts": None, "published_ts": now_ts, "release": release,
                      "changed_ts": time.time(),
                      "last_rerelease": {"places": slot["held_back"], "at_ts": now_ts},
                      Outbox.field("released"): outbox_entry}},
            return_document=ReturnDocument.AFTER)

    def add_places(self, slot_id, places, rerelease_ts, operation=None):
        """M2: more desks on a slot. Scheduled: they go with its batch; open: held back.

        operation: the adding's key (a fingerprint): marked on the slot with the places, so
        that the same adding delivered again adds nothing more to this slot."""
        once = {f"desks_added.{operation}": {"$exists": False}} if operation else {}
        mark = {"$set": {f"desks_added.{operation}": places}} if operation else {}
        scheduled = self.slots.find_one_and_update(
            dict({"_id": slot_id, "state": SCHEDULED}, **once),
            dict({"$inc": {"capacity": places, "free": places}}, **mark))
        if scheduled is not None:
            return SCHEDULED
        added = self.slots.update_one(dict({"_id": slot_id}, **once),
                                      dict({"$inc": {"capacity": places, "held_back": places},
                                            "$max": {"rerelease_ts": rerelease_ts}}, **mark))
        if added.matched_count or not operation:
            return OPEN
        slot = self.slots.find_one({"_id": slot_id}, {"state": 1})  # added by its first delivery
        return SCHEDULED if slot and slot["state"] == SCHEDULED else OPEN

    # -- the release schedule ----------------------------------------------------------------

    def add_batches(self, batches):
        if batches:
            self.releases.insert_many(batches)

    def batches(self, query, limit):
        return list(self.releases.find(query).sort([("due_ts", 1)]).limit(limit))

    def get_batch(self, batch_id):
        return self.releases.find_one({"_id": batch_id})

    def reschedule(self, batch_id, due_ts, by):
        return self.releases.find_one_and_update(
            {"_id": batch_id, "state": DUE},
            {"$set": {"due_ts": due_ts, "rescheduled": {"by": by, "due_ts": due_ts}}},
            return_document=ReturnDocument.AFTER)

    def released_batches(self, query, limit):
        """The last released batches, newest first (staff figures)."""
        return list(self.releases.find(dict(query, state=RELEASED))
                    .sort([("released_ts", -1)]).limit(limit))

    def figures_of(self, query):
        """Real slots (no decoys) matching `query`, with what the capacity figures need."""
        return self.slots.find(dict(query, decoy={"$in": [False, None]}),
                               {"site": 1, "procedure": 1, "state": 1, "capacity": 1, "booked": 1,
                                "free": 1, "held_back": 1, "freed": 1})

    def places_of(self, slot_ids):
        """Slots with their holds' instants: when each place of a batch was taken."""
        return list(self.slots.find({"_id": {"$in": list(slot_ids)}},
                                    {"free": 1, "held_back": 1, "booked": 1, "holds": 1,
                                     "decoy": 1}))

    def claim_due(self, now_ts, claim_seconds, limit=50):
        """Batches due now (or claimed by a pass that died), each claimed by the caller just
        before it is released, for `claim_seconds` (the pass's lease: a claim outlives the
        pass that made it by no more than that). Claimed one at a time, so a crash leaves at
        most one batch half-done, not the whole backlog."""
        waiting = ({"state": DUE, "due_ts": {"$lte": now_ts}},
                   {"state": RELEASING, "claim_ts": {"$lt": now_ts}})
        due = self.releases.find({"$or": list(waiting)}, {"_id": 1}).sort([("due_ts", 1)]).limit(limit)
        for doc in list(due):
            taken = self.releases.find_one_and_update(
                one_if_any(doc["_id"], *waiting),
                {"$set": {"state": RELEASING, "claim_ts": now_ts + claim_seconds}},
                return_document=ReturnDocument.AFTER)
            if taken is not None:  # another instance may have claimed it in between
                yield taken

    def open_slots(self, slot_ids, now_ts, release=None):
        """scheduled -> open: a slot already open is left alone (a batch taken over after a
        crash opens nothing twice and keeps the first published instant)."""
        self.slots.update_many({"_id": {"$in": slot_ids}, "state": SCHEDULED},
                               {"$set": {"state": OPEN, "published_ts": now_ts,
                                         "release": release, "changed_ts": time.time()}})
        return list(self.slots.find({"_id": {"$in": slot_ids}}, {"free": 1, "published_ts": 1,
                                                                 "decoy": 1}))

    def finish_batch(self, batch_id, now_ts, places, outbox_entry):
        """releasing -> released, with the event to announce; None if already finished."""
        return self.releases.find_one_and_update(
            {"_id": batch_id, "state": RELEASING},
            {"$set": {"state": RELEASED, "released_ts": now_ts, "places": places,
                      Outbox.field("released"): outbox_entry}},
            return_document=ReturnDocument.AFTER)

    def published_since(self, since, fields, limit=200000):
        """Slots published from `since` on, with only `fields`: the domain figures."""
        return list(self.slots.find({"$or": [{"published_ts": {"$gte": since.timestamp()}},
                                             {"published_at": {"$gte": since}}]},
                                    fields).limit(limit))

    def count_held(self, limit=10000):
        """Holds not yet known to be used by a booking (the sweeper's backlog)."""
        return len(list(self.holds.find({"state": HELD}, {"_id": 1}).limit(limit)))
