"""Booking rules as plain functions: references, tokens, what events and applicants see."""
import hashlib
import hmac
import secrets
from base64 import urlsafe_b64encode
from datetime import datetime, timezone

from services.common import contract
from services.common.contract import ACTIVE, CANCEL_REASONS, CANCELLED, CHECKED_IN, PENDING  # noqa: F401
from services.common.normalise import normalise_email, normalise_name
from services.common.timeutil import iso_paris, iso_utc

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


class TokenSigner:
    """Booking tokens are HMACs of the reference and a per-booking salt under a configured key.

    Only a hash of the token is stored, yet the outbox relay can rebuild the token for a
    delayed `booking_created` (notify puts the cancel link in the confirmation) without the
    plaintext ever sitting in the database.
    """

    def __init__(self, secret):
        self._key = secret.encode()

    def token_for(self, reference, salt):
        digest = hmac.new(self._key, f"{reference}:{salt}".encode(), hashlib.sha256).digest()
        return urlsafe_b64encode(digest).decode().rstrip("=")

    @staticmethod
    def hash_token(token):
        return hashlib.sha256(token.encode()).hexdigest()

    def matches(self, token, token_hash):
        if not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(self.hash_token(token), token_hash)


def new_salt():
    return secrets.token_hex(8)


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
    )


def created_event(booking, token):
    """`booking_created`: what fraud and notify need, rebuilt identically on every (re)send."""
    return contract.build(
        "booking_created",
        event_id=booking["outbox"]["created"]["event_id"],
        occurred_at=booking["created_at"],
        **_created_fields(booking),
        # for the confirm and cancel links in the e-mail; the bus is internal
        token=token,
    )


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
