"""Booking service: create, read and cancel bookings; announce them on the bus."""
import logging
import time
import uuid

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from services.booking import evidence, rules
from services.booking.store import BookingStore
from services.common import signing
from services.common.errors import (EXPECTED, InvalidRequest, NotFound, PlacesAvailable,
                                    ServiceUnavailable, TooManyAttempts)
from services.common.lease import InstanceId
from services.common.mongo import MongoStore
from services.common.outbox import Outbox
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.schemas import (AttemptAccessSchema, AttemptRequestSchema, AttestationSchema,
                                     BookingRequestSchema, ClientSchema, load_or_raise)
from services.common.settings import setting
from services.common.timers import config_timer
from services.common.timeutil import parse_iso, utcnow

log = logging.getLogger(__name__)

NOT_FOUND = "No booking with this reference and token."
# built once: a marshmallow Schema costs more to build than to load a request with
BOOKING_REQUEST, CLIENT = BookingRequestSchema(), ClientSchema()
ATTEMPT_REQUEST, ATTEMPT_ACCESS, ATTESTATION = AttemptRequestSchema(), AttemptAccessSchema(), AttestationSchema()
NO_ATTEMPT = "No recorded attempt with this reference and token."


class Tokens(DependencyProvider):
    """The token signer, keyed from configuration; the service refuses to start without a key."""

    def setup(self):
        secret = self.container.config.get("BOOKING_TOKEN_SECRET")
        if not secret or len(str(secret)) < 16:
            raise ConfigurationError(
                "BOOKING_TOKEN_SECRET must be set to a secret of at least 16 characters")
        self.signer = rules.TokenSigner(str(secret))

    def get_dependency(self, worker_ctx):
        return self.signer


class AttestationKey(DependencyProvider):
    """The Ed25519 key that signs attestations (M7); the service refuses to start without it."""

    def setup(self):
        try:
            self.key = signing.load_private_key(self.container.config.get("ATTESTATION_SIGNING_KEY"))
        except ValueError as exc:
            raise ConfigurationError(
                f"ATTESTATION_SIGNING_KEY must be an Ed25519 private key (PEM or base64): {exc}")

    def get_dependency(self, worker_ctx):
        return self.key


class BookingService:
    name = "booking"

    store = MongoStore("booking", BookingStore)
    slots = BoundedRpcProxy("slots")
    dispatch = EventDispatcher()
    tokens = Tokens()
    config = Config()
    instance = InstanceId()
    attestation_key = AttestationKey()

    @rpc(expected_exceptions=EXPECTED)
    def create(self, request, client):
        """Book a place: hold it on the slot, store the booking, announce `booking_created`."""
        data = load_or_raise(BOOKING_REQUEST, request, InvalidRequest)
        client = load_or_raise(CLIENT, client, InvalidRequest)
        reference = rules.new_reference()
        slot = self.slots.hold(data["slot_id"], reference, data["procedure"])
        now = utcnow()
        published_at = parse_iso(slot["published_at"]) if slot.get("published_at") else None
        salt = rules.new_salt()
        token = self.tokens.token_for(reference, salt)
        booking = {
            "_id": reference,
            "status": rules.ACTIVE,
            "procedure": data["procedure"],
            "slot": {"id": slot["id"], "site": slot["site"], "start": parse_iso(slot["start"]),
                     "end": parse_iso(slot["end"]), "published_at": published_at},
            "identity": {
                "family_name": data["family_name"],
                "given_names": data["given_names"],
                "birth_date": data["birth_date"].isoformat(),
                "foreigner_number": data.get("foreigner_number"),
            },
            "email": data["email"],
            "phone": data.get("phone"),
            "client": client,
            "created_at": now,
            "seconds_after_publication": rules.seconds_after_publication(published_at, now),
            "token_hash": rules.TokenSigner.hash_token(token),
            "token_salt": salt,
            "hold_id": reference,
            # the instance that made it: tests check that every booking process takes part
            "created_by": self.instance,
            "outbox": {"created": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        try:
            self.store.insert(booking)
        except Exception:
            log.exception("could not store booking %s; giving its place back", reference)
            self._release_quietly(reference)
            raise ServiceUnavailable("The booking could not be saved. Please try again.")
        self._announce_created(booking, token)
        return {
            "reference": reference,
            "token": token,
            "status": rules.ACTIVE,
            "slot": {k: slot[k] for k in ("id", "site", "procedure", "start", "end")},
            # this booking took the last place: callers can stop sending attempts for it
            "slot_full": slot["free"] <= 0,
        }

    @rpc(expected_exceptions=EXPECTED)
    def get(self, reference, token):
        return rules.applicant_view(self._owned(reference, token))

    @rpc(expected_exceptions=EXPECTED)
    def cancel(self, reference, token):
        """The applicant cancels with their token; cancelling again changes nothing."""
        self._owned(reference, token)
        return rules.applicant_view(self._cancel(reference, "applicant", {}, "applicant"))

    @rpc(expected_exceptions=EXPECTED)
    def system_cancel(self, reference, reason, evidence=None, actor="system"):
        """Cancel on behalf of fraud or staff, with a reason code and its evidence."""
        if reason not in rules.CANCEL_REASONS:
            raise InvalidRequest("Unknown cancel reason.",
                                 {"reason": [f"One of {', '.join(rules.CANCEL_REASONS)}."]})
        booking = self._cancel(reference, reason, evidence or {}, actor)
        if booking is None:
            raise NotFound("No booking with this reference.")
        return {"reference": reference, "status": booking["status"],
                "cancel_reason": (booking.get("cancellation") or {}).get("reason")}

    @rpc(expected_exceptions=EXPECTED)
    def statuses(self, references):
        """Status and cancel reason of each booking (for services that keep their own index)."""
        if (not isinstance(references, list) or len(references) > 500
                or not all(isinstance(ref, str) for ref in references)):
            raise InvalidRequest("A list of at most 500 references.", {"references": ["Invalid."]})
        return {booking["_id"]: {"status": booking["status"],
                                 "cancel_reason": (booking.get("cancellation") or {}).get("reason")}
                for booking in self.store.get_many(references)}

    # -- M7: evidence of failed attempts -----------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def record_attempt(self, request):
        """Record that nothing was bookable for a procedure; e-mail a receipt (attempt_recorded).

        Refused while a place is bookable for the procedure (book it instead), and past
        ATTEMPTS_PER_DAY recorded attempts per applicant and Paris day.
        """
        data = load_or_raise(ATTEMPT_REQUEST, request, InvalidRequest)
        if self.slots.any_bookable(data["procedure"]):
            raise PlacesAvailable(
                "Places are bookable for this procedure right now: book one instead.",
                {"procedure": ["Places are bookable right now."]})
        now = utcnow()
        number, email = data.get("foreigner_number"), data["email"]
        limit = setting(self.config, "ATTEMPTS_PER_DAY", 3)
        if not self.store.count_attempt(evidence.day_key(number, email, now), limit):
            raise TooManyAttempts(
                f"At most {limit} attempts can be recorded per person and per day. "
                "The ones already recorded are kept.", {})
        reference = evidence.new_attempt_reference()
        salt = rules.new_salt()
        token = self.tokens.token_for(reference, salt)
        attempt = {
            "_id": reference, "file": evidence.file_id(number, email),
            "procedure": data["procedure"], "email": email, "foreigner_number": number,
            "at": now, "at_ts": now.timestamp(),
            "token_hash": rules.TokenSigner.hash_token(token), "token_salt": salt,
            "outbox": {"recorded": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        self.store.insert_attempt(attempt)
        self._announce_attempt(attempt, token)
        return dict(evidence.attempt_view(attempt), token=token)

    @rpc(expected_exceptions=EXPECTED)
    def attempts(self, reference, token):
        """The attempts in the file of the holder of a receipt, oldest first."""
        attempt = self._owned_attempt(reference, token)
        found = self.store.attempts_in(attempt["file"])
        return {"attempts": [evidence.attempt_view(a) for a in found]}

    @rpc(expected_exceptions=EXPECTED)
    def attestation(self, reference, token):
        """The signed attestation of every attempt in the receipt holder's file."""
        attempt = self._owned_attempt(reference, token)
        fields = evidence.attestation_fields(self.store.attempts_in(attempt["file"]), utcnow())
        return {"attestation": fields, "signature": signing.sign(self.attestation_key, fields)}

    @rpc(expected_exceptions=EXPECTED)
    def verify_attestation(self, document):
        """Is this attestation ours, unchanged, and are its attempts on record? (staff, anyone)"""
        data = load_or_raise(ATTESTATION, document, InvalidRequest)
        fields = data["attestation"]
        signed = signing.verify(self.attestation_key.public_key(), data["signature"], fields)
        listed = fields.get("attempts")
        references = [a.get("reference") for a in listed if isinstance(a, dict)][:500] \
            if isinstance(listed, list) else []
        on_record = signed and evidence.attempts_match(
            listed, self.store.attempts_by_reference([r for r in references if isinstance(r, str)]),
            fields.get("file"))
        if not signed:
            message = "The signature does not match: this attestation was not issued as shown."
        elif not on_record:
            message = "The signature is valid, but its attempts are not all on record."
        else:
            message = "Valid: issued by the prefecture, and every attempt is on record."
        return {"valid": bool(signed and on_record), "signature_valid": signed,
                "attempts_on_record": bool(on_record), "message": message}

    # a safety net for failed dispatches, not the normal path
    @config_timer("OUTBOX_RELAY_SECONDS", 5.0)
    def relay_outbox(self):
        """Send the events whose dispatch did not happen (crash, broker down) and finish releases.

        One instance at a time runs the pass (its lease); each record is claimed besides, so
        that a pass overlapping a slow one elsewhere never sends a record twice.
        """
        interval = setting(self.config, "OUTBOX_RELAY_SECONDS", 5.0)
        if not self.store.leases.acquire("outbox_relay", self.instance, 3 * interval, time.time()):
            return
        outbox = self.store.outbox
        for booking in outbox.due("created", time.time()):
            token = self.tokens.token_for(booking["_id"], booking["token_salt"])
            self._announce_created(booking, token)
        for booking in outbox.due("cancelled", time.time()):
            self._finish_cancel(booking)
        for attempt in self.store.attempt_outbox.due("recorded", time.time()):
            self._announce_attempt(attempt, self.tokens.token_for(attempt["_id"], attempt["token_salt"]))

    # -- internals ---------------------------------------------------------------------------

    def _owned(self, reference, token):
        booking = self.store.get(reference) if isinstance(reference, str) else None
        # unknown reference and wrong token get the same answer: references are not guessable
        # by probing
        if booking is None or not self.tokens.matches(token, booking["token_hash"]):
            raise NotFound(NOT_FOUND)
        return booking

    def _owned_attempt(self, reference, token):
        access = load_or_raise(ATTEMPT_ACCESS, {"reference": reference, "token": token},
                               InvalidRequest)
        attempt = self.store.get_attempt(access["reference"])
        if attempt is None or not self.tokens.matches(access["token"], attempt["token_hash"]):
            raise NotFound(NO_ATTEMPT)
        return attempt

    def _announce_attempt(self, attempt, token):
        if self._dispatched(attempt["_id"], "attempt_recorded", evidence.recorded_event(attempt, token)):
            self.store.attempt_outbox.sent(attempt["_id"], "recorded")

    def _grace(self):
        return setting(self.config, "OUTBOX_GRACE_SECONDS", 5.0)

    def _cancel(self, reference, reason, evidence, actor):
        booking = self.store.cancel(reference, rules.cancellation(reason, evidence, actor, utcnow()),
                                    Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if booking is None:
            # already cancelled or checked in (or unknown: None): nothing to do, say how it stands
            return self.store.get(reference)
        self._finish_cancel(booking)
        return booking

    def _finish_cancel(self, booking):
        if not booking.get("place_released"):
            try:
                self.slots.release(booking["hold_id"])
                self.store.mark(booking["_id"], place_released=True)
            except Exception:
                log.warning("place of %s not yet given back; the relay retries", booking["_id"],
                            exc_info=True)
                return
        if self._dispatched(booking["_id"], "booking_cancelled", rules.cancelled_event(booking)):
            self.store.outbox.sent(booking["_id"], "cancelled")

    def _announce_created(self, booking, token):
        if self._dispatched(booking["_id"], "booking_created", rules.created_event(booking, token)):
            # written with the next batch, off the applicant's wait (services/common/pending.py)
            self.store.outbox.sent(booking["_id"], "created")

    def _dispatched(self, reference, event_type, payload):
        try:
            self.dispatch(event_type, payload)
            return True
        except Exception:
            log.warning("%s for %s not dispatched; the relay retries", event_type, reference,
                        exc_info=True)
            return False

    def _release_quietly(self, hold_id):
        try:
            self.slots.release(hold_id)
        except Exception:
            log.exception("could not give back the place held by %s", hold_id)
