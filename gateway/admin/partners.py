"""Accredited partners and requests filed at the desk, in the staff gateway.

Issue 24: supervisors create partner accounts (name, contact, a weekly quota per procedure, an
expiry), suspend and renew them; the API key is shown once, in the answer to its creation (or
to a renewal that asks for a new one), and never logged or audited. Issue 21: an agent at the
desk or on the phone files a request (requests mode) for a person without e-mail, sees the
offers to tell such people about (to call, or a letter to print), and accepts an offer for the
person when they call back. The requests service does the work (services/requests/on_behalf.py);
this module is the pages and the JSON, roles checked here, CSRF on every form, each change in
the audit log under the member of staff (by reference: no name or address in the log).

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
import uuid

from gateway.admin import pages
from gateway.admin.supervision import EXPECTED_HERE, SUPERVISOR, route
from gateway.http import read_json
from gateway.public import forms
from services.common.errors import DomainError, InvalidRequest
from services.common.reference_data import PROCEDURES

AGENT = "agent"
PARTNER_FIELDS = ("name", "contact_email", "contact_phone", "quotas", "expires")


def partner_form_body(form):
    """The JSON body of a partner from the page's form (`quota_<procedure>` fields)."""
    quotas = {}
    for code in PROCEDURES:
        text = (form.get(f"quota_{code}") or "").strip()
        if text:
            quotas[code] = int(text) if text.isdigit() else text  # the schema says what is wrong
    return {"name": form.get("name", ""), "contact_email": (form.get("contact_email") or "").strip(),
            "contact_phone": (form.get("contact_phone") or "").strip() or None,
            "quotas": quotas, "expires": (form.get("expires") or "").strip()}


def person_form_body(form):
    """The JSON body of a request filed at the desk, from the page's form."""
    procedure = form.get("procedure") if form.get("procedure") in PROCEDURES else "renewal"
    body = forms.request_filing(procedure, form, "fr")
    body.pop("email", None)
    body["procedure"] = form.get("procedure", "")
    body["channel"] = form.get("channel", "")
    body["postal_address"] = (form.get("postal_address") or "").strip() or None
    return body


class Partners:
    # uses AdminGateway's `requests` proxy (service.py)

    # -- partners (supervisors): JSON ------------------------------------------------------------

    @route("GET", "/api/partners", expected_exceptions=EXPECTED_HERE)
    def api_partners(self, request):
        self._api_staff(request, SUPERVISOR)
        return {"partners": self.requests.partners()}

    @route("POST", "/api/partners", expected_exceptions=EXPECTED_HERE)
    def api_create_partner(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return 201, self._create_partner(staff, read_json(request))

    @route("GET", "/api/partners/<partner_id>/filings", expected_exceptions=EXPECTED_HERE)
    def api_partner_filings(self, request, partner_id):
        self._api_staff(request, SUPERVISOR)
        return {"filings": self.requests.partner_filings(partner_id)}

    @route("POST", "/api/partners/<partner_id>/suspend", expected_exceptions=EXPECTED_HERE)
    def api_suspend_partner(self, request, partner_id):
        staff = self._api_staff(request, SUPERVISOR)
        return self._suspend_partner(staff, partner_id)

    @route("POST", "/api/partners/<partner_id>/renew", expected_exceptions=EXPECTED_HERE)
    def api_renew_partner(self, request, partner_id):
        staff = self._api_staff(request, SUPERVISOR)
        return self._renew_partner(staff, partner_id, read_json(request))

    # -- partners (supervisors): page ------------------------------------------------------------

    @route("GET", "/partners", expected_exceptions=EXPECTED_HERE)
    def partners_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._partners_form(staff))

    @route("POST", "/partners", expected_exceptions=EXPECTED_HERE)
    def partners_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            form = request.form
            action, partner_id = form.get("action"), form.get("partner_id", "")
            try:
                if action == "create":
                    made = self._create_partner(staff, partner_form_body(form))
                    return self._partners_form(staff, created=made)
                if action == "suspend":
                    self._suspend_partner(staff, partner_id)
                elif action == "renew":
                    renewed = self._renew_partner(staff, partner_id, {
                        "expires": (form.get("expires") or "").strip() or None,
                        "new_key": form.get("new_key") == "1"})
                    if renewed.get("api_key"):
                        return self._partners_form(staff, created=renewed)
                else:
                    raise InvalidRequest("Action inconnue.", {"action": ["Unknown action."]})
            except InvalidRequest as error:
                return self._partners_form(staff, values=form, errors=error.fields,
                                           message=error.message, status=400)
            return pages.redirect("/partners")
        return self._page(request, SUPERVISOR, handle)

    # -- desk filing (agents): JSON --------------------------------------------------------------

    @route("POST", "/api/desk/requests", expected_exceptions=EXPECTED_HERE)
    def api_desk_file(self, request):
        staff = self._api_staff(request, AGENT)
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        return 201, self._desk_file(staff, read_json(request), key)

    @route("GET", "/api/desk/offers", expected_exceptions=EXPECTED_HERE)
    def api_desk_offers(self, request):
        self._api_staff(request, AGENT)
        return {"offers": self.requests.offers_to_tell()}

    @route("POST", "/api/desk/requests/<reference>/accept", expected_exceptions=EXPECTED_HERE)
    def api_desk_accept(self, request, reference):
        staff = self._api_staff(request, AGENT)
        return self._desk_accept(staff, reference)

    # -- desk filing (agents): pages -------------------------------------------------------------

    @route("GET", "/desk/requests", expected_exceptions=EXPECTED_HERE)
    def desk_requests_page(self, request):
        def handle(staff):
            values = {"channel": "desk", "key": uuid.uuid4().hex, **request.args.to_dict()}
            return self._desk_request_form(staff, values)
        return self._page(request, AGENT, handle)

    @route("POST", "/desk/requests", expected_exceptions=EXPECTED_HERE)
    def desk_requests_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            form = request.form
            key = form.get("key") or uuid.uuid4().hex
            try:
                filed = self._desk_file(staff, person_form_body(form), key)
            except DomainError as error:
                if error.status == 503:
                    raise
                return self._desk_request_form(staff, dict(form.to_dict(), key=key), form,
                                               error.fields, error.message, error.status)
            return self._render(staff, "desk_request_filed.html.j2", filed=filed)
        return self._page(request, AGENT, handle)

    @route("GET", "/desk/offers", expected_exceptions=EXPECTED_HERE)
    def desk_offers_page(self, request):
        return self._page(request, AGENT, lambda staff: self._render(
            staff, "desk_offers.html.j2", offers=self.requests.offers_to_tell(), booked=None))

    @route("POST", "/desk/offers/<reference>/accept", expected_exceptions=EXPECTED_HERE)
    def desk_offer_accept(self, request, reference):
        def handle(staff):
            self._check_csrf(request, staff)
            try:
                booked = self._desk_accept(staff, reference)
            except DomainError as error:
                if error.status == 503:
                    raise
                return self._render(staff, "desk_offers.html.j2", status=error.status,
                                    offers=self.requests.offers_to_tell(), booked=None,
                                    message=error.message)
            return self._render(staff, "desk_offers.html.j2", offers=self.requests.offers_to_tell(),
                                booked=booked)
        return self._page(request, AGENT, handle)

    @route("GET", "/desk/requests/<reference>/letter", expected_exceptions=EXPECTED_HERE)
    def desk_offer_letter(self, request, reference):
        """The letter telling the person of the offer, to print and post."""
        def handle(staff):
            found = self.requests.person_request(reference)
            self._record(staff["username"], "offer_letter_printed", f"request:{reference}")
            return self._render(staff, "desk_offer_letter.html.j2", request=found,
                                lines=[p.strip() for p in (found.get("postal_address") or "").split(",")
                                       if p.strip()])
        return self._page(request, AGENT, handle)

    # -- the work --------------------------------------------------------------------------------

    def _create_partner(self, staff, body):
        if not isinstance(body, dict):
            raise InvalidRequest("A JSON object.", {"_body": ["Expected an object."]})
        made = self.requests.create_partner(
            dict({k: body.get(k) for k in PARTNER_FIELDS if k in body}, by=staff["username"]),
            idempotency_key=uuid.uuid4().hex)
        # the key is in the answer only: never in the audit log
        self._record(staff["username"], "partner_created", f"partner:{made['id']}", None,
                     {"name": made["name"], "quotas": made["quotas"], "expires": made["expires"]})
        return made

    def _suspend_partner(self, staff, partner_id):
        before = self.requests.partner(partner_id)
        changed = self.requests.suspend_partner(partner_id, staff["username"])
        self._record(staff["username"], "partner_suspended", f"partner:{partner_id}",
                     {"state": before["state"]}, {"state": changed["state"]})
        return changed

    def _renew_partner(self, staff, partner_id, body):
        if not isinstance(body, dict):
            raise InvalidRequest("A JSON object.", {"_body": ["Expected an object."]})
        new_key = body.get("new_key", False)
        if not isinstance(new_key, bool):
            raise InvalidRequest("true or false.", {"new_key": ["Not a boolean."]})
        before = self.requests.partner(partner_id)
        changed = self.requests.renew_partner(partner_id, staff["username"],
                                              expires=body.get("expires"),
                                              quotas=body.get("quotas"), new_key=new_key)
        self._record(staff["username"], "partner_renewed", f"partner:{partner_id}",
                     {"state": before["state"], "expires": before["expires"]},
                     {"state": changed["state"], "expires": changed["expires"],
                      "new_key": new_key})
        return changed

    def _desk_file(self, staff, body, key):
        filed = self.requests.file_for_person(body, staff["username"], idempotency_key=key)
        self._record(staff["username"], "desk_request", f"request:{filed['reference']}", None,
                     {"channel": filed["channel"], "procedure": filed["procedure"]})
        return filed

    def _desk_accept(self, staff, reference):
        accepted = self.requests.accept_for_person(reference, staff["username"])
        self._record(staff["username"], "desk_offer_accepted", f"request:{reference}", None,
                     {"booking": accepted["booking"]["reference"]})
        return accepted

    def _partners_form(self, staff, values=None, errors=None, message=None, status=200,
                       created=None):
        return self._render(staff, "partners.html.j2", status=status,
                            partners=self.requests.partners(), values=values or {},
                            errors=errors or {}, message=message, created=created)

    def _desk_request_form(self, staff, values, form=None, errors=None, message=None, status=200):
        return self._render(staff, "desk_request.html.j2", status=status, values=values,
                            ticked_sites=form.getlist("sites") if form else [],
                            ticked_times=form.getlist("times") if form else [],
                            grid=forms.grid_cells("fr"),
                            errors=errors or {}, message=message)
