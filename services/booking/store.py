"""The booking database.

The booking document carries its own outbox (services/common/outbox.py): the write that
creates, cancels or checks in a booking also records the event to announce, in one
single-document write, so a crash between the write and the dispatch delays the event but
never loses it. Flags and sub-documents only (no array operators, no bare datetimes in $set,
which the embedded stand-in mishandles): the same code runs on MongoDB and on the stand-in.
"""
from pymongo import ReturnDocument

from services.booking.rules import ACTIVE, CANCELLED
from services.common.lease import Leases
from services.common.outbox import Outbox

OUTBOX_KINDS = ("created", "cancelled")


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
        return self.bookings.find_one({"_id": reference})

    def get_many(self, references):
        return list(self.bookings.find({"_id": {"$in": references}},
                                       {"status": 1, "cancellation": 1}))

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
