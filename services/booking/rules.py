"""Booking rules as plain functions: references, tokens, what events and applicants see."""
import secrets
from datetime import datetime, time, timedelta, timezone

from services.common import contract
from services.common.contract import ACTIVE, CANCEL_REASONS, CANCELLED, CHECKED_IN, PENDING  # noqa: F401
from services.common.normalise import normalise_email, normalise_name
from services.common.reference_data import PROCEDURES
# one implementation for booking and request tokens
from services.common.tokens import TokenSigner, new_salt  # noqa: F401
from services.common.timeutil import PARIS, as_utc, iso_paris, iso_utc

# what the applicant reads next to a booking that waits for its confirmation
NOT_FINAL = {
    "fr": "Ce rendez-vous n'est pas encore définitif : confirmez-le avec le lien envoyé à votre "
          "adresse électronique, sinon la place sera rendue.",
    "en": "This booking is not final yet: confirm it with the link sent to your e-mail "
          "address, otherwise the place will be given back.",
}

# Crockford's alphabet: no I, L, O, U, so a reference read aloud at a counter is unambiguous.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_reference():
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"RDV-{chars[:4]}-{chars[4:]}"


def seconds_after_publication(published_at, booked_at):
    if published_at is None:
        return None
    return round((booked_at - published_at).total_seconds(), 3)


def identity_fields(booking):
    identity = booking["identity"]
    return {
        "family_name": identity["family_name"],
        "given_names": identity["given_names"],
        "family_name_normalised": normalise_name(identity["family_name"]),
        "given_names_normalised": normalise_name(identity["given_names"]),
        "birth_date": identity["birth_date"],
        "foreigner_number": identity.get("foreigner_number"),
    }


def _common_fields(booking):
    slot = booking["slot"]
    return {
        "reference": booking["_id"],
        "procedure": booking["procedure"],
        "slot_id": slot["id"],
        "site": slot["site"],
        "slot_start": iso_utc(slot["start"]),
        "slot_end": iso_utc(slot["end"]),
        "email": booking["email"],
        "email_normalised": normalise_email(booking["email"]),
        "phone": booking.get("phone"),
        "identity": identity_fields(booking),
    }


def email_key(email):
    """The form one mailbox is known by (provider plus-tags and Gmail dots folded)."""
    return normalise_email(email)


def confirm_by_ts(created_ts, minutes):
    """Epoch seconds past which an unconfirmed booking is released; None: never (minutes <= 0)."""
    return created_ts + 60 * minutes if minutes > 0 else None


def _created_fields(booking):
    return dict(
        _common_fields(booking),
        published_at=iso_utc(booking["slot"]["published_at"]) if booking["slot"].get("published_at") else None,
        seconds_after_publication=booking.get("seconds_after_publication"),
        client=booking.get("client") or {},
        decoy=bool(booking["slot"].get("decoy")),
        offer_id=booking.get("offer_id"),
    )


def created_event(booking, token, confirm_token):
    """`booking_created`: what fraud and notify need, rebuilt identically on every (re)send."""
    return contract.build(
        "booking_created",
        event_id=booking["outbox"]["created"]["event_id"],
        occurred_at=booking["created_at"],
        **_created_fields(booking),
        # for the manage and confirm links in the e-mail; the bus is internal
        token=token,
        confirm_token=confirm_token,
    )


def confirm_subject(reference):
    """What the confirmation token signs: not the booking's own token, which its booker gets."""
    return f"{reference}/confirm"


def confirmed_event(booking):
    """`booking_confirmed`: the same facts as booking_created (no token), once the owner of
    the mailbox confirmed; fraud screens from this one."""
    confirmed_at = datetime.fromtimestamp(booking["confirmed_ts"], timezone.utc)
    return contract.build(
        "booking_confirmed",
        event_id=booking["outbox"]["confirmed"]["event_id"],
        occurred_at=confirmed_at,
        **_created_fields(booking),
        confirmed_at=iso_utc(confirmed_at),
    )


def cancellation(reason, evidence, actor, now):
    """The record of a cancellation, kept as one sub-document of the booking."""
    return {"reason": reason, "evidence": evidence, "by": actor, "at": now}


def cancelled_event(booking):
    cancelled = booking["cancellation"]
    return contract.build(
        "booking_cancelled",
        event_id=booking["outbox"]["cancelled"]["event_id"],
        occurred_at=cancelled["at"],
        **_common_fields(booking),
        reason=cancelled["reason"],
        evidence=cancelled.get("evidence") or {},
        cancelled_by=cancelled.get("by"),
    )


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
    }
    if booking["status"] == PENDING:
        view["not_final"] = NOT_FINAL
        if booking.get("confirm_by_ts"):
            view["confirm_by"] = iso_paris(datetime.fromtimestamp(booking["confirm_by_ts"], timezone.utc))
    if booking["status"] == CANCELLED:
        view["cancel_reason"] = booking["cancellation"]["reason"]
        view["cancelled_at"] = iso_paris(booking["cancellation"]["at"])
    return view


# -- the counter (check-in M4, walk-ins M6) ---------------------------------------------------

CODE_SEPARATOR = "."
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
JOURS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")


def convocation_fields(booking):
    """What a convocation's signature covers: the reference, the exact name and the slot."""
    slot, identity = booking["slot"], booking["identity"]
    return {"reference": booking["_id"], "family_name": identity["family_name"],
            "given_names": identity["given_names"], "slot_id": slot["id"],
            "slot_start": iso_utc(slot["start"])}


def convocation_code(reference, signature):
    """Compact text for the QR code and the scanner: `RDV-XXXX-XXXX.<base64url signature>`."""
    return f"{reference}{CODE_SEPARATOR}{signature}"


def parse_code(code):
    """(reference, signature) from a scanned or typed code; ValueError when it is not one."""
    reference, sep, signature = (code or "").strip().partition(CODE_SEPARATOR)
    if not sep or not reference or not signature:
        raise ValueError("not a convocation code")
    return reference.upper(), signature


def names_match(booking, family_name, given_names):
    """M4: the names read on the identity document against the booking's, normalised."""
    identity = booking["identity"]
    return (normalise_name(identity["family_name"]) == normalise_name(family_name)
            and normalise_name(identity["given_names"]) == normalise_name(given_names))


def parse_hours(text):
    """"08:30-12:00" -> ((8, 30), (12, 0)); ValueError when malformed or empty."""
    try:
        start, end = (tuple(int(p) for p in part.strip().split(":")) for part in text.split("-"))
        if len(start) != 2 or len(end) != 2 or not (0, 0) <= start < end <= (24, 0) \
                or start[1] > 59 or end[1] > 59:
            raise ValueError
    except (ValueError, AttributeError):
        raise ValueError(f"hours are HH:MM-HH:MM, got {text!r}") from None
    return start, end


def walk_in_rule_text(hours_text):
    return (f"Sans rendez-vous : uniquement le renouvellement de la carte de résident de 10 ans, "
            f"le matin de {hours_text.replace('-', ' à ')}, sauf le mercredi. / Walk-ins: renewal "
            f"of a 10-year resident card only, mornings {hours_text}, never on Wednesday.")


def walk_in_refusal(procedure, now, hours_text):
    """Why a walk-in cannot be registered at `now` (aware datetime), or None when it can.

    M6: renewal of a 10-year card only, on the configured morning hours in Europe/Paris, on the
    weekdays the procedure allows (never Wednesday).
    """
    rule = PROCEDURES.get(procedure, {}).get("walk_in")
    if rule is None:
        return "Cette démarche ne se fait que sur rendez-vous. " + walk_in_rule_text(hours_text)
    local = as_utc(now).astimezone(PARIS)
    if WEEKDAYS[local.weekday()] not in rule["weekdays"]:
        return f"Pas d'accueil sans rendez-vous le {JOURS[local.weekday()]}. " \
               + walk_in_rule_text(hours_text)
    start, end = parse_hours(hours_text)
    if not start <= (local.hour, local.minute) < end:
        return f"Il est {local:%H:%M} : hors des heures d'accueil sans rendez-vous. " \
               + walk_in_rule_text(hours_text)
    return None


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
        "cancel_reason": None,
        "cancelled_at": None,
        "checked_in_at": None,
        "checked_in_by": None,
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
    counts = {"total": len(views), PENDING: 0, ACTIVE: 0, CHECKED_IN: 0, CANCELLED: 0, "walk_ins": 0}
    for view in views:
        counts[view["status"]] += 1
        counts["walk_ins"] += view["walk_in"]
    return counts


def checked_in_event(booking):
    """`booking_checked_in`: no personal data beyond what `booking_created` carried."""
    checked = booking["checked_in"]
    return contract.build(
        "booking_checked_in",
        event_id=booking["outbox"]["checked_in"]["event_id"],
        occurred_at=checked["at"],
        reference=booking["_id"],
        site=booking["slot"]["site"],
        slot_start=iso_utc(booking["slot"]["start"]),
        procedure=booking["procedure"],
        checked_in_by=checked.get("by"),
    )


def check_in_record(agent, now):
    return {"by": agent, "at": now}
