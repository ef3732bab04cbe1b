"""Public gateway: the JSON API applicants use (DESIGN.md section 6) and their pages."""
from datetime import timedelta

from werkzeug.wrappers import Response

from gateway.html import page_response
from gateway.http import json_http, read_json
# request_pages as a module: `nameko run` would take a class imported here for a service
from gateway.public import convocation, fairness, forms, openapi, pages, request_pages
from gateway.public.client import TrustedProxies, client_of
from gateway.public.full_slots import FullSlots
from gateway.public.listing_cache import SlotListings
from gateway.public.pages import TOKEN_COOKIE, page
from gateway.public.schemas import BookingAccessSchema, SlotQuerySchema
from gateway.readiness import gather, ready_answer
from services.common.errors import (DomainError, InvalidRequest, NotFound, PlacesAvailable,
                                    Refused, ServiceUnavailable, SlotFull, SlotNotBookable,
                                    TooManyAttempts)
from services.common.ics import appointment_ics
from services.common.logs import CallIdLogging
from services.common.metrics import Metrics
from services.common.reference_data import (FREE_NOTICE, PROCEDURES, SITES, documents,
                                            procedure_view)
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import (AttemptAccessSchema, AttemptRequestSchema, AttestationSchema,
                                     BookingRequestSchema, load_or_raise)
from services.common.timeutil import PARIS, long_date, parse_iso, utcnow
from services.requests.schemas import AvailabilitySchema, RequestAccessSchema, RequestFilingSchema

TOKEN_HEADER = "X-Booking-Token"
REQUEST_TOKEN_HEADER = "X-Request-Token"

ATTEMPT_TOKEN_HEADER = "X-Attempt-Token"
# built once: a marshmallow Schema costs more to build than to load a request with
SLOT_QUERY, BOOKING_REQUEST, BOOKING_ACCESS = SlotQuerySchema(), BookingRequestSchema(), BookingAccessSchema()
ATTEMPT_REQUEST, ATTEMPT_ACCESS, ATTESTATION = AttemptRequestSchema(), AttemptAccessSchema(), AttestationSchema()
REQUEST_FILING, REQUEST_ACCESS, AVAILABILITY = (RequestFilingSchema(), RequestAccessSchema(),
                                                AvailabilitySchema())


def _walk_in(procedure):
    return PROCEDURES[procedure].get("walk_in")


class PublicGateway(request_pages.RequestPages):
    name = "public_gateway"

    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    requests = BoundedRpcProxy("requests")
    trusted_proxies = TrustedProxies()
    full_slots = FullSlots()
    listings = SlotListings()
    page_settings = pages.PageSettings()
    metrics = Metrics()
    log_context = CallIdLogging()
    figures_cache = fairness.FiguresCache()
    slots_health = BoundedRpcProxy("slots", timeout_key="HEALTH_RPC_TIMEOUT", timeout_default=2.0)
    booking_health = BoundedRpcProxy("booking", timeout_key="HEALTH_RPC_TIMEOUT", timeout_default=2.0)

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
    def fairness_page(self, request):
        """Public figures per procedure (gateway/public/fairness.py); no personal data."""
        slots, booking = self.figures_cache.get(self._figures)
        return fairness.page(slots, booking, self.figures_cache.days)

    @json_http("GET", "/static/public.css")
    def fairness_stylesheet(self, request):
        return fairness.css()

    def _health(self):
        return gather({"slots": self.slots_health, "booking": self.booking_health})

    def _figures(self):
        days = self.figures_cache.days

        def ask(call):
            try:
                return call()
            except DomainError:
                return None
        return ask(lambda: self.slots.figures(days)), ask(lambda: self.booking.figures(days))

    @json_http("GET", "/api/procedures")
    def procedures(self, request):
        return {"procedures": [procedure_view(code) for code in PROCEDURES],
                "notice": FREE_NOTICE}

    @json_http("GET", "/api/slots")
    def list_slots(self, request):
        query = load_or_raise(SLOT_QUERY, request.args.to_dict(), InvalidRequest)
        # the JSON API shows decoys like any slot (a script reading it can book one, a
        # person using the pages never sees one); only named fields go out, none tells
        key = (query["procedure"], query["from_"].isoformat(), query["to"].isoformat(),
               query["page"], query["per_page"])
        found = self.listings.get(key)
        if found is None:
            found = self.slots.list_open(*key, include_decoys=True)
            self.listings.put(key, found)
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
        created = self._book(request, read_json(request))
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
        filed = self.requests.file(body)
        # the token goes to the mailbox only: following its link is what confirms the e-mail
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
        recorded = self.booking.record_attempt(body)
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

    def _book(self, request, body):
        """Book through the booking RPC: the JSON API and the form both come here."""
        # validated here to answer 400 without a round trip; the booking service checks again
        load_or_raise(BOOKING_REQUEST, body, InvalidRequest)
        if self.full_slots.recently_full(body["slot_id"]):
            raise SlotFull()
        client = client_of(request, self.trusted_proxies)
        try:
            created = self.booking.create(body, client)
        except SlotFull:
            self.full_slots.remember(body["slot_id"])
            raise
        except ServiceUnavailable:
            # true however late the booking service gets to it: a request whose caller gave up
            # is dropped, and none is stored after its deadline (services/common/rpc.py)
            raise ServiceUnavailable("The booking was not made. Please try again in a moment.")
        if created.get("slot_full"):
            # learnt from the winner of the last place, not from the first loser: the
            # attempts already queued behind it get their 409 here
            self.full_slots.remember(body["slot_id"])
        return created

    @json_http("GET", "/bookings/<reference>/convocation")
    @page
    def convocation_page(self, current, reference):
        """The convocation to print (HTML), for the holder of the booking's token."""
        access = self._page_access(current, reference)
        return convocation.html(self.booking.convocation(access["reference"], access["token"]))

    @json_http("GET", "/bookings/<reference>/convocation.pdf")
    def convocation_pdf(self, request, reference):
        access = self._access(request, reference)
        body = convocation.pdf(self.booking.convocation(access["reference"], access["token"]))
        return Response(body, content_type="application/pdf", headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="convocation-{access["reference"]}.pdf"'})

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
        token = request.headers.get(ATTEMPT_TOKEN_HEADER) or request.args.get("token") or ""
        return load_or_raise(ATTEMPT_ACCESS, {"reference": reference, "token": token},
                             InvalidRequest)

    # -- pages (gateway/public/pages.py; wording in templates/) ------------------------------

    @json_http("GET", "/static/site.css")
    def stylesheet(self, request):
        return pages.stylesheet()

    @json_http("GET", "/")
    @page
    def home(self, current):
        return current.render("home.html.j2")

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
            found = self.slots.list_open(procedure["code"], today.isoformat(),
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
        found = self.slots.list_open(procedure["code"], query["from_"].isoformat(),
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
        procedure, site = self._procedure(procedure), self._site(site)
        if self._by_request(procedure):
            return current.redirect(f"/request/{procedure['code']}")
        back = _slots_url(procedure, site)
        form = current.request.form
        values = {field: form.get(field, "") for field in forms.FIELDS}
        try:
            # taken meanwhile: say so before asking anything else of the form
            slot = self._bookable_slot(procedure, site, slot_id)
            if not current.csrf_ok():
                return self._form(current, procedure, site, slot, values, {}, status=400,
                                  problem="csrf")
            created = self._book(current.request,
                                 forms.booking_request(procedure["code"], slot_id, form))
        except InvalidRequest as error:
            errors, _ = forms.field_errors(error.fields, form, current.lang)
            if not errors:  # nothing the person can fix in the form: the slot itself
                return pages.error_page(current, error, back=back)
            return self._form(current, procedure, site, slot, values, errors, status=400)
        except (SlotFull, SlotNotBookable) as error:
            return pages.error_page(current, error, back=back)
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
        if not current.csrf_ok():
            return self._attempt_form(current, values, {}, site, status=400, problem="csrf")
        try:
            body = forms.attempt_request(form)
            load_or_raise(ATTEMPT_REQUEST, body, InvalidRequest)
            recorded = self.booking.record_attempt(body)
        except InvalidRequest as error:
            errors, _ = forms.attempt_errors(error.fields, form, current.lang)
            if not errors:
                return pages.error_page(current, error, back="/attempts/new")
            return self._attempt_form(current, values, errors, site, status=400)
        except PlacesAvailable:
            return self._attempt_form(current, values, {}, site, status=409,
                                      problem="places_available")
        except TooManyAttempts:
            return self._attempt_form(current, values, {}, site, status=429,
                                      problem="too_many_attempts")
        at = parse_iso(recorded["at"]).astimezone(PARIS)
        # the token goes only to the mailbox (receipt e-mail), never into this page or its URL
        return current.render("attempt_receipt.html.j2",
                              reference=recorded["reference"], email=body["email"],
                              procedure=procedure_view(recorded["procedure"]),
                              date=long_date(at, current.lang), time=at.strftime("%H:%M"))

    # -- page helpers --------------------------------------------------------------------------

    def _procedure(self, code):
        if code not in PROCEDURES:
            raise NotFound("No such procedure.")
        return procedure_view(code)

    def _site(self, code):
        if code not in SITES:
            raise NotFound("No such site.")
        return dict(SITES[code], code=code)

    def _bookable_slot(self, procedure, site, slot_id):
        try:
            slot = self.slots.get(slot_id)
        except InvalidRequest:
            raise NotFound("This slot does not exist.")
        if slot["procedure"] != procedure["code"] or slot["site"] != site["code"]:
            raise NotFound("This slot does not exist.")
        if slot["free"] <= 0 or slot["state"] != "open" or parse_iso(slot["start"]) <= utcnow():
            raise SlotFull()
        return slot

    def _form(self, current, procedure, site, slot, values, errors, status=200, problem=None):
        start = parse_iso(slot["start"]).astimezone(PARIS)
        return current.render("form.html.j2", status=status, procedure=procedure, site=site,
                              slot=slot, date=long_date(start, current.lang),
                              time=start.strftime("%H:%M"), values=values, errors=errors,
                              problem=problem, back=_slots_url(procedure, site))

    def _attempt_form(self, current, values, errors, site, status=200, problem=None):
        code = values.get("procedure")
        chosen = procedure_view(code) if code in PROCEDURES else None
        site = site if site in SITES else None
        if chosen is None:
            back = "/book"
        else:
            back = f"/book/{code}/{site}" if site else f"/book/{code}"
        return current.render("attempt_form.html.j2", status=status, values=values,
                              errors=errors, problem=problem, chosen=chosen, site=site, back=back,
                              procedures=[procedure_view(c) for c in PROCEDURES])

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
        return {"booking": booking, "procedure": procedure_view(booking["procedure"]),
                "site": site, "date": long_date(start, current.lang),
                "time": start.strftime("%H:%M"),
                "documents": documents(booking["procedure"], current.lang)}


SLOT_DAYS = 92  # as far ahead as the JSON API lists in one query
SLOTS_PER_PAGE = 60


def _slots_url(procedure, site):
    return f"/book/{procedure['code']}/{site['code']}"
