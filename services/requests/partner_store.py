"""The partners' part of the requests database (issue 24): accredited partners, their weekly
quota counters and the audit of every filing made on someone's behalf.

A quota is counted in one counter document per (partner, procedure, week) by one conditional
update (services/common/daily_limit.py: `n < quota`, keyed by the request's reference), so
concurrent filings can never pass it together, and a filing delivered twice counts once.
Partners are few and small: their list is read whole.
"""
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.daily_limit import DailyLimit


class PartnerStore:
    def __init__(self, db):
        self.partners = db["partners"]
        self.quota = DailyLimit(db["partner_quota"])
        self.counters = db["partner_quota"]
        self.filings = db["filings"]
        self.requests = db["requests"]

    def ensure_indexes(self):
        self.quota.ensure_indexes()
        self.filings.create_index([("partner_id", 1), ("at_ts", -1)])
        # the requests filed on someone's behalf, read by partner and by the desk's offers
        self.requests.create_index([("filed_by.id", 1), ("filed_ts", -1)], sparse=True)
        self.requests.create_index([("filed_by.kind", 1), ("state", 1)], sparse=True)

    # -- partners ----------------------------------------------------------------------------

    def create(self, partner):
        self.partners.insert_one(partner)

    def get(self, partner_id):
        return self.partners.find_one({"_id": partner_id}) if isinstance(partner_id, str) else None

    def all(self, limit=1000):
        return list(self.partners.find({}).sort("name", 1).limit(limit))

    def update(self, partner_id, changes, history):
        return self.partners.find_one_and_update(
            {"_id": partner_id}, {"$set": changes, "$push": {"history": history}},
            return_document=ReturnDocument.AFTER)

    # -- quotas ------------------------------------------------------------------------------

    def take(self, counter_id, limit, now, token, expires_at):
        return self.quota.take(counter_id, limit, now, token=token, expires_at=expires_at)

    def give_back(self, counter_id, token):
        self.quota.give_back(counter_id, token)

    def used(self, counter_ids):
        """{counter id: count} for the counters that exist."""
        return {c["_id"]: c.get("n", 0)
                for c in self.counters.find({"_id": {"$in": list(counter_ids)}}, {"n": 1})}

    # -- the filings' audit ------------------------------------------------------------------

    def record_filing(self, filing):
        try:
            self.filings.insert_one(filing)
        except DuplicateKeyError:
            pass  # the same filing delivered again: recorded once

    def filings_of(self, partner_id, limit=200):
        return list(self.filings.find({"partner_id": partner_id}).sort("at_ts", -1).limit(limit))
