"""The applicants' pages for procedures allocated by request (issue 12).

File a request (`/request/<procedure>`), then, from the e-mail's links, confirm it, see its
state, change when and where one can come, accept or decline an offer, withdraw. The request's
token travels only in the e-mail: its links put it into a cookie for `/requests/<reference>`
and redirect to the address without it; filing never shows it (the link is the proof that the
person owns the mailbox).

A mixin of PublicGateway (gateway/public/service.py), which supplies the RPC proxies, the page
settings and `_procedure`.
"""
import uuid
from datetime import date

from gateway.http import json_http
from gateway.public import forms, pages
from gateway.public.client import client_of
from gateway.public.pages import REQUEST_TOKEN_COOKIE, TOKEN_COOKIE, page
from services.common.errors import (EmailHasBooking, InvalidRequest, NotFound, PersonHasBooking,
                                    Refused, SlotFull, SlotNotBookable)
from services.common import register_check
from services.common.reference_data import SITES, procedure_view
from services.common.schemas import load_or_raise
from services.common.timeutil import PARIS, long_date, parse_iso
from services.common.request_schemas import AvailabilitySchema, RequestAccessSchema, RequestFilingSchema

FILING, ACCESS, AVAILABILITY = RequestFilingSchema(), RequestAccessSchema(), AvailabilitySchema()


def _home(reference):
    return f"/requests/{reference}"


def _refusal(error):
    """The problem a refused button shows on the request's page."""
    if "email" in error.fields or "foreigner_number" in error.fields:
        return "already_open"  # a confirmation: another confirmed request holds the claim
    return "accepting" if error.fields.get("state") == ["accepting"] else "no_offer"


class RequestPages:

    # -- filing ------------------------------------------------------------------------------

    @json_http("GET", "/request/<procedure>")
    @page
    def request_form(self, current, procedure):
        procedure = self._procedure(procedure)
        if not self._by_request(procedure):
            return current.redirect(f"/book/{procedure['code']}")
        args = current.request.args
        if args.get("invitation") or args.get("token"):
            # a renewal invitation's link (issue 24): the form filled in from the register
            try:
                invited = self.requests.invited(args.get("invitation", ""), args.get("token", ""))
            except (InvalidRequest, NotFound):
                return self._request_form(current, procedure, {}, {}, status=404,
                                          problem="invitation_gone")
            return self._request_form(current, procedure, dict(
                invited["identity"], email=invited["email"], permit_expiry=invited["expiry"],
                invitation=args["invitation"], invitation_token=args["token"]), {})
        return self._request_form(current, procedure, {}, {})

    @json_http("POST", "/request/<procedure>")
    @page
    def request_file(self, current, procedure):
        procedure = self._procedure(procedure)
        form = current.request.form
        # the form's key: the form sent twice is one request and one e-mail
        key = forms.idempotency_key_of(form) or uuid.uuid4().hex
        if not current.csrf_ok():
            return self._request_form(current, procedure, form, {}, status=400, problem="csrf",
                                      key=key)
        body = forms.request_filing(procedure["code"], form, current.lang)
        try:
            # checked here to answer 400 without a round trip; the requests service checks again
            load_or_raise(FILING, body, InvalidRequest)
            filed = self.requests.file(body, idempotency_key=key)
        except (InvalidRequest, Refused) as error:
            if isinstance(error, Refused) and "procedure" in error.fields:
                return current.redirect(f"/book/{procedure['code']}")  # switched meanwhile
            if error.fields.get(register_check.MISMATCH_FIELD) == [register_check.MISMATCH_REASON]:
                # not in the register: one message whichever field differs (issue 24)
                return self._request_form(current, procedure, form, {}, status=error.status,
                                          problem="not_in_register", key=key)
            renewed_by = error.fields.get(register_check.WRONG_PROCEDURE_FIELD) or [None]
            if renewed_by[0] in register_check.RENEWALS:
                # the permit matched, another procedure renews it: that one's form is linked
                return self._request_form(current, procedure, form, {}, status=error.status,
                                          problem="wrong_procedure", key=key,
                                          renewed_by=procedure_view(renewed_by[0]))
            if error.fields.get(register_check.VISA_MISMATCH_FIELD) == [
                    register_check.VISA_MISMATCH_REASON]:
                # no such long-stay visa: one message whichever field differs (issue 24)
                return self._request_form(current, procedure, form, {}, status=error.status,
                                          problem="visa_not_found", key=key)
            errors, _ = forms.request_errors(error.fields, form, current.lang)
            return self._request_form(current, procedure, form, errors, status=error.status,
                                      problem="already_open" if isinstance(error, Refused) else None,
                                      key=key)
        if filed["state"] != "unconfirmed" and filed.get("token"):
            # filed from a renewal invitation's mailbox: confirmed already, its page at once
            # (its token into the request's cookie, as the e-mail's links put it)
            current.set_cookie(REQUEST_TOKEN_COOKIE, filed["token"], path=_home(filed["reference"]))
            return current.redirect(_home(filed["reference"]))
        # the token goes only to the mailbox: following its link proves the address
        return current.render("request_receipt.html.j2", reference=filed["reference"],
                              email=body["email"], procedure=procedure,
                              confirm_by=self._when(filed["confirm_by"], current.lang))

    # -- the request's pages (token from the e-mail's link, kept in a cookie) ----------------

    @json_http("GET", "/requests/<reference>")
    @page
    def request_state(self, current, reference):
        return self._request_link(current, reference, _home(reference)) \
            or self._request_page(current, reference)

    @json_http("GET", "/requests/<reference>/confirm")
    @page
    def request_confirm_page(self, current, reference):
        # GET only shows the page: a mail scanner fetching the link ahead must not confirm
        return self._request_link(current, reference, f"{_home(reference)}/confirm") \
            or self._request_page(current, reference)

    @json_http("POST", "/requests/<reference>/confirm")
    @page
    def request_confirm(self, current, reference):
        return self._request_action(current, reference, self.requests.confirm, "?confirmed=1")

    @json_http("POST", "/requests/<reference>/accept")
    @page
    def request_accept(self, current, reference):
        token = self._request_token(current, reference)
        if not current.csrf_ok():
            return self._request_page(current, reference, status=400, problem="csrf")
        try:
            accepted = self.requests.accept(reference, token,
                                            client_of(current.request, self.trusted_proxies))
        except Refused as error:
            problem = "deadline" if "deadline" in error.fields else "no_offer"
            return self._request_page(current, reference, status=409, problem=problem)
        except EmailHasBooking as error:
            # one e-mail, one person: the booking it holds must be cancelled first
            return self._request_page(current, reference, status=409, problem="email_has_booking",
                                      detail=error.message)
        except PersonHasBooking:
            # one person, one booking per procedure, whatever the e-mail
            return self._request_page(current, reference, status=409, problem="person_has_booking")
        except (SlotFull, SlotNotBookable):
            return self._request_page(current, reference, status=409, problem="no_offer")
        booking = accepted["booking"]
        if booking.get("token"):
            current.set_cookie(TOKEN_COOKIE, booking["token"],
                               path=f"/bookings/{booking['reference']}")
        return current.redirect(f"/bookings/{booking['reference']}?booked=1")

    @json_http("GET", "/requests/<reference>/decline")
    @page
    def request_decline_page(self, current, reference):
        return self._request_sure(current, reference, "decline")

    @json_http("POST", "/requests/<reference>/decline")
    @page
    def request_decline(self, current, reference):
        return self._request_action(current, reference, self.requests.decline, "", "decline")

    @json_http("GET", "/requests/<reference>/withdraw")
    @page
    def request_withdraw_page(self, current, reference):
        return self._request_sure(current, reference, "withdraw")

    @json_http("POST", "/requests/<reference>/withdraw")
    @page
    def request_withdraw(self, current, reference):
        return self._request_action(current, reference, self.requests.withdraw, "", "withdraw")

    @json_http("POST", "/requests/<reference>/availability")
    @page
    def request_availability(self, current, reference):
        token = self._request_token(current, reference)
        form = current.request.form
        if not current.csrf_ok():
            return self._request_page(current, reference, status=400, problem="csrf", form=form)
        body = forms.availability(form)
        try:
            load_or_raise(AVAILABILITY, body, InvalidRequest)
            self.requests.update_availability(reference, token, body)
        except InvalidRequest as error:
            errors, _ = forms.request_errors(
                {f"availability.{k}": v for k, v in error.fields.items()}, form, current.lang)
            return self._request_page(current, reference, status=400, errors=errors, form=form)
        except Refused:
            return self._request_page(current, reference, status=409, problem="closed")
        return current.redirect(f"{_home(reference)}?saved=1")

    # -- helpers -----------------------------------------------------------------------------

    def _by_request(self, procedure):
        """Allocated by request? Then /request/<procedure>, not /book/<procedure>, is its path
        (one cheap RPC: slots keeps the modes, a handful of documents)."""
        return self.slots.modes()[procedure["code"]] == "requests"

    def _request_link(self, current, reference, path):
        try:
            return pages.token_link(current, ACCESS, REQUEST_TOKEN_COOKIE, reference,
                                    _home(reference), path)
        except InvalidRequest:  # a link cut short or mangled: "not found", as a wrong token
            raise NotFound("No request with this reference and token.")

    def _request_token(self, current, reference):
        """The token the e-mail's link left in this request's cookie; none: not found."""
        token = current.request.cookies.get(REQUEST_TOKEN_COOKIE, "")
        try:
            return load_or_raise(ACCESS, {"reference": reference, "token": token},
                                 InvalidRequest)["token"]
        except InvalidRequest:
            raise NotFound("No request with this reference and token.")

    def _request_action(self, current, reference, call, suffix, sure=None):
        """A button of the request's pages: CSRF, the call, back to the state page."""
        token = self._request_token(current, reference)
        if not current.csrf_ok():
            if sure:
                return self._request_sure(current, reference, sure, status=400, problem="csrf")
            return self._request_page(current, reference, status=400, problem="csrf")
        try:
            call(reference, token)
        except Refused as error:
            return self._request_page(current, reference, status=409, problem=_refusal(error))
        return current.redirect(_home(reference) + suffix)

    def _request_sure(self, current, reference, action, status=200, problem=None):
        request = self.requests.get(reference, self._request_token(current, reference))
        return current.render("request_sure.html.j2", status=status, action=action,
                              problem=problem, **self._request_values(current, request))

    def _request_page(self, current, reference, status=200, problem=None, errors=None,
                      form=None, detail=None):
        request = self.requests.get(reference, self._request_token(current, reference))
        values = self._request_values(current, request)
        if form is not None:  # the boxes as the person ticked them, to fix what was refused
            chosen = forms.availability(form)
            values.update(chosen_sites=chosen["sites"], chosen_times=forms.ticked(chosen))
        args = current.request.args
        return current.render("request.html.j2", status=status, problem=problem, detail=detail,
                              errors=errors or {}, saved=args.get("saved") == "1",
                              confirmed=args.get("confirmed") == "1", **values)

    def _request_values(self, current, request):
        lang = current.lang
        values = {"request": request, "procedure": procedure_view(request["procedure"]),
                  "cells": forms.grid_cells(lang), "sites": SITES,
                  "chosen_sites": request["availability"]["sites"],
                  "chosen_times": forms.ticked(request["availability"]),
                  "offer": None, "confirm_by": None, "permit_expiry": None}
        if request.get("permit_expiry"):
            values["permit_expiry"] = long_date(date.fromisoformat(request["permit_expiry"]), lang)
        if request.get("confirm_by"):
            values["confirm_by"] = self._when(request["confirm_by"], lang)
        offer = request.get("offer")
        if offer:
            start = parse_iso(offer["start"]).astimezone(PARIS)
            site = SITES.get(offer["site"], {"label": offer["site"], "address": "", "map_url": ""})
            values["offer"] = {"date": long_date(start, lang), "time": start.strftime("%H:%M"),
                               "site": site, "deadline": self._when(offer["deadline"], lang)}
        return values

    def _request_form(self, current, procedure, form, errors, status=200, problem=None,
                      key=None, renewed_by=None):
        """key: the form's idempotency key, kept when the form is shown again (a new form, a
        new key). renewed_by: the procedure that renews the permit (problem wrong_procedure)."""
        values = {field: form.get(field, "") for field in
                  forms.REQUEST_FIELDS + ("invitation", "invitation_token")}
        chosen = forms.availability(form)
        return current.render("request_form.html.j2", status=status, procedure=procedure,
                              values=values, errors=errors, problem=problem,
                              cells=forms.grid_cells(current.lang), sites=SITES,
                              chosen_sites=chosen["sites"], chosen_times=forms.ticked(chosen),
                              idempotency_key=key or uuid.uuid4().hex, renewed_by=renewed_by,
                              asks=self.page_settings.required_fields(procedure["code"]))

    @staticmethod
    def _when(iso, lang):
        local = parse_iso(iso).astimezone(PARIS)
        return f"{long_date(local, lang)}, {local:%H:%M}"
