"""The events booking announces, built from a stored booking (the same event on every resend);
their contract: services/common/contract.py."""
from datetime import datetime, timezone

from services.common import contract
from services.common.exact_names import normalise_name
from services.common.one_email import normalise_email
from services.common.timeutil import iso_utc


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
        # None for a booking made at the desk for a person without e-mail (issue 21)
        "email_normalised": normalise_email(booking["email"]) if booking["email"] else None,
        "phone": booking.get("phone"),
        "identity": identity_fields(booking),
        # bookings made before the field existed were made on the French pages
        "lang": booking.get("lang") or "fr",
    }


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
        # booking decides the deadline; the e-mail says it as the event does
        confirm_by=(iso_utc(datetime.fromtimestamp(booking["confirm_by_ts"], timezone.utc))
                    if booking.get("confirm_by_ts") else None),
    )


def confirmed_event(booking, token):
    """`booking_confirmed`: the same facts as booking_created, once the owner of the mailbox
    confirmed; fraud screens from this one. `token` (the booking's own) is for the links of the
    e-mail saying it is confirmed; the confirmation link's token has done its work."""
    confirmed_at = datetime.fromtimestamp(booking["confirmed_ts"], timezone.utc)
    return contract.build(
        "booking_confirmed",
        event_id=booking["outbox"]["confirmed"]["event_id"],
        occurred_at=confirmed_at,
        **_created_fields(booking),
        confirmed_at=iso_utc(confirmed_at),
        token=token,
    )


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
        was_confirmed=booking.get("confirmed_ts") is not None,
    )


def restored_event(booking, token):
    """`booking_restored`: the booking's facts once its last undo is stored (`restored`, last)."""
    undone = booking["restored"][-1]
    return contract.build(
        "booking_restored",
        event_id=booking["outbox"]["restored"]["event_id"],
        occurred_at=undone["at"],
        **_common_fields(booking),
        token=token,
        restored_by=undone["by"],
    )


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
