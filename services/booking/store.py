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
from datetime import datetime, timezone

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.claims import Claims
from services.common.contract import ACTIVE, CANCELLED, CHECKED_IN, PENDING
from services.common.daily_limit import DailyLimit
from services.common.lease import Leases
from services.common.outbox import Outbox
from services.common.retention import ERASED, Watermark, erase_windowed, erasure

OUTBOX_KINDS = ("created", "confirmed", "cancelled", "checked_in", "reminder", "restored")


ABANDONED_HOLD = "abandoned_hold"

# what the erasure of a booking past BOOKING_RETENTION_DAYS blanks (services/common/retention.py):
# who it was (names, birth date, foreigner number, e-mail and the keys made from them, phone,
# postal address, network address); status, procedure, slot, dates, attendance, the reason of
# a cancellation and the tokens' hashes stay, for the figures and the audit
BOOKING_ERASED = {"identity.family_name": None, "identity.given_names": None,
                  "identity.birth_date": None, "identity.foreigner_number": None,
                  "email": None, "email_key": None, "person_key": None, "phone": None,
                  "postal_address": None, "client": {}}
# the cancellation's evidence (typed names at the counter, an e-mail key from fraud), the
# request's fingerprint and the unconfirmed claims (a network address, a mail domain)
BOOKING_UNSET = ("cancellation.evidence", "idempotency", "unconfirmed_claims")
ATTEMPT_ERASED = {"email": None, "email_key": None, "foreigner_number": None, "file": None}


def _utc(ts):
    return datetime.fromtimestamp(ts, timezone.utc)


class BookingStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.outbox = Outbox(self.bookings, OUTBOX_KINDS)
        self.leases = Leases(db["leases"])
        # M7 evidence: attempts (their receipt through their own outbox) and per-day counters
        self.attempts = db["attempts"]
        self.attempt_days = DailyLimit(db["attempt_days"])
        self.attempt_outbox = Outbox(self.attempts, ("recorded",))
        # attestations issued, under their verification code (`_id`), to check them by it
        self.attestations = db["attestations"]
        self.pending = self.outbox.pending + self.attempt_outbox.pending
        # pending bookings counted per client address and mailbox domain (unconfirmed.py)
        self.claims = Claims(db["unconfirmed_claims"])
        # how far the erasure of bookings and attempts is complete (services/common/retention.py)
        self.retention_marks = Watermark(db["retention_marks"])

    def ensure_indexes(self):
        self.outbox.ensure_indexes()
        self.bookings.create_index([("slot.id", 1)])
        # one booking per (idempotency key, request): a redelivered create finds it (sparse:
        # bookings made without a key, walk-ins and markers have none)
        self.bookings.create_index([("idempotency", 1)], unique=True, sparse=True)
        # the up-front "one e-mail, one person" check and the expiry sweep read through these
        self.bookings.create_index([("email_key", 1), ("status", 1)])
        # the up-front "one person, one booking per procedure" check (folded names and birth
        # date, or foreigner number)
        self.bookings.create_index([("person_key", 1), ("status", 1)])
        self.bookings.create_index([("identity.foreigner_number", 1), ("status", 1)])
        self.bookings.create_index([("status", 1), ("confirm_by_ts", 1)])
        # the counter's day view: one site, one day, by time
        self.bookings.create_index([("slot.site", 1), ("slot.start", 1)])
        self.attempt_outbox.ensure_indexes()
        self.attempt_days.ensure_indexes()
        self.attempts.create_index([("file", 1), ("at_ts", 1)])
        # one attempt per (idempotency key, request): a redelivered record_attempt finds it
        self.attempts.create_index([("idempotency", 1)], unique=True, sparse=True)
        self.attempts.create_index([("at_ts", 1)])  # the figures' period
        # the reminder pass: active bookings by appointment time
        self.bookings.create_index([("status", 1), ("slot.start", 1)])
        # domain figures read the recent bookings
        self.bookings.create_index([("created_at", 1)])
        # staff look an applicant's evidence up by foreigner number or e-mail (M7 waiver)
        self.attempts.create_index([("foreigner_number", 1), ("at_ts", 1)])
        self.attempts.create_index([("email_key", 1), ("at_ts", 1)])
        self.attestations.create_index([("file", 1), ("issued_ts", 1)])
        self.attestations.create_index([("issued_ts", 1)])  # their erasure
        self.bookings.create_index([("slot.start", 1)])  # their erasure, from the watermark

    def insert(self, booking):
        self.bookings.insert_one(booking)

    def get(self, reference):
        return self.bookings.find_one({"_id": reference, ABANDONED_HOLD: {"$ne": True}})

    def get_any(self, reference):
        """The booking or the marker under this reference, or None."""
        return self.bookings.find_one({"_id": reference})

    def fence(self, reference, now):
        """Leave a marker under a reference whose hold is given back without a booking, so
        that no booking can be stored under it any more; False if something is there already."""
        try:
            self.bookings.insert_one({"_id": reference, ABANDONED_HOLD: True, "at": now})
            return True
        except DuplicateKeyError:
            return False

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
            if not self.fence(hold_id, now):  # its booking was stored meanwhile: in use after all
                doc = self.bookings.find_one({"_id": hold_id}, {ABANDONED_HOLD: 1})
                if doc is not None and not doc.get(ABANDONED_HOLD):
                    in_use.append(hold_id)
        return in_use

    def claim_hold(self, hold_id, reference, now):
        """Write that `hold_id` is a booking's (an undone cancellation's new place): False when
        the slots sweeper judged it abandoned first (its marker holds the id; see above)."""
        try:
            self.bookings.insert_one({"_id": hold_id, "hold_of": reference, "at": now})
            return True
        except DuplicateKeyError:
            return False

    def drop_hold_claim(self, hold_id):
        self.bookings.delete_one({"_id": hold_id, "hold_of": {"$exists": True}})

    def restore(self, reference, hold_id, restored, outbox_entry):
        """A name-mismatch cancellation undone: active again on its new hold, with the event
        that says so (its own outbox), in one update; `restored`: the list of undone
        cancellations, this one last; the unsent event of the cancellation dropped (its relay
        would give the new place back). None when it is no longer such a cancellation."""
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": CANCELLED, "cancellation.reason": "name_mismatch",
             ERASED: {"$exists": False}},
            {"$set": {"status": ACTIVE, "hold_id": hold_id, "place_released": False,
                      "restored": restored, Outbox.field("restored"): outbox_entry},
             "$unset": {"cancellation": "", Outbox.field("cancelled"): ""}},
            return_document=ReturnDocument.AFTER)

    def mark_attendance(self, reference, site, record):
        """Absent, excused or expected again: an active booking of that site only; the
        booking before (None when it is not one)."""
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE, "slot.site": site},
            {"$set": {"attendance": record}}, return_document=ReturnDocument.BEFORE)

    def mark(self, reference, **flags):
        self.bookings.update_one({"_id": reference}, {"$set": flags})

    def confirmed_on_email(self, email_key, other_than=None):
        """A confirmed (active) booking on this e-mail, other than `other_than`, or None (no
        e-mail key: None, not every booking without one)."""
        if not email_key:
            return None
        query = {"email_key": email_key, "status": ACTIVE}
        if other_than:
            query["_id"] = {"$ne": other_than}
        return self.bookings.find_one(query, {"_id": 1})

    def confirmed_for_person(self, procedure, person_key, foreigner_number=None, other_than=None):
        """A confirmed (active) booking for this procedure under this person (folded names and
        birth date, or foreigner number), other than `other_than`, or None."""
        # one equality query per key, not one {"$or": [...]}: the stand-in answers an $or by
        # filtering the whole collection in Python (about 20 ms at 1,000 bookings, growing
        # with the collection), an equality through its index (about 1 ms)
        same = [("person_key", person_key)] if person_key else []
        if foreigner_number:
            same.append(("identity.foreigner_number", foreigner_number))
        for field, value in same:
            query = {field: value, "procedure": procedure, "status": ACTIVE}
            if other_than:
                query["_id"] = {"$ne": other_than}
            held = self.bookings.find_one(query, {"_id": 1})
            if held is not None:
                return held
        return None

    def other_for_person(self, procedure, person_key, foreigner_number, reference):
        """Another active booking of this person and procedure than `reference`, or None: read
        after `reference` was written, so that of two written at once one sees the other."""
        return self.confirmed_for_person(procedure, person_key, foreigner_number, other_than=reference)

    def drop_unannounced(self, reference):
        """Remove a booking nothing was announced of (a desk booking that lost a race)."""
        self.bookings.delete_one({"_id": reference, "outbox": {}})

    def other_on_email(self, email_key, other_than):
        """A pending or active booking on this e-mail other than `other_than`, or None."""
        # find_one: the stand-in answers it in one cheap step, a find() cursor costs it twice
        return self.bookings.find_one({"email_key": email_key, "status": {"$in": [PENDING, ACTIVE]},
                                       "_id": {"$ne": other_than}}, {"_id": 1})

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
            # an erased booking (past its retention) has nobody left to tell: not cancelled
            {"_id": reference, "status": {"$in": list(statuses)}, ERASED: {"$exists": False}},
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

    def reminder_candidates(self, start_from, start_until, limit):
        """Active bookings with an e-mail, not yet reminded, starting in [start_from, start_until)."""
        return list(self.bookings.find(
            {"status": ACTIVE, "slot.start": {"$gte": start_from, "$lt": start_until},
             "reminded": {"$exists": False}, "email": {"$ne": None}},
            {"slot": 1, "created_at": 1}).sort([("slot.start", 1)]).limit(limit))

    def mark_reminded(self, reference, record, outbox_entry):
        """Record the reminder and the `booking_reminder_due` to send, once: the booking after,
        or None when it was reminded already (another pass, another instance) or is no longer
        active."""
        return self.bookings.find_one_and_update(
            {"_id": reference, "status": ACTIVE, "reminded": {"$exists": False}},
            {"$set": {"reminded": record, Outbox.field("reminder"): outbox_entry}},
            return_document=ReturnDocument.AFTER,
        )

    def for_site_between(self, site, start, end, limit=2000):
        """A site's bookings and walk-ins with a start in [start, end), by time."""
        return list(self.bookings.find(
            {"slot.site": site, "slot.start": {"$gte": start, "$lt": end}},
            {"token_hash": 0, "token_salt": 0, "client": 0},
        ).sort([("slot.start", 1), ("_id", 1)]).limit(limit))

    # -- M7: evidence of failed attempts -------------------------------------------------------

    def insert_attempt(self, attempt):
        self.attempts.insert_one(attempt)

    def get_attempt(self, reference):
        return self.attempts.find_one({"_id": reference})

    def attempts_in(self, file, limit=500):
        """The attempts of a file, oldest first; none for no file (erased attempts have None:
        a query on it would find every erased attempt of everyone)."""
        if not file:
            return []
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

    def insert_attestation(self, issued):
        try:
            self.attestations.insert_one(issued)
        except DuplicateKeyError:  # the same signature again: the same attestation
            pass

    def last_attestation(self, file):
        if not file:
            return None
        found = list(self.attestations.find({"file": file}).sort([("issued_ts", -1)]).limit(1))
        return found[0] if found else None

    def get_attestation(self, code):
        return self.attestations.find_one({"_id": code})

    def created_since(self, since, fields, limit=200000):
        """Recent bookings (markers left out), with only `fields`: the domain figures."""
        return list(self.bookings.find({"created_at": {"$gte": since}}, fields).limit(limit))

    def attempts_since(self, since_ts, limit=200000):
        """Recorded attempts since then, their procedure only: the domain figures."""
        return list(self.attempts.find({"at_ts": {"$gte": since_ts}}, {"procedure": 1})
                    .limit(limit))

    # -- retention (services/common/retention.py) ----------------------------------------------

    def erase_bookings(self, before, now_ts, limit):
        """Erase who made the bookings whose appointment started before `before` (a datetime),
        at most `limit`; those with an event still to announce wait for it. How many."""
        # every status at once, through the slot.start index from the watermark (markers of
        # abandoned holds have no slot); the stand-in scans the collection for each query, so
        # one query rather than one per status. Guarded by the status as read: a cancellation
        # or an undo between the read and the write (an event to announce) keeps the booking
        # for the next pass
        return erase_windowed(self.bookings, self.retention_marks, "bookings",
                              [({}, "slot.start")],
                              before.timestamp(), erasure(BOOKING_ERASED, now_ts, BOOKING_UNSET),
                              limit, as_value=_utc, guard="status")

    def erase_attempts(self, before_ts, now_ts, limit):
        """Erase who made the attempts recorded before `before_ts` (their receipt sent)."""
        return erase_windowed(self.attempts, self.retention_marks, "attempts", [({}, "at_ts")],
                              before_ts, erasure(ATTEMPT_ERASED, now_ts), limit)

    def delete_attestations(self, before_ts, limit):
        """Attestations issued before `before_ts`: their record (the signed copy, with who it
        is about) deleted; the applicant's own copy can still be checked, its attempts erased."""
        ids = [doc["_id"] for doc in self.attestations.find(
            {"issued_ts": {"$lt": before_ts}}, {"_id": 1}).limit(limit)]
        if not ids:
            return 0
        return self.attestations.delete_many({"_id": {"$in": ids}}).deleted_count

    def ping(self):
        self.bookings.find_one({}, {"_id": 1})
