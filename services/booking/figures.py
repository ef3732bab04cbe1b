"""Booking's domain figures: how long people wait, and what was cancelled and why.

Plain functions over booking documents (only the fields figures need are read from the
store: no names, no e-mail, no token). Failed booking attempts (M7) are not recorded in this
tree yet: `failed_attempts` stays None until the attempts ledger lands, which fills it.
"""
from services.booking.rules import CANCELLED
from services.common.figures import median, rounded, week_of

# cancellations that mean a trafficker held the place (services/fraud, check-in's M4)
TRAFFICKING = ("multiple_bookings_same_email", "name_not_exact", "slot_grabbing", "name_mismatch")
# whole sub-documents: the embedded stand-in does not project dotted paths
FIELDS = {"procedure": 1, "created_at": 1, "slot": 1, "status": 1, "cancellation": 1, "walk_in": 1}


def figures(bookings, procedures):
    """{procedure: {bookings, median_wait_days, cancellations: {reason: n}, trafficking_cancelled,
    weeks: [{week, bookings, median_wait_days}], failed_attempts}} over the given bookings."""
    out = {code: {"bookings": 0, "waits": [], "cancellations": {}, "weeks": {}}
           for code in procedures}
    for booking in bookings:
        if (booking.get("walk_in") or booking.get("procedure") not in out
                or not booking.get("slot") or not booking.get("created_at")):
            continue
        entry = out[booking["procedure"]]
        entry["bookings"] += 1
        wait = (booking["slot"]["start"] - booking["created_at"]).total_seconds() / 86400
        entry["waits"].append(wait)
        entry["weeks"].setdefault(week_of(booking["created_at"]), []).append(wait)
        if booking.get("status") == CANCELLED:
            reason = (booking.get("cancellation") or {}).get("reason") or "unknown"
            entry["cancellations"][reason] = entry["cancellations"].get(reason, 0) + 1
    return {code: {
        "bookings": entry["bookings"],
        "median_wait_days": rounded(median(entry["waits"])),
        "cancellations": entry["cancellations"],
        "trafficking_cancelled": sum(n for r, n in entry["cancellations"].items() if r in TRAFFICKING),
        "weeks": [{"week": week, "bookings": len(waits), "median_wait_days": rounded(median(waits))}
                  for week, waits in sorted(entry["weeks"].items())],
        "failed_attempts": None,
    } for code, entry in out.items()}
