"""Undoing a cancellation made at the counter by mistake: which, until when, on what hold."""
import uuid

from services.booking.views import paris_day
from services.common.contract import CANCELLED


UNDOABLE = "name_mismatch"  # only the counter's own decision can be taken back


def undo_refusal(booking, now):
    """Why a cancellation cannot be undone (None when it can): only a name mismatch at the
    counter, and only on the Paris day it was made."""
    cancellation = booking.get("cancellation") or {}
    if booking.get("status") != CANCELLED or cancellation.get("reason") != UNDOABLE:
        return ("Seule une annulation « nom différent » au guichet peut être rétablie. / Only a "
                "counter's name-mismatch cancellation can be undone.")
    if paris_day(cancellation["at"]) != paris_day(now):
        return ("Une annulation ne se rétablit que le jour même. / A cancellation can only be "
                "undone the same day.")
    return None


def undo_hold_id(reference):
    """A hold id of its own for each undo: a place taken for an undo that never finished is
    swept back like any hold no booking uses (booking.holds_in_use)."""
    return f"{reference}_u{uuid.uuid4().hex[:8]}"


def undo_record(booking, by, why, now):
    return {"cancellation": booking["cancellation"], "by": by, "why": why, "at": now}
