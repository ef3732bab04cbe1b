"""Flag writes that may land a moment late, gathered into one update.

Only for marks whose loss costs nothing but repeated, idempotent work: "this event was
dispatched" (the outbox relay would send it again, and handlers dedupe on event_id), "this
event was handled" (a late copy would be screened again, to the same decisions). They are
written by one `update_many` per flush instead of one round trip each, off the path a caller
waits on. A crash loses at most the marks of the last flush interval.
"""
import logging

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2


class PendingMarks:
    def __init__(self, collection, fields, max_batch=200):
        self.collection = collection
        self.fields = fields
        self.max_batch = max_batch
        self.keys = []

    def add(self, key):
        self.keys.append(key)
        if len(self.keys) >= self.max_batch:
            self.flush()

    def flush(self):
        """Write the marks gathered so far; how many. On error they wait for the next flush."""
        keys, self.keys = self.keys, []
        if not keys:
            return 0
        try:
            self.collection.update_many({"_id": {"$in": keys}}, {"$set": self.fields})
        except Exception:
            self.keys = keys + self.keys
            raise
        return len(keys)


def flush_all(marks):
    """Flush each PendingMarks; errors are logged, the marks kept for the next try."""
    for pending in marks:
        try:
            pending.flush()
        except Exception:
            log.warning("could not write %d pending marks; next flush retries", len(pending.keys),
                        exc_info=True)
