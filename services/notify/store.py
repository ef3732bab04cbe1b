"""The notify database: the outbox, one record per message, keyed by its idempotency key.

Scheduling fields are epoch seconds (numbers), updated with plain $set: portable between
MongoDB and the embedded stand-in, which mishandles datetimes given to $set.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.notify.rules import FAILED, PENDING, SENDING, SENT


class OutboxStore:
    def __init__(self, db):
        self.messages = db["messages"]

    def ensure_indexes(self):
        self.messages.create_index([("state", 1), ("next_attempt_ts", 1)])
        self.messages.create_index([("reference", 1)])

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
        query = {"state": PENDING, "next_attempt_ts": {"$lte": now_ts}}
        if key is not None:
            query["_id"] = key
        return self.messages.find_one_and_update(
            query,
            {"$set": {"state": SENDING, "lease_until_ts": now_ts + lease_seconds},
             "$inc": {"attempts": 1}},
            sort=[("next_attempt_ts", 1)],
            return_document=ReturnDocument.AFTER,
        )

    def mark_sent(self, key, now_ts):
        self.messages.update_one({"_id": key, "state": SENDING},
                                 {"$set": {"state": SENT, "sent_ts": now_ts, "last_error": None}})

    def retry_later(self, key, next_ts, error):
        self.messages.update_one({"_id": key, "state": SENDING},
                                 {"$set": {"state": PENDING, "next_attempt_ts": next_ts,
                                           "last_error": error}})

    def park(self, key, error, now_ts):
        self.messages.update_one({"_id": key, "state": SENDING},
                                 {"$set": {"state": FAILED, "last_error": error, "failed_ts": now_ts}})

    def recover_abandoned(self, now_ts):
        """Messages whose sender died mid-send (lease over) go back to pending."""
        return self.messages.update_many(
            {"state": SENDING, "lease_until_ts": {"$lt": now_ts}},
            {"$set": {"state": PENDING, "next_attempt_ts": now_ts}}).modified_count

    def wake_waiting(self, now_ts):
        """The server is back: everything waiting out a backoff is due now."""
        return self.messages.update_many(
            {"state": PENDING, "next_attempt_ts": {"$gt": now_ts}},
            {"$set": {"next_attempt_ts": now_ts}}).modified_count

    def resend(self, key, now_ts):
        """A parked (or sent) message goes back to the queue with fresh attempts."""
        return self.messages.find_one_and_update(
            {"_id": key, "state": {"$in": [FAILED, SENT]}},
            {"$set": {"state": PENDING, "next_attempt_ts": now_ts, "attempts": 0}},
            return_document=ReturnDocument.AFTER)

    def counts(self):
        return {row["_id"]: row["n"] for row in self.messages.aggregate(
            [{"$group": {"_id": "$state", "n": {"$sum": 1}}}])}

    def failed(self, limit):
        return list(self.messages.find({"state": FAILED}).sort("failed_ts", -1).limit(limit))

    def get(self, key):
        return self.messages.find_one({"_id": key})
