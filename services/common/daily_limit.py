"""Per-day ceilings: how many times one subject (an address, a person) may do something in a
Paris day, counted in one counter document per subject and day.

Each count is one conditional single-document update (no count over a collection, which the
stand-in is slow at, and two concurrent callers cannot pass the ceiling together). A count
may carry a `token` (a message key, an attempt reference): counting the same token again is
not counted twice, so a caller retried after a crash between counting and its own write
finds its count already taken, and can be given back (`give_back`). Counter ids are a digest
of the subject and the day: no personal data in them. Documents expire two days after their
day (a TTL index; where the store ignores it, they are small and one per subject and day).
"""
import hashlib
from datetime import datetime, time, timedelta

from pymongo.errors import DuplicateKeyError

from services.common.timeutil import PARIS


def paris_day(now):
    return now.astimezone(PARIS).date()


def day_key(subject, now):
    """The counter id for `subject` (any text) on `now`'s Paris day."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"{digest}:{paris_day(now).isoformat()}"


def _expiry(now):
    day = paris_day(now) + timedelta(days=2)
    return datetime.combine(day, time(0), tzinfo=PARIS)


def _field(token):
    """A token as a field name (no dots or dollars, which field paths give a meaning)."""
    return token.replace(".", "_").replace("$", "_") if token else token


class DailyLimit:
    def __init__(self, collection):
        self.counters = collection

    def ensure_indexes(self):
        self.counters.create_index([("expires_at", 1)], expireAfterSeconds=0)

    def take(self, key, limit, now, token=None, expires_at=None):
        """Count one more for `key` (from day_key); False once `limit` are counted.

        With a token already counted under this key: True, and nothing more is counted.
        expires_at: when the counter may go, for a period longer than a day (a week's quota).
        """
        if limit < 1:
            return False
        token = _field(token)
        update = {"$inc": {"n": 1}, "$setOnInsert": {"expires_at": expires_at or _expiry(now)}}
        if token:
            update["$set"] = {f"tokens.{token}": True}
        fresh = {f"tokens.{token}": {"$exists": False}} if token else {}
        for _ in range(3):
            try:
                # one round trip whether the counter exists or not (each day's first count
                # makes it: the usual case for an address, which took three before)
                self.counters.update_one(dict({"_id": key, "n": {"$lt": limit}}, **fresh),
                                         update, upsert=True)
                return True
            except DuplicateKeyError:
                pass  # there, but full or counting this token already: the upsert collided
            found = self.counters.find_one({"_id": key})
            if found is None:
                continue  # expired meanwhile: count on a new one
            if token and token in (found.get("tokens") or {}):
                return True
            if found.get("n", 0) < limit:
                continue  # a count given back meanwhile: again
            return False
        return False

    def take_all(self, limits, now, token):
        """Count one under each (key, limit) of `limits`, or under none: False (and nothing
        counted) as soon as one is past its limit."""
        taken = []
        for key, limit in limits:
            if not self.take(key, limit, now, token=token):
                for done in taken:
                    self.give_back(done, token)
                return False
            taken.append(key)
        return True

    def give_back(self, key, token):
        """Undo the count `token` took under `key` (the action it allowed did not happen)."""
        token = _field(token)
        self.counters.update_one({"_id": key, f"tokens.{token}": {"$exists": True}},
                                 {"$inc": {"n": -1}, "$unset": {f"tokens.{token}": ""}})

    def used(self, key):
        found = self.counters.find_one({"_id": key}, {"n": 1})
        return found["n"] if found else 0
