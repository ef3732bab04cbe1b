"""Slots service: opening plans, slots, the atomic hold/release of places, and their release
at secret random weekday instants (M1), extra capacity (M2) and freed places held back.

Places are never lost. A hold is taken for a booking that may never be stored: its caller
timed out, or the booking process died between the hold and its insert. Rather than holds that
expire unless confirmed (a confirmation round trip on every booking's hot path), a sweeper
looks at holds older than HOLD_MAX_AGE_SECONDS (far beyond RPC_TIMEOUT: no booking can still
be in flight for them), asks the booking service which of them a booking uses
(`booking.holds_in_use`, which also fences off any later insert for the others) and gives the
others back. If booking does not answer, nothing is given back. One instance sweeps at a time
(a lease); every instance's timer ticks.
"""
import hashlib
import json
import logging
import re
import time
import uuid
from datetime import date, datetime, time as dtime, timedelta

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.common import contract, health
from services.common.clock import Clock
from services.common.errors import EXPECTED, InvalidRequest, NotFound, SlotFull, SlotNotBookable
from services.common.lease import InstanceId, owner_id
from services.common.logs import CallIdLogging
from services.common.reference_data import PROCEDURES
from services.common.mongo import MongoStore
from services.common.outbox import Outbox, announce
from services.common import relay
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.schemas import load_or_raise, validated
from services.common.settings import setting
from services.common.schemas import FiguresSchema
from services.common.timers import config_timer
from services.common.tokens import Secret
from services.common.timeutil import PARIS, as_utc, iso_paris, iso_utc, utcnow
from services.common.views import staff_view
from services.slots import figures as slot_figures
from services.slots import freed_places
from services.slots import release as draw
from services.slots import rules
from services.slots import extra_capacity  # a mixin with entrypoints: by module (tests/test_deploy.py)
from services.slots.plan import decoy_slots, expand_plan
from services.slots.capacity import capacity_figures, release_speed
from services.common.slot_schemas import (FiguresQuerySchema, OpeningPlanSchema,
                                    PlanReleaseSchema, PreviewSchema, RescheduleSchema,
                                    ScheduleQuerySchema)
from services.slots.store import DUE, HELD, KEPT, RELEASED, SlotStore

log = logging.getLogger(__name__)

MAX_PER_PAGE = 200
OPENING_PLAN = OpeningPlanSchema()
PLAN_RELEASE = PlanReleaseSchema()
SCHEDULE_QUERY, RESCHEDULE = ScheduleQuerySchema(), RescheduleSchema()
FIGURES_QUERY, PREVIEW = FiguresQuerySchema(), PreviewSchema()
# hold ids become a field name in the slot document: no dots, no dollars
HOLD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SWEEP_BATCH = 200  # holds asked about in one RPC
SWEEP_JOB = "sweep_holds"
REQUESTS_MODE = ("Cette démarche est attribuée sur demande : déposez une demande. / This procedure "
                 "is allocated by request: file a request (POST /api/requests).")


def sweep_settings(config):
    return {
        # a hold this old has no booking in flight any more: RPC_TIMEOUT is seconds
        "max_age": setting(config, "HOLD_MAX_AGE_SECONDS"),
        "every": setting(config, "HOLD_SWEEP_SECONDS"),
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
    """A slot as other services and the gateways see it: ISO times, Paris offsets.

    `free` is what can be booked now; places given back and waiting for their secret return
    are `held_back` (staff only: the public gateway never passes it on).
    """
    published = slot.get("published_ts")
    if published is not None:
        published = iso_utc(draw.from_ts(published))
    elif slot.get("published_at"):
        published = iso_utc(slot["published_at"])
    return {
        "id": slot["_id"],
        "site": slot["site"],
        "procedure": slot["procedure"],
        "start": iso_paris(slot["start"]),
        "end": iso_paris(slot["end"]),
        "capacity": slot["capacity"],
        "booked": slot["booked"],
        "free": slot["free"],
        "held_back": slot.get("held_back", 0),
        "state": slot["state"],
        "published_at": published,
        # internal: booking passes it to fraud, staff counts leave decoys out; the public
        # gateway copies named fields only, so applicants never see it
        "decoy": bool(slot.get("decoy")),
    }


def view_row(slot, since_ts):
    """A slot as the public gateway's view takes it (SlotsService.view_since)."""
    if slot["state"] != rules.OPEN:
        return {"id": slot["_id"], "state": slot["state"]}
    if since_ts is not None and (slot.get("published_ts") or 0) < since_ts:
        return {"id": slot["_id"], "state": slot["state"], "free": slot["free"]}
    return slot_view(slot)


def plan_id_of(plan):
    """Stable id of a plan's content: loading the same plan twice schedules nothing new."""
    text = json.dumps(plan, sort_keys=True, default=str)
    return "plan-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _local_midnight_utc(day):
    return datetime.combine(day, dtime(0, 0), tzinfo=PARIS)


class ReleasePolicy(DependencyProvider):
    """The RELEASE_* settings, and the random source (secrets; tests may swap `rng`)."""

    def setup(self):
        self.policy = draw.Policy.from_config(self.container.config)
        self.policy.rng = draw.secret_random()

    def get_dependency(self, worker_ctx):
        return self.policy


class SlotsService(extra_capacity.ExtraCapacity, relay.OutboxRelay):
    name = "slots"

    store = MongoStore("slots", SlotStore)
    clock = Clock()
    policy = ReleasePolicy()
    dispatch = EventDispatcher()
    config = Config()
    instance = InstanceId()
    booking = BoundedRpcProxy("booking")
    sweeper = Sweeper()
    log_context = CallIdLogging()
    slot_id_secret = Secret("SLOT_ID_SECRET")

    @rpc(expected_exceptions=EXPECTED)
    def list_open(self, procedure, date_from, date_to, page=1, per_page=50, include_decoys=False,
                  site=None, for_allocation=False):
        """Open slots with a free place, starting on local days [date_from, date_to], by start.

        Decoys are left out unless include_decoys: the applicant pages never offer them; the
        JSON API shows them (a script reading it can book one, a person cannot). site: only
        that site's slots (the applicant pages choose a site before a time). A procedure
        allocated by request lists nothing, except to the allocator (for_allocation).
        """
        try:
            first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
        except (TypeError, ValueError):
            raise InvalidRequest("Dates are YYYY-MM-DD.", {"from": ["Not a valid date."]})
        per_page = max(1, min(int(per_page), MAX_PER_PAGE))
        page = max(1, int(page))
        if not for_allocation and self.store.allocated_by_request(procedure, self._default_mode()):
            return {"slots": [], "page": page, "per_page": per_page, "has_more": False}
        start_from = max(_local_midnight_utc(first), self.clock.now())
        start_before = _local_midnight_utc(last + timedelta(days=1))
        found = self.store.list_open(
            procedure, start_from, start_before, (page - 1) * per_page, per_page + 1,
            include_decoys=bool(include_decoys), site=site,
        )
        return {
            "slots": [slot_view(s) for s in found[:per_page]],
            "page": page,
            "per_page": per_page,
            "has_more": len(found) > per_page,
        }

    @rpc(expected_exceptions=EXPECTED)
    def view_since(self, since_ts=None):
        """What the public gateway's view of free places needs (gateway/public/slot_view.py):
        every open slot to come (since_ts None), or every slot changed at or after since_ts
        (epoch seconds, as a previous answer's `as_of`), with the procedures' modes and this
        answer's instant. A slot opened before since_ts (the gateway has it) comes as what
        changes (free places, state), one no longer open as its id and state."""
        if since_ts is not None and (isinstance(since_ts, bool)
                                     or not isinstance(since_ts, (int, float))):
            raise InvalidRequest("since_ts is epoch seconds.", {"since_ts": ["A number."]})
        as_of = time.time()  # before the read: a write after it comes in the next answer
        if since_ts is None:
            found = self.store.open_to_come(self.clock.now())
        else:
            found = self.store.changed_since(float(since_ts))
        return {"as_of": as_of, "full": since_ts is None, "modes": self.modes(),
                "slots": [view_row(s, since_ts) for s in found]}

    @rpc(expected_exceptions=EXPECTED)
    def any_bookable(self, procedure):
        """True when a place can be booked for `procedure` right now (M7 evidence checks it)."""
        if procedure not in contract.PROCEDURE_CODES:
            raise InvalidRequest("Unknown procedure.", {"procedure": ["Unknown procedure."]})
        return self.store.first_bookable(procedure, self.clock.now()) is not None

    @rpc(expected_exceptions=EXPECTED)
    def get(self, slot_id, public=False):
        """The slot; public: for a caller who shows it to applicants (the public gateway),
        a slot not released yet is answered exactly as an unknown id."""
        slot = self.store.get(slot_id) if isinstance(slot_id, str) else None
        if slot is None or (public and rules.unknown_to_public(slot)):
            raise rules.not_found()
        return slot_view(slot)

    @rpc(expected_exceptions=EXPECTED)
    def hold(self, slot_id, hold_id, procedure, keep=False, unconfirmed=False, until=None):
        """Take one place on the slot for `hold_id`; raise why not (full, past, closed...).

        Asking again with the same hold id keeps the one place (a retried call). keep: the
        holder answers for the place itself and gives it back (the allocator's offers, which
        wait days for an answer): the sweeper leaves such a hold alone. unconfirmed: for a
        booking nobody confirmed yet (until: its confirm-by, epoch seconds): counted against
        its release's share (rules.release_mark) until `confirmed` or released; past the
        share, TooManyUnconfirmed and nothing held."""
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            raise InvalidRequest("Invalid hold id.", {"hold_id": ["Letters, digits, - and _."]})
        if not isinstance(slot_id, str):
            raise InvalidRequest("Invalid slot id.", {"slot_id": ["A text."]})
        if not keep and self.store.allocated_by_request(procedure, self._default_mode()) \
                and not self._kept_on(hold_id, slot_id):
            # its places go to requests (services/requests): none is grabbed meanwhile; an
            # accepted offer books the place its kept hold has already
            raise SlotNotBookable(REQUESTS_MODE, {"procedure": ["Allocated by request."]})
        claim = self._claim_release(slot_id, hold_id, until) if unconfirmed and not keep else None
        return self._take(slot_id, hold_id, KEPT if keep else HELD,
                          lambda now: self.store.take_place(slot_id, hold_id, procedure, now),
                          lambda now: rules.refusal(self.store.get(slot_id), procedure, now),
                          claim)

    @rpc(expected_exceptions=EXPECTED)
    def reclaim(self, slot_id, hold_id):
        """A place again for a booking whose cancellation staff undo (a counter's mistake):
        the place a cancellation gave back while it still waits to be re-released, else a
        free one. Never beyond the capacity: SlotFull once both are gone (booked again).
        The slot may have started (the person is at the desk). Same hold id again: kept."""
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            raise InvalidRequest("Invalid hold id.", {"hold_id": ["Letters, digits, - and _."]})
        if not isinstance(slot_id, str):
            raise InvalidRequest("Invalid slot id.", {"slot_id": ["A text."]})
        return self._take(slot_id, hold_id, HELD,
                          lambda now: self.store.reclaim_place(slot_id, hold_id, now),
                          lambda now: None)

    def _take(self, slot_id, hold_id, state, take, refusal, claim=None):
        """The hold recorded, then one place taken by `take(now)` (an atomic update); `claim`:
        an unconfirmed booking's share of its release, ended when nothing is taken."""
        now = self.clock.now()
        # recorded first: if we die after taking the place, the sweeper finds this record
        earlier = self.store.record_hold(hold_id, slot_id, now, state=state, claim=claim)
        if earlier is not None and (earlier["state"] == RELEASED or earlier["slot_id"] != slot_id):
            self.store.claims.end(claim, hold_id)
            raise SlotNotBookable("This hold has ended.")
        slot = take(now)
        if slot is None:
            already = self.store.has_place(slot_id, hold_id) if earlier is not None else None
            if already is not None:
                return slot_view(already)  # a retried call: it has its place
            why = refusal(now) or SlotFull()
            if earlier is None:
                self.store.forget_hold(hold_id)  # no place taken: nothing for the sweeper
            self.store.claims.end(claim, hold_id)
            raise why
        return slot_view(slot)

    @rpc(expected_exceptions=EXPECTED)
    def confirmed(self, hold_id):
        """The booking holding `hold_id` was confirmed from its mailbox: it no longer counts
        against its release's share. Safe to repeat."""
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            raise InvalidRequest("Invalid hold id.", {"hold_id": ["Letters, digits, - and _."]})
        hold = self.store.get_hold(hold_id)
        if hold is not None:
            self.store.claims.end(hold.get("claim"), hold_id)
        return hold is not None

    def _claim_release(self, slot_id, hold_id, until):
        """Count an unconfirmed booking's hold against the share of the release that opened
        the slot; the release's id, or None when it has no bound (or the slot is unknown:
        the hold's own refusal says so)."""
        release = (self.store.get(slot_id) or {}).get("release")
        if not release:
            return None
        if not self.store.claims.take(release["id"], release["bound"], hold_id, until,
                                      time.time()):
            raise rules.too_many_in_release()
        return release["id"]

    def _release_mark(self, release_id, places):
        return rules.release_mark(release_id, places,
                                  setting(self.config, "UNCONFIRMED_RELEASE_SHARE"))

    @rpc(expected_exceptions=EXPECTED)
    def release(self, hold_id):
        """Give back the place held by `hold_id`. Safe to call any number of times.

        The one way a place comes back (applicant, fraud, staff, sweeper): it is not bookable
        at once but held back until a random later instant (services/slots/freed_places.py), so
        that whoever let it go cannot take it back before an applicant sees it.
        """
        if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
            return False
        return self._release(self.store.get_hold(hold_id))

    def _release(self, hold):
        if hold is None or hold["state"] == RELEASED:
            return False
        # the place first, then the record: dying in between leaves a live record whose
        # place is gone, which the sweeper ends without giving anything back twice
        given = self.store.give_place_back(hold["slot_id"], hold["_id"],
                                           self._rerelease_ts(hold["slot_id"]))
        self.store.end_hold(hold["_id"])
        self.store.claims.end(hold.get("claim"), hold["_id"])
        return given

    def _kept_on(self, hold_id, slot_id):
        hold = self.store.get_hold(hold_id)
        return bool(hold and hold["state"] == KEPT and hold["slot_id"] == slot_id)

    @rpc(expected_exceptions=EXPECTED)
    def modes(self):
        """{procedure: "open" | "requests"} for every procedure: the public pages ask it once
        per page to show the right path (book a slot, or file a request)."""
        stored, default = self.store.modes_all(), self._default_mode()
        return {code: "requests" if stored.get(code, default) == "requests" else "open"
                for code in contract.PROCEDURE_CODES}

    def _default_mode(self):
        """The mode of a procedure staff never switched (issue 24: requests unless configured
        otherwise); anything but `open` reads as requests, the safe side."""
        return "open" if setting(self.config, "PROCEDURE_MODE_DEFAULT") == "open" \
            else "requests"

    @rpc(expected_exceptions=EXPECTED)
    def set_mode(self, procedure, mode):
        """`open` or `requests`, through the requests service's supervisor RPC. The one copy
        of the switch: every hold is decided here, and the requests service reads it here."""
        if procedure not in contract.PROCEDURE_CODES or mode not in ("open", "requests"):
            raise InvalidRequest("Unknown procedure or mode.", {"mode": ["open or requests."]})
        self.store.set_mode(procedure, mode)
        return mode

    @rpc(expected_exceptions=EXPECTED)
    def hand_over(self, old_hold, new_hold):
        """Give the place of a kept hold to another kept hold, without it becoming bookable
        in between (an offer declined or lapsed goes to the next request). True when handed
        over; False when `old_hold` has no place (then nothing changes). Safe to repeat."""
        for hold_id in (old_hold, new_hold):
            if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
                raise InvalidRequest("Invalid hold id.", {"hold_id": ["Letters, digits, - and _."]})
        old = self.store.get_hold(old_hold)
        if old is None or old["state"] == RELEASED:
            new = self.store.get_hold(new_hold)
            return bool(new and new["state"] == KEPT and new["slot_id"] == (old or {}).get("slot_id"))
        now = self.clock.now()
        # the new record first: dying after it leaves a live record the next call completes
        earlier = self.store.record_hold(new_hold, old["slot_id"], now, state=KEPT)
        if earlier is not None and earlier.get("slot_id") != old["slot_id"]:
            raise SlotNotBookable("This hold has ended.")
        self.store.hand_over(old["slot_id"], old_hold, new_hold, now.timestamp())
        self.store.end_hold(old_hold)
        return self.store.has_place(old["slot_id"], new_hold) is not None

    @timer(interval=1)
    def sweep_holds(self):
        """Give back the places of old holds that no booking uses (see the module docstring)."""
        sweeper, now = self.sweeper, time.time()
        if now < sweeper.next_ts:
            return
        sweeper.next_ts = now + sweeper.settings["every"]
        # kept while we sweep and renewed at each pass: another instance takes over only after
        # this one stops sweeping for three periods
        if not self.store.leases.acquire(SWEEP_JOB, sweeper.owner, 3 * sweeper.settings["every"],
                                         now):
            return
        released = sweep(self.store, self.booking.holds_in_use, now, sweeper.settings["max_age"],
                         self._release)
        if released:
            log.warning("gave back %d places held without a booking", released)


    @rpc(expected_exceptions=EXPECTED)
    def create_from_plan(self, plan, release="schedule"):
        """Create the slots of an opening plan; return how many are new.

        release: "schedule" (default: new slots start scheduled and are released in random
        batches, M1), "now" (open at once: tests, and the part of the demo shown at start),
        or a share between 0 and 1 (the demo: that share at once, the rest scheduled).
        """
        return self._create(plan, release, extra=False)

    @rpc(expected_exceptions=EXPECTED)
    def schedule_for(self, procedure=None, plan_id=None, include_released=False, limit=100):
        """Supervisors: the release batches (secret to everyone else), soonest first."""
        args = validated(SCHEDULE_QUERY, procedure=procedure, plan_id=plan_id,
                         include_released=include_released, limit=limit)
        query = {} if args["include_released"] else {"state": {"$ne": RELEASED}}
        for key in ("procedure", "plan_id"):
            if args.get(key):
                query[key] = args[key]
        batches = self.store.batches(query, args["limit"])
        return {"batches": [staff_view(b) for b in batches]}

    @rpc(expected_exceptions=EXPECTED)
    def reschedule(self, batch_id, due, by="supervisor"):
        """Supervisors: move a batch not yet released to another instant (ISO-8601 with offset).

        The instant must be in the future (or now: release at the next pass) and before the
        batch's first slot starts.
        """
        args = validated(RESCHEDULE, batch_id=batch_id, due=due, by=by)
        batch = self.store.get_batch(args["batch_id"])
        if batch is None:
            raise NotFound("No release batch with this id.", {"batch_id": ["Unknown batch."]})
        due_ts = draw.to_ts(max(args["due"], self.clock.now()))
        if due_ts >= batch["first_start_ts"]:
            raise InvalidRequest("A batch must be released before its first slot starts.",
                                 {"due": ["Must be before the first slot of the batch."]})
        moved = self.store.reschedule(args["batch_id"], due_ts, args["by"])
        if moved is None:
            raise InvalidRequest("This batch is already released.",
                                 {"batch_id": ["Already released."]})
        log.info("release batch %s moved by %s", args["batch_id"], args["by"])
        return staff_view(moved)

    @rpc(expected_exceptions=EXPECTED)
    def preview_plan(self, plan, extra=False):
        """Supervisors: what a plan would make, before it is saved (nothing is written)."""
        plan = load_or_raise(OPENING_PLAN, plan, InvalidRequest)
        extra = validated(PREVIEW, extra=extra)["extra"]
        plan_id = plan_id_of(dict(plan, extra=extra))
        real = list(expand_plan(plan, self.slot_id_secret, variant=plan_id if extra else ""))
        days = {as_utc(s["start"]).astimezone(PARIS).date() for s in real}
        return {"plan_id": plan_id, "slots": len(real), "places": len(real) * plan["desks"],
                "days": len(days), "exists": self.store.get_plan(plan_id) is not None,
                "first_start": iso_paris(real[0]["start"]) if real else None,
                "last_start": iso_paris(real[-1]["start"]) if real else None}

    @rpc(expected_exceptions=EXPECTED)
    def capacity(self, procedure=None, site=None):
        """Supervisors: places scheduled, released, booked, freed and waiting for re-release,
        by procedure and site, over the slots still to come."""
        args = validated(FIGURES_QUERY, procedure=procedure, site=site)
        query = {"start": {"$gt": self.clock.now()}}
        for key in ("procedure", "site"):
            if args.get(key):
                query[key] = args[key]
        return {"figures": capacity_figures(self.store.figures_of(query))}

    @rpc(expected_exceptions=EXPECTED)
    def last_releases(self, procedure=None, site=None, limit=20):
        """Supervisors: the last released batches, newest first, with how long their places
        took to go."""
        args = validated(FIGURES_QUERY, procedure=procedure, site=site, limit=limit)
        query = {key: args[key] for key in ("procedure", "site") if args.get(key)}
        answer = []
        for batch in self.store.released_batches(query, args["limit"]):
            speed = release_speed(batch, self.store.places_of(batch["slot_ids"]))
            view = staff_view({k: v for k, v in batch.items() if k != "slot_ids"})
            answer.append(dict(view, slots=len(batch["slot_ids"]), **speed))
        return {"releases": answer}

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

    # -- the release timer -------------------------------------------------------------------

    @config_timer("RELEASE_TIMER_SECONDS")
    def release_due(self):
        """Release what is due: batches of scheduled slots, and freed places coming back.

        Every instance's timer fires; one at a time passes its lease, and each batch or slot is
        claimed by a conditional update besides, so a batch is released once whatever the
        number of instances, and one left half-done by a crash is finished by the next pass.
        """
        interval = setting(self.config, "RELEASE_TIMER_SECONDS")
        if not self.store.leases.acquire("release_due", self.instance, 3 * interval, time.time()):
            return
        now_ts = draw.to_ts(self.clock.now())
        for batch in self.store.claim_due(now_ts, 3 * interval):
            self._release_batch(batch, now_ts)
        for slot in freed_places.bring_back_due(self.store, now_ts, self._release_mark,
                                                self._outbox_entry):
            self._announce_rerelease(slot)

    def outbox_routes(self):
        """`slots_released` whose dispatch failed (broker down, crash after the write), for
        the relay (services/common/relay.py)."""
        return [(self.store.batch_outbox, "released", self._announce_batch),
                (self.store.slot_outbox, "released", self._announce_rerelease)]

    # -- internals ---------------------------------------------------------------------------

    def _create(self, plan, release, extra):
        plan = load_or_raise(OPENING_PLAN, plan, InvalidRequest)
        release = validated(PLAN_RELEASE, release=release)["release"]
        plan_id = plan_id_of(dict(plan, extra=extra))
        now = self.clock.now()
        self.store.save_plan({"_id": plan_id, "site": plan["site"], "procedure": plan["procedure"],
                              "from": plan["from"].isoformat(), "to": plan["to"].isoformat(),
                              "extra": extra, "created_at": now})
        real = list(expand_plan(plan, self.slot_id_secret, variant=plan_id if extra else ""))
        # decoys (SLOTS_DECOY_SHARE) go out with the releases like any slot; never counted
        slots = real + decoy_slots(plan, real, setting(self.config, "SLOTS_DECOY_SHARE"),
                                   self.slot_id_secret)
        # a plan loaded again makes nothing new, even under another id key (or the ids made
        # before ids were keyed): its slots are known by their start times too
        known = self.store.starts_of_plan(plan_id)
        slots = [s for s in slots if s["start"] not in known]
        policy = self.policy
        share = 1.0 if release == "now" else 0.0 if release == "schedule" else float(release)
        open_now = set()
        if share > 0:
            count = round(len(slots) * share)
            open_now = {s["_id"] for s in policy.rng.sample(slots, count)} if count < len(slots) \
                else {s["_id"] for s in slots}
        opened = [s for s in slots if s["_id"] in open_now]
        mark = self._release_mark(f"{plan_id}@{draw.to_ts(now):.0f}",
                                  sum(s["free"] for s in opened if not s.get("decoy")))
        created = self.store.insert_new(opened, now, state=rules.OPEN,
                                        published_ts=draw.to_ts(now), plan_id=plan_id,
                                        release=mark)
        new_scheduled = self.store.insert_new([s for s in slots if s["_id"] not in open_now], now,
                                              state=rules.SCHEDULED, plan_id=plan_id)
        by_id = {s["_id"]: s for s in slots}
        batches = draw.draw_batches([by_id[i] for i in new_scheduled], now, policy, policy.rng)
        self.store.add_batches([{
            "_id": f"rel-{uuid.uuid4().hex[:12]}", "plan_id": plan_id, "site": plan["site"],
            "procedure": plan["procedure"], "due_ts": draw.to_ts(due), "state": DUE,
            "slot_ids": ids, "first_start_ts": draw.to_ts(by_id[ids[0]]["start"]),
            "created_at": now,
        } for due, ids in batches])
        decoys = {s["_id"] for s in slots if s.get("decoy")}
        created = [i for i in created if i not in decoys]
        new_scheduled_real = [i for i in new_scheduled if i not in decoys]
        log.info("opening plan %s %s/%s: %d slots, %d new (%d open now, %d in %d release batches)",
                 plan_id, plan["site"], plan["procedure"], len(real),
                 len(created) + len(new_scheduled_real), len(created), len(new_scheduled_real),
                 len(batches))
        return {"slots": len(real), "created": len(created) + len(new_scheduled_real),
                "open": len(created), "scheduled": len(new_scheduled_real),
                "batches": len(batches), "plan_id": plan_id}

    def _rerelease_ts(self, slot_id):
        """When a place given back on this slot becomes bookable again (epoch seconds)."""
        slot = self.store.get(slot_id)
        return freed_places.given_back_at(self.clock.now(), slot and slot["start"], self.policy,
                                          self.policy.rng)

    def _release_batch(self, batch, now_ts):
        before = self.store.places_of(batch["slot_ids"])
        mark = self._release_mark(batch["_id"], sum(s["free"] for s in before if not s.get("decoy")))
        slots = self.store.open_slots(batch["slot_ids"], now_ts, release=mark)
        places = sum(s["free"] for s in slots if not s.get("decoy"))  # real places only
        done = self.store.finish_batch(batch["_id"], now_ts, places, self._outbox_entry())
        if done is None:
            return  # finished by another instance after a takeover
        log.info("release batch %s: %d slots, %d places", batch["_id"], len(slots), places)
        self._announce_batch(done)

    def _outbox_entry(self):
        grace = setting(self.config, "OUTBOX_GRACE_SECONDS")
        return Outbox.entry(str(uuid.uuid4()), time.time(), grace)

    @staticmethod
    def _batch_event(batch):
        return contract.build(
            "slots_released", event_id=batch["outbox"]["released"]["event_id"],
            occurred_at=draw.from_ts(batch["released_ts"]), batch_id=batch["_id"],
            procedure=batch["procedure"], site=batch["site"], count=batch["places"],
            released_at=iso_utc(draw.from_ts(batch["released_ts"])))

    @staticmethod
    def _rerelease_event(slot):
        last = slot["last_rerelease"]
        return contract.build(
            "slots_released", event_id=slot["outbox"]["released"]["event_id"],
            occurred_at=draw.from_ts(last["at_ts"]), batch_id=f"{slot['_id']}@{last['at_ts']:.0f}",
            procedure=slot["procedure"], site=slot["site"], count=last["places"],
            released_at=iso_utc(draw.from_ts(last["at_ts"])))

    def _announce_batch(self, batch):
        announce(self.dispatch, self.store.batch_outbox, "released", batch["_id"],
                 "slots_released", self._batch_event(batch))

    def _announce_rerelease(self, slot):
        announce(self.dispatch, self.store.slot_outbox, "released", slot["_id"],
                 "slots_released", self._rerelease_event(slot))


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
