"""MongoDB access as a nameko dependency: one client per service process.

Each service owns one database (DESIGN.md section 2); the dependency hands workers a small
store object wrapping that database, so service code never builds queries itself.

On a replica set (issue 23): every write is acknowledged by a majority (a write that decides
something, a hold, a booking, an outbox record, an inbox claim, a lease, must survive the
primary's loss; the store's writes are nearly all of that kind, so the client's default says
it once), reads go to the primary (the decisive ones must see the last write), and pymongo
retries a retryable write or read once (retryWrites, retryReads). An election takes longer
than that retry: the store's calls (`Retrying`) try again on the errors a failover gives
(NotPrimaryError, AutoReconnect, ServerSelectionTimeoutError, all AutoReconnect) with a short
back-off, until the deadline of the worker's request (the RPC's `x-rpc-deadline`), or
MONGO_RETRY_SECONDS from the worker's start for work nobody waits on (timers, events). Past it the error is raised as
before: the callers already turn a store that does not answer into the usual 503 and give
back what they held (a booking's insert that ends after its deadline is withdrawn). The
store's writes are conditional or keyed (one effect under redelivery), so a write repeated
after a lost acknowledgement changes nothing more.
"""
import threading
import time

import eventlet
import pymongo
from nameko.extensions import DependencyProvider
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect

from services.common.pending import FLUSH_SECONDS, flush_all
from services.common.settings import DEFAULTS, setting

# the operations retried on a failover: those that complete in one call (a cursor's later
# batches are not: `find` and `aggregate` rely on pymongo's own one retry)
RETRIED = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "find_one_and_update", "find_one_and_replace", "find_one_and_delete",
    "bulk_write", "find_one", "count_documents", "distinct", "create_index"})
PAUSE_FIRST, PAUSE_MAX = 0.05, 0.5
# retries stop this long before the caller's deadline: the worker still has time to give back
# what it held and answer "not made" itself
DEADLINE_MARGIN_SECONDS = 0.5

_budget = threading.local()  # green-thread local under eventlet: each worker's own deadline


def one_if_any(_id, *alternatives):
    """The filter "the document `_id`, if it meets one of `alternatives`" (a lease, a claim).
    The `$or` goes inside an `$and`: the MongoDB stand-in translates an `$or` beside other keys
    into SQL without parentheses (`_id = ? AND a OR b`), so an update would take another
    document meeting `b`; MongoDB reads both forms alike."""
    return {"$and": [{"_id": _id}, {"$or": list(alternatives)}]}


def connect(uri):
    # tz_aware: datetimes come back in UTC with their zone, never as ambiguous naive values
    return pymongo.MongoClient(uri, tz_aware=True, maxPoolSize=200, serverSelectionTimeoutMS=3000,
                               w="majority", readPreference="primary", retryWrites=True,
                               retryReads=True)


def set_deadline(at):
    """The current green thread's store calls retry until `at` (epoch seconds; None: the
    default budget from each call's start)."""
    _budget.deadline = at


def retrying(call, *args, **kwargs):
    """call(*args, **kwargs), again after a failover's error until the current deadline."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is None:  # outside a worker (a managed thread, a script): from this call on
        deadline = time.time() + DEFAULTS["MONGO_RETRY_SECONDS"]
    pause = PAUSE_FIRST
    while True:
        try:
            return call(*args, **kwargs)
        except AutoReconnect:
            if time.time() + pause >= deadline:
                raise  # as before: the caller's 503, with what it held given back
            eventlet.sleep(pause)
            pause = min(pause * 2, PAUSE_MAX)


class Retrying:
    """A pymongo Database or Collection whose one-call operations go through `retrying`."""

    def __init__(self, target):
        self._target = target

    def __getitem__(self, name):
        return Retrying(self._target[name])

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if name in RETRIED and callable(value):
            return lambda *args, **kwargs: retrying(value, *args, **kwargs)
        if isinstance(value, Collection):  # db.name, or collection.sub
            return Retrying(value)
        return value

    def __eq__(self, other):
        return self._target == getattr(other, "_target", other)

    def __hash__(self):
        return hash(self._target)


def database_name(config, name):
    return f"{config.get('MONGO_DB_PREFIX') or ''}{name}"


class MongoStore(DependencyProvider):
    """Inject `store_cls(database)`; the store creates its indexes once at start."""

    def __init__(self, name, store_cls):
        self.name = name
        self.store_cls = store_cls
        self.client = None
        self.store = None

    def setup(self):
        config = self.container.config
        self.client = connect(config["MONGO_URI"])
        self.retry_seconds = setting(config, "MONGO_RETRY_SECONDS")
        self.store = self.store_cls(Retrying(self.client[database_name(config, self.name)]))

    def start(self):
        self.store.ensure_indexes()
        if getattr(self.store, "pending", None):
            self.container.spawn_managed_thread(self._flush_pending)

    def _flush_pending(self):
        # the store's PendingMarks (services/common/pending.py), written a moment late
        while True:
            eventlet.sleep(FLUSH_SECONDS)
            if self.client is None:
                return  # stopped: stop() wrote the last batch
            flush_all(self.store.pending)

    def stop(self):
        if self.client is not None:
            flush_all(getattr(self.store, "pending", ()))  # what is gathered, before closing
        self.kill()

    def kill(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def worker_setup(self, worker_ctx):
        # runs in the worker's green thread: its store calls retry until its caller's deadline
        # (a worker nobody waits on gets one budget for all its calls, not one per call: a
        # store that is down for good must not hold it for the sum of them)
        deadline = getattr(worker_ctx, "rpc_deadline", None)
        set_deadline(deadline - DEADLINE_MARGIN_SECONDS if deadline is not None
                     else time.time() + self.retry_seconds)

    def worker_teardown(self, worker_ctx):
        set_deadline(None)

    def get_dependency(self, worker_ctx):
        return self.store
