"""The notify database: the outbox, one record per message, keyed by its idempotency key.

Scheduling fields are epoch seconds (numbers), updated with plain $set: portable between
MongoDB and the embedded stand-in, which mishandles datetimes given to $set.
"""
import uuid
from datetime import datetime, timezone

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.daily_limit import DailyLimit
from services.common.delivery import count_states
from services.common.inbox import Inbox
from services.common.lease import Leases
from services.common.retention import ERASED, Watermark, erase_windowed, erasure
from services.notify.rules import CAPPED, DONE, IN_PROGRESS, PARKED, PENDING, RETRYING, WAITING


# what the erasure of a message NOTIFY_RETENTION_DAYS after it was made blanks
# (services/common/retention.py): its recipient, subject, body, calendar, its last error (an
# SMTP server's answer names the recipient's address) and, for a message that could not be
# composed, the event it kept; its kind, state, reference, event type, attempts and dates
# stay for the figures and the audit
MESSAGE_ERASED = {"to": None, "subject": None, "text": None, "html": None, "ics": None,
                  "event": None, "last_error": None}
# only messages finished with: sent, parked for good, capped (a waiting one may still be sent)
ERASABLE_STATES = (DONE, PARKED, CAPPED)


class OutboxStore:
    def __init__(self, db):
        self.messages = db["messages"]
        self.inbox = Inbox(db["inbox"])
        self.pending = self.inbox.pending
        # messages counted per normalised address and Paris day (MAIL_PER_ADDRESS_PER_DAY)
        self.daily = DailyLimit(db["mail_days"])
        self.leases = Leases(db["leases"])
        self.retention_marks = Watermark(db["retention_marks"])  # services/common/retention.py

    def ensure_indexes(self):
        self.inbox.ensure_indexes()
        self.daily.ensure_indexes()
        self.messages.create_index([("state", 1), ("next_attempt_ts", 1)])
        self.messages.create_index([("reference", 1)])
        self.messages.create_index([("claim", 1)])
        self.messages.create_index([("state", 1), ("created_at", 1)])  # their erasure

    def add(self, record):
        """Store a new message; False if this key exists already (a duplicate event)."""
        try:
            self.messages.insert_one(record)
            return True
        except DuplicateKeyError:
            return False

    def claim(self, now_ts, lease_seconds, key=None):
        """Atomically take one due pending message (or the given one) for sending.

        Only one caller can move a message from pending to sending, which is what keeps two
        workers or two notify processes from sending the same message.
        """
        query = {"state": {"$in": WAITING}, "next_attempt_ts": {"$lte": now_ts}}
        if key is not None:
            query["_id"] = key
        return self.messages.find_one_and_update(
            query,
            {"$set": {"state": IN_PROGRESS, "lease_until_ts": now_ts + lease_seconds},
             "$inc": {"attempts": 1}},
            # no sort: every due message is due, and a sorted claim costs the stand-in a scan
            return_document=ReturnDocument.AFTER,
        )

    def claim_batch(self, now_ts, lease_seconds, limit):
        """Take up to `limit` due messages in three round trips instead of `limit`.

        The update only moves messages still pending, each atomically, and tags them with
        this call's token: what is read back is exactly what this caller won.
        """
        ids = [doc["_id"] for doc in self.messages.find(
            {"state": {"$in": WAITING}, "next_attempt_ts": {"$lte": now_ts}}, {"_id": 1}).limit(limit)]
        if not ids:
            return []
        token = uuid.uuid4().hex
        self.messages.update_many(
            {"_id": {"$in": ids}, "state": {"$in": WAITING}},
            {"$set": {"state": IN_PROGRESS, "lease_until_ts": now_ts + lease_seconds, "claim": token},
             "$inc": {"attempts": 1}})
        return list(self.messages.find({"claim": token}))

    def mark_sent(self, key, now_ts):
        self.messages.update_one({"_id": key, "state": IN_PROGRESS},
                                 {"$set": {"state": DONE, "sent_ts": now_ts, "last_error": None}})

    def retry_later(self, key, next_ts, error):
        self.messages.update_one({"_id": key, "state": IN_PROGRESS},
                                 {"$set": {"state": RETRYING, "next_attempt_ts": next_ts,
                                           "last_error": error}})

    def park(self, key, error, now_ts):
        self.messages.update_one({"_id": key, "state": IN_PROGRESS},
                                 {"$set": {"state": PARKED, "last_error": error, "failed_ts": now_ts}})

    def defer_due(self, now_ts, error, max_attempts, delay_after):
        """Record one failed attempt for every due message at once (the server is unreachable).

        One update per attempt count, so each message still follows its own backoff
        (`delay_after(attempts)`), and those out of attempts are parked. Returns
        (deferred, parked).
        """
        deferred = parked = 0
        for attempts in range(max_attempts):
            due = {"state": {"$in": WAITING}, "next_attempt_ts": {"$lte": now_ts}, "attempts": attempts}
            if attempts + 1 >= max_attempts:
                parked += self.messages.update_many(due, {
                    "$set": {"state": PARKED, "last_error": error, "failed_ts": now_ts},
                    "$inc": {"attempts": 1}}).modified_count
            else:
                deferred += self.messages.update_many(due, {
                    "$set": {"state": RETRYING, "next_attempt_ts": now_ts + delay_after(attempts + 1),
                             "last_error": error},
                    "$inc": {"attempts": 1}}).modified_count
        return deferred, parked

    def recover_abandoned(self, now_ts):
        """Messages whose sender died mid-send (lease over) go back to pending."""
        return self.messages.update_many(
            {"state": IN_PROGRESS, "lease_until_ts": {"$lt": now_ts}},
            {"$set": {"state": RETRYING, "next_attempt_ts": now_ts}}).modified_count

    def wake_waiting(self, now_ts):
        """The server is back: everything waiting out a backoff is due now."""
        return self.messages.update_many(
            {"state": RETRYING, "next_attempt_ts": {"$gt": now_ts}},
            {"$set": {"next_attempt_ts": now_ts}}).modified_count

    def resend(self, key, now_ts, request_key=None):
        """A parked, sent or capped message goes back to the queue with fresh attempts (staff
        decide: a capped one is not counted again). `request_key`: the staff request's key,
        recorded in the same update; a request already recorded changes nothing (None)."""
        # an erased message has no recipient left: it cannot be sent again
        query = {"_id": key, "state": {"$in": [PARKED, DONE, CAPPED]}, ERASED: {"$exists": False}}
        update = {"$set": {"state": PENDING, "next_attempt_ts": now_ts, "attempts": 0}}
        if request_key:  # a field per request (keys are letters, digits, '-', '_'): no array semantics
            query[f"resent_by.{request_key}"] = {"$exists": False}
            update["$set"][f"resent_by.{request_key}"] = now_ts
        return self.messages.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)

    def erase_before(self, before_ts, now_ts, limit):
        """Erase the recipient and body of the messages made before `before_ts` and finished
        with, at most `limit`: how many. A message still waiting to be sent in that window
        keeps the watermark where it is (it becomes erasable once sent or parked)."""
        def blocked(window):
            return self.messages.find_one({"state": {"$in": WAITING + [IN_PROGRESS]},
                                           "created_at": window}, {"_id": 1})
        return erase_windowed(self.messages, self.retention_marks, "messages",
                              [({"state": state}, "created_at") for state in ERASABLE_STATES],
                              before_ts, erasure(MESSAGE_ERASED, now_ts), limit,
                              as_value=lambda ts: datetime.fromtimestamp(ts, timezone.utc),
                              blocked=blocked)

    def counts(self):
        return count_states(self.messages)

    def failed(self, limit):
        return list(self.messages.find({"state": PARKED}).sort("failed_ts", -1).limit(limit))

    def get(self, key):
        return self.messages.find_one({"_id": key})
