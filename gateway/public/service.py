"""Public gateway: the JSON API applicants use (DESIGN.md section 6) and their pages."""
import logging
import uuid
from datetime import timedelta

from nameko.events import BROADCAST, event_handler

from gateway.html import page_response
from gateway.http import json_http, read_json
# request_pages as a module: `nameko run` would take a class imported here for a service
from gateway.public import convocation, fairness, forms, notices, openapi, pages, request_pages
from gateway.public import partner_pages  # issue 24: accredited partners
from gateway.public import attestation as attestation_view  # `attestation` is the API's route
from gateway.public.client import TrustedProxies, client_of
from gateway.public.slot_view import SlotViewProvider, view_timer
from gateway.public.pages import ATTEMPT_TOKEN_COOKIE, TOKEN_COOKIE, page
from gateway.public.schemas import BookingAccessSchema, SlotQuerySchema
from gateway.readiness import gather, ready_answer
from services.common.attestation_code import parse_code
from services.common import i18n
from services.common.errors import (DomainError, EmailHasBooking, InvalidRequest, NotFound,
                                    PersonHasBooking, PlacesAvailable, Refused,
                                    ServiceUnavailable, SlotFull, SlotNotBookable, TooManyAttempts,
                                    TooManyUnconfirmed, UseRequest)
from services.common.ics import appointment_ics
from services.common.logs import CallIdLogging
from services.common.metrics import Metrics
from services.common.reference_data import (FREE_NOTICE, PROCEDURES, SITES, documents,
                                            procedure_view)
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import (AttemptAccessSchema, AttemptRequestSchema, AttestationSchema,
                                     BookingRequestSchema, idempotency_key, load_or_raise)
from services.common.timeutil import PARIS, long_date, parse_iso, utcnow
from services.common.request_schemas import AvailabilitySchema, RequestAccessSchema, RequestFilingSchema

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Booking-Token"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def header_key(request):
    """The client's `Idempotency-Key` on a JSON API write (None without one); 400 naming the
    header when it is not a well-formed key."""
    return idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), InvalidRequest,
                           IDEMPOTENCY_HEADER)
NO_ANSWER = ("The booking service did not answer in time. Send the same request again with the "
             "same Idempotency-Key: you get the booking if it was made, and never two.")
REQUEST_TOKEN_HEADER = "X-Request-Token"

ATTEMPT_TOKEN_HEADER = "X-Attempt-Token"
NO_SUCH_SLOT = "This slot does not exist."  # the slots service's words for an unknown id
# built once: a marshmallow Schema costs more to build than to load a request with
SLOT_QUERY, BOOKING_REQUEST, BOOKING_ACCESS = SlotQuerySchema(), BookingRequestSchema(), BookingAccessSchema()
ATTEMPT_REQUEST, ATTEMPT_ACCESS, ATTESTATION = AttemptRequestSchema(), AttemptAccessSchema(), AttestationSchema()
REQUEST_FILING, REQUEST_ACCESS, AVAILABILITY = (RequestFilingSchema(), RequestAccessSchema(),
                                                AvailabilitySchema())


def _walk_in(procedure):
    return PROCEDURES[procedure].get("walk_in")


class PublicGateway(request_pages.RequestPages, partner_pages.PartnerPages):
    name = "public_gateway"

    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    requests = BoundedRpcProxy("requests")
    trusted_proxies = TrustedProxies()
    # free places as slots last said, kept current (gateway/public/slot_view.py)
    slot_view = SlotViewProvider()
    page_settings = pages.PageSettings()
    metrics = Metrics()
    log_context = CallIdLogging()
    figures_cache = fairness.FiguresCache()
    slots_health = BoundedRpcProxy("slots", timeout_key="HEALTH_RPC_TIMEOUT")
    booking_health = BoundedRpcProxy("booking", timeout_key="HEALTH_RPC_TIMEOUT")

    @view_timer()
    def refresh_slot_view(self):
        if self.slot_view.in_use():  # idle, it asks nothing (the next request looks first)
            self._sync_slot_view()

    # a nudge only (the view asks slots what changed): nothing to keep, so no inbox; one
    # lost or repeated changes nothing, the next tick looks anyway
    @event_handler("slots", "slots_released", handler_type=BROADCAST, reliable_delivery=False)
    def slots_released(self, payload):
        self._sync_slot_view()

    def _sync_slot_view(self):
        try:
            self.slot_view.sync(self.slots.view_since)
        except Exception as exc:  # slots away: the view goes stale and is not used
            log.info("slot view not refreshed: %s", type(exc).__name__)

    def _fresh_view(self):
        """The view, brought up to date first when it is stale (it is built on first use, and
        a gateway that could not reach slots for a while starts again from a look); None when
        it is off or still stale: the caller asks slots itself."""
        view = self.slot_view
        view.used = view.clock()
        if view.enabled and not view.fresh():
            if view.syncing is not None:
                view.wait(self.slots.timeout)
            else:
                self._sync_slot_view()
        return view if view.fresh() else None

    def _list_open(self, procedure, date_from, date_to, page, per_page, **kwargs):
        """slots.list_open, answered by the gateway's view while it is fresh."""
        view = self._fresh_view()
        found = view and view.list_open(procedure, date_from, date_to, page, per_page, **kwargs)
        if found is None:
            found = self.slots.list_open(procedure, date_from, date_to, page, per_page, **kwargs)
        return found

    @json_http("GET", "/health")
    def health(self, request):
        return {"status": "ok"}

    @json_http("GET", "/ready")
    def ready(self, request):
        """200 when the broker carries calls and slots and booking answer their health RPC."""
        return ready_answer(self._health())

    @json_http("GET", "/metrics")
    def metrics_page(self, request):
        """Prometheus text format (the reverse proxy keeps it off the internet)."""
        self.metrics.set_health(self._health())
        return self.metrics.response()

    @json_http("GET", "/fairness")
    @page
    def fairness_page(self, current):
        """Public figures per procedure (gateway/public/fairness.py); no personal data."""
        slots, booking, partners = self.figures_cache.get(self._figures)
        return fairness.page(current, slots, booking, self.figures_cache.days, partners)

    def _health(self):
        return gather({"slots": self.slots_health, "booking": self.booking_health})

    def _figures(self):
        days = self.figures_cache.days

        def ask(call):
            try:
                return call()
            except DomainError:
                return None
        return (ask(lambda: self.slots.figures(days)), ask(lambda: self.booking.figures(days)),
                ask(self.requests.partner_figures))  # partners' quotas and use (issue 24)

    @json_http("GET", "/api/procedures")
    def procedures(self, request):
        # request_requires: what a request must carry, by the rule the requests service
        # checks with (services/common/register_check.py), under this deployment's settings
        return {"procedures": [dict(procedure_view(code),
                                    request_requires=self.page_settings.request_requires[code])
                               for code in PROCEDURES],
                "notice": FREE_NOTICE}

    @json_http("GET", "/api/slots")
    def list_slots(self, request):
        query = load_or_raise(SLOT_QUERY, request.args.to_dict(), InvalidRequest)
        # the JSON API shows decoys like any slot (a script reading it can book one, a
        # person using the pages never sees one); only named fields go out, none tells
        key = (query["procedure"], query["from_"].isoformat(), query["to"].isoformat(),
               query["page"], query["per_page"])
        found = self._list_open(*key, include_decoys=True)
        answer = {
            "slots": [
                {key: slot[key] for key in ("id", "site", "procedure", "start", "end", "free")}
                for slot in found["slots"]
            ],
            "page": found["page"],
            "per_page": found["per_page"],
            "has_more": found["has_more"],
            "notice": FREE_NOTICE,
        }
        if _walk_in(query["procedure"]):
            answer["walk_in"] = _walk_in(query["procedure"])
        return answer

    @json_http("GET", "/api/openapi.json")
    def openapi_document(self, request):
        return openapi.DOCUMENT

    # private: these answers carry the applicant's name, birth date and token
    @json_http("POST", "/api/bookings", private=True)
    def create_booking(self, request):
        created = self._book(request, read_json(request), header_key(request))
        slot = created["slot"]
        answer = {
            "reference": created["reference"],
            "token": created["token"],
            "status": created["status"],
            # pending until the owner of the mailbox confirms: say so, in both languages
            "not_final": created["not_final"],
            "confirm_by": created.get("confirm_by"),
            "slot": dict(slot, site_address=SITES.get(slot["site"], {}).get("address")),
            "notice": FREE_NOTICE,
        }
        if _walk_in(slot["procedure"]):
            answer["walk_in"] = _walk_in(slot["procedure"])
        return 201, answer

    @json_http("GET", "/api/bookings/<reference>", private=True)
    def get_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.get(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("POST", "/api/bookings/<reference>/confirm", private=True)
    def confirm_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.confirm(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("DELETE", "/api/bookings/<reference>", private=True)
    def cancel_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.cancel(access["reference"], access["token"]), notice=FREE_NOTICE)

    # issue 12: procedures allocated by request

    @json_http("GET", "/api/modes")
    def modes(self, request):
        """How each procedure is given out: `open` (book a slot) or `requests` (file a request)."""
        return {"modes": self.slots.modes()}

    @json_http("POST", "/api/requests", private=True)
    def file_request(self, request):
        body = read_json(request)
        load_or_raise(REQUEST_FILING, body, InvalidRequest)
        # one request however often RabbitMQ delivers the call (or the client sends it again
        # with its own key): README, "One effect under redelivery"
        filed = self.requests.file(body, idempotency_key=header_key(request) or uuid.uuid4().hex)
        # the token goes to the mailbox only: following its link is what confirms the e-mail;
        # a request filed from a renewal invitation's mailbox is confirmed already (issue 24)
        if filed.get("state") == "unconfirmed":
            filed.pop("token", None)
        return 201, dict(filed, notice=FREE_NOTICE)

    @json_http("GET", "/api/requests/<reference>", private=True)
    def get_request(self, request, reference):
        access = self._request_access(request, reference)
        return dict(self.requests.get(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("POST", "/api/requests/<reference>/confirm", private=True)
    def confirm_request(self, request, reference):
        access = self._request_access(request, reference)
        return self.requests.confirm(access["reference"], access["token"])

    @json_http("PUT", "/api/requests/<reference>/availability", private=True)
    def update_availability(self, request, reference):
        access = self._request_access(request, reference)
        body = read_json(request)
        load_or_raise(AVAILABILITY, body, InvalidRequest)
        return self.requests.update_availability(access["reference"], access["token"], body)

    @json_http("DELETE", "/api/requests/<reference>", private=True)
    def withdraw_request(self, request, reference):
        access = self._request_access(request, reference)
        return self.requests.withdraw(access["reference"], access["token"])

    @json_http("POST", "/api/requests/<reference>/accept", private=True)
    def accept_offer(self, request, reference):
        access = self._request_access(request, reference)
        accepted = self.requests.accept(access["reference"], access["token"],
                                        client_of(request, self.trusted_proxies))
        return dict(accepted, notice=FREE_NOTICE)

    @json_http("POST", "/api/requests/<reference>/decline", private=True)
    def decline_offer(self, request, reference):
        access = self._request_access(request, reference)
        return self.requests.decline(access["reference"], access["token"])

    # M7: evidence of failed attempts

    @json_http("POST", "/api/attempts")
    def record_attempt(self, request):
        body = read_json(request)
        load_or_raise(ATTEMPT_REQUEST, body, InvalidRequest)
        recorded = self.booking.record_attempt(
            body, idempotency_key=header_key(request) or uuid.uuid4().hex)
        return 201, dict(recorded, notice=FREE_NOTICE)

    @json_http("GET", "/api/attempts/<reference>")
    def list_attempts(self, request, reference):
        access = self._attempt_access(request, reference)
        return self.booking.attempts(access["reference"], access["token"])

    @json_http("GET", "/api/attempts/<reference>/attestation")
    def attestation(self, request, reference):
        access = self._attempt_access(request, reference)
        return self.booking.attestation(access["reference"], access["token"])

    @json_http("POST", "/api/attestations/verify")
    def verify_attestation(self, request):
        body = read_json(request)
        load_or_raise(ATTESTATION, body, InvalidRequest)
        return self.booking.verify_attestation(body)

    def _book(self, request, body, key=None):
        """Book through the booking RPC: the JSON API and the form both come here.

        key: the applicant's idempotency key (`Idempotency-Key`, the form's hidden field);
        without one, a new key for this HTTP request. Either way the booking service makes one
        booking of it however often RabbitMQ delivers the call; with the applicant's own, a
        request sent again after a 503 gets the booking it made, if it made one."""
        # validated here to answer 400 without a round trip; the booking service checks again
        load_or_raise(BOOKING_REQUEST, body, InvalidRequest)
        # a resent request may be for the slot its first sending filled: booking decides it
        if key is None and self.slot_view.known_full(body["slot_id"]):
            raise SlotFull()
        client = client_of(request, self.trusted_proxies)
        began = self.slot_view.began()
        try:
            created = self.booking.create(body, client, idempotency_key=key or uuid.uuid4().hex)
        except SlotFull:
            self.slot_view.learnt_full(body["slot_id"], began)
            raise
        except ServiceUnavailable:
            # no answer in time: none is stored after its deadline (services/common/rpc.py),
            # but one stored before may have lost its reply (the booking process died)
            raise ServiceUnavailable(NO_ANSWER)
        if created.get("slot_full"):
            # learnt from the winner of the last place, not from the first loser: the
            # attempts already queued behind it get their 409 here
            self.slot_view.learnt_full(body["slot_id"], began)
        return created

    @json_http("GET", "/bookings/<reference>/convocation")
    @page
    def convocation_page(self, current, reference):
        """The convocation to print (HTML), for the holder of the booking's token."""
        # the e-mail's link: its token into the booking's cookie, so that the letter's links
        # back to the booking (and to the PDF) work, and out of the address bar
        redirect = self._token_link(current, reference, f"/bookings/{reference}/convocation")
        if redirect is not None:
            return redirect
        access = self._page_access(current, reference)
        return convocation.html(current, self.booking.convocation(access["reference"],
                                                                  access["token"]))

    @json_http("GET", "/bookings/<reference>/convocation.pdf")
    def convocation_pdf(self, request, reference):
        access = self._access(request, reference)
        return convocation.pdf_response(self.booking.convocation(access["reference"], access["token"]))

    def _access(self, request, reference):
        # header (API clients), then the cookie the e-mail link left, then the link itself
        token = (request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
                 or request.args.get("token") or "")
        return load_or_raise(BOOKING_ACCESS, {"reference": reference, "token": token},
                             InvalidRequest)

    def _request_access(self, request, reference):
        token = request.headers.get(REQUEST_TOKEN_HEADER) or request.args.get("token") or ""
        return load_or_raise(REQUEST_ACCESS, {"reference": reference, "token": token},
                             InvalidRequest)

    def _attempt_access(self, request, reference):
        # header (API clients), then the cookie the receipt's link left (pages), then the link
        token = (request.headers.get(ATTEMPT_TOKEN_HEADER) or request.cookies.get(ATTEMPT_TOKEN_COOKIE)
                 or request.args.get("token") or "")
        return load_or_raise(ATTEMPT_ACCESS, {"reference": reference, "token": token},
                             InvalidRequest)

    # -- pages (gateway/public/pages.py; wording in templates/) ------------------------------

    @json_http("GET", "/static/site.css")
    def stylesheet(self, request):
        return pages.stylesheet()

    @json_http("GET", "/static/dsfr/<path:name>")
    def design_system(self, request, name):
        return pages.dsfr_file(request, name)

    @json_http("GET", "/")
    @page
    def home(self, current):
        return current.render("home.html.j2")

    # the notices every public page's footer links to (gateway/public/notices.py)
    # (one route each: their metrics' route labels stay plain paths)
    @json_http("GET", "/accessibilite")
    @json_http("GET", "/donnees-personnelles")
    @json_http("GET", "/mentions-legales")
    @page
    def notice(self, current):
        return notices.render(current, current.request.path)

    @json_http("GET", "/book")
    @page
    def choose_procedure(self, current):
        modes = self.slots.modes()
        return current.render("procedures.html.j2", procedures=[
            dict(procedure_view(code), documents=documents(code, current.lang),
                 by_request=modes[code] == "requests") for code in PROCEDURES])

    @json_http("GET", "/book/<procedure>")
    @page
    def choose_site(self, current, procedure):
        procedure = self._procedure(procedure)
        if self._by_request(procedure):
            return current.redirect(f"/request/{procedure['code']}")
        today = utcnow().astimezone(PARIS).date()
        sites = []
        for code, site in SITES.items():
            found = self._list_open(procedure["code"], today.isoformat(),
                                         (today + timedelta(days=SLOT_DAYS - 1)).isoformat(),
                                         1, 1, site=code)
            sites.append(dict(site, code=code, has_slots=bool(found["slots"])))
        return current.render("sites.html.j2", procedure=procedure, sites=sites,
                              documents=documents(procedure["code"], current.lang))

    @json_http("GET", "/book/<procedure>/<site>")
    @page
    def choose_slot(self, current, procedure, site):
        procedure, site = self._procedure(procedure), self._site(site)
        if self._by_request(procedure):
            return current.redirect(f"/request/{procedure['code']}")
        query = load_or_raise(SLOT_QUERY, {"procedure": procedure["code"],
                                           "page": current.request.args.get("page", "1"),
                                           "per_page": str(SLOTS_PER_PAGE)}, InvalidRequest)
        found = self._list_open(procedure["code"], query["from_"].isoformat(),
                                     query["to"].isoformat(), query["page"], SLOTS_PER_PAGE,
                                     site=site["code"])
        return current.render("slots.html.j2", procedure=procedure, site=site,
                              days=forms.slots_by_day(found["slots"], current.lang),
                              page_number=query["page"], has_more=found["has_more"],
                              attempts_enabled=self.page_settings.attempts_enabled)

    @json_http("GET", "/book/<procedure>/<site>/<slot_id>")
    @page
    def booking_form(self, current, procedure, site, slot_id):
        procedure, site = self._procedure(procedure), self._site(site)
        if self._by_request(procedure):
            return current.redirect(f"/request/{procedure['code']}")
        try:
            slot = self._bookable_slot(procedure, site, slot_id)
        except SlotFull as error:
            return pages.error_page(current, error, back=_slots_url(procedure, site))
        return self._form(current, procedure, site, slot, values={}, errors={})

    @json_http("POST", "/book/<procedure>/<site>/<slot_id>")
    @page
    def book(self, current, procedure, site, slot_id):
        return self._book_page(current, procedure, site, slot_id)

    # the form shown again after "this slot was just taken": the same details, with a time
    # chosen among those still free (a radio button named slot_id)
    @json_http("POST", "/book/<procedure>/<site>")
    @page
    def book_another(self, current, procedure, site):
        return self._book_page(current, procedure, site, current.request.form.get("slot_id", ""))

    def _book_page(self, current, procedure, site, slot_id):
        procedure, site = self._procedure(procedure), self._site(site)
        if self._by_request(procedure):
            return current.redirect(f"/request/{procedure['code']}")
        back = _slots_url(procedure, site)
        form = current.request.form
        values = {field: form.get(field, "") for field in forms.FIELDS}
        sent_key = forms.idempotency_key_of(form)
        key = sent_key or uuid.uuid4().hex
        if not slot_id:  # no time ticked on the form shown again
            return self._taken_form(current, procedure, site, values, status=400, key=key,
                                    errors={"slot_id": current.t(*forms.CHOOSE_ANOTHER_TIME)})
        try:
            # taken meanwhile: say so before asking anything else of the form
            slot = self._bookable_slot(procedure, site, slot_id, full_ok=sent_key is not None)
            if not current.csrf_ok():
                return self._form(current, procedure, site, slot, values, {}, status=400,
                                  problem="csrf", key=key)
            try:
                created = self._book(current.request,
                                     forms.booking_request(procedure["code"], slot_id, form,
                                                           current.lang), key)
            except ServiceUnavailable:
                # it may have been made: the same form sent again (same key) tells, never twice
                return self._form(current, procedure, site, slot, values, {}, status=503,
                                  problem="no_answer", key=key)
        except InvalidRequest as error:
            errors, _ = forms.field_errors(error.fields, form, current.lang)
            if not errors:  # nothing the person can fix in the form: the slot itself
                return pages.error_page(current, error, back=back)
            if slot["free"] <= 0:
                # a form with a key passed a full slot (it may have been its own place): taken
                # meanwhile is said first, with the fields' errors beside them
                taken = self._taken_form(current, procedure, site, values, errors=errors,
                                         exclude=slot_id, key=key)
                if taken is not None:
                    return taken
            return self._form(current, procedure, site, slot, values, errors, status=400, key=key)
        except SlotFull as error:
            # what was typed stays: the form again, with the times still free at this site
            return (self._taken_form(current, procedure, site, values, exclude=slot_id, key=key)
                    or pages.error_page(current, error, back=back))
        except SlotNotBookable as error:
            return pages.error_page(current, error, back=back)
        except (EmailHasBooking, PersonHasBooking) as error:
            # one e-mail, one person: the form again, saying what to do instead
            return self._form(current, procedure, site, slot, values, {}, status=409,
                              problem=error.code, key=key)
        except TooManyUnconfirmed as error:
            # nothing was held: the form again, saying which bound and what to do
            which = ("domain" if "email" in error.fields
                     else "release" if "slot_id" in error.fields else "client")
            return self._form(current, procedure, site, slot, values, {}, status=429,
                              problem=f"unconfirmed_{which}", key=key)
        reference = created["reference"]
        current.set_cookie(TOKEN_COOKIE, created["token"], path=f"/bookings/{reference}")
        return current.redirect(f"/bookings/{reference}?booked=1")

    @json_http("GET", "/bookings/<reference>")
    @page
    def booking_page(self, current, reference):
        request = current.request
        redirect = self._token_link(current, reference, f"/bookings/{reference}")
        if redirect is not None:
            return redirect
        booking = self._owned_booking(current, reference)
        return current.render("booking.html.j2", **self._booking_values(current, booking),
                              just_booked=request.args.get("booked") == "1",
                              just_confirmed=request.args.get("confirmed") == "1")

    # the confirmation link in the e-mail: GET only shows the page (a mail client or a scanner
    # fetching the link ahead must not confirm); its button POSTs
    @json_http("GET", "/bookings/<reference>/confirm")
    @page
    def confirm_page(self, current, reference):
        redirect = self._token_link(current, reference, f"/bookings/{reference}/confirm")
        if redirect is not None:
            return redirect
        booking = self._owned_booking(current, reference)
        return current.render("booking.html.j2", **self._booking_values(current, booking),
                              ask_confirmation=booking["status"] == "pending", problem=None)

    @json_http("POST", "/bookings/<reference>/confirm")
    @page
    def confirm_form(self, current, reference):
        booking = self._owned_booking(current, reference)
        if not current.csrf_ok():
            return current.render("booking.html.j2", status=400, problem="csrf",
                                  ask_confirmation=booking["status"] == "pending",
                                  **self._booking_values(current, booking))
        access = self._page_access(current, reference)
        try:
            self.booking.confirm(access["reference"], access["token"])
        except Refused:  # the booker's own token, not the e-mail link's: the mailbox unproven
            return current.render("booking.html.j2", status=409, problem="by_link",
                                  **self._booking_values(current, booking))
        return current.redirect(f"/bookings/{reference}?confirmed=1")

    @json_http("GET", "/bookings/<reference>/cancel")
    @page
    def cancel_confirmation(self, current, reference):
        # the reminder's "I can no longer come" link: its token into the cookie, then this
        # page (the confirmation step) without it
        redirect = self._token_link(current, reference, f"/bookings/{reference}/cancel")
        if redirect is not None:
            return redirect
        booking = self._owned_booking(current, reference)
        return current.render("cancel.html.j2", **self._booking_values(current, booking),
                              problem=None)

    @json_http("POST", "/bookings/<reference>/cancel")
    @page
    def cancel_page(self, current, reference):
        booking = self._owned_booking(current, reference)
        if not current.csrf_ok():
            return current.render("cancel.html.j2", status=400, problem="csrf",
                                  **self._booking_values(current, booking))
        self.booking.cancel(booking["reference"], self._access(current.request, reference)["token"])
        return current.redirect(f"/bookings/{reference}")

    @json_http("GET", "/bookings/<reference>/calendar.ics")
    @page
    def calendar(self, current, reference):
        booking = self._owned_booking(current, reference)
        site = SITES.get(booking["slot"]["site"], {"label": booking["slot"]["site"], "address": ""})
        procedure = PROCEDURES[booking["procedure"]]
        text = appointment_ics(
            uid=f"{booking['reference']}@{self.page_settings.mail_domain}", stamp=utcnow(),
            start=parse_iso(booking["slot"]["start"]), end=parse_iso(booking["slot"]["end"]),
            summary=f"Préfecture – {procedure['label_fr']} – {booking['reference']}",
            location=f"{site['label']}, {site['address']}",
            description=f"Référence / Reference {booking['reference']}. "
                        "Rendez-vous gratuit / Free appointment.")
        return page_response(text.encode(), headers={
            "Content-Type": "text/calendar; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{booking["reference"]}.ics"'})

    # M7: the page recording a failed attempt (the JSON API's POST /api/attempts)

    @json_http("GET", "/attempts/new")
    @page
    def attempt_form(self, current):
        args = current.request.args
        values = {"procedure": args.get("procedure", ""), "email": "", "foreigner_number": ""}
        return self._attempt_form(current, values, {}, site=args.get("site"))

    @json_http("POST", "/attempts/new")
    @page
    def attempt_record(self, current):
        form = current.request.form
        values = {field: form.get(field, "") for field in forms.ATTEMPT_FIELDS}
        site = form.get("site")
        # the form's key: the form sent twice is one attempt and one receipt
        key = forms.idempotency_key_of(form) or uuid.uuid4().hex
        if not current.csrf_ok():
            return self._attempt_form(current, values, {}, site, status=400, problem="csrf",
                                      key=key)
        try:
            body = forms.attempt_request(form, current.lang)
            load_or_raise(ATTEMPT_REQUEST, body, InvalidRequest)
            recorded = self.booking.record_attempt(body, idempotency_key=key)
        except InvalidRequest as error:
            errors, _ = forms.attempt_errors(error.fields, form, current.lang)
            if not errors:
                return pages.error_page(current, error, back="/attempts/new")
            return self._attempt_form(current, values, errors, site, status=400, key=key)
        except PlacesAvailable:
            return self._attempt_form(current, values, {}, site, status=409,
                                      problem="places_available", key=key)
        except TooManyAttempts:
            return self._attempt_form(current, values, {}, site, status=429,
                                      problem="too_many_attempts", key=key)
        except UseRequest:
            return self._attempt_form(current, values, {}, site, status=409,
                                      problem="use_request", key=key)
        at = parse_iso(recorded["at"]).astimezone(PARIS)
        # the token goes only to the mailbox (receipt e-mail), never into this page or its URL
        return current.render("attempt_receipt.html.j2",
                              reference=recorded["reference"], email=body["email"],
                              procedure=procedure_view(recorded["procedure"]),
                              date=long_date(at, current.lang), time=at.strftime("%H:%M"))

    # M7: the attestation to print or show (the receipt's links), and anyone's check of one

    @json_http("GET", "/attempts/<reference>/attestation")
    @page
    def attestation_page(self, current, reference):
        """Every attempt of the receipt holder's file, signed, with its QR and code."""
        home = f"/attempts/{reference}"
        redirect = pages.token_link(current, ATTEMPT_ACCESS, ATTEMPT_TOKEN_COOKIE, reference,
                                    home, f"{home}/attestation")
        if redirect is not None:
            return redirect
        access = self._attempt_page_access(current, reference)
        document = self.booking.attestation(access["reference"], access["token"])
        return attestation_view.page(current, document, access["reference"],
                                self.page_settings.base_url)

    @json_http("GET", "/attempts/<reference>/attestation.pdf")
    @page
    def attestation_pdf(self, current, reference):
        access = self._attempt_page_access(current, reference)
        document = self.booking.attestation(access["reference"], access["token"])
        body = attestation_view.pdf(document, self.page_settings.base_url)
        return convocation.pdf_answer(body, f"attestation-{access['reference']}.pdf")

    @json_http("GET", "/attestations/verify")
    @page
    def attestation_verify(self, current):
        """Anyone types or scans a verification code; a GET form (nothing changes, no CSRF)."""
        typed = current.request.args.get("code")
        if typed is None:
            return current.render("attestation_verify.html.j2", values={}, errors={}, result=None)
        values = {"code": typed[:300]}
        code = parse_code(typed)
        if code is None:
            message = current.t(
                "Un code de vérification compte 16 lettres et chiffres, par exemple 7K2M-QX9D-A4TR-8HNC.",
                "A verification code has 16 letters and digits, for example 7K2M-QX9D-A4TR-8HNC.")
            return current.render("attestation_verify.html.j2", status=400, values=values,
                                  errors={"code": message}, result=None)
        result = self.booking.attestation_by_code(code)
        if not result["found"]:
            # the same answer for every code not on record: nothing to learn by guessing
            return current.render("attestation_verify.html.j2", status=404, values=values,
                                  errors={}, result=result)
        return current.render("attestation_verify.html.j2", values=values, errors={},
                              result=result,
                              shown=attestation_view.values(result["attestation"], current.lang),
                              person=attestation_view.masked(result["attestation"].get("applicant", {})))

    # -- page helpers --------------------------------------------------------------------------

    def _attempt_page_access(self, current, reference):
        try:
            return self._attempt_access(current.request, reference)
        except InvalidRequest:  # no token, or a malformed reference: "not found", as a wrong token
            raise NotFound("No recorded attempt with this reference and token.")

    def _procedure(self, code):
        if code not in PROCEDURES:
            raise NotFound("No such procedure.")
        return procedure_view(code)

    def _site(self, code):
        if code not in SITES:
            raise NotFound("No such site.")
        return dict(SITES[code], code=code)

    def _bookable_slot(self, procedure, site, slot_id, full_ok=False):
        """A slot not released yet is not found, as an unknown id (nothing tells it exists
        before its release). full_ok: a form sent again may be for the place its first sending
        took; the booking service answers it (its booking, or 409)."""
        try:
            view = self._fresh_view()
            slot = (view and view.slot(slot_id)) or self.slots.get(slot_id, public=True)
        except InvalidRequest:
            raise NotFound(NO_SUCH_SLOT)
        if slot["procedure"] != procedure["code"] or slot["site"] != site["code"]:
            raise NotFound(NO_SUCH_SLOT)
        if (slot["free"] <= 0 and not full_ok) or slot["state"] != "open" \
                or parse_iso(slot["start"]) <= utcnow():
            raise SlotFull()
        return slot

    def _form(self, current, procedure, site, slot, values, errors, status=200, problem=None,
              key=None):
        """key: the form's idempotency key, kept when the form is shown again (a new form, a
        new key)."""
        start = parse_iso(slot["start"]).astimezone(PARIS)
        return current.render("form.html.j2", status=status, procedure=procedure, site=site,
                              slot=slot, date=long_date(start, current.lang),
                              time=start.strftime("%H:%M"), values=values, errors=errors,
                              problem=problem, back=_slots_url(procedure, site),
                              idempotency_key=key or uuid.uuid4().hex)

    def _taken_form(self, current, procedure, site, values, errors=None, status=409,
                    exclude=None, key=None):
        """The booking form with the person's details kept and the nearest free times at this
        site to choose from (posted to /book/<procedure>/<site>); None when none is left."""
        today = utcnow().astimezone(PARIS).date()
        found = self._list_open(procedure["code"], today.isoformat(),
                                     (today + timedelta(days=SLOT_DAYS - 1)).isoformat(),
                                     1, TAKEN_CHOICES, site=site["code"])
        free = [slot for slot in found["slots"] if slot["id"] != exclude]
        if not free:
            return None
        return current.render("form.html.j2", status=status, procedure=procedure, site=site,
                              slot=None, choices=forms.slots_by_day(free, current.lang),
                              values=values, errors=errors or {}, problem="taken",
                              back=_slots_url(procedure, site),
                              idempotency_key=key or uuid.uuid4().hex)

    def _attempt_form(self, current, values, errors, site, status=200, problem=None, key=None):
        """key: the form's idempotency key, kept when the form is shown again (a new form, a
        new key)."""
        code = values.get("procedure")
        chosen = procedure_view(code) if code in PROCEDURES else None
        site = site if site in SITES else None
        if chosen is None:
            back = "/book"
        else:
            back = f"/book/{code}/{site}" if site else f"/book/{code}"
        return current.render("attempt_form.html.j2", status=status, values=values,
                              errors=errors, problem=problem, chosen=chosen, site=site, back=back,
                              procedures=[procedure_view(c) for c in PROCEDURES],
                              idempotency_key=key or uuid.uuid4().hex)

    def _page_access(self, current, reference):
        try:
            return self._access(current.request, reference)
        except InvalidRequest:
            # no token (cookie gone, link cut short) or a malformed reference: for a person,
            # the same "not found" as a wrong token
            raise NotFound("No booking with this reference and token.")

    def _owned_booking(self, current, reference):
        access = self._page_access(current, reference)
        return self.booking.get(access["reference"], access["token"])

    def _token_link(self, current, reference, path):
        """The e-mail link's token into this booking's cookie (pages.token_link)."""
        return pages.token_link(current, BOOKING_ACCESS, TOKEN_COOKIE, reference,
                                f"/bookings/{reference}", path)

    def _booking_values(self, current, booking):
        start = parse_iso(booking["slot"]["start"]).astimezone(PARIS)
        site = SITES.get(booking["slot"]["site"], {"label": booking["slot"]["site"],
                                                   "address": "", "map_url": ""})
        if booking.get("not_final"):  # booking says it in French and English
            booking = dict(booking, not_final=i18n.with_langs(booking["not_final"]))
        return {"booking": booking, "procedure": procedure_view(booking["procedure"]),
                "site": site, "date": long_date(start, current.lang),
                "time": start.strftime("%H:%M"),
                "documents": documents(booking["procedure"], current.lang)}


SLOT_DAYS = 92  # as far ahead as the JSON API lists in one query
SLOTS_PER_PAGE = 60
TAKEN_CHOICES = 12  # free times offered with the form kept, after its slot was taken


def _slots_url(procedure, site):
    return f"/book/{procedure['code']}/{site['code']}"
