"""Requests service (issue 12): appointments allocated, not grabbed.

For a procedure a supervisor switched to `requests` mode, applicants file a request (identity,
permit expiry, e-mail confirmed by its link, sites and times of week they can come). At each
release of that procedure (`slots_released`, through the inbox) the open places go to the
waiting requests in the order of services/requests/rules.py, the draw recorded for audits.
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
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher, event_handler

from services.common import contract
from services.common.clock import Clock
from services.common.errors import (EXPECTED, DomainError, InvalidRequest, NotFound, Refused,
                                    ServiceUnavailable, SlotFull, SlotNotBookable)
from services.common.lease import InstanceId
from services.common.mongo import MongoStore
from services.common.normalise import normalise_email
from services.common.outbox import Outbox, dispatched
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.schemas import ClientSchema, load_or_raise, validated
from services.common.settings import setting
from services.common.timers import config_timer
from services.common.timeutil import parse_iso
from services.common.tokens import Tokens, TokenSigner, new_salt
from services.common.views import iso_from_ts
from services.fraud.names import name_problem
from services.requests import rules
from services.requests.schemas import (AvailabilitySchema, ModeSchema, RequestAccessSchema,
                                       RequestFilingSchema, availability_doc)
from services.requests.store import RequestStore

log = logging.getLogger(__name__)

FILING, ACCESS, AVAILABILITY, MODE, CLIENT = (RequestFilingSchema(), RequestAccessSchema(),
                                              AvailabilitySchema(), ModeSchema(), ClientSchema())
NOT_FOUND = "No request with this reference and token."
# Crockford's alphabet, as booking references: read aloud at a counter without ambiguity
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RENEW_EVERY = 20  # offers made between two renewals of the allocation lease
# an acceptance still unfinished after this (or ten RPC timeouts) lost its caller
ACCEPT_GRACE_SECONDS = 120.0
PAGE = 200


def _code():
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def _booking_of(created):
    """What an acceptance answers of the booking it made: enough to open it."""
    return {key: created[key] for key in ("reference", "token", "slot")}


def booking_reference_of(offer_id):
    """The booking an accepted offer becomes: derived, so a retried acceptance finds it."""
    return "RDV-" + offer_id[len("OFR-"):]


class RequestsService:
    name = "requests"

    store = MongoStore("requests", RequestStore)
    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    dispatch = EventDispatcher()
    tokens = Tokens("REQUEST_TOKEN_SECRET")
    clock = Clock()
    config = Config()
    instance = InstanceId()

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
    def file(self, request):
        """File a request; it enters the draw once confirmed from its e-mail (request_filed)."""
        data = load_or_raise(FILING, request, InvalidRequest)
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
        reference = "REQ-" + _code()
        email_key = normalise_email(data["email"])
        # one open request per e-mail (M3: one e-mail, one person) and per foreigner number
        keys = [f"email:{procedure}:{email_key}"]
        if data.get("foreigner_number"):
            keys.append(f"number:{procedure}:{data['foreigner_number']}")
        taken = self.store.claim_keys(keys, reference)
        if taken:
            field = "email" if taken.startswith("email:") else "foreigner_number"
            raise Refused("Une demande est déjà en cours pour cette démarche. / A request is "
                          "already open for this procedure.",
                          {field: ["A request is already open with this value."]})
        now = self.clock.now()
        salt = new_salt()
        token = self.tokens.token_for(reference, salt)
        doc = {
            "_id": reference,
            "procedure": procedure,
            "state": rules.UNCONFIRMED,
            "identity": {"family_name": data["family_name"], "given_names": data["given_names"],
                         "birth_date": data["birth_date"].isoformat(),
                         "foreigner_number": data.get("foreigner_number")},
            "permit_expiry": data["permit_expiry"].isoformat() if data.get("permit_expiry") else None,
            "email": data["email"], "email_key": email_key, "phone": data.get("phone"),
            "availability": availability_doc(data["availability"]),
            "filed_ts": now.timestamp(),
            "filed_day": rules.paris_today(now).isoformat(),
            "confirm_by_ts": now.timestamp() + 3600 * self._setting("REQUEST_CONFIRM_HOURS", 48.0),
            "missed": 0,
            "claim_keys": keys,
            "token_hash": TokenSigner.hash_token(token), "token_salt": salt,
            "outbox": {"filed": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        try:
            self.store.insert(doc)
        except Exception:
            self.store.free_keys(doc)
            raise
        self._announce_filed(doc, token)
        return dict(self._view(doc), token=token)

    @rpc(expected_exceptions=EXPECTED)
    def confirm(self, reference, token):
        """The owner of the mailbox confirms: unconfirmed -> waiting (it enters the draw)."""
        request = self._owned(reference, token)
        if request["state"] == rules.UNCONFIRMED:
            request = self.store.move(request["_id"], [rules.UNCONFIRMED],
                                      {"state": rules.WAITING, "confirmed_ts": time.time()}) \
                or self.store.get(request["_id"])
        return self._view(request)

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
                                                               "booking_reference": booking_reference})
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
        }
        booking_ref = booking_reference_of(offer["_id"])
        try:
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
        """Open requests by procedure and state, and by permit expiry month: never the order
        of a draw before it is made."""
        by_procedure, by_month = {}, {}
        for request in self.store.open_requests():
            states = by_procedure.setdefault(request["procedure"], {})
            states[request["state"]] = states.get(request["state"], 0) + 1
            months = by_month.setdefault(request["procedure"], {})
            month = rules.expiry_month(request)
            months[month] = months.get(month, 0) + 1
        return {"by_procedure": by_procedure, "by_expiry_month": by_month}

    @rpc(expected_exceptions=EXPECTED)
    def draw_record(self, draw_id):
        """An audit: the draw's inputs, seed and result, and whether they replay."""
        record = self.store.get_draw(draw_id) if isinstance(draw_id, str) else None
        if record is None:
            raise NotFound("No draw with this id.")
        return {"id": record["_id"], "procedure": record["procedure"], "at": iso_from_ts(record["at_ts"]),
                "today": record["today"], "inputs": record["inputs"], "seed": record["seed"],
                "result": record["result"], "offers": record["offers"],
                "replays": rules.replay(record)}

    # -- allocation --------------------------------------------------------------------------

    @event_handler("slots", "slots_released", requeue_on_error=True)
    def on_slots_released(self, event):
        self.store.inbox.handle("slots_released", event, self._on_released)

    def _on_released(self, event):
        if self.slots.modes()[event["procedure"]] != "requests":
            return
        if self.allocate(event["procedure"]) is None:
            # another instance is allocating this procedure: its pass, or the timer's next,
            # sees these places too
            log.info("allocation of %s busy elsewhere; the timer follows up", event["procedure"])

    @config_timer("REQUEST_TIMER_SECONDS", 10.0)
    def tick(self):
        """Lapsed offers, unconfirmed requests, a safety-net allocation, the outbox relay."""
        interval = self._setting("REQUEST_TIMER_SECONDS", 10.0)
        if not self.store.leases.acquire("tick", self.instance, 3 * interval, time.time()):
            return
        # each step on its own: one failing (booking or slots not answering) must not stop
        # the others, the outbox relay least of all
        for step in (self._lapse_due, self._finish_accepting_due, self._settle_due,
                     self._expire_unconfirmed, self._allocate_all, self._relay):
            try:
                step()
            except Exception:
                log.exception("requests timer: %s failed; the next tick tries again", step.__name__)

    def _lapse_due(self):
        for offer in self.store.lapsed_due(self.clock.now().timestamp()):
            self._lapse(offer)

    def _finish_accepting_due(self):
        # far beyond any acceptance's wait: the booking service stores nothing after its
        # caller's RPC deadline
        grace = max(ACCEPT_GRACE_SECONDS, 10 * self._setting("RPC_TIMEOUT", 5.0))
        for offer in self.store.accepting_before(time.time() - grace):
            self._finish_accepting(offer)

    def _settle_due(self):
        """Ended offers whose place a crash left held (between ending them and passing on)."""
        grace = self._setting("REQUEST_HOLDING_GRACE_SECONDS", 30.0)
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

    def _relay(self):
        for request in self.store.request_outbox.due("filed", time.time()):
            self._announce_filed(request, self.tokens.token_for(request["_id"], request["token_salt"]))
        for offer in self.store.offer_outbox.due("made", time.time()):
            self._announce_offer(offer)

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
            self._finish_holding(procedure)
            places = self._open_places(procedure)
            if not places:
                return 0
            waiting = self.store.waiting(procedure)
            return self._draw_and_offer(procedure, waiting, places,
                                        lambda: self._allocation_lease(job, owner))
        finally:
            self.store.leases.release(job, owner)

    def _allocation_lease(self, job, owner):
        """Taken or renewed. The lease spares work, it does not make allocation safe: a request
        takes an offer by a conditional update and a place by slots' hold, whoever runs."""
        return self.store.leases.acquire(job, owner, self._setting("REQUEST_LEASE_SECONDS", 30.0),
                                         time.time())

    def _draw_and_offer(self, procedure, waiting, places, still_ours):
        if not waiting:
            return 0
        now = self.clock.now()
        record = rules.draw(waiting, rules.paris_today(now))
        by_id = {r["_id"]: r for r in waiting}
        pairs = rules.allocate([by_id[i] for i in record["result"]], places)
        draw_id = f"DRW-{uuid.uuid4().hex[:12]}"
        self.store.record_draw(dict(record, _id=draw_id, procedure=procedure,
                                    at_ts=now.timestamp(),
                                    offers=[{"request": r, "slot": s} for r, s in pairs]))
        places_by_id = {p["id"]: p for p in places}
        made = 0
        for n, (request_id, slot_id) in enumerate(pairs):
            if n and n % RENEW_EVERY == 0 and not still_ours():
                # another instance took over a pass that outlived its lease: it makes the rest
                # (the record keeps the draw as made; the other pass records its own)
                log.warning("allocation of %s handed over after %d offers", procedure, made)
                break
            made += self._offer(by_id[request_id], places_by_id[slot_id], draw_id)
        return made

    def _open_places(self, procedure):
        today = rules.paris_today(self.clock.now())
        last = today + timedelta(days=self._setting("REQUEST_HORIZON_DAYS", 120))
        places, page = [], 1
        while True:
            found = self.slots.list_open(procedure, today.isoformat(), last.isoformat(), page, PAGE,
                                         for_allocation=True)
            for slot in found["slots"]:
                if slot["free"] > 0 and not slot.get("decoy"):
                    start, end = rules.slot_times(slot)
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
        self.store.insert_offer({
            "_id": offer_id, "request_id": request["_id"], "procedure": request["procedure"],
            "site": place["site"], "slot_id": place["id"], "slot_start_ts": place["start"].timestamp(),
            "slot_end_ts": place["end"].timestamp(), "state": rules.HOLDING,
            "created_ts": now_ts, "draw_id": draw_id, "from_offer": old_hold,
            # the instance that made it: tests check that several allocators take part
            "made_by": self.instance})
        if not self.store.take_offer(request["_id"], offer_id, now_ts):
            self._end(offer_id, [rules.HOLDING], rules.VOID, settled=True)
            return 0
        return self._hold_and_announce(self.store.get_offer(offer_id), old_hold)

    def _hold_and_announce(self, offer, old_hold=None):
        try:
            if old_hold:
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
        deadline_ts = self.clock.now().timestamp() + 3600 * self._setting("REQUEST_OFFER_HOURS", 48.0)
        made = self.store.move_offer(offer["_id"], [rules.HOLDING], {
            "state": rules.MADE, "deadline_ts": deadline_ts,
            "outbox": {"made": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())}})
        if made is None:
            # withdrawn while its place was being held: the withdrawal found no place to pass
            # on, so the one held here goes back (unsettled until it has: the sweep retries)
            self.store.settle(offer["_id"], False)
            self.slots.release(offer["_id"])
            self.store.settle(offer["_id"])
            return 0
        self._announce_offer(made)
        return 1

    def _finish_holding(self, procedure):
        """Offers whose allocator died between writing them and holding their place."""
        grace = self._setting("REQUEST_HOLDING_GRACE_SECONDS", 30.0)
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
        if self._allocation_lease(job, owner):
            try:
                waiting = [r for r in self.store.waiting(offer["procedure"])
                           if r["_id"] not in exclude]
                if place["start"].timestamp() > self.clock.now().timestamp() and waiting:
                    record = rules.draw(waiting, rules.paris_today(self.clock.now()))
                    by_id = {r["_id"]: r for r in waiting}
                    for request_id, _ in rules.allocate([by_id[i] for i in record["result"]], [place]):
                        draw_id = f"DRW-{uuid.uuid4().hex[:12]}"
                        self.store.record_draw(dict(record, _id=draw_id, procedure=offer["procedure"],
                                                    at_ts=time.time(), passed_on_from=offer["_id"],
                                                    offers=[{"request": request_id, "slot": place["id"]}]))
                        if self._offer(by_id[request_id], place, draw_id, old_hold=offer["_id"]):
                            self.store.settle(offer["_id"])
                            return
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
                "booking_reference": request.get("booking_reference")}
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
            token=token, confirm_by=iso_from_ts(request["confirm_by_ts"]))
        if self._dispatched(request["_id"], "request_filed", payload):
            self.store.request_outbox.sent(request["_id"], "filed")

    def _announce_offer(self, offer):
        request = self.store.get(offer["request_id"])
        payload = contract.build(
            "offer_made", event_id=offer["outbox"]["made"]["event_id"], offer_id=offer["_id"],
            reference=request["_id"], procedure=offer["procedure"], site=offer["site"],
            slot_id=offer["slot_id"], slot_start=iso_from_ts(offer["slot_start_ts"]),
            slot_end=iso_from_ts(offer["slot_end_ts"]), deadline=iso_from_ts(offer["deadline_ts"]),
            email=request["email"], token=self.tokens.token_for(request["_id"], request["token_salt"]))
        if self._dispatched(offer["_id"], "offer_made", payload):
            self.store.offer_outbox.sent(offer["_id"], "made")

    def _dispatched(self, doc_id, event_type, payload):
        return dispatched(self.dispatch, event_type, payload, doc_id)

    def _grace(self):
        return setting(self.config, "OUTBOX_GRACE_SECONDS", 5.0)

    def _setting(self, key, default):
        return setting(self.config, key, default)


