"""Public gateway: the JSON API applicants use (DESIGN.md section 6) and their pages."""
from datetime import timedelta

from gateway.html import page_response
from gateway.http import json_http, read_json
from gateway.public import forms, openapi, pages
from gateway.public.client import TrustedProxies, client_of
from gateway.public.full_slots import FullSlots
from gateway.public.pages import TOKEN_COOKIE, page
from gateway.public.schemas import BookingAccessSchema, SlotQuerySchema
from services.common.errors import InvalidRequest, NotFound, SlotFull, SlotNotBookable
from services.common.ics import appointment_ics
from services.common.reference_data import (FREE_NOTICE, PROCEDURES, SITES, documents,
                                            procedure_view)
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import BookingRequestSchema, load_or_raise
from services.common.timeutil import PARIS, long_date, parse_iso, utcnow

TOKEN_HEADER = "X-Booking-Token"
# built once: a marshmallow Schema costs more to build than to load a request with
SLOT_QUERY, BOOKING_REQUEST, BOOKING_ACCESS = SlotQuerySchema(), BookingRequestSchema(), BookingAccessSchema()


def _walk_in(procedure):
    return PROCEDURES[procedure].get("walk_in")


class PublicGateway:
    name = "public_gateway"

    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    trusted_proxies = TrustedProxies()
    full_slots = FullSlots()
    page_settings = pages.PageSettings()

    @json_http("GET", "/health")
    def health(self, request):
        return {"status": "ok"}

    @json_http("GET", "/api/procedures")
    def procedures(self, request):
        return {"procedures": [procedure_view(code) for code in PROCEDURES],
                "notice": FREE_NOTICE}

    @json_http("GET", "/api/slots")
    def list_slots(self, request):
        query = load_or_raise(SLOT_QUERY, request.args.to_dict(), InvalidRequest)
        found = self.slots.list_open(
            query["procedure"], query["from_"].isoformat(), query["to"].isoformat(),
            query["page"], query["per_page"],
        )
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

    @json_http("POST", "/api/bookings")
    def create_booking(self, request):
        created = self._book(request, read_json(request))
        slot = created["slot"]
        answer = {
            "reference": created["reference"],
            "token": created["token"],
            "status": created["status"],
            "slot": dict(slot, site_address=SITES.get(slot["site"], {}).get("address")),
            "notice": FREE_NOTICE,
        }
        if _walk_in(slot["procedure"]):
            answer["walk_in"] = _walk_in(slot["procedure"])
        return 201, answer

    @json_http("GET", "/api/bookings/<reference>")
    def get_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.get(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("DELETE", "/api/bookings/<reference>")
    def cancel_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.cancel(access["reference"], access["token"]), notice=FREE_NOTICE)

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
        if created.get("slot_full"):
            # learnt from the winner of the last place, not from the first loser: the
            # attempts already queued behind it get their 409 here
            self.full_slots.remember(body["slot_id"])
        return created

    def _access(self, request, reference):
        # header (API clients), then the cookie the e-mail link left, then the link itself
        token = (request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
                 or request.args.get("token") or "")
        return load_or_raise(BOOKING_ACCESS, {"reference": reference, "token": token},
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
        return current.render("procedures.html.j2", procedures=[
            dict(procedure_view(code), documents=documents(code, current.lang))
            for code in PROCEDURES])

    @json_http("GET", "/book/<procedure>")
    @page
    def choose_site(self, current, procedure):
        procedure = self._procedure(procedure)
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
        try:
            slot = self._bookable_slot(procedure, site, slot_id)
        except SlotFull as error:
            return pages.error_page(current, error, back=_slots_url(procedure, site))
        return self._form(current, procedure, site, slot, values={}, errors={})

    @json_http("POST", "/book/<procedure>/<site>/<slot_id>")
    @page
    def book(self, current, procedure, site, slot_id):
        procedure, site = self._procedure(procedure), self._site(site)
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
        if request.args.get("token"):
            # the e-mail link: keep the token in a cookie for this booking's pages only, and
            # take it out of the address bar, the history and any later referrer
            access = load_or_raise(BOOKING_ACCESS, {"reference": reference,
                                                    "token": request.args["token"]}, InvalidRequest)
            current.set_cookie(TOKEN_COOKIE, access["token"], path=f"/bookings/{reference}")
            return current.redirect(f"/bookings/{reference}")
        booking = self._owned_booking(current, reference)
        return current.render("booking.html.j2", **self._booking_values(current, booking),
                              just_booked=request.args.get("booked") == "1")

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

    def _owned_booking(self, current, reference):
        try:
            access = self._access(current.request, reference)
        except InvalidRequest:
            # no token (cookie gone, link cut short) or a malformed reference: for a person,
            # the same "not found" as a wrong token
            raise NotFound("No booking with this reference and token.")
        return self.booking.get(access["reference"], access["token"])

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
