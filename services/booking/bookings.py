"""Bookings on the web (a mixin of services/booking/service.py): create, confirm, read and
cancel; the unconfirmed bookings' expiry and the reminders' timer; the places held in slots and
the claims on unconfirmed bookings; `booking_created`, `booking_confirmed`, `booking_cancelled`
and `booking_reminder_due` announced through the outbox."""
import logging
import time
import uuid

from pymongo.errors import DuplicateKeyError
from pymongo.errors import PyMongoError

from services.booking import desk, events, records, references, reminders, unconfirmed
from services.common.booking_schemas import OfferHoldSchema
from services.booking.views import NOT_FINAL, applicant_view
from services.common import exact_names, idempotency, one_email
from services.common.contract import ACTIVE, CANCEL_REASONS, PENDING
from services.common.errors import (EXPECTED, EmailHasBooking, InvalidRequest, NotFound,
                                    PersonHasBooking, Refused, ServiceUnavailable,
                                    TooManyUnconfirmed)
from services.common.outbox import Outbox
from services.common.retention import erased
from services.common.rpc import rpc
from services.common.schemas import BookingRequestSchema, ClientSchema, load_or_raise
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.settings import setting
from services.common.timers import config_timer
from services.common.tokens import TokenSigner, new_salt, same_token
from services.common.timeutil import parse_iso, utcnow

log = logging.getLogger(__name__)

NOT_FOUND = "No booking with this reference and token."
CONFIRM_BY_LINK = ("Confirmez avec le lien envoyé à votre adresse électronique. / Confirm with the "
                   "link sent to your e-mail address.")
NOT_MADE = "The booking was not made. Please try again."
# past BOOKING_RETENTION_DAYS (services/common/retention.py): its appointment is long past
ERASED_REFUSAL = ("This booking's appointment is long past and its personal data were erased: "
                  "there is nothing left to cancel.")
# time kept for the insert itself after the last deadline check: a booking stored after its
# caller gave up would be one the applicant was told was not made
INSERT_MARGIN_SECONDS = 0.5
# time for the reply to reach the caller before its deadline
REPLY_MARGIN_SECONDS = 0.1
EXPIRY_BATCH = 200  # unconfirmed bookings released per sweep at most
REMINDER_BATCH = 500  # bookings a reminder pass looks at; the next pass takes the rest
# built once: a marshmallow Schema costs more to build than to load a request with
BOOKING_REQUEST, CLIENT = BookingRequestSchema(), ClientSchema()
OFFER = OfferHoldSchema()


class Bookings:
    """Bookings' RPCs and timers; the dependencies and settings are BookingService's."""

    @rpc(expected_exceptions=EXPECTED)
    def create(self, request, client, offer=None, idempotency_key=None):
        """Book a place: hold it on the slot, store the booking as pending, announce
        `booking_created` (its e-mail carries the confirmation link).

        idempotency_key: the caller's key for this request (the public gateway sends one per
        HTTP request, or the applicant's own). The reference, which is also the hold id, is
        derived from it and the request's content: the same request delivered again (RabbitMQ
        redelivers it when we die before replying) or sent again finds its booking and gets
        the same answer, whatever the moment of the crash; a hold left by a crash before the
        insert is the same hold, so no second place is taken.

        offer: {"reference", "hold_id"} when an allocated offer is accepted (services/requests):
        the place is already held under the offer's id and the reference is given, so that a
        retried acceptance finds the booking instead of making a second one. A failure then
        leaves the offer's place held (the applicant may try again) rather than giving it back.
        Such a booking is born confirmed (the mailbox was proven when the request was
        confirmed): `booking_created` then `booking_confirmed`, from one insert.

        An e-mail that already holds a confirmed booking is refused up front (409, naming the
        booking's reference): two requests at once may both pass, fraud's M3 is the net. So is
        a person (folded names and birth date, or foreigner number) that already holds a
        confirmed booking for the procedure (409 `person_has_booking`, naming nothing).
        """
        data = load_or_raise(BOOKING_REQUEST, request, InvalidRequest)
        client = load_or_raise(CLIENT, client, InvalidRequest)
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        email_key = one_email.mailbox_key(data["email"], self.config)
        person_key = exact_names.identity_key(data)
        offer = load_or_raise(OFFER, offer, InvalidRequest) if offer is not None else None
        fingerprint = idempotency.request_fingerprint(key, data) if key and not offer else None
        if offer:
            reference = offer["reference"]
            made = self.store.get(reference)
        elif fingerprint:
            reference, made = self._reference_for(fingerprint)
        else:
            reference, made = references.new_reference(), None
        if made is not None:  # delivered or sent again: the same answer again
            return self._answer_again(made)
        # a request racing its own retry must not find itself as "another booking"
        self._refuse_second_booking(email_key, other_than=reference)
        self._refuse_second_person(data["procedure"], person_key, data.get("foreigner_number"),
                                   other_than=reference)
        hold_id = offer["hold_id"] if offer else reference
        # refused before anything is held; an offer's booking is born confirmed
        claims = [] if offer else self._claim_unconfirmed(reference, email_key, client)
        started = time.time()
        try:
            # a pending booking's hold counts against its release's share (slots)
            slot = self.slots.hold(data["slot_id"], hold_id, data["procedure"],
                                   unconfirmed=not offer, until=self._confirm_by())
        except Exception:
            self._drop_claims(claims, reference)
            raise
        now = utcnow()
        confirm_by = records.confirm_by_ts(now.timestamp(), self._confirm_minutes())
        published_at = parse_iso(slot["published_at"]) if slot.get("published_at") else None
        salt = new_salt()
        token = self.tokens.token_for(reference, salt)
        booking = {
            "_id": reference,
            "status": PENDING,
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
            "person_key": person_key,
            "phone": data.get("phone"),
            "lang": data["lang"],  # the e-mails' links open the pages in it
            "client": client,
            "created_at": now,
            "confirm_by_ts": confirm_by,
            "seconds_after_publication": records.seconds_after_publication(published_at, now),
            "token_hash": TokenSigner.hash_token(token),
            "token_salt": salt,
            "hold_id": hold_id,
            "unconfirmed_claims": claims,
            "idempotency": fingerprint,
            # the instance that made it: tests check that every booking process takes part
            "created_by": self.instance,
            "outbox": {"created": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        if fingerprint is None:
            del booking["idempotency"]  # the index is sparse: no key, no field
        if offer:
            booking.update(status=ACTIVE, confirmed_ts=now.timestamp(), offer_id=hold_id,
                           confirm_by_ts=None)
            booking["outbox"]["confirmed"] = Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())
        # the caller still waits, and the slots sweeper cannot have judged the hold abandoned
        hold_age_limit = started + setting(self.config, "HOLD_MAX_AGE_SECONDS")
        last_moment = min(hold_age_limit - time.time(), self.deadline.remaining())
        if last_moment < INSERT_MARGIN_SECONDS:
            log.warning("booking %s given up: its caller stopped waiting", reference)
            self._give_up(reference, claims)
            raise ServiceUnavailable(NOT_MADE)
        try:
            self.store.insert(booking)
        except DuplicateKeyError:
            made = self.store.get(reference) if offer or fingerprint else None
            if made is not None and (offer or made.get("idempotency") == fingerprint):
                # the same request, stored at the same moment by its other delivery: its
                # answer (the hold is that booking's: it stays)
                return self._answer_again(made)
            if made is None:
                # fenced off: the sweeper judged the hold abandoned and gave the place back
                log.warning("booking %s given up: its hold was already given back", reference)
                self._release_quietly(reference, claims)
            raise ServiceUnavailable(NOT_MADE)
        except Exception:
            log.exception("could not store booking %s; giving its place back", reference)
            self._give_up(reference, claims)
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
            self._release_quietly(reference, claims)
            raise ServiceUnavailable(NOT_MADE)
        # an offer's booking stored late is kept: the retried acceptance, or the requests timer,
        # finds it under the offer's reference (withdrawn, its reference would be taken for good)
        self._announce_created(booking, token)
        if offer:
            self._announce_confirmed(booking)
            self._cancel_other_pending(booking)
        # this booking took the last place: callers can stop sending attempts for it
        return self._created_answer(booking, token, slot_full=slot["free"] <= 0)

    def _reference_for(self, fingerprint):
        """(reference, booking already made for this request or None). A reference given up
        before (a marker: its hold id is spent in slots) or, by a 40-bit coincidence, another
        request's, passes to the next one of the same derivation."""
        reference, found = idempotency.reference_for(self.tokens, fingerprint, references._reference,
                                                     self.store.get_any)
        if reference is None:
            raise ServiceUnavailable(NOT_MADE)
        return reference, found

    def _answer_again(self, booking):
        return self._created_answer(booking, self.tokens.token_for(booking["_id"], booking["token_salt"]),
                                    slot_full=False)

    def _created_answer(self, booking, token, slot_full):
        """confirm_token: for the trusted callers of this RPC (tests); the public gateway
        answers named fields, never this one: it reaches the booker in the e-mail's link only."""
        view = applicant_view(booking)
        answer = {"reference": booking["_id"], "token": token, "status": booking["status"],
                  "confirm_token": self._confirm_token(booking),
                  "confirm_by": view.get("confirm_by"),
                  "slot": dict(view["slot"], procedure=booking["procedure"]),
                  "slot_full": slot_full}
        if booking["status"] == PENDING:
            answer["not_final"] = NOT_FINAL
        return answer

    @rpc(expected_exceptions=EXPECTED)
    def get(self, reference, token):
        return applicant_view(self._owned(reference, token))

    @rpc(expected_exceptions=EXPECTED)
    def confirm(self, reference, token):
        """The owner of the mailbox confirms (the link in the e-mail): pending -> active, and
        `booking_confirmed` announced. Confirming again changes nothing; a cancelled or
        expired booking stays so (the answer says how it stands)."""
        booking = self._owned(reference, token)
        if booking["status"] != PENDING:
            return applicant_view(booking)
        if not same_token(token, self._confirm_token(booking)):
            # the booker's own token: confirming with it would prove nothing about the mailbox
            raise Refused(CONFIRM_BY_LINK, {"token": ["Not the token of the e-mail's link."]})
        # one read for the usual case, no other booking on this e-mail at all; when there is
        # one, the up-front rule again (it may have been confirmed since), and the pending
        # ones go back below
        other = self._other_on_email(booking["email_key"], reference)
        if other:
            self._refuse_second_booking(booking["email_key"], other_than=reference)
        self._refuse_second_person(booking["procedure"], booking.get("person_key"),
                                   booking["identity"].get("foreigner_number"), other_than=reference)
        confirmed = self.store.confirm(reference, time.time(),
                                       Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if confirmed is None:  # expired or cancelled meanwhile
            return applicant_view(self.store.get(reference))
        # announced first: fraud screens from this event (issue 22: p95 under 1 s from the
        # confirmation to a cancellation), and nothing in it waits on the cleanups below,
        # which slots' RPC made take hundreds of ms under a burst. Each cleanup is idempotent
        # and harmless after a cancellation (a claim ended twice, a released hold's claim
        # ended); one left undone by a crash lapses at the confirm-by, as before.
        self._announce_confirmed(confirmed)
        self._drop_claims(confirmed.get("unconfirmed_claims"), reference)
        self._confirmed_in_release(confirmed["hold_id"])
        if other:
            # one made between the read above and the confirmation is not seen here: it holds
            # its place until it expires, and its own confirmation is refused (this one is
            # active by then)
            self._cancel_other_pending(confirmed)
        return applicant_view(confirmed)

    def _cancel_other_pending(self, confirmed):
        """The other pending bookings on this e-mail can no longer be confirmed: their places
        go back now rather than when they expire, and their e-mail says why."""
        for other in self.store.pending_on_email(confirmed["email_key"], confirmed["_id"]):
            self._cancel(other, "email_already_used", {"confirmed": confirmed["_id"]}, "system",
                         statuses=(PENDING,))

    @rpc(expected_exceptions=EXPECTED)
    def cancel(self, reference, token):
        """The applicant cancels with their token; cancelling again changes nothing."""
        if erased(self._owned(reference, token)):
            raise Refused(ERASED_REFUSAL)
        return applicant_view(self._cancel(reference, "applicant", {}, "applicant"))

    @rpc(expected_exceptions=EXPECTED)
    def system_cancel(self, reference, reason, evidence=None, actor="system"):
        """Cancel on behalf of fraud or staff, with a reason code and its evidence."""
        if reason not in CANCEL_REASONS:
            raise InvalidRequest("Unknown cancel reason.",
                                 {"reason": [f"One of {', '.join(CANCEL_REASONS)}."]})
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

    @config_timer("BOOKING_EXPIRY_SWEEP_SECONDS")
    def expire_unconfirmed(self):
        """Release the bookings nobody confirmed within BOOKING_CONFIRM_MINUTES, through the
        normal cancel path: the place goes back to slots as a freed place, notify tells why."""
        interval = setting(self.config, "BOOKING_EXPIRY_SWEEP_SECONDS")
        if not self.store.leases.acquire("expire_unconfirmed", self.instance, 3 * interval,
                                         time.time()):
            return
        minutes = self._confirm_minutes()
        for reference in self.store.unconfirmed_due(time.time(), EXPIRY_BATCH):
            self._cancel(reference, "not_confirmed", {"confirm_minutes": minutes}, "system",
                         statuses=(PENDING,))

    @config_timer("REMINDER_TIMER_SECONDS")
    def send_reminders(self):
        """Two working days before an appointment, announce `booking_reminder_due` (notify
        e-mails the reminder). One instance per pass (a lease); each booking is marked reminded
        by one conditional update before its event, so overlapping passes remind it once."""
        interval = setting(self.config, "REMINDER_TIMER_SECONDS")
        if not self.store.leases.acquire("reminders", self.instance, 3 * interval, time.time()):
            return
        self._remind(self.clock.now())

    def _remind(self, now):
        for candidate in self.store.reminder_candidates(now, reminders.horizon(now), REMINDER_BATCH):
            if not reminders.due(candidate, now):
                continue
            booking = self.store.mark_reminded(
                candidate["_id"], reminders.record(now),
                Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
            if booking is not None:
                self._announce_reminder(booking)

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

    def _other_on_email(self, email_key, reference):
        """Whether a booking other than `reference` on this e-mail is pending or active (True
        when the store does not answer: the precise reads then run, and say so)."""
        try:
            return self.store.other_on_email(email_key, reference) is not None
        except PyMongoError:
            return True

    def _refuse_second_booking(self, email_key, other_than=None):
        if not email_key:
            # no e-mail (a desk or phone booking, an erased one): nothing to compare; a query
            # on None would find every other booking without one
            return
        try:
            held = self.store.confirmed_on_email(email_key, other_than)
        except PyMongoError:
            # a courtesy, not the guard: when it cannot be read the booking goes on (and
            # fails on its own write if the store is really down); fraud's M3 is the net
            log.warning("up-front e-mail check skipped: the store did not answer", exc_info=True)
            return
        if held is not None:
            raise EmailHasBooking.for_reference(held["_id"])

    def _refuse_second_person(self, procedure, person_key, foreigner_number, other_than=None,
                              to_staff=False):
        """One person, one booking per procedure, whatever the e-mail or the channel (web, desk,
        phone: M3 by identity); like the e-mail check a courtesy read, fraud's same-person rule
        is the net. to_staff: an agent booking for the person is told which booking they hold
        (the applicant's refusal names nothing)."""
        try:
            held = self.store.confirmed_for_person(procedure, person_key, foreigner_number, other_than)
        except PyMongoError:
            log.warning("up-front identity check skipped: the store did not answer", exc_info=True)
            return
        if held is None:
            return
        if to_staff:
            message = desk.person_has_booking_message(held["_id"])
            raise PersonHasBooking(message, {"family_name": [message]})
        raise PersonHasBooking()

    def _cancel(self, reference, reason, evidence, actor, statuses=(PENDING, ACTIVE)):
        booking = self.store.cancel(reference, records.cancellation(reason, evidence, actor, utcnow()),
                                    Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()),
                                    statuses)
        if booking is None:
            # already cancelled or checked in (or unknown: None): nothing to do, say how it stands
            return self.store.get(reference)
        self._finish_cancel(booking)
        return booking

    def _finish_cancel(self, booking):
        self._drop_claims(booking.get("unconfirmed_claims"), booking["_id"])
        if not booking.get("place_released"):
            try:
                self.slots.release(booking["hold_id"])
                self.store.mark(booking["_id"], place_released=True)
            except Exception:
                log.warning("place of %s not yet given back; the relay retries", booking["_id"],
                            exc_info=True)
                return
        if self._dispatched(booking["_id"], "booking_cancelled", events.cancelled_event(booking)):
            self.store.outbox.sent(booking["_id"], "cancelled")

    def _confirm_token(self, booking):
        return self.tokens.token_for(references.confirm_subject(booking["_id"]), booking["token_salt"])

    def _announce_created(self, booking, token):
        event = events.created_event(booking, token, self._confirm_token(booking))
        if self._dispatched(booking["_id"], "booking_created", event):
            # written with the next batch, off the applicant's wait (services/common/pending.py)
            self.store.outbox.sent(booking["_id"], "created")

    def _announce_confirmed(self, booking):
        token = self.tokens.token_for(booking["_id"], booking["token_salt"])
        if self._dispatched(booking["_id"], "booking_confirmed", events.confirmed_event(booking, token)):
            self.store.outbox.sent(booking["_id"], "confirmed")

    def _announce_reminder(self, booking):
        token = self.tokens.token_for(booking["_id"], booking["token_salt"])
        if self._dispatched(booking["_id"], "booking_reminder_due",
                            reminders.reminder_event(booking, token)):
            self.store.outbox.sent(booking["_id"], "reminder")

    def _give_up(self, reference, claims=()):
        """Give back the place of a booking not made, fenced first: a redelivered or resent
        request then books under its next reference instead of a hold id slots has ended."""
        try:
            self.store.fence(reference, utcnow())
        except Exception:
            log.warning("could not fence %s", reference, exc_info=True)
        self._release_quietly(reference, claims)

    def _release_quietly(self, hold_id, claims=()):
        self._drop_claims(claims, hold_id)
        try:
            self.slots_cleanup.release(hold_id)
        except Exception:
            log.exception("could not give back the place held by %s", hold_id)

    def _claim_unconfirmed(self, reference, email_key, client):
        """The claims this new pending booking takes (services/booking/unconfirmed.py), or
        TooManyUnconfirmed (429) with those taken given back: nothing is held then."""
        until = self._confirm_by()
        taken = []
        for key, bound, why in unconfirmed.claims(self.unconfirmed_bounds, email_key, client):
            try:
                counted = self.store.claims.take(key, bound, reference, until, time.time())
            except PyMongoError:  # the store is down: the insert could not be made either
                log.warning("booking %s not made: its claims could not be counted", reference,
                            exc_info=True)
                counted = None
            if not counted:
                self._drop_claims(taken, reference)
                if counted is None:
                    raise ServiceUnavailable(NOT_MADE)
                raise TooManyUnconfirmed(*unconfirmed.refusal_fields(why))
            taken.append(key)
        return taken

    def _confirm_by(self):
        """A new pending booking's confirm-by, epoch seconds (None: it never expires)."""
        return records.confirm_by_ts(time.time(), self._confirm_minutes())

    def _confirmed_in_release(self, hold_id):
        """Its release's share no longer counts it (slots); if slots does not answer, the
        count lapses at the booking's confirm-by."""
        try:
            self.slots_cleanup.confirmed(hold_id)
        except Exception:
            log.warning("slots not told that %s is confirmed; its count lapses", hold_id,
                        exc_info=True)

    def _drop_claims(self, claims, reference):
        """End a booking's claims: it is no longer pending, or was never made. A claim left by
        a failure here lapses at its booking's confirm-by (services/common/claims.py)."""
        try:
            for key in claims or ():
                self.store.claims.end(key, reference)
        except Exception:
            log.warning("claims of %s not ended; they lapse at its confirm-by", reference,
                        exc_info=True)
