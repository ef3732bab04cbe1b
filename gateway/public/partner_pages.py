"""Accredited partners' way in (issue 24), on the public gateway: the staff gateway is
internal, and an association works from its own office.

JSON API: `Authorization: Bearer <API key>` on every call (no cookie ever opens it). Pages
under /partners: a log-in with the key (CSRF-checked), then a signed session cookie for
/partners (PUBLIC_FORM_SECRET, its own salt, PARTNER_SESSION_SECONDS); every filing and
acceptance is checked again by the requests service against the partner's state (suspended or
expired: refused), so a session outliving a suspension files nothing.

A mixin of PublicGateway (gateway/public/service.py), which supplies the RPC proxies and the
page settings.
"""
import uuid

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from nameko.extensions import DependencyProvider

from gateway.http import json_http, read_json
from gateway.public import forms
from gateway.public.pages import page
from services.common.errors import (DomainError, InvalidRequest, PartnerNotAllowed,
                                    PartnerUnknown, QuotaReached, Refused)
from services.common import register_check
from services.common.reference_data import FREE_NOTICE, PROCEDURES, SITES, procedure_view
from services.common.schemas import load_or_raise
from services.common.settings import setting
from services.common.request_schemas import PartnerFilingSchema

SESSION_COOKIE = "partner_session"
HOME = "/partners"
FILING = PartnerFilingSchema()


class PartnerSessions(DependencyProvider):
    """Signs and reads the partners' page sessions."""

    def setup(self):
        config = self.container.config
        self.seconds = setting(config, "PARTNER_SESSION_SECONDS")
        secret = str(config.get("PUBLIC_FORM_SECRET") or "")
        # PageSettings refuses to start without a long enough secret
        self.serializer = URLSafeTimedSerializer(secret or "unset", salt="partner-session")

    def issue(self, partner):
        """A session bound to the partner's key of the moment: a new key ends it."""
        return self.serializer.dumps([partner["id"], partner["key_id"]])

    def opened(self, signed):
        """(partner id, key id) of a valid session, else None."""
        if not signed:
            return None
        try:
            found = self.serializer.loads(signed, max_age=self.seconds)
        except (BadSignature, SignatureExpired):
            return None
        if not (isinstance(found, list) and len(found) == 2
                and all(isinstance(part, str) for part in found)):
            return None
        return tuple(found)

    def get_dependency(self, worker_ctx):
        return self


def bearer(request):
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def filing_body(form, lang):
    """The JSON body of a filing from the partner's page."""
    procedure = form.get("procedure") if form.get("procedure") in PROCEDURES else "renewal"
    body = forms.request_filing(procedure, form, lang)
    body["procedure"] = form.get("procedure", "")
    body["mailbox"] = form.get("mailbox", "")
    if not body.get("email"):
        body["email"] = None
    return body


class PartnerPages:
    partner_sessions = PartnerSessions()

    # -- JSON API ----------------------------------------------------------------------------

    @json_http("GET", "/api/partner", private=True)
    def api_partner(self, request):
        return self._api_partner(request)

    @json_http("POST", "/api/partner/requests", private=True)
    def api_partner_file(self, request):
        partner = self._api_partner(request)
        body = read_json(request)
        load_or_raise(FILING, body, InvalidRequest)
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        filed = self.requests.partner_file(partner["id"], body, idempotency_key=key)
        return 201, dict(filed, notice=FREE_NOTICE)

    @json_http("GET", "/api/partner/requests", private=True)
    def api_partner_requests(self, request):
        partner = self._api_partner(request)
        return {"requests": self.requests.partner_requests(partner["id"])}

    @json_http("POST", "/api/partner/requests/<reference>/accept", private=True)
    def api_partner_accept(self, request, reference):
        partner = self._api_partner(request)
        return dict(self.requests.partner_accept(partner["id"], reference), notice=FREE_NOTICE)

    def _api_partner(self, request):
        key = bearer(request)
        if not key:
            raise PartnerUnknown(fields={"Authorization": ["Bearer <API key> required."]})
        return self.requests.partner_login(key)

    # -- pages -------------------------------------------------------------------------------

    @json_http("GET", "/partners/login")
    @page
    def partner_login_form(self, current):
        return current.render("partner_login.html.j2", errors={}, values={})

    @json_http("POST", "/partners/login")
    @page
    def partner_login(self, current):
        if not current.csrf_ok():
            return current.render("partner_login.html.j2", status=400, values={}, errors={
                "api_key": current.t("Le formulaire a expiré : recommencez.",
                                     "The form expired: try again.")})
        try:
            partner = self.requests.partner_login((current.request.form.get("api_key") or "").strip())
        except PartnerUnknown:
            return current.render("partner_login.html.j2", status=401, values={}, errors={
                "api_key": current.t("Clé inconnue.", "Unknown key.")})
        current.set_cookie(SESSION_COOKIE, self.partner_sessions.issue(partner), path=HOME,
                           max_age=int(self.partner_sessions.seconds))
        return current.redirect(HOME)

    @json_http("POST", "/partners/logout")
    @page
    def partner_logout(self, current):
        if not current.csrf_ok():  # another site cannot log a partner out either
            return current.redirect(HOME)
        current.set_cookie(SESSION_COOKIE, "", path=HOME, max_age=0)
        return current.redirect("/partners/login")

    @json_http("GET", "/partners")
    @page
    def partner_home(self, current):
        partner = self._page_partner(current)
        if partner is None:
            return current.redirect("/partners/login")
        return self._partner_home(current, partner, {}, {})

    @json_http("POST", "/partners")
    @page
    def partner_page_file(self, current):
        partner = self._page_partner(current)
        if partner is None:
            return current.redirect("/partners/login")
        form = current.request.form
        key = forms.idempotency_key_of(form) or uuid.uuid4().hex
        if not current.csrf_ok():
            return self._partner_home(current, partner, form, {}, status=400, key=key,
                                      message=current.t("Le formulaire a expiré : renvoyez-le.",
                                                        "The form expired: send it again."))
        body = filing_body(form, current.lang)
        try:
            load_or_raise(FILING, body, InvalidRequest)
            filed = self.requests.partner_file(partner["id"], body, idempotency_key=key)
        except (InvalidRequest, Refused, QuotaReached, PartnerNotAllowed) as error:
            errors, _ = forms.request_errors(
                {k: v for k, v in error.fields.items() if k not in ("procedure", "partner", "mailbox", "identity")},
                form, current.lang)
            if "mailbox" in error.fields:
                errors["mailbox"] = " ".join(error.fields["mailbox"])
            # the quota, the partner's state, the person's open request: said once, at the top
            return self._partner_home(current, partner, form, errors, status=error.status,
                                      key=key, message=None if errors else _refusal(current, error),
                                      message_field=None if errors else _refused_field(error))
        return self._partner_home(current, self.requests.partner(partner["id"]), {}, {},
                                  filed=filed)

    @json_http("POST", "/partners/requests/<reference>/accept")
    @page
    def partner_page_accept(self, current, reference):
        partner = self._page_partner(current)
        if partner is None:
            return current.redirect("/partners/login")
        if not current.csrf_ok():
            return self._partner_home(current, partner, {}, {}, status=400,
                                      message=current.t("Le formulaire a expiré.", "The form expired."))
        try:
            accepted = self.requests.partner_accept(partner["id"], reference)
        except DomainError as error:
            if error.status == 503:
                raise
            return self._partner_home(current, partner, {}, {}, status=error.status,
                                      message=error.message)
        # the convocation to print, as the beneficiary's own pages show it
        return current.redirect(f"/bookings/{accepted['booking']['reference']}/convocation"
                                f"?token={accepted['booking']['token']}")

    def _page_partner(self, current):
        opened = self.partner_sessions.opened(current.request.cookies.get(SESSION_COOKIE))
        if opened is None:
            return None
        partner_id, key_id = opened
        try:
            partner = self.requests.partner(partner_id)
        except DomainError as error:
            if error.status == 404:
                return None
            raise
        return partner if partner["key_id"] == key_id else None  # the key was replaced

    def _partner_home(self, current, partner, form, errors, status=200, key=None, message=None,
                      filed=None, message_field=None):
        values = {field: form.get(field, "") for field in forms.REQUEST_FIELDS + ("procedure", "mailbox")}
        chosen = forms.availability(form)
        mine = self.requests.partner_requests(partner["id"])
        for request in mine:  # the offer's times as people read them (Paris)
            if request.get("offer"):
                request["offer"] = dict(request["offer"],
                                        start=self._when(request["offer"]["start"], current.lang),
                                        deadline=self._when(request["offer"]["deadline"], current.lang))
        return current.render("partner_home.html.j2", status=status, partner=partner,
                              requests=mine,
                              values=values, errors=errors, message=message, filed=filed,
                              message_field=message_field,
                              # with their Arabic labels (the raw data has French and English)
                              procedures={code: procedure_view(code) for code in PROCEDURES},
                              cells=forms.grid_cells(current.lang),
                              sites=SITES, chosen_sites=chosen["sites"],
                              chosen_times=forms.ticked(chosen),
                              idempotency_key=key or uuid.uuid4().hex)


def _refusal(current, error):
    """The refusal said at the top of the partner's page, in the page's language: the
    register's three (issue 24) written here, whose service message is French / English."""
    fields = error.fields
    renewed_by = (fields.get(register_check.WRONG_PROCEDURE_FIELD) or [None])[0]
    if renewed_by in register_check.RENEWALS:
        label = procedure_view(renewed_by)[f"label_{current.lang}"]
        return current.t(
            "Ce titre de séjour se renouvelle par la démarche «\u00a0%(procedure)s\u00a0» : "
            "choisissez-la dans la liste «\u00a0Démarche\u00a0» et déposez la demande à nouveau. "
            "Rien n'a été déposé.",
            "This permit is renewed through the procedure \"%(procedure)s\": choose it in the "
            "\"Procedure\" list and file the request again. Nothing was filed.") % {"procedure": label}
    if fields.get(register_check.VISA_MISMATCH_FIELD) == [register_check.VISA_MISMATCH_REASON]:
        return current.t(
            "Aucun visa de long séjour ne correspond à ces informations. Vérifiez le numéro du "
            "visa (sur la vignette du passeport), la date de naissance et le nom de famille tel "
            "qu'il est écrit sur le visa. Rien n'a été déposé. Sans visa de long séjour, la "
            "personne se présente avec son passeport à l'accueil du guichet des étrangers.",
            "No long-stay visa matches this information. Check the visa number (on the sticker "
            "in the passport), the birth date and the family name as written on the visa. "
            "Nothing was filed. Without a long-stay visa, the person comes with their passport "
            "to the foreigners' desk reception.")
    if fields.get(register_check.MISMATCH_FIELD) == [register_check.MISMATCH_REASON]:
        return current.t(
            "Aucun titre de séjour en cours ne correspond à ces informations. Vérifiez le "
            "numéro d'étranger (10 chiffres, sur le titre), la date de naissance et le nom de "
            "famille tel qu'il est écrit sur le titre. Rien n'a été déposé. Si tout est exact, "
            "la personne se présente avec son titre à l'accueil du guichet des étrangers.",
            "No current residence permit matches this information. Check the foreigner number "
            "(10 digits, on the permit), the birth date and the family name as written on the "
            "permit. Nothing was filed. If all is right, the person comes with their permit to "
            "the foreigners' desk reception.")
    return error.message


def _refused_field(error):
    """The form's field a register refusal sends the partner back to (the refusal stands at
    the top, above the lists; the form is below them): its id, or None."""
    fields = error.fields
    if (fields.get(register_check.WRONG_PROCEDURE_FIELD) or [None])[0] in register_check.RENEWALS:
        return "procedure"
    if fields.get(register_check.VISA_MISMATCH_FIELD) == [register_check.VISA_MISMATCH_REASON]:
        return "visa_number"
    if fields.get(register_check.MISMATCH_FIELD) == [register_check.MISMATCH_REASON]:
        return "foreigner_number"
    return None
