"""The public gateway's own view of free places (issue 22).

During a release, scripts and people refresh the slot list and retry full slots many times a
second; each of those crossed the bus to slots and its store. The gateway now answers them
from this view: every open slot to come with its free places and the procedures' modes (one
allocated by request lists nothing), rebuilt
from slots when the gateway starts, then brought up to date with the slots changed since its
last look (`slots.view_since`: slots stamps `changed_ts` on every write that changes what can
be booked, so nothing is missed, whatever happened to an event), about once a SLOT_VIEW_SECONDS
while it is used, and at once on `slots_released`; and by what this gateway learns from its own bookings (the
winner of a slot's last place, a "slot full" refusal).

What it promises, with SLOT_VIEW_SECONDS (default 1; 0 turns the view off: every listing and
attempt goes to slots):
- it is used only while what it last read from slots is younger than the bound (`as_of`, the
  instant slots read it, by slots' clock: the services' clocks are kept in sync, as for the
  RPC deadlines); otherwise the gateway asks slots as before (listings) or lets the attempt
  through (bookings). Requests that find it stale while a look is under way wait for that
  look rather than each asking slots (under load, those calls would keep it stale);
- "this slot is full" is answered here only for a slot the view saw full, so a place freed
  more than the bound ago is never refused here. The reverse is allowed: an attempt for a slot
  the view still shows free goes to slots, whose atomic hold stays the one decision.

No personal data: slots, their times and their counts, the same for everyone.
"""
import time
from datetime import date, datetime, time as dtime, timedelta

from eventlet.event import Event
from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from services.common.settings import setting
from services.common.timeutil import PARIS, parse_iso

# slots stamps changed_ts before its write reaches the store: ask again for this much before
# the previous answer's instant, so that a write in flight during that answer is not missed
OVERLAP_SECONDS = 10.0
# after this long without a successful look, rebuild instead of asking for the changes
REBUILD_AFTER_SECONDS = 60.0
# the timer looks only while the view was used this recently: an idle gateway asks nothing,
# and the first request after a quiet spell looks first (or lets its attempt through)
IDLE_AFTER_SECONDS = 30.0
PUBLIC_FIELDS = ("id", "site", "procedure", "start", "end", "free")


class SlotView:
    def __init__(self, bound, clock=time.monotonic, wall=time.time):
        self.bound, self.clock, self.wall = bound, clock, wall
        self.rows = {}  # slot id -> slot (slots' slot_view, with `start_ts`)
        self.modes = {}
        # a change came for a slot it does not know (an opening it missed): rebuild
        self.incomplete = False
        self.synced = None  # monotonic instant at which the last applied look began
        self.as_of = None  # slots' instant of that look (epoch seconds)
        self.syncing = None  # the Event of the look under way
        self.used = None  # monotonic instant of the last question asked of it
        self._by_procedure = None

    @property
    def enabled(self):
        return self.bound > 0

    def fresh(self):
        return (self.enabled and self.as_of is not None and not self.incomplete
                and self.wall() - self.as_of <= self.bound)

    def in_use(self):
        return self.used is not None and self.clock() - self.used <= IDLE_AFTER_SECONDS

    # -- keeping it current --------------------------------------------------------------------

    def sync(self, ask):
        """One look at slots: ask(since_ts) is the `slots.view_since` RPC. An error propagates
        (the view goes stale, and is not used, after the bound)."""
        if not self.enabled or self.syncing is not None:
            return False
        self.syncing = Event()
        try:
            started = self.clock()
            rebuild = (self.as_of is None or self.synced is None or self.incomplete
                       or started - self.synced > REBUILD_AFTER_SECONDS)
            answer = ask(None if rebuild else self.as_of - OVERLAP_SECONDS)
            self.apply(answer, started)
            return True
        finally:
            done, self.syncing = self.syncing, None
            done.send(True)

    def wait(self, timeout):
        """Until the look under way ends (at most `timeout` seconds)."""
        if self.syncing is not None:
            self.syncing.wait(timeout)

    def apply(self, answer, started):
        full = bool(answer.get("full"))
        rows = {} if full else self.rows
        incomplete = False
        for slot in answer["slots"]:
            if slot.get("state") != "open":
                rows.pop(slot["id"], None)
            elif "start" in slot:
                rows[slot["id"]] = dict(slot, start_ts=parse_iso(slot["start"]).timestamp())
            elif slot["id"] in rows:  # what changed on a slot it has
                rows[slot["id"]] = dict(rows[slot["id"]], free=slot["free"])
            else:
                incomplete = True
        now = self.wall()
        if len(rows) > 2 * len(answer["slots"]) + 1000:  # slots gone by: forget them
            rows = {k: r for k, r in rows.items() if r["start_ts"] > now}
        self.rows, self.incomplete = rows, incomplete
        self.modes = dict(answer.get("modes") or {})
        self.as_of, self.synced = answer["as_of"], started
        self._by_procedure = None

    def began(self):
        """The instant a booking begins, for `learnt_full`."""
        return self.clock()

    def learnt_full(self, slot_id, began):
        """A booking begun at `began` found the slot full (its last place taken, or a
        refusal): shown full until a look says otherwise. Kept unless the last look applied
        began after the booking did (that look may have read the slot after the booking's
        hold, and a place freed since); a look that began before it, even one applied while
        it was under way, read the slot before the hold and knows less."""
        row = self.rows.get(slot_id)
        if self.synced is not None and self.synced >= began:
            return
        if row is not None and row["free"] > 0:
            self.rows[slot_id] = dict(row, free=0)
            self._by_procedure = None

    # -- answering -----------------------------------------------------------------------------

    def known_full(self, slot_id):
        """True when the view, fresh, saw this open slot to come with no free place."""
        self.used = self.clock()
        if not self.fresh():
            return False
        row = self.rows.get(slot_id)
        return row is not None and row["free"] <= 0 and row["start_ts"] > self.wall()

    def slot(self, slot_id):
        """The open slot to come, as slots.get(public=True) answers it; None when the view
        is stale or does not know it (the caller asks slots: unknown, scheduled, started)."""
        self.used = self.clock()
        if not self.fresh():
            return None
        row = self.rows.get(slot_id)
        if row is None or row["start_ts"] <= self.wall():
            return None
        return _as_slots_gives(row)

    def list_open(self, procedure, date_from, date_to, page, per_page, include_decoys=False,
                  site=None):
        """What slots.list_open answers (dates YYYY-MM-DD, Paris days), or None when stale."""
        self.used = self.clock()
        if not self.fresh():
            return None
        per_page, page = max(1, min(int(per_page), 200)), max(1, int(page))
        if self.modes.get(procedure) == "requests":  # as slots.list_open: nothing
            return {"slots": [], "page": page, "per_page": per_page, "has_more": False}
        first = max(_midnight_ts(date_from), self.wall())
        last = _midnight_ts(date_to, days_after=1)
        found = [row for row in self._sorted(procedure)
                 if first <= row["start_ts"] < last and row["free"] > 0
                 and (include_decoys or not row.get("decoy"))
                 and (site is None or row["site"] == site)]
        start = (page - 1) * per_page
        return {"slots": [_as_slots_gives(row) for row in found[start:start + per_page]],
                "page": page, "per_page": per_page, "has_more": len(found) > start + per_page}

    def _sorted(self, procedure):
        if self._by_procedure is None:
            grouped = {}
            for row in self.rows.values():
                grouped.setdefault(row["procedure"], []).append(row)
            for rows in grouped.values():
                rows.sort(key=lambda r: (r["start_ts"], r["id"]))
            self._by_procedure = grouped
        return self._by_procedure.get(procedure, [])


def _as_slots_gives(row):
    return {k: v for k, v in row.items() if k != "start_ts"}


def _midnight_ts(day, days_after=0):
    if isinstance(day, str):
        day = date.fromisoformat(day)
    return datetime.combine(day + timedelta(days=days_after), dtime(0, 0), tzinfo=PARIS).timestamp()


class SlotViewProvider(DependencyProvider):
    """One view per gateway process; SLOT_VIEW_SECONDS (default 1, 0 turns it off)."""

    def setup(self):
        self.view = SlotView(setting(self.container.config, "SLOT_VIEW_SECONDS"))

    def get_dependency(self, worker_ctx):
        return self.view


class ViewTimer(Timer):
    """Ticks every 0.9 SLOT_VIEW_SECONDS (a look costs slots a query: about one a bound; a
    request finding the view stale meanwhile waits for the look under way, or starts one, and
    an attempt goes through); hourly, doing nothing, when the view is off. Not
    eagerly: a call made while the container starts may lose its reply (its reply queue is
    not consumed yet); the first request that needs the view builds it."""

    def __init__(self, **kwargs):
        super().__init__(interval=0.5, **kwargs)

    def setup(self):
        bound = setting(self.container.config, "SLOT_VIEW_SECONDS")
        self.interval = max(0.05, 0.9 * bound) if bound > 0 else 3600


view_timer = ViewTimer.decorator
