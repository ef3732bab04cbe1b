"""What travels on the bus: every event, its producer and its payload, in one place.

Producers build events with `build()`, which checks the payload against the event's schema
before anything is sent; consumers read them with `load()`, which refuses a malformed or
unknown event with a `ContractError` saying why (the inbox parks it, the handler never
crashes on it); tests build their events here too. Booking statuses, cancel reasons and the
reference data (procedures, sites) they refer to are declared here as well, so that no
service keeps its own copy. The README's events table is this module, in prose.

Payload times are ISO-8601 strings in UTC ("...Z"); every payload carries `event_id` (a
UUID: handlers are idempotent on it, delivery is at least once) and `occurred_at`.
"""
import uuid

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from services.common.i18n import LANGS
from services.common.reference_data import PROCEDURES, SITES
from services.common.timeutil import iso_utc, parse_iso, utcnow

# -- booking statuses and cancel reasons ------------------------------------------------------

# pending: the place is held, the owner of the mailbox has not confirmed yet; it counts for
# nothing (no up-front refusal, no M3) until confirmed, and is released if never confirmed
PENDING, ACTIVE, CANCELLED, CHECKED_IN = "pending", "active", "cancelled", "checked_in"
BOOKING_STATUSES = (PENDING, ACTIVE, CANCELLED, CHECKED_IN)

CANCEL_REASONS = {
    "applicant": "the applicant cancelled it",
    "multiple_bookings_same_email": "one e-mail address held bookings for several people (M3)",
    "multiple_bookings_same_person": "one person held two bookings for one procedure under "
                                     "different e-mails; the earliest was kept (M3)",
    "name_not_exact": "the exact name of the person was not given (M4)",
    "slot_grabbing": "booked by a script taking places to resell them",
    "name_mismatch": "the name on the identity document did not match at the counter (M4)",
    "staff": "cancelled by the prefecture's staff",
    "not_confirmed": "the booking was not confirmed from its e-mail in time; its place went back",
    "email_already_used": "another booking on the same e-mail was confirmed first (one e-mail "
                          "per person); this one could no longer be confirmed, its place went back",
}

PROCEDURE_CODES = tuple(PROCEDURES)
SITE_CODES = tuple(SITES)

# the languages of the applicants' pages and e-mails (LANGS, services/common/i18n.py): the
# language a person used travels with their booking or request so that the e-mails are written
# in it and their links open the pages in it


def lang_field():
    return fields.String(load_default="fr", validate=validate.OneOf(LANGS),
                         metadata={"doc": "the language of the pages the person used: the "
                                          "e-mail's links open the pages in it"})


class ContractError(ValueError):
    """An event that does not follow the contract: unknown, or a payload that does not fit."""

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.fields = fields or {}


def _iso_utc_text(value):
    try:
        parse_iso(value)
    except (TypeError, ValueError, AttributeError):
        raise ValidationError("Not an ISO-8601 time with an offset.")


class IsoTime(fields.String):
    """An ISO-8601 instant with an offset, kept as text."""

    def __init__(self, **kwargs):
        super().__init__(validate=_iso_utc_text, **kwargs)


class Envelope(Schema):
    event_id = fields.UUID(required=True, metadata={"doc": "unique id; handlers dedupe on it"})
    occurred_at = IsoTime(required=True, metadata={"doc": "when it happened (UTC)"})


class Identity(Schema):
    family_name = fields.String(required=True)
    given_names = fields.String(required=True)
    family_name_normalised = fields.String(load_default=None)
    given_names_normalised = fields.String(load_default=None)
    birth_date = fields.String(required=True, metadata={"doc": "YYYY-MM-DD"})
    foreigner_number = fields.String(allow_none=True, load_default=None)


class Client(Schema):
    ip = fields.String(load_default="")
    user_agent = fields.String(load_default="")


class BookingFacts(Envelope):
    reference = fields.String(required=True)
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    slot_id = fields.String(required=True)
    site = fields.String(required=True, validate=validate.OneOf(SITE_CODES))
    slot_start = IsoTime(required=True)
    slot_end = IsoTime(required=True)
    # null for a booking an agent made for a person without e-mail (issue 21): no message
    email = fields.String(required=True, allow_none=True)
    email_normalised = fields.String(required=True, allow_none=True)
    phone = fields.String(allow_none=True, load_default=None)
    identity = fields.Nested(Identity, required=True)
    lang = lang_field()


class CreatedFacts(BookingFacts):
    """What booking_created and booking_confirmed both say of the booking."""
    published_at = IsoTime(allow_none=True, load_default=None,
                           metadata={"doc": "when the slot's place became bookable"})
    seconds_after_publication = fields.Float(allow_none=True, load_default=None)
    client = fields.Nested(Client, load_default=dict)
    token = fields.String(allow_none=True, load_default=None,
                          metadata={"doc": "for the manage link in the confirmation; the bus is internal"})
    confirm_token = fields.String(allow_none=True, load_default=None,
                                  metadata={"doc": "for the confirmation link: the e-mail only "
                                                   "carries it, so confirming proves the mailbox"})
    decoy = fields.Boolean(load_default=False,
                           metadata={"doc": "internal: the slot is a decoy only scripts book"})
    offer_id = fields.String(allow_none=True, load_default=None,
                             metadata={"doc": "the accepted offer when the place was allocated by "
                                              "request (issue 12): confirmed at once, no race"})


class BookingCreated(CreatedFacts):
    confirm_by = IsoTime(allow_none=True, load_default=None,
                         metadata={"doc": "unconfirmed by then, its place is given back (booking "
                                          "decides, the e-mail says it); none: it never lapses"})


class BookingConfirmed(CreatedFacts):
    """The owner of the mailbox confirmed: from now on the booking counts (M3, fraud).

    Carries `token` (the booking's own, for the manage and convocation links of the e-mail
    saying it is confirmed), never `confirm_token`."""
    confirmed_at = IsoTime(required=True)


class BookingCancelled(BookingFacts):
    reason = fields.String(required=True, validate=validate.OneOf(tuple(CANCEL_REASONS)))
    evidence = fields.Dict(load_default=dict)
    cancelled_by = fields.String(allow_none=True, load_default=None)
    was_confirmed = fields.Boolean(load_default=False,
                                   metadata={"doc": "the owner of the mailbox had confirmed it: "
                                                    "notify always sends its notice"})


class BookingRestored(BookingFacts):
    """A supervisor undid a name-mismatch cancellation the same day (issue 21): the booking is
    active again on a place of its slot. Fraud counts it again, notify tells the applicant."""
    token = fields.String(required=True,
                          metadata={"doc": "the booking's own, for the convocation and cancel "
                                           "links; the bus is internal"})
    restored_by = fields.String(required=True, metadata={"doc": "the supervisor's account id"})


class BookingCheckedIn(Envelope):
    reference = fields.String(required=True)
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    site = fields.String(required=True, validate=validate.OneOf(SITE_CODES))
    slot_id = fields.String(allow_none=True, load_default=None)
    slot_start = IsoTime(allow_none=True, load_default=None)
    checked_in_by = fields.String(required=True, metadata={"doc": "the agent's account id"})


class BookingReminderDue(Envelope):
    """Two working days before an active booking's appointment (issue 21): notify sends the
    reminder once (what to bring, the convocation, "I can no longer come")."""
    reference = fields.String(required=True)
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    site = fields.String(required=True, validate=validate.OneOf(SITE_CODES))
    slot_id = fields.String(required=True)
    slot_start = IsoTime(required=True)
    slot_end = IsoTime(required=True)
    email = fields.String(required=True)
    identity = fields.Nested(Identity, required=True)
    token = fields.String(required=True,
                          metadata={"doc": "the booking's own, for the convocation and cancel "
                                           "links; the bus is internal"})
    reminded_at = IsoTime(required=True)
    lang = lang_field()


class SlotsReleased(Envelope):
    batch_id = fields.String(required=True)
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    site = fields.String(required=True, validate=validate.OneOf(SITE_CODES))
    count = fields.Integer(required=True, validate=validate.Range(min=0))
    released_at = IsoTime(required=True)


class AttemptRecorded(Envelope):
    reference = fields.String(required=True, metadata={"doc": "the attempt's reference (ATT-...)"})
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    email = fields.String(required=True, metadata={"doc": "where the receipt goes"})
    foreigner_number = fields.String(allow_none=True, load_default=None)
    recorded_at = IsoTime(required=True)
    token = fields.String(required=True,
                          metadata={"doc": "for the link in the receipt; the bus is internal"})
    lang = lang_field()


class FraudDetected(Envelope):
    reference = fields.String(required=True)
    rule = fields.String(required=True)
    action = fields.String(required=True, validate=validate.OneOf(("cancelled", "review")))
    evidence = fields.Dict(load_default=dict)


class RequestFiled(Envelope):
    reference = fields.String(required=True, metadata={"doc": "the request's reference (REQ-...)"})
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    email = fields.String(required=True, metadata={"doc": "where the confirmation link goes"})
    token = fields.String(required=True,
                          metadata={"doc": "for the link in the e-mail; the bus is internal"})
    confirm_by = IsoTime(required=True, metadata={"doc": "unconfirmed after this, it lapses"})
    lang = lang_field()


class OfferMade(Envelope):
    offer_id = fields.String(required=True, metadata={"doc": "the offer (OFR-...), its hold id"})
    reference = fields.String(required=True, metadata={"doc": "the request it answers"})
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    site = fields.String(required=True, validate=validate.OneOf(SITE_CODES))
    slot_id = fields.String(required=True)
    slot_start = IsoTime(required=True)
    slot_end = IsoTime(required=True)
    deadline = IsoTime(required=True, metadata={"doc": "accept before this, or it goes to the next"})
    email = fields.String(required=True, allow_none=True,
                          metadata={"doc": "null for a request filed at the desk for a person "
                                           "without e-mail: staff tell them (nothing mailed)"})
    token = fields.String(required=True,
                          metadata={"doc": "the request's token, for the links; the bus is internal"})
    lang = lang_field()


class RenewalInvitation(Envelope):
    """A permit in the register expires within the renewal window (issue 24): its holder is
    invited once to file a renewal request, pre-filled and already verified."""
    invitation = fields.String(required=True, metadata={"doc": "the invitation (INV-...)"})
    procedure = fields.String(required=True, validate=validate.OneOf(PROCEDURE_CODES))
    email = fields.String(required=True, metadata={"doc": "the contact the register gives"})
    family_name = fields.String(required=True)
    given_names = fields.String(required=True)
    expiry = fields.Date(required=True, metadata={"doc": "the permit's expiry in the register"})
    token = fields.String(required=True,
                          metadata={"doc": "for the link in the e-mail; the bus is internal"})
    lang = lang_field()


class Event:
    def __init__(self, name, producer, schema, meaning, consumers=()):
        self.name, self.producer, self.schema = name, producer, schema
        self.meaning, self.consumers = meaning, tuple(consumers)
        # producers are strict (an unknown field is a bug); consumers let fields added later
        # through, so that a producer can grow a payload before every consumer is updated
        self.strict = schema(unknown=RAISE)
        self.lenient = schema(unknown=EXCLUDE)


EVENTS = {event.name: event for event in (
    Event("booking_created", "booking", BookingCreated,
          "a booking was made (pending); its place is held until confirmed or expired",
          consumers=("notify",)),
    Event("booking_confirmed", "booking", BookingConfirmed,
          "the owner of the e-mail confirmed the booking from the link sent to it; fraud "
          "screens it from then on; notify sends the confirmed appointment (.ics, convocation "
          "link)", consumers=("fraud", "notify")),
    Event("booking_cancelled", "booking", BookingCancelled,
          "a booking was cancelled (by the applicant, fraud or staff); its place is given back",
          consumers=("fraud", "notify")),
    Event("booking_restored", "booking", BookingRestored,
          "a supervisor undid a name-mismatch cancellation the same day: the booking is active "
          "again (fraud counts it again, notify tells the applicant with the convocation)",
          consumers=("fraud", "notify")),
    Event("booking_checked_in", "booking", BookingCheckedIn,
          "the applicant was received at the counter (names matched the identity document)"),
    Event("booking_reminder_due", "booking", BookingReminderDue,
          "an active booking's appointment is two working days ahead: notify sends the "
          "reminder (what to bring, convocation, cancel link) once", consumers=("notify",)),
    Event("slots_released", "slots", SlotsReleased,
          "a batch of places became bookable (random weekday instants, M1); the public "
          "gateway takes it as a nudge to look at slots at once (its view of free places)",
          consumers=("requests", "public_gateway")),
    Event("attempt_recorded", "booking", AttemptRecorded,
          "an applicant found nothing bookable and recorded the attempt (M7 evidence)",
          consumers=("notify",)),
    Event("request_filed", "requests", RequestFiled,
          "an applicant filed a request for a procedure allocated by draw; the e-mail asks to "
          "confirm it before it enters the draw", consumers=("notify",)),
    Event("offer_made", "requests", OfferMade,
          "a released place was allocated to a waiting request: the e-mail offers it with a "
          "deadline to accept", consumers=("notify",)),
    Event("renewal_invitation", "register", RenewalInvitation,
          "a permit in the register expires within the renewal window and has a contact: "
          "notify mails one invitation to file (pre-filled, already verified)",
          consumers=("notify",)),
    Event("fraud_detected", "fraud", FraudDetected,
          "fraud cancelled a booking or sent it to staff review, with the evidence"),
)}


def event(name):
    try:
        return EVENTS[name]
    except KeyError:
        raise ContractError(f"unknown event {name!r}")


def build(name, event_id=None, occurred_at=None, **payload):
    """A payload for event `name`, with its envelope, checked against the contract.

    occurred_at: a datetime (or ISO text); now by default.
    """
    if occurred_at is None or not isinstance(occurred_at, str):
        occurred_at = iso_utc(occurred_at or utcnow())
    body = {"event_id": event_id or str(uuid.uuid4()), "occurred_at": occurred_at, **payload}
    errors = event(name).strict.validate(body)
    if errors:
        raise ContractError(f"{name} does not follow the contract", errors)
    return body


def load(name, payload):
    """The payload of a received event `name`, or ContractError saying why it is refused."""
    if not isinstance(payload, dict):
        raise ContractError(f"{name}: the payload is not an object")
    errors = event(name).lenient.validate(payload)
    if errors:
        raise ContractError(f"{name}: {_describe(errors)}", errors)
    return payload


def _describe(errors, prefix=""):
    parts = []
    for key, value in errors.items():
        if isinstance(value, dict):
            parts.append(_describe(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}: {' '.join(map(str, value))}")
    return "; ".join(parts)


def fields_table(name):
    """(field, type, meaning) rows of an event's payload, for documentation."""
    schema = event(name).schema()
    return [(key, type(field).__name__, field.metadata.get("doc", ""))
            for key, field in schema.fields.items()]
