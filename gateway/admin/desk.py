"""Bookings for people without internet or e-mail (issue 21), in the staff gateway.

An agent at the reception desk or on the phone line books a free slot (open mode) for a person
with their identity and a postal address or a phone; the convocation is printed at once or
posted (a PDF letter with the address where a window envelope shows it). The booking service
does the work (`book_for_person`: born confirmed, `channel` and `by` recorded, one active
booking per person and procedure, no e-mail); this module is the page and the JSON, for
agents and supervisors, CSRF on the form, each booking in the audit log under the agent.

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
from datetime import timedelta

from gateway.admin.supervision import EXPECTED_HERE, route
from gateway.http import read_json
from gateway.public import convocation
from services.common.booking_schemas import DeskBookingSchema
from services.common.errors import DomainError, InvalidRequest
from services.common.reference_data import PROCEDURES, SITES
from services.common.schemas import load_or_raise

AGENT = "agent"
# the agent is the session's; the person has no e-mail
DESK_BODY = DeskBookingSchema(exclude=("email", "agent"))
OPTIONAL = ("foreigner_number", "phone", "postal_address")
SLOT_DAYS = 92  # how far ahead the page lists free slots
SLOTS_SHOWN = 40
CHANNEL_FR = {"web": "site internet", "desk": "accueil (guichet)", "phone": "téléphone",
              "partner": "association partenaire"}


def form_body(values):
    """A form's fields as the JSON API takes them: an empty optional field is no value."""
    body = {k: v for k, v in values.items() if k not in ("site", "csrf")}
    for key in OPTIONAL:
        if not (body.get(key) or "").strip():
            body[key] = None
    return body


def address_lines(text):
    """A postal address typed on one line or several, as the lines of an envelope."""
    parts = [p.strip() for p in (text or "").replace("\r", "").replace("\n", ",").split(",")]
    return [p for p in parts if p]


class Desk:
    # uses AdminGateway's `booking` and `slots` proxies (service.py)

    # -- JSON ------------------------------------------------------------------------------------

    @route("GET", "/api/desk/slots", expected_exceptions=EXPECTED_HERE)
    def api_desk_slots(self, request):
        staff = self._api_staff(request, AGENT)
        return {"slots": self._desk_slots(staff, request.args.get("procedure"),
                                          request.args.get("site"))}

    @route("POST", "/api/desk/bookings", expected_exceptions=EXPECTED_HERE)
    def api_desk_book(self, request):
        staff = self._api_staff(request, AGENT)
        return 201, self._desk_book(staff, read_json(request))

    # -- pages -----------------------------------------------------------------------------------

    @route("GET", "/desk", expected_exceptions=EXPECTED_HERE)
    def desk_page(self, request):
        def handle(staff):
            values = {"channel": "desk", **request.args.to_dict()}
            return self._desk_form(staff, values)
        return self._page(request, AGENT, handle)

    @route("POST", "/desk", expected_exceptions=EXPECTED_HERE)
    def desk_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            values = {k: v for k, v in request.form.items() if k != "csrf"}
            try:
                booked = self._desk_book(staff, form_body(values))
            except DomainError as error:
                if error.status == 503:
                    raise
                return self._desk_form(staff, values, error.fields, error.message, error.status)
            return self._render(staff, "desk_booked.html.j2", booked=booked,
                                qr=convocation.qr_svg(booked["convocation"]["code"],
                                                    "Code de la convocation"),
                                lines=address_lines(booked.get("postal_address")),
                                channel_fr=CHANNEL_FR)
        return self._page(request, AGENT, handle)

    @route("GET", "/desk/bookings/<reference>/convocation.pdf", expected_exceptions=EXPECTED_HERE)
    def desk_convocation_pdf(self, request, reference):
        """The convocation to print at the desk, or with `?post=1` the letter to post (the
        postal address first)."""
        def handle(staff):
            conv = self.booking.staff_convocation(reference)
            recipient = None
            if request.args.get("post") == "1":
                recipient = [f"{conv['given_names']} {conv['family_name']}".strip()] \
                    + address_lines(conv.get("postal_address"))
            self._record(staff["username"], "convocation_printed", f"booking:{reference}",
                         None, {"post": bool(recipient)})
            return convocation.pdf_response(conv, recipient)
        return self._page(request, AGENT, handle)

    # -- the work --------------------------------------------------------------------------------

    def _desk_slots(self, staff, procedure, site):
        # the agent's own site by default; the phone line books for any site
        site = site or staff["site"]
        if procedure not in PROCEDURES or site not in SITES:
            raise InvalidRequest("Choose a procedure and a site.", {
                **({} if procedure in PROCEDURES else {"procedure": ["Unknown procedure."]}),
                **({} if site in SITES else {"site": ["Unknown site."]})})
        today = self._today()
        found = self.slots.list_open(procedure, today.isoformat(),
                                     (today + timedelta(days=SLOT_DAYS)).isoformat(),
                                     per_page=SLOTS_SHOWN, site=site)
        return found["slots"]

    def _desk_book(self, staff, body):
        data = load_or_raise(DESK_BODY, body, InvalidRequest)
        booked = self.booking.book_for_person(dict(
            data, birth_date=data["birth_date"].isoformat(), agent=staff["username"]))
        # who booked, for whom by reference only: the audit keeps no name or address
        self._record(staff["username"], "desk_booking", f"booking:{booked['id']}", None,
                     {"channel": booked["channel"], "procedure": booked["procedure"],
                      "site": booked["site"], "start": booked["start"]})
        booked["postal_address"] = data.get("postal_address")
        return booked

    def _desk_form(self, staff, values, errors=None, message=None, status=200):
        slots, modes = [], {}
        procedure = values.get("procedure")
        site = values.get("site") or staff["site"]
        if procedure in PROCEDURES:
            modes = self.slots.modes()
            if modes.get(procedure) == "open":
                slots = self._desk_slots(staff, procedure, site)
        return self._render(staff, "desk.html.j2", status=status, values=dict(values, site=site),
                            errors=errors or {}, message=message, slots=slots,
                            mode=modes.get(procedure))
