"""Slots service: opening plans, slots, and the atomic hold/release of places."""
import logging
from datetime import date, datetime, time, timedelta


from services.common.errors import EXPECTED, InvalidRequest, NotFound, SlotFull
from services.common.mongo import MongoStore
from services.common.rpc import rpc
from services.common.schemas import load_or_raise
from services.common.timeutil import PARIS, iso_paris, iso_utc, utcnow
from services.slots import rules
from services.slots.plan import expand_plan
from services.slots.schemas import OpeningPlanSchema
from services.slots.store import SlotStore

log = logging.getLogger(__name__)

MAX_PER_PAGE = 200
OPENING_PLAN = OpeningPlanSchema()


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
    }


def _local_midnight_utc(day):
    return datetime.combine(day, time(0, 0), tzinfo=PARIS)


class SlotsService:
    name = "slots"

    store = MongoStore("slots", SlotStore)

    @rpc(expected_exceptions=EXPECTED)
    def list_open(self, procedure, date_from, date_to, page=1, per_page=50, site=None):
        """Open slots with a free place, starting on local days [date_from, date_to], by start.

        site: only that site's slots (the applicant pages choose a site before a time)."""
        try:
            first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
        except (TypeError, ValueError):
            raise InvalidRequest("Dates are YYYY-MM-DD.", {"from": ["Not a valid date."]})
        per_page = max(1, min(int(per_page), MAX_PER_PAGE))
        page = max(1, int(page))
        start_from = max(_local_midnight_utc(first), utcnow())
        start_before = _local_midnight_utc(last + timedelta(days=1))
        found = self.store.list_open(
            procedure, start_from, start_before, (page - 1) * per_page, per_page + 1, site
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
        """Take one place on the slot for `hold_id`; raise why not (full, past, closed...)."""
        now = utcnow()
        slot = self.store.take_place(slot_id, procedure, now)
        if slot is None:
            # nothing taken, yet nothing to refuse: the last place went meanwhile
            raise rules.refusal(self.store.get(slot_id), procedure, now) or SlotFull()
        if not self.store.record_hold(hold_id, slot_id, now):
            # the same hold asked twice: it already has its place, give this one back
            self.store.give_place_back(slot_id)
            slot = self.store.get(slot_id)
        return slot_view(slot)

    @rpc(expected_exceptions=EXPECTED)
    def release(self, hold_id):
        """Give back the place held by `hold_id`. Safe to call any number of times."""
        hold = self.store.end_hold(hold_id)
        if hold is None:
            return False
        self.store.give_place_back(hold["slot_id"])
        return True

    @rpc(expected_exceptions=EXPECTED)
    def create_from_plan(self, plan):
        """Create the slots of an opening plan (open at once for now); return how many are new."""
        plan = load_or_raise(OPENING_PLAN, plan, InvalidRequest)
        slots = list(expand_plan(plan))
        created = self.store.insert_new(slots, utcnow())
        log.info("opening plan %s/%s: %d slots, %d new",
                 plan["site"], plan["procedure"], len(slots), created)
        return {"slots": len(slots), "created": created}

    @rpc
    def is_empty(self):
        return not self.store.any_slot()

    @rpc(expected_exceptions=EXPECTED)
    def holds(self, slot_id):
        """Hold ids currently holding a place on the slot (for audits and tests)."""
        return [h["_id"] for h in self.store.holds_for(slot_id)]
