"""Delivery rules as plain functions: idempotency keys, retry schedule, SMTP error classes."""
import smtplib
import socket

# one vocabulary with the outbox and inbox of every service (services/common/delivery.py):
# pending (new), in_progress (claimed by a sender), retrying (waits out a backoff),
# done (sent), parked (failed for good: staff resend it)
from services.common.delivery import DONE, IN_PROGRESS, PARKED, PENDING, RETRYING, backoff  # noqa: F401

WAITING = [PENDING, RETRYING]  # what a sender may claim once it is due


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
