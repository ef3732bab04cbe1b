"""The fraud database: its own index of bookings (built from events), decisions with their
evidence, the review queue, the allow-list, processed and failed events.

The rules ask "which bookings share this e-mail / address / user agent": each such group is
one document, read by its _id, its members a sub-document keyed by booking reference. That
is one indexed read per rule, whatever the size of the index (the embedded stand-in scans for
any query on another field). Times are epoch seconds: portable between MongoDB and the stand-in.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

ACTIVE, CANCELLED = "active", "cancelled"
MEMBER_FIELDS = ("identity_key", "created_ts", "status", "email_key", "client_ip",
                 "seconds_after_publication")


def group_ids(doc):
    ids = [f"email:{doc['email_key']}"]
    if doc.get("client_ip"):
        ids.append(f"ip:{doc['client_ip']}")
    if doc.get("user_agent"):
        ids.append(f"ua:{doc['user_agent']}")
    return ids


class FraudStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.groups = db["groups"]
        self.decisions = db["decisions"]
        self.reviews = db["reviews"]
        self.allowed = db["allow_list"]
        self.events = db["events"]
        self.failures = db["failures"]

    def ensure_indexes(self):
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
        """Index a booking and enter it in its e-mail, address and user-agent groups."""
        try:
            self.bookings.insert_one(doc)
        except DuplicateKeyError:
            pass
        member = {key: doc[key] for key in MEMBER_FIELDS}
        for group_id in group_ids(doc):
            self.groups.update_one({"_id": group_id}, {"$set": {f"members.{doc['_id']}": member}},
                                   upsert=True)

    def set_status(self, reference, status):
        doc = self.bookings.find_one_and_update({"_id": reference}, {"$set": {"status": status}})
        for group_id in group_ids(doc) if doc else ():
            self.groups.update_one({"_id": group_id}, {"$set": {f"members.{reference}.status": status}})

    def group(self, group_id, since_ts=None, keep=None):
        """Members of a group as booking-like dicts, those since `since_ts` if given.

        Groups of a common user agent grow without end: past `keep` members, those older
        than `since_ts` are dropped from the document.
        """
        doc = self.groups.find_one({"_id": group_id}) or {}
        members = [dict(member, _id=ref) for ref, member in (doc.get("members") or {}).items()]
        if since_ts is None:
            return members
        recent = [m for m in members if m["created_ts"] >= since_ts]
        if keep is not None and len(members) > keep and len(recent) < len(members):
            old = {f"members.{m['_id']}": "" for m in members if m["created_ts"] < since_ts}
            self.groups.update_one({"_id": group_id}, {"$unset": old})
        return recent

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

    def allowed_among(self, keys):
        """Which of these allow-list keys are present (one query for a whole group)."""
        return {doc["_id"] for doc in self.allowed.find({"_id": {"$in": list(keys)}}, {"_id": 1})}
