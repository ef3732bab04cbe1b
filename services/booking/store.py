"""The booking database.

The booking document carries its own outbox (services/common/outbox.py): the write that
creates, cancels or checks in a booking also records the event to announce, in one
single-document write, so a crash between the write and the dispatch delays the event but
never loses it. Flags and sub-documents only (no array operators, no bare datetimes in $set,
which the embedded stand-in mishandles): the same code runs on MongoDB and on the stand-in.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.booking.rules import ACTIVE, CANCELLED
from services.common.lease import Leases
from services.common.outbox import Outbox

OUTBOX_KINDS = ("created", "cancelled")


class BookingStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.outbox = Outbox(self.bookings, OUTBOX_KINDS)
        self.leases = Leases(db["leases"])
        # M7 evidence: attempts (their receipt through their own outbox) and per-day counters
        self.attempts = db["attempts"]
        self.attempt_days = db["attempt_days"]
        self.attempt_outbox = Outbox(self.attempts, ("recorded",))
        self.pending = self.outbox.pending + self.attempt_outbox.pending

    def ensure_indexes(self):
        self.outbox.ensure_indexes()
        self.bookings.create_index([("slot.id", 1)])
        self.attempt_outbox.ensure_indexes()
        self.attempts.create_index([("file", 1), ("at_ts", 1)])

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

    # -- M7: evidence of failed attempts -------------------------------------------------------

    def count_attempt(self, day_key, limit):
        """Count one more attempt for this applicant-day; False once `limit` are counted.

        One conditional increment (no count over the attempts): concurrent requests cannot
        pass the limit together.
        """
        for _ in range(2):
            if self.attempt_days.find_one_and_update(
                    {"_id": day_key, "n": {"$lt": limit}}, {"$inc": {"n": 1}}) is not None:
                return True
            if self.attempt_days.find_one({"_id": day_key}, {"_id": 1}) is not None:
                return False
            try:
                self.attempt_days.insert_one({"_id": day_key, "n": 1})
                return True
            except DuplicateKeyError:
                continue  # created meanwhile: count on it
        return False

    def insert_attempt(self, attempt):
        self.attempts.insert_one(attempt)

    def get_attempt(self, reference):
        return self.attempts.find_one({"_id": reference})

    def attempts_in(self, file, limit=500):
        return list(self.attempts.find({"file": file}).sort([("at_ts", 1)]).limit(limit))

    def attempts_by_reference(self, references):
        return {a["_id"]: a for a in self.attempts.find({"_id": {"$in": references}})}
