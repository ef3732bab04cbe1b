"""Why a slot cannot be booked: plain functions the service and the tests share."""
import math

from services.common.errors import (InvalidRequest, NotFound, SlotFull, SlotNotBookable,
                                    TooManyUnconfirmed)
from services.common.timeutil import as_utc

OPEN = "open"
SCHEDULED = "scheduled"
CLOSED = "closed"


def unknown_to_public(slot):
    """A slot not released yet is answered as an unknown one: nothing tells the public that
    it exists before its release (M1), on any path that takes a slot id."""
    return slot is None or slot["state"] == SCHEDULED


def not_found():
    return NotFound("This slot does not exist.", {"slot_id": ["Unknown slot."]})


TOO_MANY_IN_RELEASE = (
    "Beaucoup de places de cette mise en ligne attendent encore la confirmation de leur "
    "rendez-vous : rien n'a été réservé, réessayez dans quelques minutes. / Many places of this "
    "release are still waiting for their booking's confirmation: nothing was booked, try again "
    "in a few minutes.")


def release_mark(release_id, places, share):
    """What a slot carries of the release that opened it: its id, and how many of its places
    unconfirmed bookings may hold at once (`share` of its real places, at least one). None
    when unbounded (a share of 1 or more, or 0 and less)."""
    if share <= 0 or share >= 1 or places <= 0:
        return None
    return {"id": release_id, "bound": max(1, math.ceil(share * places))}


def too_many_in_release():
    return TooManyUnconfirmed(TOO_MANY_IN_RELEASE,
                              {"slot_id": ["Too many unconfirmed bookings in this release."]})


def refusal(slot, procedure, now):
    """The error explaining why `slot` could not be held for `procedure` at `now`."""
    if unknown_to_public(slot):
        return not_found()
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
