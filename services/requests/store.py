"""The requests database: requests, offers, the draws' records, per-procedure modes.

One open request per person and procedure is enforced by `claims`: a document per
(procedure, e-mail) and per (procedure, foreigner number) whose _id is unique, inserted before
the request and removed when the request closes (booked, withdrawn, expired). A request takes
an offer by one conditional update (waiting -> offered), so that no request ever holds two
places, whatever the number of allocator instances; an offer is written (state holding)
before its place is held, so that a crash in between leaves a record the next pass finishes.
Times written with $set are epoch seconds (`*_ts`): the stand-in mishandles datetimes there.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.inbox import Inbox
from services.common.lease import Leases
from services.common.outbox import Outbox
from services.requests.rules import (ACCEPTING, DECLINED, HOLDING, LAPSED, MADE, OFFERED,
                                     OPEN_STATES, UNCONFIRMED, VOID, WAITING)


class RequestStore:
    def __init__(self, db):
        self.requests = db["requests"]
        self.offers = db["offers"]
        self.claims = db["claims"]
        self.draws = db["draws"]
        self.mode_changes = db["mode_changes"]
        self.leases = Leases(db["leases"])
        self.inbox = Inbox(db["events"])
        # `request_filed` rides on the request, `offer_made` on the offer
        self.request_outbox = Outbox(self.requests, ("filed",))
        self.offer_outbox = Outbox(self.offers, ("made",))
        self.pending = (self.inbox.pending + self.request_outbox.pending
                        + self.offer_outbox.pending)

    def ensure_indexes(self):
        self.requests.create_index([("procedure", 1), ("state", 1)])
        self.offers.create_index([("state", 1), ("deadline_ts", 1)])
        self.offers.create_index([("request_id", 1)])
        self.inbox.ensure_indexes()
        self.request_outbox.ensure_indexes()
        self.offer_outbox.ensure_indexes()

    # -- modes -------------------------------------------------------------------------------

    def record_mode_change(self, procedure, mode, by, now_ts):
        self.mode_changes.insert_one({"procedure": procedure, "mode": mode, "by": by,
                                      "at_ts": now_ts})

    # -- requests ----------------------------------------------------------------------------

    def claim_keys(self, keys, request_id):
        """Take every key for request_id; the key already taken by another, or None."""
        taken = []
        for key in keys:
            try:
                self.claims.insert_one({"_id": key, "request_id": request_id})
                taken.append(key)
            except DuplicateKeyError:
                self.claims.delete_many({"_id": {"$in": taken}, "request_id": request_id})
                return key
        return None

    def free_keys(self, request):
        self.claims.delete_many({"_id": {"$in": request.get("claim_keys", [])},
                                 "request_id": request["_id"]})

    def insert(self, request):
        self.requests.insert_one(request)

    def get(self, reference):
        return self.requests.find_one({"_id": reference})

    def move(self, reference, from_states, changes, unset=None):
        """One conditional update of a request's state; the request after, or None."""
        update = {"$set": changes}
        if unset:
            update["$unset"] = {key: "" for key in unset}
        return self.requests.find_one_and_update(
            {"_id": reference, "state": {"$in": list(from_states)}}, update,
            return_document=ReturnDocument.AFTER)

    def waiting(self, procedure, limit=5000):
        return list(self.requests.find({"procedure": procedure, "state": WAITING}).limit(limit))

    def open_requests(self, limit=20000):
        return list(self.requests.find({"state": {"$in": list(OPEN_STATES)}},
                                       {"procedure": 1, "state": 1, "permit_expiry": 1})
                    .limit(limit))

    def unconfirmed_due(self, now_ts, limit=200):
        return list(self.requests.find({"state": UNCONFIRMED, "confirm_by_ts": {"$lt": now_ts}})
                    .limit(limit))

    # -- offers ------------------------------------------------------------------------------

    def insert_offer(self, offer):
        self.offers.insert_one(offer)

    def get_offer(self, offer_id):
        return self.offers.find_one({"_id": offer_id})

    def waiting_again(self, request_id, offer_id, changes=None):
        """offered -> waiting, if the request still holds this offer."""
        self.requests.update_one({"_id": request_id, "state": OFFERED, "offer_id": offer_id},
                                 {"$set": dict(changes or {}, state=WAITING),
                                  "$unset": {"offer_id": ""}})

    def settle(self, offer_id, settled=True):
        """Mark an ended offer's place passed on or given back (False: not yet)."""
        update = {"$set": {"settled": True}} if settled else {"$unset": {"settled": ""}}
        self.offers.update_one({"_id": offer_id}, update)

    def take_offer(self, request_id, offer_id, now_ts):
        """waiting -> offered for this offer: False if the request is no longer waiting."""
        return self.requests.find_one_and_update(
            {"_id": request_id, "state": WAITING},
            {"$set": {"state": OFFERED, "offer_id": offer_id, "offered_ts": now_ts}}) is not None

    def move_offer(self, offer_id, from_states, changes):
        return self.offers.find_one_and_update(
            {"_id": offer_id, "state": {"$in": list(from_states)}}, {"$set": changes},
            return_document=ReturnDocument.AFTER)

    def holding(self, procedure, older_than_ts, limit=100):
        """Offers written but not finished (their allocator died between the steps)."""
        return list(self.offers.find({"procedure": procedure, "state": HOLDING,
                                      "created_ts": {"$lt": older_than_ts}}).limit(limit))

    def accepting_before(self, older_than_ts, limit=100):
        """Offers taken for acceptance whose acceptance never finished (its caller died)."""
        return list(self.offers.find({"state": ACCEPTING,
                                      "accepting_ts": {"$lt": older_than_ts}}).limit(limit))

    def unsettled(self, ended_before_ts, limit=100):
        """Ended offers whose place was not yet passed on or given back."""
        return list(self.offers.find({"state": {"$in": [LAPSED, DECLINED, VOID]},
                                      "settled": {"$ne": True},
                                      "ended_ts": {"$lt": ended_before_ts}}).limit(limit))

    def lapsed_due(self, now_ts, limit=100):
        return list(self.offers.find({"state": MADE, "deadline_ts": {"$lt": now_ts}}).limit(limit))

    # -- draws -------------------------------------------------------------------------------

    def record_draw(self, record):
        self.draws.insert_one(record)

    def get_draw(self, draw_id):
        return self.draws.find_one({"_id": draw_id})
