"""The fraud database: its own index of bookings (built from events), decisions with their
evidence, the review queue, the allow-list, processed and failed events.

Times are epoch seconds (numbers): window queries stay portable between MongoDB and the
embedded stand-in.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

ACTIVE, CANCELLED = "active", "cancelled"


class FraudStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.decisions = db["decisions"]
        self.reviews = db["reviews"]
        self.allowed = db["allow_list"]
        self.events = db["events"]
        self.failures = db["failures"]

    def ensure_indexes(self):
        self.bookings.create_index([("email_key", 1), ("status", 1)])
        self.bookings.create_index([("client_ip", 1), ("created_ts", 1)])
        self.bookings.create_index([("user_agent", 1), ("created_ts", 1)])
        self.decisions.create_index([("reference", 1)])
        self.decisions.create_index([("at_ts", 1)])
        self.reviews.create_index([("state", 1), ("at_ts", 1)])

    # -- events ------------------------------------------------------------------------------

    def begin(self, event_id, now_ts, lease_seconds):
        """Claim an event for handling: "go", "done" (handled before) or "busy" (in hand).

        A copy that finds the event in hand elsewhere may be dropped: the copy being handled
        is not acked until it is done, and comes back if its process dies.
        """
        try:
            self.events.insert_one({"_id": event_id, "state": "processing",
                                    "lease_ts": now_ts + lease_seconds})
            return "go"
        except DuplicateKeyError:
            pass
        taken = self.events.find_one_and_update(
            {"_id": event_id, "state": "processing", "lease_ts": {"$lt": now_ts}},
            {"$set": {"lease_ts": now_ts + lease_seconds}})
        if taken is not None:
            return "go"
        doc = self.events.find_one({"_id": event_id}, {"state": 1})
        return "done" if doc and doc.get("state") == "done" else "busy"

    def finish(self, event_id, now_ts):
        self.events.update_one({"_id": event_id}, {"$set": {"state": "done", "at_ts": now_ts}})

    def release(self, event_id):
        """Give up a claim after an error, so that the requeued copy can try again."""
        self.events.delete_one({"_id": event_id, "state": "processing"})

    def record_failure(self, event_id, event, error, now_ts):
        """Count one more failed try of this event; the number of tries so far."""
        doc = self.failures.find_one_and_update(
            {"_id": event_id},
            {"$inc": {"attempts": 1}, "$set": {"last_error": error, "event": event,
                                               "state": "retrying", "at_ts": now_ts}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return doc["attempts"]

    def park(self, event_id):
        self.failures.update_one({"_id": event_id}, {"$set": {"state": "parked"}})

    def parked(self, limit):
        return list(self.failures.find({"state": "parked"}).limit(limit))

    def unpark(self, event_id):
        return self.failures.find_one_and_update(
            {"_id": event_id, "state": "parked"}, {"$set": {"state": "replayed", "attempts": 0}})

    # -- the index ---------------------------------------------------------------------------

    def add_booking(self, doc):
        try:
            self.bookings.insert_one(doc)
        except DuplicateKeyError:
            pass

    def set_status(self, reference, status):
        self.bookings.update_one({"_id": reference}, {"$set": {"status": status}})

    def active_with_email(self, email_key):
        return list(self.bookings.find({"email_key": email_key, "status": ACTIVE}))

    def recent_from(self, field, value, since_ts, limit):
        return list(self.bookings.find(
            {field: value, "created_ts": {"$gte": since_ts}},
            {"identity_key": 1, "status": 1, "email_key": 1, "client_ip": 1,
             "seconds_after_publication": 1}).limit(limit))

    # -- decisions and reviews ---------------------------------------------------------------

    def add_decision(self, decision):
        """Store a decision; the stored one (an earlier identical decision wins)."""
        try:
            self.decisions.insert_one(decision)
            return decision
        except DuplicateKeyError:
            return self.decisions.find_one({"_id": decision["_id"]})

    def mark_announced(self, decision_id):
        self.decisions.update_one({"_id": decision_id}, {"$set": {"announced": True}})

    def decisions_for(self, reference):
        return list(self.decisions.find({"reference": reference}))

    def decisions_between(self, since_ts, until_ts):
        return list(self.decisions.find({"at_ts": {"$gte": since_ts, "$lt": until_ts}},
                                        {"rule": 1, "action": 1}))

    def open_review(self, review):
        try:
            self.reviews.insert_one(review)
        except DuplicateKeyError:
            pass

    def review_queue(self, state, limit):
        return list(self.reviews.find({"state": state}).limit(limit))

    def close_review(self, reference, state, by, note, now_ts):
        return self.reviews.find_one_and_update(
            {"_id": reference, "state": "open"},
            {"$set": {"state": state, "decided_by": by, "note": note, "decided_ts": now_ts}},
            return_document=ReturnDocument.AFTER)

    # -- allow-list --------------------------------------------------------------------------

    def allow(self, entry):
        self.allowed.replace_one({"_id": entry["_id"]}, entry, upsert=True)

    def allow_entries(self):
        return list(self.allowed.find())

    def is_allowed(self, keys):
        return self.allowed.find_one({"_id": {"$in": keys}}, {"_id": 1}) is not None
