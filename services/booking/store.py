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

from services.booking.rules import ACTIVE, CANCELLED, CHECKED_IN, PENDING
from services.common.lease import Leases
from services.common.outbox import Outbox

OUTBOX_KINDS = ("created", "confirmed", "cancelled", "checked_in")


ABANDONED_HOLD = "abandoned_hold"


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
        # the up-front "one e-mail, one person" check and the expiry sweep read through these
        self.bookings.create_index([("email_key", 1), ("status", 1)])
        self.bookings.create_index([("status", 1), ("confirm_by_ts", 1)])
        # the counter's day view: one site, one day, by time
        self.bookings.create_index([("slot.site", 1), ("slot.start", 1)])
        self.attempt_outbox.ensure_indexes()
        self.attempts.create_index([("file", 1), ("at_ts", 1)])
        # domain figures read the recent bookings
        self.bookings.create_index([("created_at", 1)])
        # staff look an applicant's evidence up by foreigner number or e-mail (M7 waiver)
        self.attempts.create_index([("foreigner_number", 1), ("at_ts", 1)])
        self.attempts.create_index([("email_key", 1), ("at_ts", 1)])

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

    def confirmed_on_email(self, email_key, other_than=None):
        """A confirmed (active) booking on this e-mail, other than `other_than`, or None."""
        query = {"email_key": email_key, "status": ACTIVE}
        if other_than:
            query["_id"] = {"$ne": other_than}
        return self.bookings.find_one(query, {"_id": 1})

    def pending_on_email(self, email_key, other_than):
        return [doc["_id"] for doc in self.bookings.find(
            {"email_key": email_key, "status": PENDING, "_id": {"$ne": other_than}}, {"_id": 1})]

    def confirm(self, reference, now_ts, outbox_entry):
        """Pending -> active, with the `booking_confirmed` to send; the booking after, or None
        if it was not pending (confirmed already, cancelled, expired)."""
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": PENDING},
            {"$set": {"status": ACTIVE, "confirmed_ts": now_ts,
                      Outbox.field("confirmed"): outbox_entry}},
            return_document=ReturnDocument.AFTER,
        )

    def unconfirmed_due(self, now_ts, limit):
        """References of pending bookings whose time to confirm has run out."""
        return [doc["_id"] for doc in self.bookings.find(
            {"status": PENDING, "confirm_by_ts": {"$lt": now_ts}}, {"_id": 1}).limit(limit)]

    def cancel(self, reference, cancellation, outbox_entry, statuses=(PENDING, ACTIVE)):
        """Move a pending or active booking (or only those `statuses`) to cancelled, recording
        its cancellation and the event to send.

        The booking after, or None if it was not in one of those statuses (cancelled already,
        checked in, or, for an expiry, confirmed meanwhile).
        """
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": {"$in": list(statuses)}},
            {"$set": {"status": CANCELLED, "cancellation": cancellation,
                      Outbox.field("cancelled"): outbox_entry, "place_released": False}},
            return_document=ReturnDocument.AFTER,
        )

    def for_slot(self, slot_id, status=ACTIVE):
        return list(self.bookings.find({"slot.id": slot_id, "status": status}))

    def check_in(self, reference, record, outbox_entry):
        """Move an active booking to checked in, with the event to send (its own outbox).

        The booking after, or None if it was not active.
        """
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE},
            {"$set": {"status": CHECKED_IN, "checked_in": record,
                      Outbox.field("checked_in"): outbox_entry}},
            return_document=ReturnDocument.AFTER,
        )

    def for_site_between(self, site, start, end, limit=2000):
        """A site's bookings and walk-ins with a start in [start, end), by time."""
        return list(self.bookings.find(
            {"slot.site": site, "slot.start": {"$gte": start, "$lt": end}},
            {"token_hash": 0, "token_salt": 0, "client": 0},
        ).sort([("slot.start", 1), ("_id", 1)]).limit(limit))

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

    def attempts_of(self, foreigner_number=None, email_key=None, email=None, limit=500):
        """Every recorded attempt of an applicant, by foreigner number or e-mail, oldest first
        (`email` as given too: attempts recorded before `email_key` was stored)."""
        if foreigner_number:
            query = {"foreigner_number": foreigner_number}
        else:
            query = {"$or": [{"email_key": email_key}, {"email": email}]}
        return list(self.attempts.find(query).sort([("at_ts", 1)]).limit(limit))

    def attempts_by_reference(self, references):
        return {a["_id"]: a for a in self.attempts.find({"_id": {"$in": references}})}

    def created_since(self, since, fields, limit=200000):
        """Recent bookings (markers left out), with only `fields`: the domain figures."""
        return list(self.bookings.find({"created_at": {"$gte": since}}, fields).limit(limit))

    def ping(self):
        self.bookings.find_one({}, {"_id": 1})
