"""M2, extra capacity for foreigners in a regular situation (renewals...): staff open more
places per procedure, either as an extra plan of its own or as more desks on a plan's slots.

- `open_extra_plan`: a plan whose slots are distinct from the regular plan's even at the same
  hours (their ids are keyed by the extra plan's id) and follow their own random release
  schedule (M1, services/slots/release.py).
- `add_desks`: more places on each future slot of a plan. On a scheduled slot they go out with
  its batch; on an open slot they are held back (services/slots/freed_places.py) until
  `added_places_return()`, an instant drawn like a batch's, or like a freed place's for a slot
  too close for that, so nobody learns when.

The supervisors' figures of what was released, booked and held back are in capacity.py.
"""
import logging
from datetime import timedelta

from services.common import idempotency
from services.common.errors import EXPECTED, InvalidRequest, NotFound
from services.common.rpc import rpc
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.schemas import validated
from services.common.timeutil import PARIS, as_utc
from services.slots import release as draw
from services.slots import rules
from services.slots.freed_places import freed_place_delay
from services.common.slot_schemas import AddDesksSchema

log = logging.getLogger(__name__)

ADD_DESKS = AddDesksSchema()


def added_places_return(slot_start, now, policy, rng):
    """Epoch seconds at which places added now to an open slot become bookable: a random
    instant drawn like a release batch's (inside the weekday windows, before the lead time);
    for a slot past its lead time, like a freed place's."""
    due = draw.release_instant(slot_start, now, policy, rng)
    if due <= now:
        due = now + timedelta(seconds=freed_place_delay(now, slot_start, policy, rng))
    return draw.to_ts(due)


def within_dates(slot, date_from=None, date_to=None):
    """Is the slot's Paris day between the two dates (either may be None: unbounded)?"""
    day = as_utc(slot["start"]).astimezone(PARIS).date()
    return (date_from is None or day >= date_from) and (date_to is None or day <= date_to)


class ExtraCapacity:
    """The slots service's M2 entrypoints (a mixin of SlotsService: its store, clock, policy
    and plan creation)."""

    @rpc(expected_exceptions=EXPECTED)
    def open_extra_plan(self, plan, release="schedule"):
        """M2: extra capacity for a procedure (renewals...) as a plan of its own.

        Its slots are distinct from the regular plan's even at the same hours, and follow
        their own random release schedule.
        """
        return self._create(plan, release, extra=True)

    @rpc(expected_exceptions=EXPECTED)
    def add_desks(self, plan_id, desks, date_from=None, date_to=None, idempotency_key=None):
        """M2: `desks` more places on each future slot of a plan (optionally between two dates).

        Places on scheduled slots go with their batch; on open slots they are held back and
        come back at `added_places_return()`.

        idempotency_key: the staff gateway's, one per HTTP request: each slot records the
        adding under the fingerprint of the key and the arguments, so the same call delivered
        again (or resumed after a crash half-way) adds each slot's places once.
        """
        args = validated(ADD_DESKS, plan_id=plan_id, desks=desks, date_from=date_from,
                         date_to=date_to)
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        operation = idempotency.request_fingerprint(key, args) if key else None
        if self.store.get_plan(args["plan_id"]) is None:
            raise NotFound("No plan with this id.", {"plan_id": ["Unknown plan."]})
        now = self.clock.now()
        slots = [s for s in self.store.of_plan(args["plan_id"], now)
                 if within_dates(s, args.get("date_from"), args.get("date_to"))]
        counts = {"scheduled": 0, "open": 0}
        for slot in slots:
            back = added_places_return(slot["start"], now, self.policy, self.policy.rng)
            state = self.store.add_places(slot["_id"], args["desks"], back, operation)
            counts["open" if state == rules.OPEN else "scheduled"] += 1
        log.info("plan %s: %d places added on %d slots", args["plan_id"], args["desks"], len(slots))
        return {"plan_id": args["plan_id"], "slots": len(slots), "places": args["desks"] * len(slots),
                "scheduled_slots": counts["scheduled"], "open_slots": counts["open"]}
