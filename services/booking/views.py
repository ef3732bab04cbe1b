"""What applicants and staff see of a booking, and the day view's bounds and counts."""
from datetime import datetime, time, timedelta, timezone

from services.common.contract import ACTIVE, CANCELLED, CHECKED_IN, PENDING
from services.common.retention import erased
from services.common.timeutil import PARIS, as_utc, iso_paris, iso_utc


# what the applicant reads next to a booking that waits for its confirmation
NOT_FINAL = {
    "fr": "Ce rendez-vous n'est pas encore définitif : confirmez-le avec le lien envoyé à votre "
          "adresse électronique, sinon la place sera rendue.",
    "en": "This booking is not final yet: confirm it with the link sent to your e-mail "
          "address, otherwise the place will be given back.",
}


def applicant_view(booking):
    """What the applicant (holder of the token) sees of their booking."""
    slot = booking["slot"]
    identity = booking["identity"]
    view = {
        "reference": booking["_id"],
        "status": booking["status"],
        "procedure": booking["procedure"],
        "slot": {"id": slot["id"], "site": slot["site"],
                 "start": iso_paris(slot["start"]), "end": iso_paris(slot["end"])},
        "family_name": identity["family_name"],
        "given_names": identity["given_names"],
        "birth_date": identity["birth_date"],
        "foreigner_number": identity.get("foreigner_number"),
        "email": booking["email"],
        "phone": booking.get("phone"),
        "created_at": iso_paris(booking["created_at"]),
        # past BOOKING_RETENTION_DAYS: who it was for is erased (the fields above are None)
        "erased": erased(booking),
    }
    if booking["status"] == PENDING:
        view["not_final"] = NOT_FINAL
        if booking.get("confirm_by_ts"):
            view["confirm_by"] = iso_paris(datetime.fromtimestamp(booking["confirm_by_ts"], timezone.utc))
    if booking["status"] == CANCELLED:
        view["cancel_reason"] = booking["cancellation"]["reason"]
        view["cancelled_at"] = iso_paris(booking["cancellation"]["at"])
    return view


def day_bounds(day):
    """The UTC instants [start, end) of a local day (a date) in Europe/Paris."""
    start = datetime.combine(day, time(0), tzinfo=PARIS)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=PARIS)
    return as_utc(start), as_utc(end)


def paris_day(moment):
    return as_utc(moment).astimezone(PARIS).date()


def staff_view(booking):
    """A booking as staff see it: `id`, ISO-8601 UTC times, the state and why."""
    slot, identity = booking["slot"], booking["identity"]
    view = {
        "id": booking["_id"],
        "status": booking["status"],
        "procedure": booking["procedure"],
        "site": slot["site"],
        "slot_id": slot.get("id"),
        "start": iso_utc(slot["start"]),
        "end": iso_utc(slot["end"]),
        "family_name": identity["family_name"],
        "given_names": identity["given_names"],
        "walk_in": bool(booking.get("walk_in")),
        # past BOOKING_RETENTION_DAYS: the names above are None (services/common/retention.py)
        "erased": erased(booking),
        # how it came in (web, desk, phone: issue 21) and the agent who made it
        "channel": None if booking.get("walk_in") else booking.get("channel", "web"),
        "by": booking.get("by"),
        "cancel_reason": None,
        "cancelled_at": None,
        "checked_in_at": None,
        "checked_in_by": None,
        # the reminder e-mail two working days before (services/booking/reminders.py)
        "reminded_at": iso_utc(booking["reminded"]["at"]) if booking.get("reminded") else None,
        # the day view's marks (absent, excused) and undone cancellations (who, why)
        "attendance": (booking.get("attendance") or {}).get("state"),
        "restored": [{"by": r["by"], "why": r["why"], "at": iso_utc(r["at"])}
                     for r in booking.get("restored") or []],
    }
    if booking["status"] == CANCELLED:
        cancellation = booking["cancellation"]
        view.update(cancel_reason=cancellation["reason"], cancelled_at=iso_utc(cancellation["at"]),
                    cancel_evidence=cancellation.get("evidence") or {})
    if booking.get("checked_in"):
        view.update(checked_in_at=iso_utc(booking["checked_in"]["at"]),
                    checked_in_by=booking["checked_in"].get("by"))
    return view


def day_counts(views):
    counts = {"total": len(views), PENDING: 0, ACTIVE: 0, CHECKED_IN: 0, CANCELLED: 0, "walk_ins": 0,
              "absent": 0, "excused": 0}
    for view in views:
        counts[view["status"]] += 1
        counts["walk_ins"] += view["walk_in"]
        if view["status"] == ACTIVE and view.get("attendance") in ("absent", "excused"):
            counts[view["attendance"]] += 1
    return counts
