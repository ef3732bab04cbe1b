"""The booking database.

The booking document is its own outbox: the write that creates (or cancels) a booking also
records the event to announce (`created_event_sent: False`), in one single-document write. The
relay finds what was not marked sent and sends it again, so a crash between the write and the
dispatch delays the event but never loses it. Flags and sub-documents only (no array
operators, no bare datetimes in $set, which the embedded stand-in mishandles): the same code runs
on MongoDB and on the stand-in.
"""
from pymongo import ReturnDocument

from services.booking.rules import ACTIVE, CANCELLED, CHECKED_IN
from services.common.pending import PendingMarks


class BookingStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        # "booking_created was dispatched": a lost mark only makes the relay send it again
        self.created_sent = PendingMarks(self.bookings, {"created_event_sent": True})
        self.pending = [self.created_sent]

    def ensure_indexes(self):
        self.bookings.create_index([("created_event_sent", 1), ("created_at", 1)])
        self.bookings.create_index([("cancel_event_sent", 1), ("cancellation.at", 1)])
        self.bookings.create_index([("slot.id", 1)])
        self.bookings.create_index([("checked_in_event_sent", 1), ("checked_in.at", 1)])
        # the counter's day view: one site, one day, by time
        self.bookings.create_index([("slot.site", 1), ("slot.start", 1)])

    def insert(self, booking):
        self.bookings.insert_one(booking)

    def get(self, reference):
        return self.bookings.find_one({"_id": reference})

    def get_many(self, references):
        return list(self.bookings.find({"_id": {"$in": references}},
                                       {"status": 1, "cancellation": 1}))

    def mark(self, reference, **flags):
        self.bookings.update_one({"_id": reference}, {"$set": flags})

    def cancel(self, reference, cancellation):
        """Move an active booking to cancelled, recording its cancellation and the event to send.

        The booking after, or None if it was not active (cancelled already, or checked in).
        """
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE},
            {"$set": {"status": CANCELLED, "cancellation": cancellation,
                      "cancel_event_sent": False, "place_released": False}},
            return_document=ReturnDocument.AFTER,
        )

    def unsent_created(self, before, limit=100):
        return list(self.bookings.find(
            {"created_event_sent": False, "created_at": {"$lte": before}}).limit(limit))

    def unsent_cancelled(self, before, limit=100):
        return list(self.bookings.find(
            {"cancel_event_sent": False, "cancellation.at": {"$lte": before}}).limit(limit))

    def for_slot(self, slot_id, status=ACTIVE):
        return list(self.bookings.find({"slot.id": slot_id, "status": status}))

    def check_in(self, reference, record):
        """Move an active booking to checked in, with the event to send (its own outbox).

        The booking after, or None if it was not active.
        """
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE},
            {"$set": {"status": CHECKED_IN, "checked_in": record, "checked_in_event_sent": False}},
            return_document=ReturnDocument.AFTER,
        )

    def unsent_checked_in(self, before, limit=100):
        return list(self.bookings.find(
            {"checked_in_event_sent": False, "checked_in.at": {"$lte": before}}).limit(limit))

    def for_site_between(self, site, start, end, limit=2000):
        """A site's bookings and walk-ins with a start in [start, end), by time."""
        return list(self.bookings.find(
            {"slot.site": site, "slot.start": {"$gte": start, "$lt": end}},
            {"token_hash": 0, "token_salt": 0, "client": 0},
        ).sort([("slot.start", 1), ("_id", 1)]).limit(limit))
