"""Domain errors that cross the bus.

Registered with nameko so that an RPC caller gets the same exception class back (not a generic
RemoteError) and the gateways can map each to its HTTP status.
"""
from nameko.exceptions import deserialize_to_instance


class DomainError(Exception):
    """Base: an expected outcome the caller should show, never a crash."""

    code = "error"
    status = 400
    default_message = ""

    def __init__(self, message=None, fields=None):
        message = message or self.default_message
        # both args always JSON values: nameko rebuilds the exception from them on the caller side
        fields = fields if isinstance(fields, dict) else {}
        super().__init__(message, fields)
        self.message = message
        self.fields = fields


@deserialize_to_instance
class InvalidRequest(DomainError):
    code = "invalid_request"
    status = 400


@deserialize_to_instance
class NotFound(DomainError):
    code = "not_found"
    status = 404


@deserialize_to_instance
class SlotFull(DomainError):
    code = "slot_full"
    status = 409
    default_message = "This slot is full. Please choose another one."


@deserialize_to_instance
class SlotNotBookable(DomainError):
    """Past, closed or not yet published: nothing to retry."""

    code = "slot_not_bookable"
    status = 409


@deserialize_to_instance
class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503


@deserialize_to_instance
class PlacesAvailable(DomainError):
    """An attempt recorded as failed while places were bookable (M7): book one instead."""

    code = "places_available"
    status = 409


@deserialize_to_instance
class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    status = 429


def describe(exc, limit=500):
    """A failure as staff read it in a parked message or event: its kind and its words."""
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"[:limit]


EXPECTED = (InvalidRequest, NotFound, SlotFull, SlotNotBookable, ServiceUnavailable,
            PlacesAvailable, TooManyAttempts)
