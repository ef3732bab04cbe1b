"""Slots service: opening plans, slots, and the atomic hold/release of places.

Places are never lost. A hold is taken for a booking that may never be stored: its caller
timed out, or the booking process died between the hold and its insert. Rather than holds that
expire unless confirmed (a confirmation round trip on every booking's hot path), a sweeper
looks at holds older than HOLD_MAX_AGE_SECONDS (far beyond RPC_TIMEOUT: no booking can still
be in flight for them), asks the booking service which of them a booking uses
(`booking.holds_in_use`, which also fences off any later insert for the others) and gives the
others back. If booking does not answer, nothing is given back. One instance sweeps at a time
(a lease); every instance's timer ticks.
"""
import logging
import re
import time as clock
from datetime import date, datetime, time, timedelta

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from nameko.dependency_providers import Config

from services.common import health
from services.common.logs import CallIdLogging
from services.common.reference_data import PROCEDURES
from services.common.errors import (EXPECTED, InvalidRequest, NotFound, SlotFull,
                                    SlotNotBookable)
from services.common.lease import Leases, owner_id
from services.common.mongo import MongoStore
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.settings import setting
from services.common.schemas import FiguresSchema, load_or_raise, validated
from services.common.timeutil import PARIS, iso_paris, iso_utc, utcnow
from services.slots import figures as slot_figures, rules
from services.slots.plan import decoy_slots, expand_plan
from services.slots.schemas import OpeningPlanSchema
from services.slots.store import RELEASED, SlotStore

log = logging.getLogger(__name__)

MAX_PER_PAGE = 200
OPENING_PLAN = OpeningPlanSchema()
# hold ids become a field name in the slot document: no dots, no dollars
HOLD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SWEEP_BATCH = 200  # holds asked about in one RPC
SWEEP_JOB = "sweep_holds"


def sweep_settings(config):
    return {
        # a hold this old has no booking in flight any more: RPC_TIMEOUT is seconds
        "max_age": setting(config, "HOLD_MAX_AGE_SECONDS", 60.0),
        "every": setting(config, "HOLD_SWEEP_SECONDS", 10.0),
    }


class Sweeper(DependencyProvider):
    """Per-process state of the hold sweeper: its settings, lease owner name and next run."""

    def setup(self):
        self.settings = sweep_settings(self.container.config)
        self.owner = owner_id()
        self.next_ts = 0.0

    def get_dependency(self, worker_ctx):
        return self


def slot_view(slot):
    """A slot as other services and the gateways see it: ISO times, Paris offsets."""
    return {
        "id": slot["_id"],
        "site": slot["site"],
        "procedure": slot["procedure"],
        "start": iso_paris(slot["start"]),
        "end": iso_paris(slot["end"]),
        "capacity": slot["capacity"],
        "booked": slot["booked"],
        "free": slot["free"],
        "state": slot["state"],
        "published_at": iso_utc(slot["published_at"]) if slot.get("published_at") else None,
        # internal: booking passes it to fraud, staff counts leave decoys out; the public
        # gateway copies named fields only, so applicants never see it
        "decoy": bool(slot.get("decoy")),
    }


def _local_midnight_utc(day):
    return datetime.combine(day, time(0, 0), tzinfo=PARIS)


class SlotsService:
    name = "slots"

    store = MongoStore("slots", SlotStore)
    booking = BoundedRpcProxy("booking")
    sweeper = Sweeper()
    config = Config()
    log_context = CallIdLogging()

    @rpc(expected_exceptions=EXPECTED)
    def list_open(self, procedure, date_from, date_to, page=1, per_page=50, include_decoys=False):
        """Open slots with a free place, starting on local days [date_from, date_to], by start.

        Decoys are left out unless include_decoys: the applicant pages never offer them; the
        JSON API shows them (a script reading it can book one, a person cannot).
        """
        try:
            first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
        except (TypeError, ValueError):
            raise InvalidRequest("Dates are YYYY-MM-DD.", {"from": ["Not a valid date."]})
        per_page = max(1, min(int(per_page), MAX_PER_PAGE))
        page = max(1, int(page))
        start_from = max(_local_midnight_utc(first), utcnow())
        start_before = _local_midnight_utc(last + timedelta(days=1))
        found = self.store.list_open(
            procedure, start_from, start_before, (page - 1) * per_page, per_page + 1,
            include_decoys=bool(include_decoys),
        )
        return {
            "slots": [slot_view(s) for s in found[:per_page]],
            "page": page,
            "per_page": per_page,
            "has_more": len(found) > per_page,
        }

    @rpc(expected_exceptions=EXPECTED)
    def get(self, slot_id):
        slot = self.store.get(slot_id)
        if slot is None:
            raise NotFound("This slot does not exist.")
        return slot_view(slot)

    @rpc(expected_exceptions=EXPECTED)
    def hold(self, slot_id, hold_id, procedure):
        """Take one place on the slot for `hold_id`; raise why not (full, past, closed...).

        Asking again with the same hold id keeps the one place (a retried call)."""
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            raise InvalidRequest("Invalid hold id.", {"hold_id": ["Letters, digits, - and _."]})
        if not isinstance(slot_id, str):
            raise InvalidRequest("Invalid slot id.", {"slot_id": ["A text."]})
        now = utcnow()
        # recorded first: if we die after taking the place, the sweeper finds this record
        earlier = self.store.record_hold(hold_id, slot_id, now)
        if earlier is not None and (earlier["state"] == RELEASED or earlier["slot_id"] != slot_id):
            raise SlotNotBookable("This hold has ended.")
        slot = self.store.take_place(slot_id, hold_id, procedure, now)
        if slot is None:
            already = self.store.has_place(slot_id, hold_id) if earlier is not None else None
            if already is not None:
                return slot_view(already)  # a retried call: it has its place
            refusal = rules.refusal(self.store.get(slot_id), procedure, now) or SlotFull()
            if earlier is None:
                self.store.forget_hold(hold_id)  # no place taken: nothing for the sweeper
            raise refusal
        return slot_view(slot)

    @rpc(expected_exceptions=EXPECTED)
    def release(self, hold_id):
        """Give back the place held by `hold_id`. Safe to call any number of times."""
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            return False
        return self._release(self.store.get_hold(hold_id))

    def _release(self, hold):
        if hold is None or hold["state"] == RELEASED:
            return False
        # the place first, then the record: dying in between leaves a live record whose
        # place is gone, which the sweeper ends without giving anything back twice
        given = self.store.give_place_back(hold["slot_id"], hold["_id"])
        self.store.end_hold(hold["_id"])
        return given

    @timer(interval=1)
    def sweep_holds(self):
        """Give back the places of old holds that no booking uses (see the module docstring)."""
        sweeper, now = self.sweeper, clock.time()
        if now < sweeper.next_ts:
            return
        sweeper.next_ts = now + sweeper.settings["every"]
        # kept while we sweep and renewed at each pass: another instance takes over only after
        # this one stops sweeping for three periods
        if not Leases(self.store.leases).acquire(SWEEP_JOB, sweeper.owner,
                                                 3 * sweeper.settings["every"], now):
            return
        released = sweep(self.store, self.booking.holds_in_use, now, sweeper.settings["max_age"],
                         self._release)
        if released:
            log.warning("gave back %d places held without a booking", released)
    @rpc(expected_exceptions=EXPECTED)
    def create_from_plan(self, plan):
        """Create the slots of an opening plan (open at once for now), with their share of
        decoys (SLOTS_DECOY_SHARE); return how many real slots there are and are new."""
        plan = load_or_raise(OPENING_PLAN, plan, InvalidRequest)
        slots = list(expand_plan(plan))
        created = self.store.insert_new(slots, utcnow())
        decoys = decoy_slots(plan, slots, setting(self.config, "SLOTS_DECOY_SHARE", 0.05))
        self.store.insert_new(decoys, utcnow())
        # decoys are not counted: staff see the real appointments only
        log.info("opening plan %s/%s: %d slots, %d new",
                 plan["site"], plan["procedure"], len(slots), created)
        return {"slots": len(slots), "created": created}

    @rpc
    def is_empty(self):
        return not self.store.any_slot()

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, and holds the sweeper has yet to check (services/common/health.py)."""
        return health.report(self.name, lambda: {"holds_held": self.store.count_held()})

    @rpc(expected_exceptions=EXPECTED)
    def figures(self, days=56):
        """Per procedure, slots published in the last `days`: places released, booked, free,
        the next free appointment, how fast slots were taken (services/slots/figures.py)."""
        args = validated(FiguresSchema(), days=days)
        now = utcnow()
        found = self.store.published_since(now - timedelta(days=args["days"]), slot_figures.FIELDS)
        return {"days": args["days"], "procedures": slot_figures.figures(found, PROCEDURES, now)}

    @rpc(expected_exceptions=EXPECTED)
    def holds(self, slot_id):
        """Hold ids currently holding a place on the slot (for audits and tests)."""
        return sorted(self.store.slot_holds(slot_id))


def sweep(store, holds_in_use, now_ts, max_age, release, batch=SWEEP_BATCH):
    """One sweep: the number of places given back. A plain function the tests call directly.

    `holds_in_use(ids)` answers which holds a booking uses; if it raises, nothing is released.
    """
    released = 0
    while True:
        stale = store.stale_holds(now_ts - max_age, batch)
        if not stale:
            return released
        try:
            used = set(holds_in_use([h["_id"] for h in stale]))
        except Exception as exc:  # booking down or slow: judge nothing without its answer
            log.warning("hold sweep skipped: the booking service did not answer (%s)", exc)
            return released
        store.mark_booked(used)
        for hold in stale:
            if hold["_id"] not in used:
                released += bool(release(hold))
                store.end_hold(hold["_id"])  # even with no place to give back
        if len(stale) < batch:
            return released
