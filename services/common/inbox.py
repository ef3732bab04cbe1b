"""Inbox: every event a service receives is handled once, retried a few times, or parked.

Delivery is at least once (DESIGN.md section 2): the same event may come twice, from a relay
resending it or a redelivery after a crash. The inbox claims each event id before handling
(a copy that finds it handled is dropped; one that finds it in hand elsewhere is requeued after
a pause, since the hand may have died before finishing it), counts failed tries, waits
one backoff before the event is requeued, and after `max_attempts` parks it with the reason,
visible to staff and replayable. An event that does not follow the contract
(services/common/contract.py) is parked at once: retrying cannot mend it.

Handlers using it are declared with `requeue_on_error=True`: an error requeues the event for
the next try, the inbox decides when to stop.

A service that handles events inherits `TakesEvents` (below): every handler takes its event
through `take_event`, so that each parked event is also told on the bus (dead letters), and
staff list and replay parked events with the same two RPCs in every such service.
"""
import hashlib
import json
import logging
import time

import eventlet
from marshmallow import Schema, validate
from nameko.extensions import DependencyProvider
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common import contract
from services.common.deadletter import publish_parked
from services.common.delivery import DONE, IN_PROGRESS, PARKED, RETRYING, backoff
from services.common.errors import EXPECTED, InvalidRequest, NotFound, describe
from services.common.mongo import one_if_any
from services.common.pending import PendingMarks
from services.common.retention import ERASED, erase_batch, erasure
from services.common.rpc import rpc
from services.common.schemas import ListingSchema, SafeString, validated
from services.common.settings import setting
from services.common.views import staff_view

log = logging.getLogger(__name__)

LEASE_SECONDS = 120  # INBOX_LEASE_SECONDS' default: longer than any handling, retries' backoff included
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS = 0.4, 5.0

MAX_ATTEMPTS = 6  # tries before an event is parked, unless the service's setting says
GO, HANDLED, BUSY = "go", "handled", "busy"
BUSY_PAUSE_SECONDS = 1.0  # a copy whose event is in hand elsewhere waits this, then is requeued


class EventInHand(Exception):
    """This event is claimed by another worker whose lease runs: requeued, never dropped."""


def malformed_id(payload):
    """A stable id for an event with no usable event_id, so that its copies park once."""
    raw = json.dumps(payload, sort_keys=True, default=str).encode()
    return "malformed:" + hashlib.sha1(raw).hexdigest()[:20]


class Inbox:
    def __init__(self, collection, max_attempts=MAX_ATTEMPTS, clock=time.time):
        self.events = collection
        self.max_attempts = max_attempts
        self.lease_seconds = LEASE_SECONDS  # how long a claim keeps an event from other instances
        self.clock = clock
        # on_park(event_id, event_type, reason): told of each parked event; TakesEvents sets it
        # to a dead-letter notice (services/common/deadletter.py), so operators see it on the bus
        self.on_park = None
        # "handled": a lost mark only lets a late copy be handled again, idempotently
        self.done_marks = PendingMarks(collection, {"state": DONE})
        self.pending = [self.done_marks]

    def ensure_indexes(self):
        self.events.create_index([("state", 1), ("at_ts", 1)])

    def handle(self, name, payload, handler):
        """Run handler(event) for this event once; see the module's docstring."""
        try:
            event = contract.load(name, payload)
        except contract.ContractError as exc:
            self._park_malformed(name, payload, exc)
            return
        event_id = str(event["event_id"])
        claimed = self.claim(event_id, name)
        if claimed == BUSY and event_id in self.done_marks.keys:
            return  # handled here, its mark not written yet
        if claimed == BUSY:
            # in hand elsewhere: finished there soon, or its holder died between the claim and
            # the end (kill -9 of one instance: issue 23's test lost an e-mail so). Requeued
            # after a pause until it is handled or the claim's lease runs out, never dropped.
            eventlet.sleep(BUSY_PAUSE_SECONDS)
            raise EventInHand(event_id)
        if claimed != GO:
            return
        try:
            handler(event)
        except Exception as exc:
            try:
                attempts = self._failed(event_id, name, event, describe(exc))
            except Exception:
                eventlet.sleep(1)  # the database itself is down: pause, then requeue
                raise exc
            if attempts >= self.max_attempts:
                self._set(event_id, PARKED)
                log.error("event %s (%s) parked after %d tries: %s", event_id, name, attempts,
                          describe(exc))
                self._tell_parked(event_id, name, describe(exc))
                return  # acked: staff see it among the parked events and can replay it
            eventlet.sleep(backoff(attempts, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS))
            raise
        self.done_marks.add(event_id)

    def claim(self, event_id, name):
        """GO (ours to handle), HANDLED (before), or BUSY (in hand elsewhere, lease running)."""
        now = self.clock()
        try:
            self.events.insert_one({"_id": event_id, "event_type": name, "state": IN_PROGRESS,
                                    "lease_ts": now + self.lease_seconds, "attempts": 0,
                                    "at_ts": now})
            return GO
        except DuplicateKeyError:
            pass
        taken = self.events.find_one_and_update(
            one_if_any(event_id, {"state": RETRYING},
                       {"state": IN_PROGRESS, "lease_ts": {"$lt": now}}),
            {"$set": {"state": IN_PROGRESS, "lease_ts": now + self.lease_seconds}})
        if taken is not None:
            return GO
        doc = self.events.find_one({"_id": event_id}, {"state": 1})
        return BUSY if doc and doc.get("state") == IN_PROGRESS else HANDLED

    def _failed(self, event_id, name, event, error):
        doc = self.events.find_one_and_update(
            {"_id": event_id},
            {"$inc": {"attempts": 1}, "$set": {"state": RETRYING, "last_error": error,
                                               "event": event, "event_type": name,
                                               "at_ts": self.clock()}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return doc["attempts"]

    def _set(self, event_id, state):
        self.events.update_one({"_id": event_id}, {"$set": {"state": state}})

    def _park_malformed(self, name, payload, exc):
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        key = event_id if isinstance(event_id, str) and event_id else malformed_id(payload)
        log.error("event %s (%s) does not follow the contract, parked: %s", key, name, exc)
        try:
            self.events.insert_one({"_id": key, "event_type": name, "state": PARKED,
                                    "attempts": 0, "last_error": f"contract: {exc}"[:500],
                                    "event": payload if isinstance(payload, dict) else {"raw": repr(payload)[:2000]},
                                    "at_ts": self.clock()})
        except DuplicateKeyError:
            return  # parked before: told already
        self._tell_parked(key, name, f"contract: {exc}")

    def _tell_parked(self, event_id, name, reason):
        if self.on_park is not None:
            self.on_park(event_id, name, reason)

    def erase_before(self, before_ts, now_ts, limit):
        """The copies of events kept after a failure (parked, or handled after retries) lose
        their payload (who it was about) and their last error (a handler's error may name
        them: an address, a mailbox) once their last try is before `before_ts`: the
        service's retention (services/common/retention.py). How many."""
        return erase_batch(self.events, {"state": {"$in": [DONE, PARKED]},
                                         "at_ts": {"$lt": before_ts}, "event": {"$exists": True}},
                           erasure({"event": None, "last_error": None}, now_ts), limit)

    # -- staff -------------------------------------------------------------------------------

    def parked(self, limit):
        return list(self.events.find({"state": PARKED}).sort("at_ts", -1).limit(limit))

    def replay(self, event_id, handlers):
        """Run a parked event again once its cause is fixed; the record, or None if not parked.

        handlers: {event name: handler}. Raises what the handler raises (the event then waits
        as retrying, and its requeued copies may try again).
        """
        # an erased event (past its service's retention) has nothing left to run
        doc = self.events.find_one_and_update(
            {"_id": event_id, "state": PARKED, ERASED: {"$exists": False}},
            {"$set": {"state": RETRYING, "attempts": 0}}, return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        name, event = doc.get("event_type"), doc.get("event") or {}
        try:
            if name not in handlers:
                raise contract.ContractError(f"no handler for {name!r}")
            contract.load(name, event)
        except contract.ContractError as exc:
            self._set(event_id, PARKED)  # replaying cannot mend it
            raise InvalidRequest("This event cannot be replayed.", {"event_id": [str(exc)]})
        self.handle(name, event, handlers[name])
        self.done_marks.flush()
        return self.events.find_one({"_id": event_id})


# -- the inbox of a service ------------------------------------------------------------------


class InboxSettings(DependencyProvider):
    """How a service's inbox parks: after `attempts_key`'s tries (MAX_ATTEMPTS when none),
    with a notice to the dead-letters exchange."""

    def __init__(self, attempts_key=None):
        self.attempts_key = attempts_key

    def setup(self):
        config = self.container.config
        self.max_attempts = (setting(config, self.attempts_key) if self.attempts_key
                             else MAX_ATTEMPTS)
        self.lease_seconds = setting(config, "INBOX_LEASE_SECONDS")
        amqp_uri, service = config["AMQP_URI"], self.container.service_name
        self.on_park = lambda event_id, event_type, reason: publish_parked(
            amqp_uri, service, event_id, event_type, reason)

    def get_dependency(self, worker_ctx):
        return self


class EventId(Schema):
    event_id = SafeString(required=True, validate=validate.Length(min=1, max=100))


LISTING, EVENT_ID = ListingSchema(), EventId()


class TakesEvents:
    """Mixin: the one way a service takes events. The service has `store` (with `inbox`) and
    `inbox_handlers()`; its event handlers (declared `requeue_on_error=True`) call
    `self.take_event(name, event)`. A service may set `inbox_settings =
    InboxSettings("ITS_MAX_ATTEMPTS")`."""

    inbox_settings = InboxSettings()

    def inbox_handlers(self):
        """{event name: handler(event)}: what this service does with each event it takes."""
        raise NotImplementedError

    def take_event(self, name, event):
        self._inbox().handle(name, event, self.inbox_handlers()[name])

    @rpc(expected_exceptions=EXPECTED)
    def parked_events(self, limit=100):
        """Events this service could not take (malformed, or failing every try), newest
        first, for staff."""
        args = validated(LISTING, limit=limit)
        return [staff_view(e) for e in self._inbox().parked(args["limit"])]

    @rpc(expected_exceptions=EXPECTED)
    def replay(self, event_id):
        """Run a parked event again, once its cause is fixed."""
        args = validated(EVENT_ID, event_id=event_id)
        done = self._inbox().replay(args["event_id"], self.inbox_handlers())
        if done is None:
            raise NotFound("No parked event with this id.")
        return {"event_id": args["event_id"], "replayed": True, "state": done["state"]}

    def _inbox(self):
        inbox, settings = self.store.inbox, self.inbox_settings
        inbox.max_attempts, inbox.on_park = settings.max_attempts, settings.on_park
        inbox.lease_seconds = settings.lease_seconds
        return inbox
