"""Convocations and the counter (a mixin of services/booking/service.py): signed convocations,
check-in (M4), undoing a cancellation made by mistake, attendance, the day view, walk-ins (M6)
and bookings an agent makes for a person without e-mail (desk.py). Staff RPCs answer `id` and
ISO-8601 UTC times."""
import logging
import time
import uuid

from pymongo.errors import DuplicateKeyError

from services.booking import convocations, desk, events, records, references, undo
from services.booking.bookings import NOT_MADE
from services.common.booking_schemas import (AttendanceSchema, CheckInSchema, DayQuerySchema,
                                      DeskBookingSchema, OfferHoldSchema, OnBehalfBookingSchema,
                                      UndoSchema, WalkInSchema)
from services.booking.views import day_bounds, day_counts, paris_day, staff_view
from services.common import exact_names, idempotency, signing, walk_ins
from services.common.contract import CANCELLED, CHECKED_IN
from services.common.errors import (EXPECTED, InvalidRequest, NotFound, PersonHasBooking,
                                    Refused, ServiceUnavailable, SlotFull)
from services.common.outbox import Outbox
from services.common.retention import erased
from services.common.rpc import rpc
from services.common.schemas import load_or_raise
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.settings import setting
from services.common.tokens import new_salt
from services.common.timeutil import iso_utc, utcnow

log = logging.getLogger(__name__)

CHECK_IN, DAY_QUERY, WALK_IN = CheckInSchema(), DayQuerySchema(), WalkInSchema()
UNDO, ATTENDANCE = UndoSchema(), AttendanceSchema()
INVALID_CODE = "Code de convocation invalide (falsifié, modifié ou inconnu). / Invalid convocation code."
# the same answer for an unknown reference and a wrong birth date: nothing to probe
NO_MATCH = ("Référence ou date de naissance incorrecte. / Wrong reference or birth date.")
PLACE_GONE = ("La place a été redonnée puis reprise par quelqu'un d'autre : le créneau est complet, "
              "le rendez-vous ne peut pas être rétabli sans dépasser sa capacité. Proposez un "
              "nouveau rendez-vous. / The place was booked by someone else: the slot is full.")
DESK_BOOKING = DeskBookingSchema(exclude=("email",))  # a person without e-mail (issue 21)
# an offer to a request filed by an agent or a partner (services/requests/on_behalf.py)
ON_BEHALF, OFFER_HOLD = OnBehalfBookingSchema(exclude=("email",)), OfferHoldSchema()


class Counter:
    """The counter's RPCs; the dependencies and settings are BookingService's."""

    @rpc(expected_exceptions=EXPECTED)
    def convocation(self, reference, token):
        """The applicant's convocation: exact name, slot, and the signed code for the desk."""
        return self._convocation_of(self._owned(reference, token))

    @rpc(expected_exceptions=EXPECTED)
    def staff_convocation(self, reference):
        """Staff print or post a person's convocation (a desk or phone booking): the same
        document as the applicant's, with the postal address when the booking has one."""
        booking = self.store.get(reference) if isinstance(reference, str) else None
        if booking is None or booking.get("walk_in"):
            raise NotFound("No booking with this reference.")
        return dict(self._convocation_of(booking), channel=booking.get("channel", "web"),
                    postal_address=booking.get("postal_address"))

    @rpc(expected_exceptions=EXPECTED)
    def book_for_person(self, request, offer=None):
        """An agent books a free slot (open mode) for a person without e-mail, at the desk or
        on the phone (services/booking/desk.py): born confirmed, marked with its channel and
        the agent, no e-mail; refused (409) when the person already holds an active booking
        for the procedure (M3 by identity). Answers the staff view and the convocation.

        offer: {"reference", "hold_id"} when the requests service books an accepted offer to a
        request filed by an agent or a partner (channel `partner`, `agent` the partner): the
        place is held under the offer's id already, and a retry finds the booking."""
        data = load_or_raise(DESK_BOOKING if offer is None else ON_BEHALF, request, InvalidRequest)
        offer = load_or_raise(OFFER_HOLD, offer, InvalidRequest) if offer is not None else None
        reference = offer["reference"] if offer else references.new_reference()
        made = self.store.get(reference) if offer else None
        if made is not None:  # a retried acceptance: the same booking
            return self._person_booked(made)
        # the web's one rule (M3 by identity), whatever the channel of the booking held
        self._refuse_second_person(data["procedure"], exact_names.identity_key(data),
                                   data.get("foreigner_number"), to_staff=True,
                                   other_than=reference)
        hold_id = offer["hold_id"] if offer else reference
        slot = self.slots.hold(data["slot_id"], hold_id, data["procedure"])
        if slot.get("decoy"):  # never a person's place (its id came from the JSON API)
            self._release_quietly(reference)
            raise InvalidRequest("Not a bookable slot.", {"slot_id": ["Not a bookable slot."]})
        salt = new_salt()
        booking = desk.desk_booking(reference, data, slot, utcnow(),
                                    self.tokens.token_for(reference, salt), salt, self.instance)
        booking["hold_id"] = hold_id
        try:
            self.store.insert(booking)
            # written, then read: of two agents booking one person at once (or the person's
            # web booking confirmed meanwhile), at least one finds the other and steps back;
            # both may (the agent tries again), never neither
            other = self.store.other_for_person(data["procedure"], booking["person_key"],
                                                data.get("foreigner_number"), reference)
        except Exception:
            log.exception("could not store desk booking %s; giving its place back", reference)
            self._drop_desk_booking(reference, keep_place=offer is not None)
            raise ServiceUnavailable(NOT_MADE)
        if other is not None:
            self._drop_desk_booking(reference, keep_place=offer is not None)
            message = desk.person_has_booking_message(other["_id"])
            raise PersonHasBooking(message, {"family_name": [message]})
        return self._person_booked(booking)

    def _person_booked(self, booking):
        return dict(staff_view(booking), convocation=self._convocation_of(booking),
                    token=self.tokens.token_for(booking["_id"], booking["token_salt"]),
                    slot={"id": booking["slot"]["id"], "site": booking["slot"]["site"],
                          "start": iso_utc(booking["slot"]["start"]),
                          "end": iso_utc(booking["slot"]["end"])})

    def _drop_desk_booking(self, reference, keep_place=False):
        """Remove a desk booking not to be made, then its place; if the store does not answer,
        the booking keeps its place (never a booking without one). keep_place: an offer's
        place, which stays held under the offer for the requests service to pass on."""
        try:
            self.store.drop_unannounced(reference)
        except Exception:
            log.warning("desk booking %s not removed; it keeps its place", reference, exc_info=True)
            return
        if not keep_place:
            self._release_quietly(reference)

    def _convocation_of(self, booking):
        if erased(booking):  # past BOOKING_RETENTION_DAYS: no name left to convoke
            raise NotFound("This booking's personal data were erased at the end of the retention "
                           "period: it has no convocation any more.")
        fields = convocations.convocation_fields(booking)
        signature = signing.sign(self.convocation_key.key, fields)
        return dict(fields, status=booking["status"], procedure=booking["procedure"],
                    site=booking["slot"]["site"], slot_end=iso_utc(booking["slot"]["end"]),
                    code=convocations.convocation_code(booking["_id"], signature))

    @rpc(expected_exceptions=EXPECTED)
    def check_in(self, request):
        """M4 at the desk: the code's signature, then the day and site, then the exact name.

        Answers {"result": checked_in | already_checked_in | refused, "reason", "message",
        "booking", "typed"}; a forged, edited or unknown code raises InvalidRequest.
        """
        data = load_or_raise(CHECK_IN, request, InvalidRequest)
        # the signed code is the proof when it scans; else the reference and the birth date
        booking = (self._verified(data["code"]) if data["code"]
                   else self._by_reference(data["reference"], data["birth_date"]))
        typed = {"family_name": data["family_name"], "given_names": data["given_names"]}

        def answer(result, reason, message, current):
            return {"result": result, "reason": reason, "message": message,
                    "booking": staff_view(current), "typed": typed}

        if booking["status"] == CHECKED_IN:
            return answer("already_checked_in", None, "Déjà enregistré. / Already checked in.", booking)
        if booking["status"] == CANCELLED:
            return answer("refused", "cancelled", "Ce rendez-vous est annulé. / This appointment is cancelled.", booking)
        if booking["slot"]["site"] != data["site"]:
            return answer("refused", "other_site",
                          f"Ce rendez-vous est sur le site « {booking['slot']['site']} ». / "
                          "This appointment is at another site.", booking)
        if paris_day(booking["slot"]["start"]) != data["day"]:
            day = paris_day(booking["slot"]["start"])
            return answer("refused", "other_day",
                          f"Ce rendez-vous est le {day:%d/%m/%Y}, pas aujourd'hui. / "
                          "This appointment is on another day.", booking)
        if not exact_names.names_match(booking, data["family_name"], data["given_names"]):
            if not data["confirm_mismatch"]:
                # a typo must not cancel: both names side by side, the document read again
                return answer("mismatch", "name_mismatch",
                              "Les noms diffèrent : relisez la pièce d'identité et comparez. / "
                              "The names differ: read the identity document again.", booking)
            # the exact name is what makes a resold convocation useless: cancel it, on the
            # agent's second, explicit decision
            cancelled = self._cancel(booking["_id"], "name_mismatch",
                                     {"checked_by": data["agent"], "typed": typed,
                                      "second_look": True}, data["agent"])
            return answer("refused", "name_mismatch",
                          "Le nom ne correspond pas à la pièce d'identité : rendez-vous annulé. / "
                          "The name does not match the identity document: appointment cancelled.",
                          cancelled)
        checked = self.store.check_in(booking["_id"], records.check_in_record(data["agent"], self.clock.now()),
                                      Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if checked is None:  # someone else moved it meanwhile: say how it stands
            current = self.store.get(booking["_id"])
            result = "already_checked_in" if current["status"] == CHECKED_IN else "refused"
            return answer(result, None if result != "refused" else current["status"],
                          "Ce rendez-vous vient de changer d'état. / It changed meanwhile.", current)
        self._announce_checked_in(checked)
        return answer("checked_in", None, "Enregistré. / Checked in.", checked)

    @rpc(expected_exceptions=EXPECTED)
    def undo_cancellation(self, reference, by, why):
        """A supervisor undoes a name-mismatch cancellation the same day (M4 stays: who
        decides, after what look). The booking gets a place again only if its slot still has
        one (slots.reclaim: the place given back while it waits, else a free one); when the
        place went to someone else, Refused says so and nothing changes: never an overbooking."""
        data = load_or_raise(UNDO, {"reference": reference, "by": by, "why": why}, InvalidRequest)
        reference = data["reference"].strip().upper()
        booking = self.store.get(reference)
        if booking is None or booking.get("walk_in"):
            raise NotFound("No booking with this reference.")
        now = self.clock.now()
        refusal = undo.undo_refusal(booking, now)
        if refusal:
            raise Refused(refusal, {"reference": [refusal]})
        # the person may have booked again since (M3): restoring would make two bookings
        self._refuse_second_booking(booking["email_key"], other_than=reference)
        self._refuse_second_person(booking["procedure"], booking.get("person_key"),
                                   booking["identity"].get("foreigner_number"), other_than=reference)
        if not booking.get("place_released"):  # the cancel's own release first, so that
            self._finish_cancel(booking)       # its relay never gives back the new place
            if not self.store.get(reference).get("place_released"):
                raise ServiceUnavailable("The slots service did not answer. Try again.")
        hold_id = undo.undo_hold_id(reference)
        try:
            self.slots.reclaim(booking["slot"]["id"], hold_id)
        except SlotFull:
            raise Refused(PLACE_GONE, {"reference": [PLACE_GONE]})
        if not self.store.claim_hold(hold_id, reference, now):
            # the sweeper judged this place abandoned (a very slow undo) and gives it back
            raise Refused("Trop lent : réessayez. / Too slow: try again.", {})
        restored = self.store.restore(reference, hold_id, (booking.get("restored") or []) + [
            undo.undo_record(booking, data["by"], data["why"], now)],
            Outbox.entry(str(uuid.uuid4()), time.time(), self._grace()))
        if restored is None:  # undone meanwhile by someone else: this place is not needed
            self.store.drop_hold_claim(hold_id)
            self._release_quietly(hold_id)
            return staff_view(self.store.get(reference))
        self._announce_restored(restored)
        return staff_view(restored)

    @rpc(expected_exceptions=EXPECTED)
    def mark_attendance(self, request):
        """The day view: an expected person marked absent or excused (or expected again)."""
        data = load_or_raise(ATTENDANCE, request, InvalidRequest)
        reference = data["reference"].strip().upper()
        record = {"state": data["state"], "by": data["agent"], "at": self.clock.now()}
        before = self.store.mark_attendance(reference, data["site"], record)
        if before is None:
            raise Refused("Seul un rendez-vous attendu de ce site peut être marqué. / Only an "
                          "expected appointment of this site can be marked.",
                          {"reference": ["Not an expected appointment of this site."]})
        return dict(staff_view(dict(before, attendance=record)),
                    previous_attendance=(before.get("attendance") or {}).get("state"))

    @rpc(expected_exceptions=EXPECTED)
    def day_view(self, site, day):
        """A site's bookings and walk-ins for a local day (Europe/Paris), by time, with counts."""
        data = load_or_raise(DAY_QUERY, {"site": site, "day": day}, InvalidRequest)
        start, end = day_bounds(data["day"])
        views = [staff_view(b) for b in self.store.for_site_between(data["site"], start, end)]
        return {"site": data["site"], "day": data["day"].isoformat(), "bookings": views,
                "counts": day_counts(views)}

    @rpc(expected_exceptions=EXPECTED)
    def register_walk_in(self, request, idempotency_key=None):
        """M6: a 10-year-card renewal without appointment, on an allowed morning only.

        idempotency_key: the staff gateway's, one per HTTP request: a request delivered again
        is the same walk-in (its reference derived as `create`'s), not a second one."""
        data = load_or_raise(WALK_IN, request, InvalidRequest)
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        fingerprint = idempotency.request_fingerprint(key, data) if key else None
        if fingerprint:
            reference, made = self._reference_for(fingerprint)
            if made is not None:
                return staff_view(made)
        else:
            reference = references.new_reference()
        now = self.clock.now()
        refusal = walk_ins.refusal(data["procedure"], now, self._walk_in_hours())
        if refusal:
            raise Refused(refusal, {"procedure": [refusal]})
        walk_in = {
            "_id": reference,
            "status": CHECKED_IN,
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
            "checked_in": records.check_in_record(data["agent"], now),
        }
        if fingerprint:
            walk_in["idempotency"] = fingerprint
        try:
            self.store.insert(walk_in)
        except DuplicateKeyError:
            made = self.store.get(reference)
            if fingerprint is None or made is None or made.get("idempotency") != fingerprint:
                raise ServiceUnavailable("The walk-in was not registered. Please try again.")
            return staff_view(made)  # its other delivery, at the same moment
        return staff_view(walk_in)

    @rpc(expected_exceptions=EXPECTED)
    def walk_in_rule(self):
        return {"procedure": "renewal_10y", "hours": self._walk_in_hours(),
                "text": walk_ins.rule_text(self._walk_in_hours())}

    # -- internals ---------------------------------------------------------------------------

    def _verified(self, code):
        """The booking a convocation code stands for, if its signature is ours over its data."""
        try:
            reference, signature = convocations.parse_code(code)
        except ValueError:
            raise InvalidRequest(INVALID_CODE, {"code": [INVALID_CODE]})
        booking = self.store.get(reference)
        if booking is None or booking.get("walk_in") or not signing.verify(
                self.convocation_key.public_key, signature, convocations.convocation_fields(booking)):
            raise InvalidRequest(INVALID_CODE, {"code": [INVALID_CODE]})
        return booking

    def _by_reference(self, reference, birth_date):
        """The booking of a typed reference, when the birth date is the booking's."""
        booking = self.store.get(reference.strip().upper())
        if (booking is None or booking.get("walk_in")
                or booking["identity"].get("birth_date") != birth_date.isoformat()):
            raise InvalidRequest(NO_MATCH, {"reference": [NO_MATCH]})
        return booking

    def _walk_in_hours(self):
        hours = setting(self.config, "WALK_IN_HOURS")
        walk_ins.checked_hours(hours)  # a misconfiguration shows in the error, not as a silent "no"
        return hours

    def _announce_restored(self, booking):
        token = self.tokens.token_for(booking["_id"], booking["token_salt"])
        if self._dispatched(booking["_id"], "booking_restored", events.restored_event(booking, token)):
            self.store.outbox.sent(booking["_id"], "restored")

    def _announce_checked_in(self, booking):
        if self._dispatched(booking["_id"], "booking_checked_in", events.checked_in_event(booking)):
            self.store.outbox.sent(booking["_id"], "checked_in")
