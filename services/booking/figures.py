"""Booking's domain figures: how long people wait, and what was cancelled and why.

Plain functions over booking documents (only the fields figures need are read from the
store: no names, no e-mail, no token), and the failed booking attempts recorded for M7 (only
their procedure is read).
"""
from services.common.contract import CANCELLED
from services.common.figures import median, rounded, week_of

# cancellations that mean a trafficker held the place (services/fraud, check-in's M4)
TRAFFICKING = ("multiple_bookings_same_email", "multiple_bookings_same_person", "name_not_exact",
               "slot_grabbing", "name_mismatch")
# whole sub-documents: the embedded stand-in does not project dotted paths
FIELDS = {"procedure": 1, "created_at": 1, "slot": 1, "status": 1, "cancellation": 1, "walk_in": 1,
          "channel": 1}
CHANNELS = ("web", "desk", "phone", "partner")  # how bookings came in (issues 21, 24): the site, an agent, a partner


def figures(bookings, procedures, attempts=()):
    """{procedure: {bookings, by_channel: {web, desk, phone}, median_wait_days,
    cancellations: {reason: n}, trafficking_cancelled, weeks: [{week, bookings,
    median_wait_days}], failed_attempts}} over the given bookings and recorded attempts."""
    out = {code: {"bookings": 0, "waits": [], "cancellations": {}, "weeks": {}, "attempts": 0,
                  "by_channel": dict.fromkeys(CHANNELS, 0)}
           for code in procedures}
    for attempt in attempts:
        if attempt.get("procedure") in out:
            out[attempt["procedure"]]["attempts"] += 1
    for booking in bookings:
        if (booking.get("walk_in") or booking.get("procedure") not in out
                or not booking.get("slot") or not booking.get("created_at")):
            continue
        entry = out[booking["procedure"]]
        entry["bookings"] += 1
        channel = booking.get("channel") or "web"
        entry["by_channel"][channel] = entry["by_channel"].get(channel, 0) + 1
        wait = (booking["slot"]["start"] - booking["created_at"]).total_seconds() / 86400
        entry["waits"].append(wait)
        entry["weeks"].setdefault(week_of(booking["created_at"]), []).append(wait)
        if booking.get("status") == CANCELLED:
            reason = (booking.get("cancellation") or {}).get("reason") or "unknown"
            entry["cancellations"][reason] = entry["cancellations"].get(reason, 0) + 1
    return {code: {
        "bookings": entry["bookings"],
        "by_channel": entry["by_channel"],
        "median_wait_days": rounded(median(entry["waits"])),
        "cancellations": entry["cancellations"],
        "trafficking_cancelled": sum(n for r, n in entry["cancellations"].items() if r in TRAFFICKING),
        "weeks": [{"week": week, "bookings": len(waits), "median_wait_days": rounded(median(waits))}
                  for week, waits in sorted(entry["weeks"].items())],
        "failed_attempts": entry["attempts"],
    } for code, entry in out.items()}
