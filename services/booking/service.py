"""Booking service: create, read and cancel bookings; announce them on the bus."""
import logging
import time
import uuid
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider
from pymongo.errors import DuplicateKeyError
from pymongo.errors import PyMongoError

from services.booking import evidence, rules
from services.booking import figures as booking_figures
from services.booking.schemas import CheckInSchema, DayQuerySchema, OfferHoldSchema, WalkInSchema
from services.booking.store import BookingStore
from services.common import health, signing
from services.common.clock import Clock
from services.common.errors import (EXPECTED, EmailHasBooking, InvalidRequest, NotFound,
                                    PlacesAvailable, Refused, ServiceUnavailable,
                                    TooManyAttempts)
from services.common.logs import CallIdLogging
from services.common.lease import InstanceId
from services.common.mongo import MongoStore
from services.common.outbox import Outbox, dispatched
from services.common.rpc import BoundedRpcProxy, RequestDeadline, rpc
from services.common.normalise import normalise_email
from services.common.reference_data import PROCEDURES
from services.common.schemas import (ApplicantLookupSchema, AttemptAccessSchema,
                                     AttemptRequestSchema, AttestationSchema,
                                     BookingRequestSchema, ClientSchema, FiguresSchema,
                                     load_or_raise, validated)
from services.common.settings import setting
from services.common.timers import config_timer
from services.common.tokens import Tokens, same_token
from services.common.timeutil import iso_utc, parse_iso, utcnow

log = logging.getLogger(__name__)

NOT_FOUND = "No booking with this reference and token."
CONFIRM_BY_LINK = ("Confirmez avec le lien envoyé à votre adresse électronique. / Confirm with the "
                   "link sent to your e-mail address.")
NOT_MADE = "The booking was not made. Please try again."
# time kept for the insert itself after the last deadline check: a booking stored after its
# caller gave up would be one the applicant was told was not made
INSERT_MARGIN_SECONDS = 0.5
# time for the reply to reach the caller before its deadline
REPLY_MARGIN_SECONDS = 0.1
EXPIRY_BATCH = 200  # unconfirmed bookings released per sweep at most
# built once: a marshmallow Schema costs more to build than to load a request with
BOOKING_REQUEST, CLIENT = BookingRequestSchema(), ClientSchema()
CHECK_IN, DAY_QUERY, WALK_IN = CheckInSchema(), DayQuerySchema(), WalkInSchema()
FIGURES = FiguresSchema()
INVALID_CODE = "Code de convocation invalide (falsifié, modifié ou inconnu). / Invalid convocation code."
DEFAULT_WALK_IN_HOURS = "08:30-12:00"
ATTEMPT_REQUEST, ATTEMPT_ACCESS, ATTESTATION = AttemptRequestSchema(), AttemptAccessSchema(), AttestationSchema()
OFFER = OfferHoldSchema()
APPLICANT_LOOKUP = ApplicantLookupSchema()
NO_ATTEMPT = "No recorded attempt with this reference and token."


class ConvocationKey(DependencyProvider):
    """The Ed25519 key that signs convocations; the service refuses to start without one."""

    def setup(self):
        try:
            self.key = signing.load_private_key(self.container.config.get("CONVOCATION_SIGNING_KEY"))
        except ValueError as exc:
            raise ConfigurationError(
                f"CONVOCATION_SIGNING_KEY must be an Ed25519 private key (base64 or PEM): {exc}")
        self.public_key = self.key.public_key()

    def get_dependency(self, worker_ctx):
        return self


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
    # giving a place back is not bound by the deadline of the request that gave up on it
    slots_cleanup = BoundedRpcProxy("slots", inherit_deadline=False)
    dispatch = EventDispatcher()
    tokens = Tokens()
    convocation_key = ConvocationKey()
    clock = Clock()
    config = Config()
    instance = InstanceId()
    deadline = RequestDeadline()
    attestation_key = AttestationKey()
    log_context = CallIdLogging()

    @rpc(expected_exceptions=EXPECTED)
    def create(self, request, client, offer=None):
        """Book a place: hold it on the slot, store the booking as pending, announce
        `booking_created` (its e-mail carries the confirmation link).

        offer: {"reference", "hold_id"} when an allocated offer is accepted (services/requests):
        the place is already held under the offer's id and the reference is given, so that a
        retried acceptance finds the booking instead of making a second one. A failure then
        leaves the offer's place held (the applicant may try again) rather than giving it back.
        Such a booking is born confirmed (the mailbox was proven when the request was
        confirmed): `booking_created` then `booking_confirmed`, from one insert.

        An e-mail that already holds a confirmed booking is refused up front (409, naming the
        booking's reference): two requests at once may both pass, fraud's M3 is the net.
        """
        data = load_or_raise(BOOKING_REQUEST, request, InvalidRequest)
        client = load_or_raise(CLIENT, client, InvalidRequest)
        email_key = rules.email_key(data["email"])
        offer = load_or_raise(OFFER, offer, InvalidRequest) if offer is not None else None
        if offer:
            made = self.store.get(offer["reference"])
            if made is not None:  # a retried acceptance: the same answer again
                return self._answer_again(made)
        reference = offer["reference"] if offer else rules.new_reference()
        # an acceptance racing its own retry must not find itself as "another booking"
        self._refuse_second_booking(email_key, other_than=reference if offer else None)
        hold_id = offer["hold_id"] if offer else reference
        started = time.time()
        slot = self.slots.hold(data["slot_id"], hold_id, data["procedure"])
        now = utcnow()
        confirm_by = rules.confirm_by_ts(now.timestamp(), self._confirm_minutes())
        published_at = parse_iso(slot["published_at"]) if slot.get("published_at") else None
        salt = rules.new_salt()
        token = self.tokens.token_for(reference, salt)
        booking = {
            "_id": reference,
            "status": rules.PENDING,
            "procedure": data["procedure"],
            "slot": {"id": slot["id"], "site": slot["site"], "start": parse_iso(slot["start"]),
                     "end": parse_iso(slot["end"]), "published_at": published_at,
                     # internal: fraud learns it from the event, the applicant never sees it
                     "decoy": bool(slot.get("decoy"))},
            "identity": {
                "family_name": data["family_name"],
                "given_names": data["given_names"],
                "birth_date": data["birth_date"].isoformat(),
                "foreigner_number": data.get("foreigner_number"),
            },
            "email": data["email"],
            "email_key": email_key,
            "phone": data.get("phone"),
            "client": client,
            "created_at": now,
            "confirm_by_ts": confirm_by,
            "seconds_after_publication": rules.seconds_after_publication(published_at, now),
            "token_hash": rules.TokenSigner.hash_token(token),
            "token_salt": salt,
            "hold_id": hold_id,
            # the instance that made it: tests check that every booking process takes part
            "created_by": self.instance,
            "outbox": {"created": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        if offer:
            booking.update(status=rules.ACTIVE, confirmed_ts=now.timestamp(), offer_id=hold_id,
                           confirm_by_ts=None)
            booking["outbox"]["confirmed"] = Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())
        # the caller still waits, and the slots sweeper cannot have judged the hold abandoned
        hold_age_limit = started + setting(self.config, "HOLD_MAX_AGE_SECONDS", 60.0)
        last_moment = min(hold_age_limit - time.time(), self.deadline.remaining())
        if last_moment < INSERT_MARGIN_SECONDS:
            log.warning("booking %s given up: its caller stopped waiting", reference)
            self._release_quietly(reference)
            raise ServiceUnavailable(NOT_MADE)
        try:
            self.store.insert(booking)
        except DuplicateKeyError:
            made = self.store.get(reference) if offer else None
            if made is not None:  # the same acceptance, made at the same moment: its answer
                return self._answer_again(made)
            # fenced off: the sweeper judged the hold abandoned and gave the place back
            log.warning("booking %s given up: its hold was already given back", reference)
            self._release_quietly(reference)
            raise ServiceUnavailable(NOT_MADE)
        except Exception:
            log.exception("could not store booking %s; giving its place back", reference)
            self._release_quietly(reference)
            raise ServiceUnavailable(NOT_MADE)
        if self.deadline.remaining() < REPLY_MARGIN_SECONDS and not offer:
            # the insert outlasted the caller's wait: it answers "not made", so undo it (it was
            # never announced) rather than keep a booking behind the applicant's back
            log.warning("booking %s withdrawn: stored after its caller stopped waiting", reference)
            try:
                self.store.withdraw(reference, utcnow())
            except Exception:  # kept after all: the relay announces it; nothing else to do
                log.exception("could not withdraw booking %s", reference)
                raise ServiceUnavailable(NOT_MADE)
            self._release_quietly(reference)
            raise ServiceUnavailable(NOT_MADE)
        # an offer's booking stored late is kept: the retried acceptance, or the requests timer,
        # finds it under the offer's reference (withdrawn, its reference would be taken for good)
        self._announce_created(booking, token)
        if offer:
            self._announce_confirmed(booking)
            self._cancel_other_pending(booking)
        # this booking took the last place: callers can stop sending attempts for it
        return self._created_answer(booking, token, slot_full=slot["free"] <= 0)

    def _answer_again(self, booking):
        return self._created_answer(booking, self.tokens.token_for(booking["_id"], booking["token_salt"]),
                                    slot_full=False)

    def _created_answer(self, booking, token, slot_full):
        """confirm_token: for the trusted callers of this RPC (tests); the public gateway
        answers named fields, never this one: it reaches the booker in the e-mail's link only."""
        view = rules.applicant_view(booking)
        answer = {"reference": booking["_id"], "token": token, "status": booking["status"],
                  "confirm_token": self._confirm_token(booking),
                  "confirm_by": view.get("confirm_by"),
                  "slot": dict(view["slot"], procedure=booking["procedure"]),
                  "slot_full": slot_full}
        if booking["status"] == rules.PENDING:
            answer["not_final"] = rules.NOT_FINAL
        return answer

    @rpc(expected_exceptions=EXPECTED)
    def get(self, reference, token):
        return rules.applicant_view(self._owned(reference, token))

    @rpc(expected_exceptions=EXPECTED)
    def confirm(self, reference, token):
        """The owner of the mailbox confirms (the link in the e-mail): pending -> active, and
        `booking_confirmed` announced. Confirming again changes nothing; a cancelled or
        expired booking stays so (the answer says how it stands)."""
        booking = self._owned(reference, token)
        if booking["status"] != rules.PENDING:
            return rules.applicant_view(booking)
        if not same_token(token, self._confirm_token(booking)):
            # the booker's own token: confirming with it would prove nothing about the mailbox
            raise Refused(CONFIRM_BY_LINK, {"token": ["Not the token of the e-mail's link."]})
        # the up-front rule again: another booking on this e-mail may have been confirmed since
        self._refuse_second_booking(booking["email_key"], other_than=reference)
        confirmed = self.store.confirm(reference, time.time(),
                                       Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if confirmed is None:  # expired or cancelled meanwhile
            return rules.applicant_view(self.store.get(reference))
        self._announce_confirmed(confirmed)
        self._cancel_other_pending(confirmed)
        return rules.applicant_view(confirmed)

    def _cancel_other_pending(self, confirmed):
        """The other pending bookings on this e-mail can no longer be confirmed: their places
        go back now rather than when they expire, and their e-mail says why."""
        for other in self.store.pending_on_email(confirmed["email_key"], confirmed["_id"]):
            self._cancel(other, "email_already_used", {"confirmed": confirmed["_id"]}, "system",
                         statuses=(rules.PENDING,))

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

    @rpc(expected_exceptions=EXPECTED)
    def holds_in_use(self, hold_ids):
        """Which of these slot holds a booking uses (the slots sweeper asks about old holds).

        The others are fenced: no booking can be stored for them afterwards."""
        if (not isinstance(hold_ids, list) or len(hold_ids) > 500
                or not all(isinstance(h, str) for h in hold_ids)):
            raise InvalidRequest("A list of at most 500 hold ids.", {"hold_ids": ["Invalid."]})
        return self.store.holds_in_use(hold_ids, utcnow())


    # -- convocations and the counter (staff RPCs answer `id` and ISO-8601 UTC times) --------

    @rpc(expected_exceptions=EXPECTED)
    def convocation(self, reference, token):
        """The applicant's convocation: exact name, slot, and the signed code for the desk."""
        booking = self._owned(reference, token)
        fields = rules.convocation_fields(booking)
        signature = signing.sign(self.convocation_key.key, fields)
        return dict(fields, status=booking["status"], procedure=booking["procedure"],
                    site=booking["slot"]["site"], slot_end=iso_utc(booking["slot"]["end"]),
                    code=rules.convocation_code(booking["_id"], signature))

    @rpc(expected_exceptions=EXPECTED)
    def check_in(self, request):
        """M4 at the desk: the code's signature, then the day and site, then the exact name.

        Answers {"result": checked_in | already_checked_in | refused, "reason", "message",
        "booking", "typed"}; a forged, edited or unknown code raises InvalidRequest.
        """
        data = load_or_raise(CHECK_IN, request, InvalidRequest)
        booking = self._verified(data["code"])
        typed = {"family_name": data["family_name"], "given_names": data["given_names"]}

        def answer(result, reason, message, current):
            return {"result": result, "reason": reason, "message": message,
                    "booking": rules.staff_view(current), "typed": typed}

        if booking["status"] == rules.CHECKED_IN:
            return answer("already_checked_in", None, "Déjà enregistré. / Already checked in.", booking)
        if booking["status"] == rules.CANCELLED:
            return answer("refused", "cancelled", "Ce rendez-vous est annulé. / This appointment is cancelled.", booking)
        if booking["slot"]["site"] != data["site"]:
            return answer("refused", "other_site",
                          f"Ce rendez-vous est sur le site « {booking['slot']['site']} ». / "
                          "This appointment is at another site.", booking)
        if rules.paris_day(booking["slot"]["start"]) != data["day"]:
            day = rules.paris_day(booking["slot"]["start"])
            return answer("refused", "other_day",
                          f"Ce rendez-vous est le {day:%d/%m/%Y}, pas aujourd'hui. / "
                          "This appointment is on another day.", booking)
        if not rules.names_match(booking, data["family_name"], data["given_names"]):
            # the exact name is what makes a resold convocation useless: cancel it
            cancelled = self._cancel(booking["_id"], "name_mismatch",
                                     {"checked_by": data["agent"], "typed": typed}, data["agent"])
            return answer("refused", "name_mismatch",
                          "Le nom ne correspond pas à la pièce d'identité : rendez-vous annulé. / "
                          "The name does not match the identity document: appointment cancelled.",
                          cancelled)
        checked = self.store.check_in(booking["_id"], rules.check_in_record(data["agent"], self.clock.now()),
                                      Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if checked is None:  # someone else moved it meanwhile: say how it stands
            current = self.store.get(booking["_id"])
            result = "already_checked_in" if current["status"] == rules.CHECKED_IN else "refused"
            return answer(result, None if result != "refused" else current["status"],
                          "Ce rendez-vous vient de changer d'état. / It changed meanwhile.", current)
        self._announce_checked_in(checked)
        return answer("checked_in", None, "Enregistré. / Checked in.", checked)

    @rpc(expected_exceptions=EXPECTED)
    def day_view(self, site, day):
        """A site's bookings and walk-ins for a local day (Europe/Paris), by time, with counts."""
        data = load_or_raise(DAY_QUERY, {"site": site, "day": day}, InvalidRequest)
        start, end = rules.day_bounds(data["day"])
        views = [rules.staff_view(b) for b in self.store.for_site_between(data["site"], start, end)]
        return {"site": data["site"], "day": data["day"].isoformat(), "bookings": views,
                "counts": rules.day_counts(views)}

    @rpc(expected_exceptions=EXPECTED)
    def register_walk_in(self, request):
        """M6: a 10-year-card renewal without appointment, on an allowed morning only."""
        data = load_or_raise(WALK_IN, request, InvalidRequest)
        now = self.clock.now()
        refusal = rules.walk_in_refusal(data["procedure"], now, self._walk_in_hours())
        if refusal:
            raise Refused(refusal, {"procedure": [refusal]})
        reference = rules.new_reference()
        walk_in = {
            "_id": reference,
            "status": rules.CHECKED_IN,
            "walk_in": True,
            "procedure": data["procedure"],
            "slot": {"id": None, "site": data["site"], "start": now, "end": now, "published_at": None},
            "identity": {"family_name": data["family_name"], "given_names": data["given_names"],
                         "birth_date": data["birth_date"].isoformat(),
                         "foreigner_number": data["foreigner_number"]},
            "email": None,
            "phone": None,
            "created_at": now,
            # no booking was announced, nor a check-in: no outbox record, nothing to relay
            "checked_in": rules.check_in_record(data["agent"], now),
        }
        self.store.insert(walk_in)
        return rules.staff_view(walk_in)

    @rpc(expected_exceptions=EXPECTED)
    def walk_in_rule(self):
        return {"procedure": "renewal_10y", "hours": self._walk_in_hours(),
                "text": rules.walk_in_rule_text(self._walk_in_hours())}

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
            "email_key": normalise_email(email),
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
    def attempts_of(self, foreigner_number=None, email=None):
        """Staff (M7 waiver): the attempts on record for an applicant, by foreigner number
        (AGDREF) or, without one, by e-mail; oldest first."""
        data = load_or_raise(APPLICANT_LOOKUP, {"foreigner_number": foreigner_number,
                                                "email": email}, InvalidRequest)
        found = self.store.attempts_of(data["foreigner_number"], normalise_email(data["email"] or ""),
                                       data["email"])
        return {"attempts": [dict(evidence.attempt_view(a), file=a["file"]) for a in found]}

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
    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, and events not yet announced (services/common/health.py)."""
        def backlog():
            self.store.ping()
            return {"outbox": health.outbox_backlog(self.store.outbox)}
        return health.report(self.name, backlog)

    @rpc(expected_exceptions=EXPECTED)
    def figures(self, days=56):
        """Per procedure over the last `days`: bookings, median wait until the appointment
        (overall and by week), cancellations by reason (services/booking/figures.py)."""
        args = validated(FIGURES, days=days)
        since = utcnow() - timedelta(days=args["days"])
        found = self.store.created_since(since, booking_figures.FIELDS)
        return {"days": args["days"], "procedures": booking_figures.figures(found, PROCEDURES)}

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
        for booking in outbox.due("confirmed", time.time()):
            self._announce_confirmed(booking)
        for booking in outbox.due("cancelled", time.time()):
            self._finish_cancel(booking)
        for booking in outbox.due("checked_in", time.time()):
            self._announce_checked_in(booking)
        for attempt in self.store.attempt_outbox.due("recorded", time.time()):
            self._announce_attempt(attempt, self.tokens.token_for(attempt["_id"], attempt["token_salt"]))

    @config_timer("BOOKING_EXPIRY_SWEEP_SECONDS", 30.0)
    def expire_unconfirmed(self):
        """Release the bookings nobody confirmed within BOOKING_CONFIRM_MINUTES, through the
        normal cancel path: the place goes back to slots as a freed place, notify tells why."""
        interval = setting(self.config, "BOOKING_EXPIRY_SWEEP_SECONDS", 30.0)
        if not self.store.leases.acquire("expire_unconfirmed", self.instance, 3 * interval,
                                         time.time()):
            return
        minutes = self._confirm_minutes()
        for reference in self.store.unconfirmed_due(time.time(), EXPIRY_BATCH):
            self._cancel(reference, "not_confirmed", {"confirm_minutes": minutes}, "system",
                         statuses=(rules.PENDING,))

    # -- internals ---------------------------------------------------------------------------

    def _owned(self, reference, token):
        """The booking, for the holder of its token or of its confirmation token (the e-mail's
        link: the mailbox's owner is the booking's)."""
        booking = self.store.get(reference) if isinstance(reference, str) else None
        # unknown reference and wrong token get the same answer: references are not guessable
        # by probing
        if booking is None or not isinstance(token, str) or not token:
            raise NotFound(NOT_FOUND)
        if not (self.tokens.matches(token, booking["token_hash"])
                or same_token(token, self._confirm_token(booking))):
            raise NotFound(NOT_FOUND)
        return booking

    def _verified(self, code):
        """The booking a convocation code stands for, if its signature is ours over its data."""
        try:
            reference, signature = rules.parse_code(code)
        except ValueError:
            raise InvalidRequest(INVALID_CODE, {"code": [INVALID_CODE]})
        booking = self.store.get(reference)
        if booking is None or booking.get("walk_in") or not signing.verify(
                self.convocation_key.public_key, signature, rules.convocation_fields(booking)):
            raise InvalidRequest(INVALID_CODE, {"code": [INVALID_CODE]})
        return booking

    def _walk_in_hours(self):
        hours = setting(self.config, "WALK_IN_HOURS", DEFAULT_WALK_IN_HOURS)
        rules.parse_hours(hours)  # a misconfiguration shows in the error, not as a silent "no"
        return hours

    def _announce_checked_in(self, booking):
        if self._dispatched(booking["_id"], "booking_checked_in", rules.checked_in_event(booking)):
            self.store.outbox.sent(booking["_id"], "checked_in")

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

    def _confirm_minutes(self):
        return setting(self.config, "BOOKING_CONFIRM_MINUTES", 60.0)

    def _refuse_second_booking(self, email_key, other_than=None):
        try:
            held = self.store.confirmed_on_email(email_key, other_than)
        except PyMongoError:
            # a courtesy, not the guard: when it cannot be read the booking goes on (and
            # fails on its own write if the store is really down); fraud's M3 is the net
            log.warning("up-front e-mail check skipped: the store did not answer", exc_info=True)
            return
        if held is not None:
            raise EmailHasBooking.for_reference(held["_id"])

    def _cancel(self, reference, reason, evidence, actor, statuses=(rules.PENDING, rules.ACTIVE)):
        booking = self.store.cancel(reference, rules.cancellation(reason, evidence, actor, utcnow()),
                                    Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()),
                                    statuses)
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

    def _confirm_token(self, booking):
        return self.tokens.token_for(rules.confirm_subject(booking["_id"]), booking["token_salt"])

    def _announce_created(self, booking, token):
        event = rules.created_event(booking, token, self._confirm_token(booking))
        if self._dispatched(booking["_id"], "booking_created", event):
            # written with the next batch, off the applicant's wait (services/common/pending.py)
            self.store.outbox.sent(booking["_id"], "created")

    def _announce_confirmed(self, booking):
        if self._dispatched(booking["_id"], "booking_confirmed", rules.confirmed_event(booking)):
            self.store.outbox.sent(booking["_id"], "confirmed")

    def _dispatched(self, reference, event_type, payload):
        return dispatched(self.dispatch, event_type, payload, reference)

    def _release_quietly(self, hold_id):
        try:
            self.slots_cleanup.release(hold_id)
        except Exception:
            log.exception("could not give back the place held by %s", hold_id)
