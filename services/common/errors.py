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
class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413


@deserialize_to_instance
class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status = 415


@deserialize_to_instance
class EmailHasBooking(DomainError):
    """One e-mail, one person: this e-mail already holds a confirmed booking (told up front,
    rather than both bookings cancelled by M3 afterwards). The message names the reference,
    never the name it is under."""

    code = "email_has_booking"
    status = 409

    @classmethod
    def for_reference(cls, reference):
        return cls(
            f"Cette adresse électronique a déjà le rendez-vous {reference} : une adresse par "
            f"personne. / This e-mail address already holds booking {reference}: one e-mail "
            f"address per person.",
            {"email": [f"Already holds booking {reference}. One e-mail address per person."]})


@deserialize_to_instance
class PersonHasBooking(DomainError):
    """One person, one booking per procedure (M3 by identity): the same folded names and birth
    date, or the same foreigner number, already hold a confirmed booking for it. The message
    names neither that booking's reference nor its e-mail, nor which of the two matched:
    someone who knows a person's name and birth date learns nothing more than the refusal."""

    code = "person_has_booking"
    status = 409
    default_message = (
        "Un rendez-vous confirmé existe déjà pour cette démarche au nom de cette personne (mêmes "
        "noms et date de naissance, ou même numéro d'étranger) : un rendez-vous par personne. "
        "Pour changer d'adresse électronique, annulez-le avec le lien de son courriel, puis "
        "réservez à nouveau. / A confirmed booking for this procedure already exists for this "
        "person (same names and birth date, or same foreigner number): one booking per person. "
        "To change your e-mail address, cancel it with the link in its e-mail, then book again.")

    def __init__(self, message=None, fields=None):
        super().__init__(message, fields or {"identity": [
            "A confirmed booking for this procedure already exists for this person."]})


@deserialize_to_instance
class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503


@deserialize_to_instance
class Refused(DomainError):
    """A rule says no (a walk-in on a Wednesday, say): the message states the rule."""

    code = "refused"
    status = 409



@deserialize_to_instance
class PlacesAvailable(DomainError):
    """An attempt recorded as failed while places were bookable (M7): book one instead."""

    code = "places_available"
    status = 409


@deserialize_to_instance
class UseRequest(DomainError):
    """An attempt recorded for a procedure allocated by request (M7): there, the evidence is
    the request itself (its filing date and its offers), so nothing is recorded."""

    code = "use_request"
    status = 409
    default_message = (
        "Cette démarche est attribuée sur demande : déposez une demande ; sa date de dépôt et "
        "les places proposées font foi. Rien n'a été enregistré. / This procedure is allocated "
        "by request: file a request; its filing date and the places offered are the evidence. "
        "Nothing was recorded.")


@deserialize_to_instance
class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    status = 429


@deserialize_to_instance
class TooManyUnconfirmed(DomainError):
    """Too many bookings from one address, or at one mailbox domain, wait for confirmation:
    nothing was held (services/booking/unconfirmed.py)."""

    code = "too_many_unconfirmed"
    status = 429


@deserialize_to_instance
class QuotaReached(DomainError):
    """A partner's weekly quota for a procedure is used up (issue 24): nothing was filed."""

    code = "quota_reached"
    status = 429


@deserialize_to_instance
class PartnerUnknown(DomainError):
    """No partner has this API key (or none was given)."""

    code = "unauthenticated"
    status = 401
    default_message = "Clé de partenaire inconnue. / Unknown partner key."


@deserialize_to_instance
class PartnerNotAllowed(DomainError):
    """The partner is suspended or past its expiry: it files nothing."""

    code = "partner_not_allowed"
    status = 403


def describe(exc, limit=500):
    """A failure as staff read it in a parked message or event: its kind and its words."""
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"[:limit]


EXPECTED = (InvalidRequest, NotFound, SlotFull, SlotNotBookable, EmailHasBooking, PersonHasBooking, Refused,
            ServiceUnavailable, PayloadTooLarge, UnsupportedMediaType, PlacesAvailable,
            TooManyAttempts, TooManyUnconfirmed, UseRequest)
# partners (issue 24)
EXPECTED += (QuotaReached, PartnerUnknown, PartnerNotAllowed)
