"""The booking database.

The booking document carries its own outbox (services/common/outbox.py): the write that
creates, cancels or checks in a booking also records the event to announce, in one
single-document write, so a crash between the write and the dispatch delays the event but
never loses it. Flags and sub-documents only (no array operators, no bare datetimes in $set,
which the embedded stand-in mishandles): the same code runs on MongoDB and on the stand-in.

A hold that the slots sweeper judges abandoned gets a marker document under the booking
reference it was taken for (hold id == reference == `_id`): the late insert of that booking then
fails on the unique `_id`, so a booking can never appear after its place was given back.
Whichever write comes first wins, atomically. Markers are not bookings: reads skip them.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.booking.rules import ACTIVE, CANCELLED
from services.common.lease import Leases
from services.common.outbox import Outbox

OUTBOX_KINDS = ("created", "cancelled")


ABANDONED_HOLD = "abandoned_hold"


class BookingStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.outbox = Outbox(self.bookings, OUTBOX_KINDS)
        self.leases = Leases(db["leases"])
        self.pending = self.outbox.pending

    def ensure_indexes(self):
        self.outbox.ensure_indexes()
        self.bookings.create_index([("slot.id", 1)])

    def insert(self, booking):
        self.bookings.insert_one(booking)

    def get(self, reference):
        return self.bookings.find_one({"_id": reference, ABANDONED_HOLD: {"$ne": True}})

    def get_many(self, references):
        return list(self.bookings.find({"_id": {"$in": references}, ABANDONED_HOLD: {"$ne": True}},
                                       {"status": 1, "cancellation": 1}))

    def withdraw(self, reference, now):
        """Turn a booking stored too late (never announced) into a marker: as if never made."""
        self.bookings.replace_one({"_id": reference, "outbox.created.state": "pending"},
                                  {"_id": reference, ABANDONED_HOLD: True, "at": now})

    def holds_in_use(self, hold_ids, now):
        """The hold ids a booking uses; the others are fenced off for good (see above)."""
        found = {doc["_id"]: doc for doc in self.bookings.find(
            {"_id": {"$in": hold_ids}}, {ABANDONED_HOLD: 1})}
        in_use = [h for h, doc in found.items() if not doc.get(ABANDONED_HOLD)]
        for hold_id in hold_ids:
            if hold_id in found:
                continue
            try:
                self.bookings.insert_one({"_id": hold_id, ABANDONED_HOLD: True, "at": now})
            except DuplicateKeyError:  # its booking was stored meanwhile: in use after all
                doc = self.bookings.find_one({"_id": hold_id}, {ABANDONED_HOLD: 1})
                if doc is not None and not doc.get(ABANDONED_HOLD):
                    in_use.append(hold_id)
        return in_use

    def mark(self, reference, **flags):
        self.bookings.update_one({"_id": reference}, {"$set": flags})

    def cancel(self, reference, cancellation, outbox_entry):
        """Move an active booking to cancelled, recording its cancellation and the event to send.

        The booking after, or None if it was not active (cancelled already, or checked in).
        """
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE},
            {"$set": {"status": CANCELLED, "cancellation": cancellation,
                      Outbox.field("cancelled"): outbox_entry, "place_released": False}},
            return_document=ReturnDocument.AFTER,
        )

    def for_slot(self, slot_id, status=ACTIVE):
        return list(self.bookings.find({"slot.id": slot_id, "status": status}))
