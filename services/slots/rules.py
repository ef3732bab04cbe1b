"""Why a slot cannot be booked: plain functions the service and the tests share."""
from services.common.errors import InvalidRequest, NotFound, SlotFull, SlotNotBookable
from services.common.timeutil import as_utc

OPEN = "open"
SCHEDULED = "scheduled"
CLOSED = "closed"


def refusal(slot, procedure, now):
    """The error explaining why `slot` could not be held for `procedure` at `now`."""
    # a scheduled slot is answered as an unknown one: nothing tells it exists before its release
    if slot is None or slot["state"] == SCHEDULED:
        return NotFound("This slot does not exist.", {"slot_id": ["Unknown slot."]})
    if procedure is not None and slot["procedure"] != procedure:
        return InvalidRequest(
            "This slot is for another procedure.",
            {"slot_id": [f"This slot is for the procedure '{slot['procedure']}'."]},
        )
    if slot["state"] != OPEN:
        return SlotNotBookable("This slot is not open for booking.")
    if as_utc(slot["start"]) <= now:
        return SlotNotBookable("This slot has already started.")
    if slot["free"] <= 0:
        return SlotFull()
    return None
