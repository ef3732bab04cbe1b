"""Erasure of personal data once it is no longer needed: the rule, and the pass each service
runs on its own data (a service never touches another's database).

A record past its retention period keeps what the figures and the audit read without
identity (its state, procedure, slot, dates, the reason of a cancellation, tokens' hashes) and
loses who it was about: names, birth date, foreigner number, e-mail and its keys, phone,
postal address, network address, the e-mails' recipient and body. The erased fields are set
to None (or an empty value) rather than removed, so that readers keep the shape they know;
the record gets `erased_ts` (epoch seconds: the stand-in mishandles datetimes in $set), which
readers use to say "erased" instead of showing blanks.

Each service runs the pass from a timer (`RETENTION_TIMER_SECONDS`) under a lease, so one
instance acts at a time; a pass erases at most `RETENTION_BATCH` records per collection, then
gives its worker back (the next tick goes on), so it never holds the service for long. Every
write is one conditional update on records not yet erased: a pass killed mid-way, or two
passes at once, leave each record either as it was or erased, and the next pass finishes.
"""
import logging
import time
from datetime import datetime, time as day_start, timedelta

from nameko.extensions import DependencyProvider

from services.common.settings import retention_days, setting
from services.common.timeutil import PARIS, as_utc

log = logging.getLogger(__name__)

ERASED = "erased_ts"
DAY = 86400.0


def cutoff_ts(now_ts, days):
    """Records whose reference instant is before this are due for erasure."""
    return now_ts - days * DAY


def is_due(reference_ts, now_ts, days):
    """The rule: erased once `days` have passed since the reference instant (an appointment's
    day, a request's closing, a message's creation); None (not known) is never due."""
    return reference_ts is not None and reference_ts < cutoff_ts(now_ts, days)


def days_after_day(now, days):
    """Appointments that started before this instant (UTC) had their Paris day end at least
    `days` days ago: the start of the Paris day `days` before now's."""
    # on the Paris wall clock: `days` calendar days, whatever summer time did in between
    wall = as_utc(now).astimezone(PARIS).replace(tzinfo=None)
    day = (wall - timedelta(days=days)).date()
    return as_utc(datetime.combine(day, day_start(0), tzinfo=PARIS))


def erased(doc):
    return bool(doc and doc.get(ERASED))


def erasure(fields, now_ts, unset=()):
    """The update that erases `fields` ({path: empty value}) and marks the record."""
    update = {"$set": dict(fields, **{ERASED: now_ts})}
    if unset:
        update["$unset"] = {path: "" for path in unset}
    return update


def announced(doc):
    """No event of the record is still to announce (its outbox, services/common/outbox.py): a
    record waits for its events before it is erased, since they are built from it."""
    return all((entry or {}).get("state") != "pending"
               for entry in (doc.get("outbox") or {}).values())


def _erase(collection, query, update, limit, guard=None, before=None):
    """(erased, exhausted): erase up to `limit` records matching `query` (not yet erased, their
    events announced); exhausted when every such record was seen (fewer than `limit` found)
    and none had to wait for its events. `guard`: a field every write that records an event
    changes (a booking's status): the erasure writes only records where it is as read.
    `before(ids)`: run on the ids about to be erased, before they are (what refers to them
    elsewhere, found by what the erasure removes: a crash in between leaves the record for
    the next pass, never the reference without its record)."""
    if limit <= 0:  # a find's limit(0) is no limit at all
        return 0, False
    query = dict(query, **{ERASED: {"$exists": False}})
    # the outbox is checked here rather than in the query: the stand-in finds nothing for a
    # {"$ne": ...} on a path some documents lack (its count finds them)
    fields = {"_id": 1, "outbox": 1, **({guard: 1} if guard else {})}
    found = list(collection.find(query, fields).limit(limit))
    ready = [doc for doc in found if announced(doc)]
    exhausted = len(found) < limit and len(ready) == len(found)
    # the same condition again, and the guard as read: a record erased meanwhile by another
    # pass, or changed with an event to announce (a cancellation), is left for the next pass
    groups = {}
    for doc in ready:
        groups.setdefault(doc.get(guard) if guard else None, []).append(doc["_id"])
    done = 0
    for value, ids in groups.items():
        if before is not None:
            before(ids)
        condition = dict(query, _id={"$in": ids}, **({guard: value} if guard else {}))
        done += collection.update_many(condition, update).modified_count
    # one left as it was (changed meanwhile) keeps the window open: the watermark waits
    return done, exhausted and done == len(ready)


def erase_batch(collection, query, update, limit):
    """Erase up to `limit` records matching `query` (not yet erased, their events announced):
    how many were."""
    return _erase(collection, query, update, limit)[0]


class Watermark:
    """How far a collection's erasure is complete, so that a pass need not read again the
    records it erased before (the stand-in filters `erased_ts` after the index: a pass would
    otherwise grow with every record ever erased). `through_ts` of `name`: every record whose
    time is before it is erased. It only moves when a pass found every record of its window
    and erased them all (none waiting for its events, none left for the next batch)."""

    def __init__(self, collection):
        self.marks = collection

    def through(self, name):
        doc = self.marks.find_one({"_id": name})
        return doc.get("through_ts") if doc else None

    def advance(self, name, ts):
        self.marks.update_one({"_id": name}, {"$set": {"through_ts": ts}}, upsert=True)


def erase_windowed(collection, marks, name, parts, before_ts, update, limit, as_value=float,
                   blocked=None, guard=None, before=None):
    """Erase, for each (query, time field) of `parts`, the records whose time is before
    `before_ts` and after the watermark `name` (less a day: clocks of instances differ), at
    most `limit` in all; the watermark moves to `before_ts` when all of them were erased and
    `blocked(window)` (a record of the window not erasable yet, in a state that will become
    erasable) is None. `as_value`: epoch seconds -> the field's type; `guard`, `before`: see
    _erase.
    How many were erased."""
    through = marks.through(name)
    window = {"$lt": as_value(before_ts)}
    if through is not None:
        window["$gte"] = as_value(min(through, before_ts) - DAY)
    done, complete = 0, True
    for query, field in parts:
        erased_now, exhausted = _erase(collection, dict(query, **{field: window}), update,
                                       limit - done, guard, before)
        done += erased_now
        complete = complete and exhausted
    if complete and (blocked is None or blocked(window) is None):
        marks.advance(name, before_ts)
    return done


def run_pass(leases, job, owner, config, erase):
    """The timer's body: take the lease on `job`, run `erase(now_ts, limit)` (it returns
    {what: count}), give the lease back. None when another instance holds it."""
    interval = setting(config, "RETENTION_TIMER_SECONDS")
    if not leases.acquire(job, owner, max(3 * interval, 60.0), time.time()):
        return None
    try:
        done = erase(time.time(), setting(config, "RETENTION_BATCH"))
    finally:
        leases.release(job, owner)
    if any(done.values()):
        # counts only: never who
        log.info("retention: erased %s", ", ".join(f"{n} {what}" for what, n in done.items() if n))
    return done


class RetentionPeriods(DependencyProvider):
    """The retention periods a service erases by (settings.RETENTION_KEYS), checked at start:
    the service refuses to start with one below settings.RETENTION_FLOOR_DAYS."""

    def __init__(self, *keys):
        self.keys = keys

    def setup(self):
        self.days = {key: retention_days(self.container.config, key) for key in self.keys}

    def get_dependency(self, worker_ctx):
        return self.days
