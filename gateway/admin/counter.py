"""The counter's day view as a plain rule: who to show for a search and a filter."""
from services.common.exact_names import normalise_name

SHOW = {"all": None, "expected": ("active",), "checked_in": ("checked_in",),
        "cancelled": ("cancelled",)}


def shown(bookings, q="", show="all"):
    """The day's bookings matching `q` (a reference, or part of a name: case, accents and
    hyphens folded) and the `show` filter, in the day view's order."""
    statuses = SHOW[show]
    wanted = (q or "").strip()
    folded = normalise_name(wanted) if wanted else ""
    found = []
    for booking in bookings:
        if statuses and booking["status"] not in statuses:
            continue
        if wanted and not (wanted.upper() in booking["id"] or folded in normalise_name(
                f"{booking['family_name'] or ''} {booking['given_names'] or ''}")):
            continue
        found.append(booking)
    return found
