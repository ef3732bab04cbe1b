"""Allocation by request in the staff gateway (issue 12): each procedure's mode (`open`:
booked directly; `requests`: released places allocated to waiting requests), the counts of
open requests, and the audit record of a draw already made. Pages and JSON; counts for all
staff, the switch and the draws for supervisors, checked here server-side. Every switch goes
through the requests service (which sets slots too) and into the audit log.

Nothing here can show the order of a draw before it is made: the requests service only keeps
counts of open requests and the records of draws already made.

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
from gateway.admin import pages
from gateway.admin.auth import Forbidden, allowed
from gateway.admin.schemas import DrawQuerySchema, ModeSwitchSchema
from gateway.admin.supervision import EXPECTED_HERE, SUPERVISOR, route
from gateway.http import read_json
from services.common.errors import DomainError, InvalidRequest, NotFound
from services.common.schemas import load_or_raise

AGENT = "agent"
MODE_SWITCH, DRAW_QUERY = ModeSwitchSchema(), DrawQuerySchema()
OPEN_STATES = ("unconfirmed", "waiting", "offered")  # what requests.counts() counts
# how open requests came in (requests.counts()'s by_verified, services/requests/service.py
# VERIFIED_BY and "none"), in the page's order
VERIFIED_BY = ("permits", "visas", "invitation", "partner", "desk", "none")
RECENT_DRAWS = 20  # the draws a supervisor sees listed (with their ids) on the page
NO_PERMIT = "none"  # requests.counts()'s month for a request without a permit
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre")


def month_label(month):
    """'2026-03' -> 'mars 2026'; the no-permit bucket in words."""
    if month == NO_PERMIT:
        return "sans titre (première demande) / no permit (first application)"
    year, number = month.split("-")
    return f"{MONTHS_FR[int(number) - 1]} {year}"


def months_in_order(by_month):
    """[(month, label, count)] earliest month first, the no-permit bucket last."""
    months = sorted(m for m in by_month if m != NO_PERMIT)
    if NO_PERMIT in by_month:
        months.append(NO_PERMIT)
    return [(m, month_label(m), by_month[m]) for m in months]


class Allocation:
    # uses AdminGateway's `requests` proxy (BoundedRpcProxy("requests"), service.py)

    # -- JSON ------------------------------------------------------------------------------------

    @route("GET", "/api/requests/modes", expected_exceptions=EXPECTED_HERE)
    def api_request_modes(self, request):
        self._api_staff(request, AGENT)
        return {"modes": self.requests.modes()}

    @route("POST", "/api/requests/modes/<procedure>", expected_exceptions=EXPECTED_HERE)
    def api_switch_mode(self, request, procedure):
        # a bearer token, never the cookie, opens the JSON API: another site cannot make a
        # browser send this (the page's form carries a CSRF token instead)
        staff = self._api_staff(request, SUPERVISOR)
        body = read_json(request)
        return self._switch_mode(staff, dict(body, procedure=procedure)
                                 if isinstance(body, dict) else body)

    @route("GET", "/api/requests/counts", expected_exceptions=EXPECTED_HERE)
    def api_request_counts(self, request):
        self._api_staff(request, AGENT)
        return self.requests.counts()

    @route("GET", "/api/requests/draws", expected_exceptions=EXPECTED_HERE)
    def api_draws(self, request):
        self._api_staff(request, SUPERVISOR)
        return {"draws": self.requests.recent_draws(RECENT_DRAWS)}

    @route("GET", "/api/requests/draws/<draw_id>", expected_exceptions=EXPECTED_HERE)
    def api_draw(self, request, draw_id):
        self._api_staff(request, SUPERVISOR)
        return self._draw(draw_id)

    # -- page ------------------------------------------------------------------------------------

    @route("GET", "/requests", expected_exceptions=EXPECTED_HERE)
    def requests_page(self, request):
        def handle(staff):
            draw_id = request.args.get("draw_id")
            if draw_id is None:
                return self._requests_form(staff, switched=request.args.get("switched"))
            if not allowed(staff["role"], SUPERVISOR):
                raise Forbidden()
            try:
                return self._requests_form(staff, draw=self._draw(draw_id), draw_id=draw_id)
            except (InvalidRequest, NotFound) as error:
                return self._requests_form(staff, message=error.message, status=error.status,
                                           errors=error.fields, draw_id=draw_id)
        return self._page(request, AGENT, handle)

    @route("POST", "/requests", expected_exceptions=EXPECTED_HERE)
    def requests_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            try:
                switched = self._switch_mode(staff, {k: request.form.get(k)
                                                     for k in ("procedure", "mode")})
            except InvalidRequest as error:
                return self._requests_form(staff, message=error.message, status=error.status,
                                           errors=error.fields)
            return pages.redirect(f"/requests?switched={switched['procedure']}")
        return self._page(request, SUPERVISOR, handle)

    # -- the work --------------------------------------------------------------------------------

    def _switch_mode(self, staff, body):
        data = load_or_raise(MODE_SWITCH, body, InvalidRequest)
        procedure = data["procedure"]
        before = self.requests.modes().get(procedure)
        modes = self.requests.set_mode(procedure, data["mode"], staff["username"])
        self._record(staff["username"], "request_mode_switched", f"procedure:{procedure}",
                     {"mode": before}, {"mode": modes[procedure]})
        return {"procedure": procedure, "mode": modes[procedure], "before": before,
                "modes": modes}

    def _draw(self, draw_id):
        data = load_or_raise(DRAW_QUERY, {"draw_id": draw_id}, InvalidRequest)
        return self.requests.draw_record(data["draw_id"])

    def _requests_form(self, staff, message=None, status=200, errors=None, draw=None,
                       draw_id=None, switched=None):
        """The page: whatever of modes and counts answered, and why the rest did not."""
        def ask(call):
            nonlocal message, status
            try:
                return call()
            except DomainError as error:  # the service did not answer: say so, show the rest
                message, status = error.message, max(status, error.status)
                return None
        modes = ask(self.requests.modes)
        # draw ids are found here (supervisors only): a draw is made by the service, not staff
        draws = (ask(lambda: self.requests.recent_draws(RECENT_DRAWS))
                 if allowed(staff["role"], SUPERVISOR) else None)
        counts = ask(self.requests.counts) or {"by_procedure": {}, "by_expiry_month": {},
                                                "by_verified": {}}
        by_month = counts["by_expiry_month"]
        months = {code: months_in_order(by_month[code]) for code in pages.PROCEDURES
                  if code in by_month}  # the procedures in the order of every other table
        return self._render(staff, "requests.html.j2", status=status, modes=modes,
                            by_procedure=counts["by_procedure"], months=months,
                            by_verified=counts.get("by_verified") or {}, verified=VERIFIED_BY,
                            states=OPEN_STATES, message=message, errors=errors or {},
                            draw=draw, draw_id=draw_id, draws=draws or [],
                            switched=switched if modes and switched in modes else None)
