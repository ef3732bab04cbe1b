"""The requests database: requests, offers, the draws' records, per-procedure modes.

One open request per person and procedure is enforced by `claims`: a document per
(procedure, e-mail) and per (procedure, foreigner number) whose _id is unique, inserted when
the request is confirmed (never at filing: anyone can type someone's e-mail or number, only
the mailbox's owner confirms) and removed when the request closes (booked, withdrawn,
expired). Two confirmations sharing a key race on one insert, so one of them wins. A request takes
an offer by one conditional update (waiting -> offered), so that no request ever holds two
places, whatever the number of allocator instances; an offer is written (state holding)
before its place is held, so that a crash in between leaves a record the next pass finishes.
Times written with $set are epoch seconds (`*_ts`): the stand-in mishandles datetimes there.

A draw is recorded only when it makes an offer, and kept `REQUEST_DRAW_RETENTION_DAYS` (a TTL
index on its `at`: MongoDB deletes older records within a minute, the stand-in as it reads
them); its offers keep its id, so a lookup can tell a deleted draw from one never made.
"""
import functools

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from services.common.inbox import Inbox
from services.common.lease import Leases
from services.common.mongo import MongoStore
from services.common.outbox import Outbox
from services.common.retention import Watermark, erase_windowed, erasure
from services.common.settings import DEFAULTS, setting
from services.requests.rules import (ACCEPTING, BOOKED, CLOSED_STATES, DECLINED, EXPIRED,
                                     HOLDING, LAPSED, MADE, OFFERED, OPEN_STATES, UNCONFIRMED,
                                     VOID, WAITING, WITHDRAWN)

DRAWS_TTL = "draws_ttl"
# what an allocation pass reads of each waiting request (20,000 of them: not their whole
# documents): the draw's inputs, the availability, and what the offer's e-mail needs
WAITING_FIELDS = {"procedure": 1, "permit_expiry": 1, "filed_day": 1, "back_day": 1,
                  "availability": 1, "email": 1, "token_salt": 1, "lang": 1}
# what the erasure of a request closed for REQUEST_RETENTION_DAYS blanks
# (services/common/retention.py): who it was (names, birth date, foreigner number, e-mail and
# its key, phone, postal address) and the one-per-person keys made from them; its procedure,
# state, dates, availability, permit expiry (the draw's priority), who filed it (a partner, an
# agent) and its offers (which hold no identity) stay, for the figures and the draws' audit
REQUEST_ERASED = {"identity.family_name": None, "identity.given_names": None,
                  "identity.birth_date": None, "identity.foreigner_number": None,
                  "email": None, "email_key": None, "phone": None, "postal_address": None}
REQUEST_UNSET = ("claim_keys", "idempotency")
INDEX_OPTIONS_CONFLICT = 85  # MongoDB: an index of this name exists with other options


class RequestStore:
    def __init__(self, db, draw_retention_days=DEFAULTS["REQUEST_DRAW_RETENTION_DAYS"]):
        self.draw_retention_days = draw_retention_days
        self.requests = db["requests"]
        self.offers = db["offers"]
        self.claims = db["claims"]
        self.draws = db["draws"]
        self.mode_changes = db["mode_changes"]
        self.leases = Leases(db["leases"])
        self.retention_marks = Watermark(db["retention_marks"])  # services/common/retention.py
        self.inbox = Inbox(db["events"])
        # `request_filed` rides on the request, `offer_made` on the offer
        self.request_outbox = Outbox(self.requests, ("filed",))
        self.offer_outbox = Outbox(self.offers, ("made",))
        self.pending = (self.inbox.pending + self.request_outbox.pending
                        + self.offer_outbox.pending)

    def ensure_indexes(self):
        self.requests.create_index([("procedure", 1), ("state", 1)])
        # one request per (idempotency key, filing): a redelivered file finds it (sparse)
        self.requests.create_index([("idempotency", 1)], unique=True, sparse=True)
        self.offers.create_index([("state", 1), ("deadline_ts", 1)])
        self.requests.create_index([("state", 1), ("closed_ts", 1)])  # their erasure
        self.offers.create_index([("request_id", 1)])
        self.claims.create_index([("request_id", 1)])  # those left by closed requests, erased
        self.offers.create_index([("draw_id", 1)])  # staff lookups of a deleted draw
        self._ensure_draws_ttl()  # also the index recent_draws() sorts by
        self.inbox.ensure_indexes()
        self.request_outbox.ensure_indexes()
        self.offer_outbox.ensure_indexes()

    # -- modes -------------------------------------------------------------------------------

    def record_mode_change(self, procedure, mode, by, now_ts):
        self.mode_changes.insert_one({"procedure": procedure, "mode": mode, "by": by,
                                      "at_ts": now_ts})

    # -- requests ----------------------------------------------------------------------------

    def claim_keys(self, keys, request_id):
        """Take every key for request_id, in the order given (the same for every request: two
        confirmations contend on the first key they share); the key another open request
        holds, or None (then none is taken)."""
        taken = []
        for key in keys:
            if not self._claim(key, request_id):
                self.claims.delete_many({"_id": {"$in": taken}, "request_id": request_id})
                return key
            taken.append(key)
        return None

    def _claim(self, key, request_id):
        for _ in range(3):
            try:
                self.claims.insert_one({"_id": key, "request_id": request_id})
                return True
            except DuplicateKeyError:
                held = self.claims.find_one({"_id": key})
                if held is not None and held["request_id"] == request_id:
                    return True  # ours already: a confirmation retried
                if held is not None and self._holder_open(held):
                    return False
                if held is not None:
                    # its request closed, but a crash came before it freed the key: taken over
                    # (by one conditional delete, so two takers still race on the insert)
                    self.claims.delete_one({"_id": key, "request_id": held["request_id"]})
        return False

    def held(self, keys):
        """The first of `keys` an open request holds (it was confirmed), or None."""
        found = {claim["_id"]: claim for claim in self.claims.find({"_id": {"$in": list(keys)}})}
        for key in keys:
            if key in found and self._holder_open(found[key]):
                return key
        return None

    def _holder_open(self, claim):
        holder = self.requests.find_one({"_id": claim["request_id"]}, {"state": 1})
        return holder is not None and holder["state"] in OPEN_STATES

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

    def erase_closed(self, before_ts, now_ts, limit):
        """Erase who the requests closed before `before_ts` were from (at most `limit`; those
        with an event still to announce wait for it): how many. A request closed before
        `closed_ts` was recorded counts from the last instant known of it: an expired one from
        its time to confirm (it expired then), a booked or withdrawn one from its filing."""
        parts = [({"state": state}, "closed_ts") for state in CLOSED_STATES]
        legacy = {"closed_ts": {"$exists": False}}
        # ($lt on a missing field matches nothing: one without confirm_by_ts is left to the
        # filing's part)
        parts.append((dict(legacy, state=EXPIRED), "confirm_by_ts"))
        parts.append((dict(legacy, state=EXPIRED, confirm_by_ts={"$exists": False}), "filed_ts"))
        parts.extend((dict(legacy, state=state), "filed_ts") for state in (BOOKED, WITHDRAWN))
        # the one-per-person claims go first: a crash between a request's closing and the
        # freeing of its keys leaves claims (their ids are e-mail keys, foreigner numbers)
        # that the erasure's unset of claim_keys would no longer find
        return erase_windowed(self.requests, self.retention_marks, "requests", parts, before_ts,
                              erasure(REQUEST_ERASED, now_ts, REQUEST_UNSET), limit,
                              before=self._free_claims_of)

    def _free_claims_of(self, request_ids):
        """Delete the claims closed requests still hold (their keys never freed)."""
        self.claims.delete_many({"request_id": {"$in": list(request_ids)}})

    def waiting(self, procedure):
        """Every waiting request of the procedure, with what the draw, the allocation and the
        offer's announcement read: all of them, since the draw orders everyone waiting (a cap
        would leave whoever is past it out of every draw)."""
        return list(self.requests.find({"procedure": procedure, "state": WAITING},
                                       WAITING_FIELDS))

    def open_requests(self, limit=20000):
        return list(self.requests.find({"state": {"$in": list(OPEN_STATES)}},
                                       {"procedure": 1, "state": 1, "permit_expiry": 1,
                                        "verified_by": 1})
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
        """offered -> waiting, if the request still holds this offer (remembered as its last:
        a decline delivered again finds it declined)."""
        self.requests.update_one({"_id": request_id, "state": OFFERED, "offer_id": offer_id},
                                 {"$set": dict(changes or {}, state=WAITING, last_offer_id=offer_id),
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

    def _ensure_draws_ttl(self):
        seconds = max(1, int(self.draw_retention_days * 86400))
        try:
            self.draws.create_index([("at", 1)], name=DRAWS_TTL, expireAfterSeconds=seconds)
        except OperationFailure as error:
            if error.code != INDEX_OPTIONS_CONFLICT:
                raise
            # the retention was changed: MongoDB changes a TTL in place
            self.draws.database.command("collMod", self.draws.name,
                                        index={"name": DRAWS_TTL, "expireAfterSeconds": seconds})

    def record_draw(self, record):
        """`record` carries `at`, a datetime (what the TTL index reads)."""
        self.draws.insert_one(record)

    def drop_draw(self, draw_id):
        """A draw whose offers all fell through (void, never held) decided nothing: no record
        of it, and its void offers no longer name it."""
        self.draws.delete_one({"_id": draw_id})
        self.offers.update_many({"draw_id": draw_id}, {"$unset": {"draw_id": ""}})

    def get_draw(self, draw_id):
        return self.draws.find_one({"_id": draw_id})

    def recent_draws(self, limit):
        """The last draws made, newest first, without their inputs (staff find their ids)."""
        return list(self.draws.find({}, {"procedure": 1, "at_ts": 1, "result": 1, "offers": 1})
                    .sort("at", -1).limit(limit))

    def draw_was_made(self, draw_id):
        """Did an offer come from this draw (its record may be deleted)?"""
        return self.offers.find_one({"draw_id": draw_id}, {"_id": 1}) is not None


class RequestsMongo(MongoStore):
    """The requests database, its draws kept REQUEST_DRAW_RETENTION_DAYS."""

    def __init__(self):
        super().__init__("requests", RequestStore)

    def setup(self):
        days = setting(self.container.config, "REQUEST_DRAW_RETENTION_DAYS")
        self.store_cls = functools.partial(RequestStore, draw_retention_days=days)
        super().setup()
