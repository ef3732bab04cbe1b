"""Bounded claims: at most `bound` references counted under one key at once.

What unconfirmed bookings may hold (issue 25) is counted this way: booking per client address
and per mailbox domain, slots per release. One document a key, `{_id: key, n, refs: {reference:
until_ts}}`: one conditional update takes a claim (`n < bound`, the reference not there yet),
so concurrent callers cannot pass the bound together and a retried call counts once; ending a
claim removes its reference on the condition that it is there, so ending twice is a no-op (the
slot holds' pattern). A claim left by a crash (its end never written) lapses at its `until_ts`:
claims past it are swept when they would refuse someone. References become field names: no
dots, no dollars.

Every write stamps the document's last change (`changed_ts`): a document that counts nothing
(n <= 0) and was last changed before a retention cutoff is deleted (`delete_idle`), since its
key may be personal (a client's network address); one conditional delete on n, so a claim
taken meanwhile keeps its document (or makes it anew).

Taking is one round trip in the usual cases (a key seen for the first time, as each new client
address is, or one with room): an upsert. Only a refusal reads the document to look for
lapsed claims.
"""
import time

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


class Claims:
    def __init__(self, collection):
        self.claims = collection

    def take(self, key, bound, reference, until_ts, now_ts):
        """Count `reference` under `key` unless `bound` are counted there already; True when
        counted (or already counted: a retried call)."""
        for attempt in range(3):
            try:
                # no document yet: the upsert makes it with this one claim ({_id}, n: 1, refs)
                if self.claims.find_one_and_update(
                        {"_id": key, "n": {"$lt": bound}, f"refs.{reference}": {"$exists": False}},
                        {"$inc": {"n": 1}, "$set": {f"refs.{reference}": until_ts,
                                                    "changed_ts": now_ts}},
                        upsert=True, return_document=ReturnDocument.AFTER) is not None:
                    return True
            except DuplicateKeyError:
                pass  # there, but full or counting it already: MongoDB tried to insert it
            doc = self.claims.find_one({"_id": key})
            if doc is None:
                try:
                    self.claims.insert_one({"_id": key, "n": 1, "refs": {reference: until_ts},
                                            "changed_ts": now_ts})
                    return True
                except DuplicateKeyError:
                    continue  # created meanwhile: count on it
            refs = doc.get("refs") or {}
            if reference in refs:
                return True
            if doc.get("n", 0) < bound:
                continue  # made by a concurrent upsert, or a claim ended meanwhile: again
            lapsed = [ref for ref, ts in refs.items() if ts is not None and ts < now_ts]
            if not lapsed or attempt:
                return False
            self.end(key, *lapsed)
        return False

    def end(self, key, *references):
        """End the claims of `references` under `key`; safe to repeat."""
        if not key:
            return
        for reference in references:
            self.claims.update_one({"_id": key, f"refs.{reference}": {"$exists": True}},
                                   {"$inc": {"n": -1}, "$unset": {f"refs.{reference}": ""},
                                    "$set": {"changed_ts": time.time()}})

    def delete_idle(self, before_ts, limit):
        """Delete up to `limit` documents that count nothing (n <= 0) and were last changed
        before `before_ts` (or never timed: written before changes were); how many. The
        delete is conditional on n: a claim taken since the read keeps its document."""
        if limit <= 0:
            return 0
        idle = {"n": {"$lte": 0}}
        ids = []
        # two equality-shaped queries rather than an $or (the stand-in scans for an $or)
        for changed in ({"$lt": before_ts}, {"$exists": False}):
            ids += [doc["_id"] for doc in self.claims.find(
                dict(idle, changed_ts=changed), {"_id": 1}).limit(limit - len(ids))]
            if len(ids) >= limit:
                break
        if not ids:
            return 0
        return self.claims.delete_many(dict(idle, _id={"$in": ids})).deleted_count
