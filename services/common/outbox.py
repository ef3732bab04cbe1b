"""Outbox: an event is written with the change it announces, then published.

The record of the event to send lives in the document that changed (`outbox.<kind>`), so the
change and the promise to announce it are one single-document write: atomic on MongoDB and on
the stand-in alike, with no transaction. The worker that made the change publishes at once
and marks the record done; if it dies in between, the record stays pending and the relay
(a timer in every instance) sends it later. Records are claimed with a lease before a relay
sends them, so two instances never send the same record; a crash mid-send only delays it.

A service declares its kinds (booking: created, cancelled, checked_in; fraud: detected;
slots: released) and calls:
- `Outbox.entry(event_id, now_ts, grace)` inside its insert or update;
- `sent(doc_id, kind)` after a publish (written in batches: a lost mark only repeats an
  idempotent publish, see services/common/pending.py);
- `due(kind, now_ts, lease)` from its relay (services/common/relay.py, one per service),
  then publishes each and marks it sent (`announce`).
"""
import logging

from pymongo import ReturnDocument

from services.common.delivery import DONE, PENDING
from services.common.pending import PendingMarks

log = logging.getLogger(__name__)

RELAY_LEASE_SECONDS = 30.0  # a relay sends a claimed record within this, or another may


class Outbox:
    def __init__(self, collection, kinds):
        self.collection = collection
        self.kinds = tuple(kinds)
        self.sent_marks = {kind: PendingMarks(collection, {f"outbox.{kind}.state": DONE})
                           for kind in self.kinds}
        self.pending = list(self.sent_marks.values())

    @staticmethod
    def entry(event_id, now_ts, grace_seconds):
        """The record to store with the change: the relay leaves it to its writer for grace_seconds."""
        return {"event_id": event_id, "state": PENDING, "at_ts": now_ts,
                "lease_ts": now_ts + grace_seconds}

    @staticmethod
    def field(kind):
        return f"outbox.{kind}"

    def ensure_indexes(self):
        for kind in self.kinds:
            self.collection.create_index([(f"outbox.{kind}.state", 1), (f"outbox.{kind}.lease_ts", 1)])

    def sent(self, doc_id, kind):
        self.sent_marks[kind].add(doc_id)

    def due(self, kind, now_ts, lease_seconds=RELAY_LEASE_SECONDS, limit=100):
        """Documents whose `kind` record is pending and unclaimed, each now claimed by the caller."""
        path = f"outbox.{kind}"
        unclaimed = {f"{path}.state": PENDING, f"{path}.lease_ts": {"$lt": now_ts}}
        claimed = []
        for doc in self.collection.find(unclaimed, {"_id": 1}).limit(limit):
            taken = self.collection.find_one_and_update(
                dict(unclaimed, _id=doc["_id"]),
                {"$set": {f"{path}.lease_ts": now_ts + lease_seconds}},
                return_document=ReturnDocument.AFTER)
            if taken is not None:  # another instance may have claimed it in between
                claimed.append(taken)
        return claimed

    def count_pending(self, kind):
        return len(list(self.collection.find({f"outbox.{kind}.state": PENDING}, {"_id": 1}).limit(10000)))


def dispatched(dispatch, event_type, payload, doc_id):
    """Publish one event; False (logged) when the broker did not take it: its outbox record
    stays pending and the relay sends it later."""
    try:
        dispatch(event_type, payload)
        return True
    except Exception:
        log.warning("%s for %s not dispatched; the relay retries", event_type, doc_id,
                    exc_info=True)
        return False


def announce(dispatch, outbox, kind, doc_id, event_type, payload):
    """Publish a document's `kind` event and mark its record sent; False when the broker did
    not take it (the record stays pending for the relay)."""
    if not dispatched(dispatch, event_type, payload, doc_id):
        return False
    outbox.sent(doc_id, kind)
    return True
