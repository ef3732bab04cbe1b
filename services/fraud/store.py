"""The fraud database: its own index of bookings (built from events), decisions with their
evidence (each with its `fraud_detected` in an outbox), the review queue, the allow-list, and
the inbox of events received (services/common/inbox.py).

The rules ask "which bookings share this e-mail / address / user agent": each such group is
one document, read by its _id, its members a sub-document keyed by booking reference. One
indexed read answers every rule, whatever the size of the index (the embedded stand-in scans
for any query on another field). Times are epoch seconds: portable between MongoDB and the
stand-in.

Address and user-agent groups only matter within a time window, and a popular user agent is
shared by thousands: they are cut into buckets one window long (a window spans at most two)
and capped, so that no document grows without end and each event reads and rewrites little.
"""
import time

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.inbox import Inbox
from services.common.lease import Leases
from services.common.outbox import Outbox
from services.common.retention import erase_batch, erasure
from services.fraud.rules import ACTIVE, CANCELLED

DUPLICATE_KEY = 11000
# cancellations for evidence about the booking itself (slot_grabbing is never one: network
# evidence and decoys only open review cases)
BOOKING_TIED = ("multiple_bookings_same_email", "multiple_bookings_same_person", "name_not_exact")
MEMBER_FIELDS = ("identity_key", "created_ts", "status", "email_key", "client_ip",
                 "seconds_after_publication", "decoy", "slot_id", "procedure")
AGENT_MEMBER_FIELDS = ("identity_key", "created_ts")  # the user-agent rule counts identities only
# bucketed groups: one window of time each, never joined again once it is past
BUCKETED = ("ip", "ua")
# review states once staff decided (an open review waits for them, however old)
DECIDED_REVIEWS = ("cancelled", "cleared")
# who closed a review whose booking was cancelled before staff decided it
CANCELLED_ELSEWHERE = "booking"


def bucket(ts, window):
    return int(ts // window)


def group_ids(entry, window):
    """The groups a booking joins: its e-mail, its person and its foreigner number (for good),
    its address and its user agent (in the bucket of its creation time)."""
    ids = [f"email:{entry['email_key']}", f"person:{entry['identity_key']}"]
    if entry.get("foreigner_number"):
        ids.append(f"number:{entry['foreigner_number']}")
    at = bucket(entry["created_ts"], window)
    if entry.get("client_ip"):
        ids.append(f"ip:{entry['client_ip']}:{at}")
    if entry.get("user_agent"):
        ids.append(f"ua:{entry['user_agent']}:{at}")
    return ids


def window_group_ids(kind, value, since_ts, until_ts, window):
    """The bucketed groups of one address or user agent that cover [since_ts, until_ts]."""
    return [f"{kind}:{value}:{b}" for b in range(bucket(since_ts, window), bucket(until_ts, window) + 1)]


def superseded_by(status, at_ts, field="status_ts"):
    """The stored states that a change to `status` at `at_ts` replaces (rules.supersedes), as
    queries on `field`, the stored change's time: none (written by a confirmation), or older
    (for a cancellation, as old: at one instant it wins). Two queries, tried in turn, and no
    $or: the MongoDB stand-in reads `{_id: x, $or: [a, b]}` as `_id = x AND a OR b`, which
    matches other bookings' entries."""
    return [{field: {"$exists": False}}, {field: {"$lte" if status == CANCELLED else "$lt": at_ts}}]


def group_kind(group_id):
    return group_id.split(":", 1)[0]


class FraudStore:
    def __init__(self, db):
        self.bookings = db["bookings"]
        self.groups = db["groups"]
        self.decisions = db["decisions"]
        self.reviews = db["reviews"]
        self.cases = db["cases"]
        self.allowed = db["allow_list"]
        self.inbox = Inbox(db["inbox"])
        self.outbox = Outbox(self.decisions, ["detected"])
        self.leases = Leases(db["leases"])
        self.pending = self.inbox.pending + self.outbox.pending

    def ensure_indexes(self):
        self.inbox.ensure_indexes()
        self.outbox.ensure_indexes()
        self.decisions.create_index([("reference", 1)])
        self.decisions.create_index([("at_ts", 1)])
        self.reviews.create_index([("state", 1), ("at_ts", 1)])
        self.reviews.create_index([("case_id", 1)])
        self.cases.create_index([("state", 1), ("at_ts", 1)])
        self.bookings.create_index([("created_ts", 1)])  # their erasure

    # -- the index ---------------------------------------------------------------------------

    def add_booking(self, entry, caps):
        """Index a booking (entry["groups"] lists its groups) and enter it in each group.

        caps: the most members a bucketed group keeps, by kind ("ip", "ua"); past it, later
        bookings are not entered (the rules only need to know that the count is high).
        True when the booking was not indexed before. The entry's `status` (and `status_ts`)
        are then what the index holds: a cancellation or restoration handled before this
        confirmation (rules.supersedes) is kept, never overwritten.

        Groups first, then the entry: a status change handled meanwhile either finds the
        members and sets them, or is found here in the entry and set on them.
        """
        ref = entry["_id"]
        writes = []
        for group_id in entry["groups"]:
            kind = group_kind(group_id)
            fields = AGENT_MEMBER_FIELDS if kind == "ua" else MEMBER_FIELDS + ("status_ts",)
            member = {f"members.{ref}": {key: entry[key] for key in fields if key in entry}}
            # a member is entered once: a copy of the event handled again must not write its
            # status over the one a later cancellation set. A group that has this booking
            # already (or is full) matches nothing: the upsert's insert then collides on _id,
            # which is the "no" we want
            query = {"_id": group_id, f"members.{ref}": {"$exists": False}}
            if kind not in caps:
                writes.append(UpdateOne(query, {"$set": member}, upsert=True))
            else:
                writes.append(UpdateOne(dict(query, size={"$lt": caps[kind]}),
                                        {"$set": member, "$inc": {"size": 1}}, upsert=True))
        try:
            self.groups.bulk_write(writes, ordered=False)  # one round trip for all groups
        except BulkWriteError as exc:
            if any(error["code"] != DUPLICATE_KEY for error in exc.details["writeErrors"]):
                raise
        try:
            self.bookings.insert_one(entry)
            return True
        except DuplicateKeyError:
            pass
        # indexed before: a copy handled again, or a status change handled first (its entry
        # has only the status). The booking's facts are written, its status left as it is
        facts = {key: value for key, value in entry.items() if key not in ("_id", "status", "status_ts")}
        stored = self.bookings.find_one_and_update({"_id": ref}, {"$set": facts},
                                                   return_document=ReturnDocument.AFTER)
        if stored is None:  # erased in between (retention): indexed as this event says
            self.bookings.insert_one(entry)
            return True
        written = (entry["status"], entry.get("status_ts"))
        entry.pop("status_ts", None)
        entry.update({key: stored[key] for key in ("status", "status_ts") if key in stored})
        if (entry["status"], entry.get("status_ts")) != written and "status_ts" in entry:
            self._set_members(ref, entry["groups"], entry["status"], entry["status_ts"])
        return False

    def set_status(self, reference, status, at_ts=None, create=False):
        """`at_ts`: when the change happened (an event's occurred_at; now when None). An older
        change arriving after a newer one (a cancellation redelivered after its undo) is
        ignored: the index keeps the booking's latest state (rules.supersedes).

        create: when the booking is not indexed yet (its confirmation not handled: the events
        come on separate queues), its entry is written with this status alone, and the
        confirmation, handled later, keeps it. `status` when the index now says it because of
        this change (a cancellation's copy too), None when it changed nothing (not indexed, or
        a later change is)."""
        at_ts = time.time() if at_ts is None else at_ts
        entry = self._change_status(reference, status, at_ts)
        if entry is None and create:
            try:
                # created_ts: its erasure, if the confirmation never comes (a desk booking)
                self.bookings.insert_one({"_id": reference, "status": status, "status_ts": at_ts,
                                          "created_ts": at_ts, "groups": []})
                return status
            except DuplicateKeyError:  # indexed meanwhile: changed as any entry
                entry = self._change_status(reference, status, at_ts)
        if entry is None:
            return None
        self._set_members(reference, entry.get("groups") or (), status, at_ts)
        return status

    def _change_status(self, reference, status, at_ts):
        change = {"$set": {"status": status, "status_ts": at_ts}}
        for query in superseded_by(status, at_ts):
            entry = self.bookings.find_one_and_update(dict(query, _id=reference), change,
                                                      return_document=ReturnDocument.AFTER)
            if entry is not None:
                return entry
        return None

    def _set_members(self, reference, groups, status, at_ts):
        """The booking's status in the groups it joined, under the same rule as its entry
        (rules.supersedes): of two changes written concurrently, the later stays."""
        member = f"members.{reference}"
        change = {"$set": {f"{member}.status": status, f"{member}.status_ts": at_ts}}
        writes = [UpdateOne(dict(query, _id=group_id, **{member: {"$exists": True}}), change)
                  for group_id in groups if group_kind(group_id) != "ua"  # ua: no status
                  for query in superseded_by(status, at_ts, f"{member}.status_ts")]
        if writes:
            self.groups.bulk_write(writes, ordered=True)

    def members(self, group_ids):
        """{group id: [booking-like dicts]} for these groups, in one read."""
        found = {group_id: [] for group_id in group_ids}
        for doc in self.groups.find({"_id": {"$in": list(group_ids)}}):
            found[doc["_id"]] = [dict(member, _id=ref) for ref, member in (doc.get("members") or {}).items()]
        return found

    # -- decisions and reviews ---------------------------------------------------------------

    def add_decision(self, decision):
        """Store a decision; the stored one (an earlier identical decision wins)."""
        try:
            self.decisions.insert_one(decision)
            return decision
        except DuplicateKeyError:
            return self.decisions.find_one({"_id": decision["_id"]})

    def to_announce(self, decision_id, outbox_entry):
        """Once a decision is carried out, record its event to send: the decision if this call
        recorded it (and so announces it), None if another did before."""
        recorded = self.decisions.find_one_and_update(
            {"_id": decision_id, "outbox.detected": {"$exists": False}},
            {"$set": {"outbox.detected": outbox_entry}}, return_document=ReturnDocument.AFTER)
        return recorded

    def decisions_for(self, reference):
        return list(self.decisions.find({"reference": reference}))

    def booking_tied_cancellations(self, references, rules=BOOKING_TIED):
        """{reference: rule} of these bookings cancelled for evidence tied to the booking."""
        return {d["reference"]: d["rule"] for d in self.decisions.find(
            {"reference": {"$in": list(references)}, "action": "cancel"}, {"reference": 1, "rule": 1})
            if d["rule"] in rules}

    def decisions_between(self, since_ts, until_ts):
        return list(self.decisions.find({"at_ts": {"$gte": since_ts, "$lt": until_ts}},
                                        {"rule": 1, "action": 1}))

    def open_review(self, review, case=None):
        """One review per booking; with `case` ({_id, kind, summary, evidence, strong}), the
        booking joins that case, which is (re)opened with the latest evidence."""
        if case is not None:
            review = dict(review, case_id=case["_id"])
        try:
            self.reviews.insert_one(review)
        except DuplicateKeyError:
            return
        if case is not None:
            fields = {key: value for key, value in case.items() if key != "_id"}
            self.cases.update_one({"_id": case["_id"]},
                                  {"$set": dict(fields, state="open", at_ts=review["at_ts"])},
                                  upsert=True)
        # a cancellation handled meanwhile closes the open review it finds (after writing the
        # entry); it may have looked before this one was written. Written, then read: of the
        # two, at least one sees the other
        entry = self.bookings.find_one({"_id": review["_id"]}, {"status": 1})
        if entry is not None and entry["status"] == CANCELLED:
            self.close_cancelled_review(review["_id"], time.time(),
                                        case_id=case["_id"] if case is not None else None)

    def close_cancelled_review(self, reference, now_ts, reason=None, case_id=None):
        """The booking was cancelled (by its owner, staff, the counter or a rule) before staff
        decided its review: closed as cancelled, saying so, and its case with it when nothing
        else in it is open. Again: nothing more."""
        note = f"Annulée hors de cet examen / cancelled outside this review ({reason or 'cancelled'})."
        review = self.reviews.find_one_and_update(
            {"_id": reference, "state": "open"},
            {"$set": {"state": "cancelled", "decided_by": CANCELLED_ELSEWHERE, "note": note,
                      "decided_ts": now_ts, "cancelled_elsewhere": reason or CANCELLED}},
            return_document=ReturnDocument.AFTER)
        case_id = case_id or (review or {}).get("case_id")
        if case_id:
            self.close_case_if_done(case_id, CANCELLED_ELSEWHERE, note, now_ts)

    def reopen_cancelled_review(self, reference):
        """The cancellation that closed the booking's review (close_cancelled_review) was
        undone: the review is open again, and its case, for staff to decide. Then read, as
        open_review does: a later cancellation handled meanwhile closes it again."""
        review = self.reviews.find_one_and_update(
            {"_id": reference, "state": "cancelled", "decided_by": CANCELLED_ELSEWHERE},
            {"$set": {"state": "open"},
             "$unset": {"decided_by": "", "note": "", "decided_ts": "", "cancelled_elsewhere": ""}},
            return_document=ReturnDocument.AFTER)
        if review is None:
            return
        if review.get("case_id"):
            self.cases.update_one({"_id": review["case_id"]},
                                  {"$set": {"state": "open"},
                                   "$unset": {"decided_by": "", "note": "", "decided_ts": ""}})
        entry = self.bookings.find_one({"_id": reference}, {"status": 1})
        if entry is not None and entry["status"] == CANCELLED:
            self.close_cancelled_review(reference, time.time(), case_id=review.get("case_id"))

    def reviewed_among(self, references):
        """Which of these bookings already have a review (open or decided)."""
        return {doc["_id"] for doc in self.reviews.find({"_id": {"$in": list(references)}}, {"_id": 1})}

    def cases_in(self, state, limit):
        return list(self.cases.find({"state": state}).sort([("at_ts", 1)]).limit(limit))

    def case(self, case_id):
        return self.cases.find_one({"_id": case_id})

    def reviews_of(self, case_ids):
        found = {case_id: [] for case_id in case_ids}
        for review in self.reviews.find({"case_id": {"$in": list(case_ids)}}):
            found.setdefault(review["case_id"], []).append(review)
        return found

    def close_case_if_done(self, case_id, by, note, now_ts):
        """A case with no open review left is closed (decided); its bookings keep their own state."""
        if self.reviews.find_one({"case_id": case_id, "state": "open"}, {"_id": 1}) is None:
            self.cases.update_one({"_id": case_id, "state": "open"},
                                  {"$set": {"state": "decided", "decided_by": by, "note": note,
                                            "decided_ts": now_ts}})

    def review_queue(self, state, limit):
        return list(self.reviews.find({"state": state}).limit(limit))

    def review(self, reference):
        return self.reviews.find_one({"_id": reference})

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

    def disallow(self, key):
        return self.allowed.find_one_and_delete({"_id": key})

    def allowed_among(self, keys, now_ts=None):
        """Which of these allow-list keys are present and not expired (one query for a group)."""
        now_ts = time.time() if now_ts is None else now_ts
        return {doc["_id"] for doc in self.allowed.find({"_id": {"$in": list(keys)}},
                                                        {"_id": 1, "until_ts": 1})
                if not doc.get("until_ts") or doc["until_ts"] > now_ts}

    # -- retention (services/common/retention.py) ----------------------------------------------

    def erase_index(self, before_ts, limit):
        """Bookings indexed before `before_ts` leave the index and its groups (whose ids are
        e-mail keys, persons, foreigner numbers, addresses): at most `limit`, how many. A
        group left without members goes; a past window's address or agent group goes whole.
        Groups first, the entry last: a pass killed in between is redone by the next."""
        done = 0
        for entry in self.bookings.find({"created_ts": {"$lt": before_ts}},
                                        {"groups": 1}).limit(limit):
            ref = entry["_id"]
            for group_id in entry.get("groups") or ():
                if group_kind(group_id) in BUCKETED:
                    self.groups.delete_one({"_id": group_id})
                    continue
                left = self.groups.find_one_and_update(
                    {"_id": group_id}, {"$unset": {f"members.{ref}": ""}},
                    return_document=ReturnDocument.AFTER)
                if left is not None and not left.get("members"):
                    # only while still empty: a booking joining meanwhile keeps it
                    self.groups.delete_one({"_id": group_id, "members": {}})
            self.bookings.delete_one({"_id": ref})
            done += 1
        return done

    def erase_decisions(self, before_ts, now_ts, limit):
        """Decisions made before `before_ts` keep their booking, rule, action and time (the
        audit), not their evidence (e-mail keys, names typed, addresses): how many."""
        return erase_batch(self.decisions, {"at_ts": {"$lt": before_ts}},
                           erasure({"evidence": {}}, now_ts), limit)

    def erase_reviews(self, before_ts, now_ts, limit):
        """Decided reviews opened before `before_ts` lose their evidence and their case (its
        id names an address); decided cases that old are deleted. Open ones wait for staff,
        and so does a decided review whose case is still open: staff deciding the case read
        its evidence (erased once the case is decided, or gone)."""
        old_decided = {"state": {"$in": list(DECIDED_REVIEWS)}, "at_ts": {"$lt": before_ts}}
        update = erasure({"evidence": {}}, now_ts, unset=("case_id",))
        done = erase_batch(self.reviews, dict(old_decided, case_id={"$exists": False}),
                           update, limit)
        open_cases = [doc["_id"] for doc in self.cases.find({"state": "open"}, {"_id": 1})]
        done += erase_batch(self.reviews,
                            dict(old_decided, case_id={"$exists": True, "$nin": open_cases}),
                            update, limit - done)
        ids = [doc["_id"] for doc in self.cases.find(
            {"state": "decided", "at_ts": {"$lt": before_ts}}, {"_id": 1}).limit(limit)]
        if ids:
            done += self.cases.delete_many({"_id": {"$in": ids}, "state": "decided"}).deleted_count
        return done

    def count_open_cases(self, limit=10000):
        return len(list(self.cases.find({"state": "open"}, {"_id": 1}).limit(limit)))
