"""Delivery rules as plain functions: idempotency keys, retry schedule, SMTP error classes."""
import smtplib
import socket

# one vocabulary with the outbox and inbox of every service (services/common/delivery.py):
# pending (new), in_progress (claimed by a sender), retrying (waits out a backoff),
# done (sent), parked (failed for good: staff resend it)
from services.common.delivery import DONE, IN_PROGRESS, PARKED, PENDING, RETRYING, backoff  # noqa: F401

WAITING = [PENDING, RETRYING]  # what a sender may claim once it is due
# notify's own state, outside the shared vocabulary: not sent because its address reached
# MAIL_PER_ADDRESS_PER_DAY; kept for staff, who may resend it
CAPPED = "capped"

# What anyone can make notify send to any address without reading that mailbox: a booking
# made (its link asks to confirm), a request filed, an attempt recorded, and the cancellation
# of a booking nobody confirmed. These count against the address's daily limit. What the
# owner of the mailbox proved they asked for (a booking confirmed from its link, an offer to a
# request confirmed from its link) and what happens to a confirmed booking (cancelled by its
# owner, fraud or staff; its reminder two working days before) is owed to that person and
# always goes.
PUBLIC_KINDS = frozenset({"confirmation", "attempt_receipt", "request_filed"})


def idempotency_key(event_id, kind):
    """One message per (event, kind): the same event delivered twice maps to the same record."""
    return f"{event_id}:{kind}"


def is_transient(exc):
    """Retry the server being down or slow, and 4xx answers; a 5xx will not get better."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, (smtplib.SMTPException, OSError, socket.timeout))


def is_connection_error(exc):
    """The server could not be reached at all (as opposed to refusing one message)."""
    return isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError)) \
        and not isinstance(exc, smtplib.SMTPResponseException)


def sends_message(event_type, event):
    """False for the `booking_created` of a booking born confirmed (an accepted offer): its
    `booking_confirmed` brings the one message, so the applicant gets one, not two; and for a
    booking without e-mail (made at the desk for such a person, issue 21): nothing to send."""
    if not event.get("email"):
        return False
    return not (event_type == "booking_created" and event.get("offer_id"))


def counts_against_limit(kind, event):
    """True when a message of this kind about this event counts against its address's daily
    limit (see PUBLIC_KINDS)."""
    if kind == "cancellation":
        return not event.get("was_confirmed")
    return kind in PUBLIC_KINDS
