"""Requests service (issue 12): appointments allocated, not grabbed.

For a procedure a supervisor switched to `requests` mode, applicants file a request (identity,
permit expiry, e-mail confirmed by its link, sites and times of week they can come). At each
release of that procedure (`slots_released`, through the inbox) the open places go to the
waiting requests in the order of services/requests/allocation.py, the draw recorded for audits.
Each offer holds its place on the slot under the offer's id (slots' `hold`, kept: the normal
ledger applies and nobody else can book it) and is e-mailed with a deadline; accepting makes
a booking through the booking service exactly like one made today; declining or letting it
lapse hands the place over to the next request (slots' `hand_over`), or gives it back when
nobody waiting can come then.

Safe under several instances and restarts: allocation of a procedure runs under a lease; a
request takes an offer by one conditional update; an offer is written before its place is
held, and a pass finishes offers left half-made; events go out through the outbox.
"""
import logging
import secrets
import time
import uuid
from datetime import date, timedelta

import eventlet
from nameko.dependency_providers import Config
from pymongo.errors import DuplicateKeyError
from nameko.events import EventDispatcher

# the draw's order and who gets which place (issue 20: apart from the other request rules)
from services.requests import allocation
from services.common import contract, health
from services.common.clock import Clock
from services.common.errors import (EXPECTED, DomainError, InvalidRequest, NotFound, Refused,
                                    ServiceUnavailable, SlotFull, SlotNotBookable)
from services.common import idempotency
from services.common import inbox as event_inbox
from services.common.lease import InstanceId
from services.common.exact_names import name_problem, person_key
from services.common import one_email
from services.common import register_check
from services.common.outbox import Outbox, announce
from services.common import relay
from services.common import retention
from services.common.rpc import BoundedRpcProxy, RequestDeadline, rpc
from services.common.schemas import ClientSchema, ListingSchema, load_or_raise, validated
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.settings import retention_days, setting
from services.common.timers import config_timer
from services.common.timeutil import parse_iso
from services.common.tokens import Tokens, TokenSigner, new_salt
from services.common.views import iso_from_ts
from services.common.queues import event_handler
from services.requests import on_behalf, rules
from services.common.request_schemas import (CLAIM_TAKEN, AvailabilitySchema, InvitationRefSchema,
                                       ModeSchema, RequestAccessSchema, RequestFilingSchema,
                                       availability_doc)
from services.requests.store import RequestsMongo

log = logging.getLogger(__name__)

FILING, ACCESS, AVAILABILITY, MODE, CLIENT = (RequestFilingSchema(), RequestAccessSchema(),
                                              AvailabilitySchema(), ModeSchema(), ClientSchema())
NOT_FOUND = "No request with this reference and token."
NOT_FILED = "The request was not filed. Please try again."
INVITATION_GONE = ("Cette invitation n'est plus valable : déposez la demande sans elle. / This "
                   "invitation is no longer valid: file the request without it.")
# what vouched for a request's person, stored on it as `verified_by` (issue 24) and counted on
# the staff's /requests page: the register's permits (a renewal matched), its long-stay visas (a
# first application matched), a renewal invitation (the register and the invited mailbox), an
# agent at the desk (who had the papers in hand), a partner (for a procedure no register
# checks); None: nothing but the mailbox (a procedure no register checks, filed on the site)
VERIFIED_BY = ("permits", "visas", "invitation", "desk", "partner")
# Crockford's alphabet, as booking references: read aloud at a counter without ambiguity
_ALPHABET = idempotency.ALPHABET
RENEW_EVERY = 20  # offers made between two renewals of the allocation lease
# offers of one pass made side by side: each waits on the store, slots' hold and the bus, so
# one at a time left a release of 1,000 places taking 53 s; slots has MAX_WORKERS for others
OFFERS_AT_ONCE = 8
# an acceptance still unfinished after this (or ten RPC timeouts) lost its caller
ACCEPT_GRACE_SECONDS = 120.0
# how long ending an offer waits for an allocation pass to finish before leaving its place to
# the timer's sweep
PASS_ON_PATIENCE_SECONDS = 3.0
PAGE = 200
LISTING = ListingSchema()
INVITATION_REF = InvitationRefSchema()


ALREADY_OPEN = ("Une demande confirmée est déjà en cours pour cette démarche avec cette "
                "adresse électronique ou ce numéro d'étranger. / A confirmed request is already "
                "open for this procedure with this e-mail or foreigner number.")
ALREADY_OPEN_AT_CONFIRMATION = (
    "Une autre demande confirmée est déjà en cours pour cette démarche avec cette adresse "
    "électronique ou ce numéro d'étranger : celle-ci n'est pas confirmée. / Another confirmed "
    "request is already open for this procedure with this e-mail or foreigner number: this "
    "one is not confirmed.")


def _already_open(key, message):
    """The refusal when `key` (email:…, number:… or person:…) is claimed by another open
    request."""
    field = {"email": "email", "number": "foreigner_number"}.get(key.split(":", 1)[0], "identity")
    return Refused(message, {field: [CLAIM_TAKEN]})


def _code():
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def _reference(chars):
    """A request's reference from eight characters (derived from an idempotency key)."""
    return f"REQ-{chars[:4]}-{chars[4:]}"


def _booking_of(created):
    """What an acceptance answers of the booking it made: enough to open it."""
    return {key: created[key] for key in ("reference", "token", "slot")}


def booking_reference_of(offer_id):
    """The booking an accepted offer becomes: derived, so a retried acceptance finds it."""
    return "RDV-" + offer_id[len("OFR-"):]


def claim_keys_of(data, email_key):
    """The keys a confirmed request of `data` (loaded filing) holds: one open request per
    e-mail (M3: one e-mail, one person), per foreigner number and per person (folded names and
    birth date, whatever the e-mail), in this order for every request."""
    procedure = data["procedure"]
    keys = [f"email:{procedure}:{email_key}"]
    if data.get("foreigner_number"):
        keys.append(f"number:{procedure}:{data['foreigner_number']}")
    person = person_key(data["family_name"], data["given_names"], data["birth_date"].isoformat())
    keys.append(f"person:{procedure}:{person}")
    return keys


def request_document(reference, data, email_key, keys, token_hash, salt, now, confirm_hours,
                     outbox, verified_by=None):
    """A filed request as stored (unconfirmed): `data` is the loaded filing. Shared with the
    allocation bench's set-up (tests/bench/allocation_pass.py), which stores many at once.
    verified_by: what vouched for the person (VERIFIED_BY), None when nothing did."""
    return {
        "_id": reference,
        "procedure": data["procedure"],
        "state": rules.UNCONFIRMED,
        "identity": {"family_name": data["family_name"], "given_names": data["given_names"],
                     "birth_date": data["birth_date"].isoformat(),
                     "foreigner_number": data.get("foreigner_number")},
        "permit_expiry": data["permit_expiry"].isoformat() if data.get("permit_expiry") else None,
        "email": data["email"], "email_key": email_key, "phone": data.get("phone"),
        "lang": data["lang"],  # the e-mails' links open the pages in it
        "availability": availability_doc(data["availability"]),
        "filed_ts": now.timestamp(),
        "filed_day": rules.paris_today(now).isoformat(),
        "confirm_by_ts": now.timestamp() + 3600 * confirm_hours,
        "missed": 0,
        "claim_keys": keys, "verified_by": verified_by,
        "token_hash": token_hash, "token_salt": salt,
        "outbox": outbox,
    }


class RequestsService(relay.OutboxRelay, event_inbox.TakesEvents, on_behalf.OnBehalf):
    name = "requests"

    store = RequestsMongo()
    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    # renewals checked against the permits, first applications against the visas (issue 24)
    register = BoundedRpcProxy("register")
    dispatch = EventDispatcher()
    tokens = Tokens("REQUEST_TOKEN_SECRET")
    clock = Clock()
    config = Config()
    # refuses to start with a period below the floor (erasure cannot be undone)
    retention_periods = retention.RetentionPeriods("REQUEST_RETENTION_DAYS")
    instance = InstanceId()
    deadline = RequestDeadline()  # when the caller of the current RPC stops waiting

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, requests and offers not yet announced, events parked or retrying
        (services/common/health.py)."""
        return health.report(self.name, lambda: dict(
            health.inbox_backlog(self.store.inbox),
            outbox=dict(health.outbox_backlog(self.store.request_outbox),
                        **health.outbox_backlog(self.store.offer_outbox))))

    # -- modes (supervisors) -----------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def modes(self):
        """{procedure: "open" | "requests"} for every procedure (open unless switched). Slots
        keeps the one switch (it decides every hold): two copies could disagree after a
        failure between their writes and leave a procedure nobody can book."""
        return self.slots.modes()

    @rpc(expected_exceptions=EXPECTED)
    def set_mode(self, procedure, mode, by="supervisor"):
        """Switch a procedure between direct booking and requests. Existing bookings stay;
        existing requests keep waiting (they get places again once switched back)."""
        args = validated(MODE, procedure=procedure, mode=mode, by=by)
        self.slots.set_mode(args["procedure"], args["mode"])
        # who switched what when, for the requests' own history (the staff audit log has it too)
        self.store.record_mode_change(args["procedure"], args["mode"], args["by"], time.time())
        log.info("procedure %s switched to %s by %s", args["procedure"], args["mode"], args["by"])
        return self.modes()

    # -- applicants --------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def file(self, request, idempotency_key=None):
        """File a request; it enters the draw once confirmed from its e-mail (request_filed).

        idempotency_key: the caller's key for this request (the public gateway sends one per
        HTTP request, or the applicant's own), as booking's `create`: the reference is derived
        from it and the request's content, so the same request delivered or sent again answers
        the request it filed (the same reference and token) without filing or mailing again."""
        data = load_or_raise(FILING, request, InvalidRequest)
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        fingerprint = idempotency.request_fingerprint(key, data) if key else None
        if fingerprint:
            reference, made = idempotency.reference_for(self.tokens, fingerprint, _reference,
                                                        self.store.get)
            if reference is None:
                raise ServiceUnavailable(NOT_FILED)
            if made is not None:  # delivered or sent again: the same answer again
                return self._filed_answer(made)
        else:
            reference = "REQ-" + _code()
        procedure = data["procedure"]
        if self.slots.modes()[procedure] != "requests":
            raise Refused("Cette démarche se réserve directement. / This procedure is booked "
                          "directly, not by request.", {"procedure": ["Booked directly."]})
        # M4 before the draw: a placeholder or handle is refused now, with the reason
        problem = name_problem(data["family_name"], data["given_names"], data["email"], procedure)
        if problem:
            field, reason = problem
            raise InvalidRequest("Give the exact name as on the passport or permit.",
                                 {field: [f"Not an exact name ({reason})."]})
        email_key = one_email.mailbox_key(data["email"], self.config)
        # issue 24: a renewal matches a permit in the register, whose expiry sets its place
        # in line (never the one typed); an invitation's mailbox needs no confirmation
        verified_by, verified = self._register_check(data, email_key)
        # one open request per e-mail (M3: one e-mail, one person), per foreigner number and
        # per person (folded names and birth date, whatever the e-mail), claimed at
        # confirmation; a confirmed one already open is said now, before any mail
        keys = claim_keys_of(data, email_key)
        taken = self.store.held(keys)
        if taken:
            raise _already_open(taken, ALREADY_OPEN)
        now = self.clock.now()
        salt = new_salt()
        token = self.tokens.token_for(reference, salt)
        doc = request_document(
            reference, data, email_key, keys, TokenSigner.hash_token(token), salt, now,
            self._setting("REQUEST_CONFIRM_HOURS"),
            # a request the register's invitation verified asks for no confirmation e-mail
            {} if verified else {"filed": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
            verified_by=verified_by)
        try:
            made = idempotency.insert_once(self.store.insert, self.store.get, doc, fingerprint)
        except DuplicateKeyError:
            raise ServiceUnavailable(NOT_FILED)
        if made is not None:  # its other delivery's, stored at the same moment
            return self._filed_answer(made)
        if verified:
            # the invitation went to this mailbox: confirmed now, no e-mail asking for it, and
            # offered at once when a place fits, as a confirmation is
            confirmed = self._claim_and_confirm(doc)
            if confirmed["state"] == rules.WAITING:
                confirmed = self._offer_now(confirmed)
            return dict(self._view(confirmed), token=token)
        self._announce_filed(doc, token)
        return dict(self._view(doc), token=token)

    def _register_check(self, data, email_key):
        """Renewals (REGISTER_CHECKED_PROCEDURES) must match a permit in the register: the
        foreigner number, birth date and folded family name; `data["permit_expiry"]` becomes
        the register's; a permit renewed by another procedure (renewal and renewal_10y) is refused
        naming that procedure, once the identity matched. First applications
        (VISA_CHECKED_PROCEDURES) must match a long-stay visa (_visa_check). One refusal
        whichever of the identity's fields differs. The register not answering is a 503:
        nothing is accepted unchecked. (verified_by, mailbox): which of the register's books
        matched ("permits", "visas", "invitation", or None when no check applies), and True
        when an invitation vouches for the mailbox."""
        invitation = data.pop("invitation", None)
        typed = register_check.match_key(data.get("foreigner_number"),
                                         data["birth_date"].isoformat(), data["family_name"])
        if invitation:
            try:
                invited = self.register.invitation(invitation["id"], invitation["token"])
            except (NotFound, InvalidRequest):
                raise InvalidRequest(INVITATION_GONE, {"invitation": [INVITATION_GONE]})
            identity = invited["identity"]
            if typed != register_check.match_key(
                    identity["foreigner_number"], identity["birth_date"], identity["family_name"]):
                raise Refused(register_check.MISMATCH,
                              {register_check.MISMATCH_FIELD: [register_check.MISMATCH_REASON]})
            if invited["procedure"] != data["procedure"]:
                # the invited permit, filed for another procedure: told as without invitation
                raise Refused(*register_check.wrong_procedure(invited["procedure"]))
            data["permit_expiry"] = date.fromisoformat(invited["expiry"])
            return "invitation", one_email.mailbox_key(invited["email"], self.config) == email_key
        # which books check this procedure: the rule GET /api/procedures and the form tell
        books = register_check.register_books(data["procedure"], self.config)
        verified_by = None
        if "visas" in books:
            self._visa_check(data)
            verified_by = "visas"
        if "permits" not in books:
            return verified_by, False
        if not data.get("foreigner_number"):  # a checked procedure that is not a renewal
            raise InvalidRequest(register_check.FOREIGNER_NUMBER_MISSING, {
                "foreigner_number": [register_check.FOREIGNER_NUMBER_MISSING]})
        found = self.register.match(data["foreigner_number"], data["birth_date"].isoformat(),
                                    data["family_name"])
        if not found["matched"]:
            raise Refused(register_check.MISMATCH,
                          {register_check.MISMATCH_FIELD: [register_check.MISMATCH_REASON]})
        if register_check.wrong_renewal(data["procedure"], found["procedure"]):
            # the identity matched (the person knows the permit's number, birth date and name):
            # told which procedure renews it, so the honest person files for the right one
            raise Refused(*register_check.wrong_procedure(found["procedure"]))
        data["permit_expiry"] = date.fromisoformat(found["expiry"])
        return "permits", False

    def _visa_check(self, data):
        """First applications (VISA_CHECKED_PROCEDURES) must match a long-stay visa in the
        register: the visa number, birth date and folded family name, its validity not ended
        more than VISA_VALIDITY_GRACE_DAYS ago (400 without a number; one refusal whichever
        differs or when the visa is too old; 503 when the register does not answer)."""
        if not data.get("visa_number"):
            raise InvalidRequest(register_check.VISA_MISSING,
                                 {"visa_number": [register_check.VISA_MISSING]})
        found = self.register.match_visa(data["visa_number"], data["birth_date"].isoformat(),
                                         data["family_name"])
        # a visa whose validity ended more than VISA_VALIDITY_GRACE_DAYS ago: the same answer
        if not found["matched"] or not register_check.visa_in_time(
                found["validity_end"], rules.paris_today(self.clock.now()),
                self._setting("VISA_VALIDITY_GRACE_DAYS")):
            raise Refused(register_check.VISA_MISMATCH, {
                register_check.VISA_MISMATCH_FIELD: [register_check.VISA_MISMATCH_REASON]})

    def _filed_answer(self, request):
        """A filed request's answer again, its token rebuilt from the stored salt."""
        return dict(self._view(request),
                    token=self.tokens.token_for(request["_id"], request["token_salt"]))

    @rpc(expected_exceptions=EXPECTED)
    def invited(self, invitation, token):
        """What a renewal invitation's link pre-fills, for the holder of its token (the invited
        mailbox): the permit's identity as the register has it, the e-mail, the procedure and
        the expiry. NotFound (one answer) for a wrong token or a permit changed since."""
        args = load_or_raise(INVITATION_REF, {"id": invitation, "token": token}, InvalidRequest)
        try:
            found = self.register.invitation(args["id"], args["token"])
        except (NotFound, InvalidRequest):
            raise NotFound(INVITATION_GONE, {"invitation": [INVITATION_GONE]})
        return {key: found[key] for key in ("procedure", "email", "expiry", "identity")}

    @rpc(expected_exceptions=EXPECTED)
    def confirm(self, reference, token):
        """The owner of the mailbox confirms: unconfirmed -> waiting (it enters the draw). Its
        e-mail and foreigner number are claimed now: an unconfirmed request holds nothing
        against anyone. Refused (it stays unconfirmed) while another confirmed request holds
        one of them."""
        request = self._owned(reference, token)
        if request["state"] == rules.UNCONFIRMED:
            request = self._claim_and_confirm(request)
            if request["state"] == rules.WAITING:
                request = self._offer_now(request)
        return self._view(request)

    def _offer_now(self, request):
        """Issue 24: a request just confirmed (or given a new availability) that can come to a
        free place gets its offer in the same sitting, when nobody waiting is before it.

        Nothing is decided here on its own: this runs the procedure's ordinary allocation pass
        (its lease, the draw over everyone waiting, the record), so when places are short the
        waiting requests keep their order, and a place is never offered twice (the pass's
        offers hold their places by slots' hold). Without a place this request can come to,
        no pass: it waits for the next release. The request as it stands after."""
        procedure = request["procedure"]
        if self.slots.modes()[procedure] != "requests":
            return request
        if not any(allocation.can_come(request["availability"], p["site"], p["start"], p["end"])
                   for p in self._open_places(procedure)):
            return request
        job, owner = f"allocate:{procedure}", f"{self.instance}:{uuid.uuid4().hex[:8]}"
        # a third of the caller's time at most goes on waiting for a running pass, the rest is
        # the pass's: past its deadline the caller sees 503 although the change was stored
        patience = min(PASS_ON_PATIENCE_SECONDS, self.deadline.remaining() / 3)
        if patience <= 0 or not self._wait_for_allocation_lease(job, owner, patience):
            # a pass holds the procedure: it, or the timer's next one, sees this request
            return self.store.get(request["_id"])
        try:
            self._allocation_pass(procedure, job, owner)
        finally:
            self.store.leases.release(job, owner)
        return self.store.get(request["_id"])

    def _claim_and_confirm(self, request):
        taken = self.store.claim_keys(request["claim_keys"], request["_id"])
        if taken:
            raise _already_open(taken, ALREADY_OPEN_AT_CONFIRMATION)
        confirmed = self.store.move(request["_id"], [rules.UNCONFIRMED],
                                    {"state": rules.WAITING, "confirmed_ts": time.time()})
        if confirmed is not None:
            return confirmed
        request = self.store.get(request["_id"])
        if request["state"] not in rules.OPEN_STATES:
            # withdrawn or expired meanwhile, its keys maybe freed before they were taken here
            self.store.free_keys(request)
        return request

    @rpc(expected_exceptions=EXPECTED)
    def get(self, reference, token):
        return self._view(self._owned(reference, token))

    @rpc(expected_exceptions=EXPECTED)
    def update_availability(self, reference, token, availability):
        """New sites and times of week; an offer already made stays as it is."""
        request = self._owned(reference, token)
        data = load_or_raise(AVAILABILITY, availability, InvalidRequest)
        updated = self.store.move(request["_id"], rules.OPEN_STATES,
                                  {"availability": availability_doc(data)})
        if updated is None:
            raise Refused("This request is closed.", {"state": [request["state"]]})
        if updated["state"] == rules.WAITING:
            updated = self._offer_now(updated)
        return self._view(updated)

    @rpc(expected_exceptions=EXPECTED)
    def withdraw(self, reference, token):
        """Withdraw the request; an offer it holds goes to the next. Again: no change."""
        request = self._owned(reference, token)
        offer = None
        if request["state"] == rules.OFFERED and request.get("offer_id"):
            # the offer first, by one conditional update: an acceptance takes it the same way,
            # so exactly one of the two wins
            offer = self._end(request["offer_id"], [rules.MADE, rules.HOLDING], rules.VOID)
            if offer is None:
                self._refuse_if_accepting(request)
        closed = self.store.move(request["_id"], rules.OPEN_STATES, {"state": rules.WITHDRAWN,
                                                                     "closed_ts": time.time()})
        if closed is not None:
            self.store.free_keys(closed)
        if offer is not None:
            self._pass_on(offer, exclude={request["_id"]})
        return self._view(closed or self.store.get(request["_id"]))

    @rpc(expected_exceptions=EXPECTED)
    def accept(self, reference, token, client=None):
        """Accept the offer: it becomes a booking made by the booking service exactly like
        today's (booking_created, then booking_confirmed: the e-mail was proven at filing)."""
        request = self._owned(reference, token)
        client = load_or_raise(CLIENT, client or {"ip": ""}, InvalidRequest)
        offer = self.store.get_offer(request.get("offer_id") or "")
        if request["state"] == rules.BOOKED and offer and offer["state"] in (rules.ACCEPTED,
                                                                              rules.ACCEPTING):
            # accepted already (a retry whose first answer was lost): the booking made, with
            # its token, as the first answer had it
            return dict(self._view(request), booking=_booking_of(self._book_offer(request, offer, client)))
        if request["state"] != rules.OFFERED or offer is None or offer["state"] not in (
                rules.MADE, rules.ACCEPTING):
            raise Refused("No offer to accept.", {"state": [request["state"]]})
        if offer["state"] == rules.MADE:
            if offer["deadline_ts"] <= self.clock.now().timestamp():
                self._lapse(offer)
                raise Refused("The offer's deadline has passed; the place went to the next request.",
                              {"deadline": [iso_from_ts(offer["deadline_ts"])]})
            # taken out of the lapse's reach before the booking is made: a lapse at the same
            # moment would hand the place to the next request while it becomes this booking
            offer = self.store.move_offer(offer["_id"], [rules.MADE],
                                          {"state": rules.ACCEPTING, "accepting_ts": time.time()}) \
                or self.store.get_offer(offer["_id"])
            if offer["state"] == rules.ACCEPTED:
                # a double tap's other call accepted it between our read and our move: the
                # same answer as a retry's (the booking is made once, by the offer's reference)
                request = self.store.get(request["_id"])
                if request["state"] == rules.BOOKED:
                    return dict(self._view(request),
                                booking=_booking_of(self._book_offer(request, offer, client)))
            if offer["state"] != rules.ACCEPTING:
                raise Refused("No offer to accept.", {"state": [offer["state"]]})
        created = self._book_offer(request, offer, client)
        # the request first: a crash before the offer's move leaves it `accepting` with its
        # booking made, which the timer finishes (_finish_accepting)
        booked = self._booked(request["_id"], created["reference"])
        self.store.move_offer(offer["_id"], [rules.ACCEPTING], {"state": rules.ACCEPTED,
                                                               "booking_reference": created["reference"],
                                                               "accepted_ts": time.time()})
        return dict(self._view(booked or self.store.get(request["_id"])), booking=_booking_of(created))

    def _booked(self, request_id, booking_reference):
        booked = self.store.move(request_id, [rules.OFFERED], {"state": rules.BOOKED,
                                                               "booking_reference": booking_reference,
                                                               "closed_ts": time.time()})
        if booked is not None:
            self.store.free_keys(booked)
        return booked

    def _book_offer(self, request, offer, client):
        """The booking an offer taken for acceptance becomes (born confirmed: the mailbox was
        proven when the request was confirmed). Refused: the offer is offered again; the
        booking service unreachable: it stays taken, a retry or the timer finishes it."""
        identity = request["identity"]
        booking_request = {
            "procedure": request["procedure"], "slot_id": offer["slot_id"],
            "family_name": identity["family_name"], "given_names": identity["given_names"],
            "birth_date": identity["birth_date"], "email": request["email"],
            "phone": request.get("phone"), "foreigner_number": identity.get("foreigner_number"),
            "lang": request.get("lang") or "fr",
        }
        booking_ref = booking_reference_of(offer["_id"])
        try:
            if request.get("filed_by"):  # by a partner or at the desk (on_behalf.py)
                return self._book_on_behalf(request, offer, booking_ref)
            return self.booking.create(booking_request, client, offer={
                "reference": booking_ref, "hold_id": offer["_id"]})
        except ServiceUnavailable:
            raise
        except DomainError:
            # refused (another booking on this e-mail...): offered again, unless a concurrent
            # acceptance of the same offer made the booking meanwhile
            if booking_ref not in self.booking.statuses([booking_ref]):
                self.store.move_offer(offer["_id"], [rules.ACCEPTING], {"state": rules.MADE})
            raise

    @rpc(expected_exceptions=EXPECTED)
    def decline(self, reference, token):
        """Decline the offer: the place goes to the next request; this one keeps its place in
        the line once, then goes to the back."""
        request = self._owned(reference, token)
        offer = self.store.get_offer(request.get("offer_id") or "")
        if request["state"] != rules.OFFERED or offer is None:
            last = self.store.get_offer(request.get("last_offer_id") or "")
            if last is not None and last["state"] == rules.DECLINED:
                return self._view(request)  # declined already: the same call delivered again
            raise Refused("No offer to decline.", {"state": [request["state"]]})
        declined = self._end(offer["_id"], [rules.MADE], rules.DECLINED)
        if declined is None:
            self._refuse_if_accepting(request)
        else:
            self._missed(declined)
            self._pass_on(declined, exclude={request["_id"]})
        return self._view(self.store.get(request["_id"]))

    def _refuse_if_accepting(self, request):
        offer = self.store.get_offer(request.get("offer_id") or "") or {}
        if offer.get("state") in (rules.ACCEPTING, rules.ACCEPTED):
            raise Refused("This offer is being accepted: it becomes your appointment.",
                          {"state": ["accepting"]})

    def _end(self, offer_id, from_states, state, settled=False):
        """An offer ends (declined, lapsed, void). `settled`: it never held its place; else the
        place is settled by _pass_on, or by the timer's sweep if a crash came in between."""
        changes = {"state": state, "ended_ts": time.time()}
        if settled:
            changes["settled"] = True
        return self.store.move_offer(offer_id, from_states, changes)

    # -- staff -------------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def counts(self):
        """Open requests by procedure and state, by permit expiry month, and by what verified
        them (`verified_by`, "none" for nothing): counts only, never the order of a draw
        before it is made nor a request."""
        by_procedure, by_month, by_verified = {}, {}, {}
        for request in self.store.open_requests():
            verified = by_verified.setdefault(request["procedure"], {})
            how = request.get("verified_by") or "none"
            verified[how] = verified.get(how, 0) + 1
            states = by_procedure.setdefault(request["procedure"], {})
            states[request["state"]] = states.get(request["state"], 0) + 1
            months = by_month.setdefault(request["procedure"], {})
            month = rules.expiry_month(request)
            months[month] = months.get(month, 0) + 1
        return {"by_procedure": by_procedure, "by_expiry_month": by_month,
                "by_verified": by_verified}

    @rpc(expected_exceptions=EXPECTED)
    def recent_draws(self, limit=20):
        """The last draws made (newest first): id, procedure, when, how many requests were
        ordered and offers made; the order itself only through draw_record."""
        args = validated(LISTING, limit=limit)
        return [{"id": d["_id"], "procedure": d["procedure"], "at": iso_from_ts(d["at_ts"]),
                 "requests": len(d.get("result") or []), "offers": len(d.get("offers") or [])}
                for d in self.store.recent_draws(args["limit"])]

    @rpc(expected_exceptions=EXPECTED)
    def draw_record(self, draw_id):
        """An audit: the draw's inputs, seed and result, and whether they replay. Not found
        says whether the draw was made and its record deleted (older than the retention)."""
        record = self.store.get_draw(draw_id) if isinstance(draw_id, str) else None
        if record is None and isinstance(draw_id, str) and self.store.draw_was_made(draw_id):
            days = f"{self.store.draw_retention_days:g}"
            raise NotFound(f"Ce tirage est plus ancien que la durée de conservation ({days} jours) : "
                           f"son enregistrement a été supprimé. / This draw is older than the "
                           f"retention period ({days} days): its record was deleted.",
                           {"draw_id": [f"Older than the retention period ({days} days)."]})
        if record is None:
            raise NotFound("Aucun tirage n'a ce numéro. / No draw with this id.",
                           {"draw_id": ["Unknown draw."]})
        return {"id": record["_id"], "procedure": record["procedure"], "at": iso_from_ts(record["at_ts"]),
                "today": record["today"], "inputs": record["inputs"], "seed": record["seed"],
                "result": record["result"], "offers": record["offers"],
                "replays": allocation.replay(record)}

    # -- allocation --------------------------------------------------------------------------

    @event_handler("slots", "slots_released", requeue_on_error=True)
    def on_slots_released(self, event):
        self.take_event("slots_released", event)

    def inbox_handlers(self):
        return {"slots_released": self._on_released}

    def _on_released(self, event):
        if self.slots.modes()[event["procedure"]] != "requests":
            return
        if self.allocate(event["procedure"]) is None:
            # another instance is allocating this procedure: its pass, or the timer's next,
            # sees these places too
            log.info("allocation of %s busy elsewhere; the timer follows up", event["procedure"])

    @config_timer("REQUEST_TIMER_SECONDS")
    def tick(self):
        """Lapsed offers, unconfirmed requests, a safety-net allocation (the outbox has its
        own relay: outbox_routes)."""
        interval = self._setting("REQUEST_TIMER_SECONDS")
        if not self.store.leases.acquire("tick", self.instance, 3 * interval, time.time()):
            return
        # each step on its own: one failing (booking or slots not answering) must not stop
        # the others
        for step in (self._lapse_due, self._finish_accepting_due, self._settle_due,
                     self._expire_unconfirmed, self._allocate_all):
            try:
                step()
            except Exception:
                log.exception("requests timer: %s failed; the next tick tries again", step.__name__)

    @config_timer("RETENTION_TIMER_SECONDS")
    def erase_expired(self):
        """Erase who the requests closed (booked, expired, withdrawn) REQUEST_RETENTION_DAYS
        ago were from: services/common/retention.py. One instance per pass (a lease), bounded
        batches; the booking keeps its own copy for its own period."""
        return retention.run_pass(self.store.leases, "retention", self.instance, self.config,
                                  self._erase)

    def _erase(self, now_ts, limit):
        before_ts = retention.cutoff_ts(self.clock.now().timestamp(),
                                        retention_days(self.config, "REQUEST_RETENTION_DAYS"))
        return {"requests": self.store.erase_closed(before_ts, now_ts, limit),
                "events": self.store.inbox.erase_before(before_ts, now_ts, limit)}

    def _lapse_due(self):
        for offer in self.store.lapsed_due(self.clock.now().timestamp()):
            self._lapse(offer)

    def _finish_accepting_due(self):
        # far beyond any acceptance's wait: the booking service stores nothing after its
        # caller's RPC deadline
        grace = max(ACCEPT_GRACE_SECONDS, 10 * self._setting("RPC_TIMEOUT"))
        for offer in self.store.accepting_before(time.time() - grace):
            self._finish_accepting(offer)

    def _settle_due(self):
        """Ended offers whose place a crash left held (between ending them and passing on)."""
        grace = self._setting("REQUEST_HOLDING_GRACE_SECONDS")
        for offer in self.store.unsettled(time.time() - grace):
            self._pass_on(offer, exclude={offer["request_id"]})

    def _expire_unconfirmed(self):
        now_ts = self.clock.now().timestamp()
        for request in self.store.unconfirmed_due(now_ts):
            expired = self.store.move(request["_id"], [rules.UNCONFIRMED],
                                      {"state": rules.EXPIRED, "closed_ts": now_ts})
            if expired is not None:
                self.store.free_keys(expired)

    def _allocate_all(self):
        for procedure, mode in self.slots.modes().items():
            if mode == "requests":
                self.allocate(procedure)

    def outbox_routes(self):
        """`request_filed` and `offer_made` whose dispatch did not happen, for the relay
        (services/common/relay.py)."""
        return [(self.store.request_outbox, "filed", lambda r: self._announce_filed(
                    r, self.tokens.token_for(r["_id"], r["token_salt"]))),
                (self.store.offer_outbox, "made", self._announce_offer)]

    def allocate(self, procedure):
        """One allocation pass: the number of offers made, or None when another instance holds
        the procedure's lease. Places are the procedure's open places (decoys left out)."""
        job = f"allocate:{procedure}"
        # the lease's owner is this pass, not this process: the event handler and the timer of
        # one instance would otherwise both hold it and allocate side by side
        owner = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        if not self._allocation_lease(job, owner):
            return None
        try:
            return self._allocation_pass(procedure, job, owner)
        finally:
            self.store.leases.release(job, owner)

    def _allocation_pass(self, procedure, job, owner):
        """The pass itself, under the lease `owner` holds: offers made. A release comes in
        batches whose events find this pass running (and its lease taken): once its offers are
        made it looks again for open places, and gives those that came meanwhile to the
        requests still waiting in a draw of their own, without reading them all again."""
        self._finish_holding(procedure)
        still_ours = lambda: self._allocation_lease(job, owner)  # noqa: E731
        places = self._open_places(procedure)
        if not places:
            return 0
        waiting, made = self.store.waiting(procedure), 0
        while places and waiting:
            offered = set()
            made += self._draw_and_offer(procedure, waiting, places, still_ours, offered)
            if not offered or not still_ours():
                return made  # nobody waiting could come to these places (or handed over)
            # those offered wait no more; one whose offer fell through stays in the list (a
            # conditional take refuses it if it no longer waits)
            waiting = [r for r in waiting if r["_id"] not in offered]
            places = self._open_places(procedure)
        return made

    def _wait_for_allocation_lease(self, job, owner, patience=PASS_ON_PATIENCE_SECONDS):
        """The allocation lease, waiting out a pass that holds it (passes are short)."""
        give_up = time.monotonic() + patience
        while not self._allocation_lease(job, owner):
            if time.monotonic() >= give_up:
                return False
            eventlet.sleep(0.05)
        return True

    def _allocation_lease(self, job, owner):
        """Taken or renewed. The lease spares work, it does not make allocation safe: a request
        takes an offer by a conditional update and a place by slots' hold, whoever runs."""
        return self.store.leases.acquire(job, owner, self._setting("REQUEST_LEASE_SECONDS"),
                                         time.time())

    def _draw_and_offer(self, procedure, waiting, places, still_ours, offered=None):
        """Draw, record, and make the offers (OFFERS_AT_ONCE at a time: each is safe alone, a
        request taken by one conditional update and a place by slots' hold). offered: a set
        given the requests an offer went to."""
        if not waiting:
            return 0
        record = allocation.draw(waiting, rules.paris_today(self.clock.now()))
        by_id = {r["_id"]: r for r in waiting}
        pairs = allocation.allocate([by_id[i] for i in record["result"]], places)
        if not pairs:
            return 0  # nobody waiting can come to the open places: nothing decided, no record
        draw_id = self._record_draw(procedure, record, pairs)
        places_by_id = {p["id"]: p for p in places}
        pool, offers, failures = eventlet.GreenPool(OFFERS_AT_ONCE), [], []
        for n, (request_id, slot_id) in enumerate(pairs):
            if failures:
                break  # slots or the store failing: no more offers started (the timer retries)
            # spawn waits for a free green thread: the lease is renewed as offers get made
            if n and n % RENEW_EVERY == 0 and not still_ours():
                # another instance took over a pass that outlived its lease: it makes the rest
                # (the record keeps the draw as made; the other pass records its own)
                log.warning("allocation of %s handed over after %d offers", procedure, n)
                break
            offers.append(pool.spawn(self._offer_or_error, by_id[request_id],
                                     places_by_id[slot_id], draw_id, failures))
        pool.waitall()
        made, failed = 0, None
        for (request_id, _), result in zip(pairs, (o.wait() for o in offers)):
            if isinstance(result, Exception):
                failed = failed or result
            else:
                made += result
                if result and offered is not None:
                    offered.add(request_id)
        if failed is not None:
            # as one offer at a time did: the pass fails (the timer's next one finishes offers
            # left holding), once the others have ended rather than behind its back
            raise failed
        if not made:
            self.store.drop_draw(draw_id)
        return made

    def _offer_or_error(self, request, place, draw_id, failures):
        try:
            return self._offer(request, place, draw_id)
        except Exception as error:
            failures.append(error)
            return error

    def _record_draw(self, procedure, record, pairs, **extra):
        """Stored before its offers (each names it), so no offer points at nothing."""
        draw_id = f"DRW-{uuid.uuid4().hex[:12]}"
        now = self.clock.now()
        self.store.record_draw(dict(record, _id=draw_id, procedure=procedure, at=now,
                                    at_ts=now.timestamp(),
                                    offers=[{"request": r, "slot": s} for r, s in pairs], **extra))
        return draw_id

    def _open_places(self, procedure):
        today = rules.paris_today(self.clock.now())
        last = today + timedelta(days=self._setting("REQUEST_HORIZON_DAYS"))
        places, page = [], 1
        while True:
            found = self.slots.list_open(procedure, today.isoformat(), last.isoformat(), page, PAGE,
                                         for_allocation=True)
            for slot in found["slots"]:
                start, end = rules.slot_times(slot)
                # a place too close to leave anyone time to answer is not offered
                if slot["free"] > 0 and not slot.get("decoy") and self._deadline(start):
                    places.append({"id": slot["id"], "site": slot["site"], "start": start,
                                   "end": end, "free": slot["free"]})
            if not found["has_more"]:
                return places
            page += 1

    def _offer(self, request, place, draw_id, old_hold=None):
        """Offer `place` to `request`; 1 when made. old_hold: the declined or lapsed offer
        whose place this is (handed over rather than taken from the free places)."""
        offer_id = "OFR-" + _code()
        now_ts = time.time()
        offer = {
            "_id": offer_id, "request_id": request["_id"], "procedure": request["procedure"],
            "site": place["site"], "slot_id": place["id"], "slot_start_ts": place["start"].timestamp(),
            "slot_end_ts": place["end"].timestamp(), "state": rules.HOLDING,
            "created_ts": now_ts, "draw_id": draw_id, "from_offer": old_hold,
            # the instance that made it: tests check that several allocators take part
            "made_by": self.instance}
        self.store.insert_offer(dict(offer))
        if not self.store.take_offer(request["_id"], offer_id, now_ts):
            self._end(offer_id, [rules.HOLDING], rules.VOID, settled=True)
            return 0
        # as stored: nobody else moves an offer still holding but its own request's withdrawal,
        # which _hold_and_announce's conditional move finds
        return self._hold_and_announce(offer, old_hold, request)

    def _deadline(self, start):
        """The answer's deadline for an offer made now of a place starting at `start` (None:
        too close to be offered), under REQUEST_OFFER_HOURS, _MARGIN_HOURS and _FLOOR_HOURS."""
        return rules.offer_deadline(self.clock.now(), start,
                                    self._setting("REQUEST_OFFER_HOURS"),
                                    self._setting("REQUEST_OFFER_MARGIN_HOURS"),
                                    self._setting("REQUEST_OFFER_FLOOR_HOURS"))

    def _hold_and_announce(self, offer, old_hold=None, request=None):
        deadline = self._deadline(parse_iso(iso_from_ts(offer["slot_start_ts"])))
        held = False
        try:
            if deadline is None:
                pass  # too close by now (an offer finished late): its place is not taken
            elif old_hold:
                held = self.slots.hand_over(old_hold, offer["_id"])
            else:
                self.slots.hold(offer["slot_id"], offer["_id"], offer["procedure"], keep=True)
                held = True
        except (SlotFull, SlotNotBookable):
            held = False
        if not held:
            self._end(offer["_id"], [rules.HOLDING], rules.VOID, settled=True)
            self.store.waiting_again(offer["request_id"], offer["_id"])
            return 0
        made = self.store.move_offer(offer["_id"], [rules.HOLDING], {
            "state": rules.MADE, "deadline_ts": deadline.timestamp(),
            "outbox": {"made": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())}})
        if made is None:
            if (self.store.get_offer(offer["_id"]) or {}).get("state") in rules.LIVE_AFTER_HOLDING:
                # another pass finished it first (a slow allocator and the one that took its
                # lease over): the place held is the offer's, it stays held
                return 0
            # withdrawn while its place was being held: the withdrawal found no place to pass
            # on, so the one held here goes back (unsettled until it has: the sweep retries)
            self.store.settle(offer["_id"], False)
            self.slots.release(offer["_id"])
            self.store.settle(offer["_id"])
            return 0
        self._announce_offer(made, request)
        return 1

    def _finish_holding(self, procedure):
        """Offers whose allocator died between writing them and holding their place."""
        grace = self._setting("REQUEST_HOLDING_GRACE_SECONDS")
        for offer in self.store.holding(procedure, time.time() - grace):
            request = self.store.get(offer["request_id"]) or {}
            if request.get("state") == rules.OFFERED and request.get("offer_id") == offer["_id"]:
                self._hold_and_announce(offer, offer.get("from_offer"))
            else:  # its place, if it was held, is passed on by the sweep of unsettled offers
                self._end(offer["_id"], [rules.HOLDING], rules.VOID)

    def _finish_accepting(self, offer):
        """An acceptance whose caller died: booked when the booking exists, else offered again
        (the lapse then applies), or passed on when the request was withdrawn meanwhile."""
        booking_ref = booking_reference_of(offer["_id"])
        if booking_ref in self.booking.statuses([booking_ref]):
            self._booked(offer["request_id"], booking_ref)
            self.store.move_offer(offer["_id"], [rules.ACCEPTING], {
                "state": rules.ACCEPTED, "booking_reference": booking_ref, "accepted_ts": time.time()})
            return
        request = self.store.get(offer["request_id"]) or {}
        if request.get("state") == rules.OFFERED and request.get("offer_id") == offer["_id"]:
            self.store.move_offer(offer["_id"], [rules.ACCEPTING], {"state": rules.MADE})
        else:
            void = self._end(offer["_id"], [rules.ACCEPTING], rules.VOID)
            if void is not None:
                self._pass_on(void, exclude={offer["request_id"]})

    def _lapse(self, offer):
        lapsed = self._end(offer["_id"], [rules.MADE], rules.LAPSED)
        if lapsed is not None:
            self._missed(lapsed)
            self._pass_on(lapsed, exclude={lapsed["request_id"]})

    def _missed(self, offer):
        """The request of a declined or lapsed offer waits again (or goes to the back)."""
        request = self.store.get(offer["request_id"])
        if request is None:
            return
        changes = rules.after_missed_offer(request, rules.paris_today(self.clock.now()))
        self.store.waiting_again(request["_id"], offer["_id"], changes)

    def _pass_on(self, offer, exclude):
        """The place of a declined, lapsed or withdrawn offer goes to the next request that can
        come then; given back to slots (held back, released later) when nobody can."""
        place = {"id": offer["slot_id"], "site": offer["site"], "free": 1,
                 "start": parse_iso(iso_from_ts(offer["slot_start_ts"])),
                 "end": parse_iso(iso_from_ts(offer["slot_end_ts"]))}
        job = f"allocate:{offer['procedure']}"
        owner = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        if not self._wait_for_allocation_lease(job, owner):
            # an allocation pass holds the procedure: giving the place back to slots now would
            # hold it back from the people waiting; left unsettled, the timer's sweep of ended
            # offers passes it on (the place stays held under the offer's id meanwhile)
            log.info("offer %s ended while an allocation ran; the sweep passes its place on",
                     offer["_id"])
            return
        try:
            waiting = [r for r in self.store.waiting(offer["procedure"])
                       if r["_id"] not in exclude]
            if self._deadline(place["start"]) and waiting:
                record = allocation.draw(waiting, rules.paris_today(self.clock.now()))
                by_id = {r["_id"]: r for r in waiting}
                for pair in allocation.allocate([by_id[i] for i in record["result"]], [place]):
                    draw_id = self._record_draw(offer["procedure"], record, [pair],
                                                passed_on_from=offer["_id"])
                    if self._offer(by_id[pair[0]], place, draw_id, old_hold=offer["_id"]):
                        self.store.settle(offer["_id"])
                        return
                    self.store.drop_draw(draw_id)
        finally:
            self.store.leases.release(job, owner)
        self.slots.release(offer["_id"])
        self.store.settle(offer["_id"])

    # -- internals ---------------------------------------------------------------------------

    def _owned(self, reference, token):
        access = load_or_raise(ACCESS, {"reference": reference, "token": token}, InvalidRequest)
        request = self.store.get(access["reference"])
        if request is None or not self.tokens.matches(access["token"], request["token_hash"]):
            raise NotFound(NOT_FOUND)
        return request

    def _view(self, request):
        view = {"reference": request["_id"], "procedure": request["procedure"],
                "state": request["state"], "permit_expiry": request.get("permit_expiry"),
                "availability": request["availability"],
                "filed_at": iso_from_ts(request["filed_ts"]),
                "booking_reference": request.get("booking_reference"),
                # closed REQUEST_RETENTION_DAYS ago: who it was from is erased
                "erased": retention.erased(request)}
        if request["state"] == rules.UNCONFIRMED:
            view["confirm_by"] = iso_from_ts(request["confirm_by_ts"])
        if request["state"] == rules.OFFERED:
            offer = self.store.get_offer(request.get("offer_id") or "")
            if offer is not None and offer["state"] in (rules.MADE, rules.ACCEPTING):
                view["offer"] = {"site": offer["site"], "slot_id": offer["slot_id"],
                                 "start": iso_from_ts(offer["slot_start_ts"]),
                                 "end": iso_from_ts(offer["slot_end_ts"]),
                                 "deadline": iso_from_ts(offer["deadline_ts"])}
            else:
                # the offer is still being made (its place not held yet, maybe never): the
                # applicant has nothing to answer until it is, so it still reads as waiting
                view["state"] = rules.WAITING
        return view

    def _announce_filed(self, request, token):
        payload = contract.build(
            "request_filed", event_id=request["outbox"]["filed"]["event_id"],
            reference=request["_id"], procedure=request["procedure"], email=request["email"],
            token=token, confirm_by=iso_from_ts(request["confirm_by_ts"]),
            lang=request.get("lang") or "fr")
        announce(self.dispatch, self.store.request_outbox, "filed", request["_id"],
                 "request_filed", payload)

    def _announce_offer(self, offer, request=None):
        """request: the offer's, when at hand (its e-mail, salt and language never change)."""
        request = request or self.store.get(offer["request_id"])
        payload = contract.build(
            "offer_made", event_id=offer["outbox"]["made"]["event_id"], offer_id=offer["_id"],
            reference=request["_id"], procedure=offer["procedure"], site=offer["site"],
            slot_id=offer["slot_id"], slot_start=iso_from_ts(offer["slot_start_ts"]),
            slot_end=iso_from_ts(offer["slot_end_ts"]), deadline=iso_from_ts(offer["deadline_ts"]),
            email=request["email"], token=self.tokens.token_for(request["_id"], request["token_salt"]),
            lang=request.get("lang") or "fr")
        announce(self.dispatch, self.store.offer_outbox, "made", offer["_id"], "offer_made",
                 payload)

    def _grace(self):
        return setting(self.config, "OUTBOX_GRACE_SECONDS")

    def _setting(self, key):
        return setting(self.config, key)


