"""Supervisors' work in the staff gateway (issue 10): plans, capacity and the secret release
schedule (M1, M2), the fraud review and allow-list, the penalty waiver (M7), notifications,
and password resets. Pages and JSON for each; supervisors only, checked here server-side;
every change goes through the owning service over bounded RPC and into the audit log.

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
import json
import secrets
from datetime import datetime, timedelta, timezone

from gateway.admin import pages
from gateway.admin.accounts import password_problem
from gateway.admin.auth import CsrfRefused, Forbidden, Locked, Unauthenticated
from gateway.admin.schemas import (AllowSchema, BatchDueSchema, DecisionSchema, DesksSchema,
                                   DisallowSchema, FiguresSchema, PasswordSchema, PeriodSchema,
                                   PlanExtraSchema, ResendSchema)
from gateway.http import json_http, read_json
from services.common.attestation_code import parse_code
from services.common.errors import EXPECTED, InvalidRequest, NotFound
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import AttestationSchema, PenaltyWaiverSchema, load_or_raise
from services.common.timeutil import PARIS
from services.common.slot_schemas import OpeningPlanSchema

route = json_http

EXPECTED_HERE = EXPECTED + (Unauthenticated, Forbidden, Locked, CsrfRefused)
SUPERVISOR = "supervisor"
PLAN, PLAN_EXTRA = OpeningPlanSchema(), PlanExtraSchema()
DESKS, BATCH_DUE, FIGURES = DesksSchema(), BatchDueSchema(), FiguresSchema()
DECISION, ALLOW, DISALLOW, PERIOD = DecisionSchema(), AllowSchema(), DisallowSchema(), PeriodSchema()
WAIVER, ATTESTATION, RESEND, PASSWORD = (PenaltyWaiverSchema(), AttestationSchema(), ResendSchema(),
                                         PasswordSchema())


def _plan_from_form(form):
    """A plan as the slots service takes it, from the page's fields (weekdays: checkboxes,
    hours: '08:30-12:00, 14:00-16:00')."""
    values = {k: v for k, v in form.items() if k not in ("csrf", "action", "weekdays")}
    values["weekdays"] = form.getlist("weekdays")
    values["hours"] = [h.strip() for h in (form.get("hours") or "").split(",") if h.strip()]
    values["extra"] = form.get("extra") == "on"
    return values


class Supervision:
    slots = BoundedRpcProxy("slots")
    notify = BoundedRpcProxy("notify")

    # -- plans, capacity, releases: JSON --------------------------------------------------------

    @route("POST", "/api/plans/preview", expected_exceptions=EXPECTED_HERE)
    def api_plan_preview(self, request):
        self._api_staff(request, SUPERVISOR)
        plan, extra = self._plan(read_json(request))
        return self.slots.preview_plan(plan, extra)

    @route("POST", "/api/plans", expected_exceptions=EXPECTED_HERE)
    def api_create_plan(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return 201, self._create_plan(staff, read_json(request))

    @route("POST", "/api/plans/<plan_id>/desks", expected_exceptions=EXPECTED_HERE)
    def api_add_desks(self, request, plan_id):
        staff = self._api_staff(request, SUPERVISOR)
        return self._add_desks(staff, dict(read_json(request) or {}, plan_id=plan_id))

    @route("GET", "/api/releases/schedule", expected_exceptions=EXPECTED_HERE)
    def api_schedule(self, request):
        self._api_staff(request, SUPERVISOR)
        return self._schedule(request.args.to_dict())

    @route("POST", "/api/releases/<batch_id>/reschedule", expected_exceptions=EXPECTED_HERE)
    def api_reschedule(self, request, batch_id):
        staff = self._api_staff(request, SUPERVISOR)
        return self._reschedule(staff, dict(read_json(request) or {}, batch_id=batch_id))

    @route("GET", "/api/figures", expected_exceptions=EXPECTED_HERE)
    def api_figures(self, request):
        self._api_staff(request, SUPERVISOR)
        return self._figures(request.args.to_dict())

    # -- fraud review: JSON ---------------------------------------------------------------------

    @route("GET", "/api/review/cases", expected_exceptions=EXPECTED_HERE)
    def api_cases(self, request):
        self._api_staff(request, SUPERVISOR)
        return {"cases": self._cases(request.args.get("state", "open"))}

    @route("POST", "/api/review/decide", expected_exceptions=EXPECTED_HERE)
    def api_decide(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return self._decide(staff, read_json(request))

    @route("GET", "/api/allow-list", expected_exceptions=EXPECTED_HERE)
    def api_allow_list(self, request):
        self._api_staff(request, SUPERVISOR)
        return {"entries": self.fraud.allow_list()}

    @route("POST", "/api/allow-list", expected_exceptions=EXPECTED_HERE)
    def api_allow(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return 201, self._allow(staff, read_json(request))

    @route("POST", "/api/allow-list/remove", expected_exceptions=EXPECTED_HERE)
    def api_disallow(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return self._disallow(staff, read_json(request))

    @route("GET", "/api/fraud/counts", expected_exceptions=EXPECTED_HERE)
    def api_fraud_counts(self, request):
        self._api_staff(request, SUPERVISOR)
        return self._counts(request.args.to_dict())

    # -- waiver, notifications, passwords: JSON -------------------------------------------------

    @route("POST", "/api/waiver", expected_exceptions=EXPECTED_HERE)
    def api_waiver(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return self._waiver(staff, read_json(request))

    @route("POST", "/api/attestations/verify", expected_exceptions=EXPECTED_HERE)
    def api_verify_attestation(self, request):
        self._api_staff(request, SUPERVISOR)
        return self.booking.verify_attestation(read_json(request))

    @route("GET", "/api/notifications", expected_exceptions=EXPECTED_HERE)
    def api_notifications(self, request):
        self._api_staff(request, SUPERVISOR)
        return self._notifications()

    @route("POST", "/api/notifications/resend", expected_exceptions=EXPECTED_HERE)
    def api_resend(self, request):
        staff = self._api_staff(request, SUPERVISOR)
        return self._resend(staff, read_json(request))

    @route("POST", "/api/accounts/<username>/reset-password", expected_exceptions=EXPECTED_HERE)
    def api_reset_password(self, request, username):
        staff = self._api_staff(request, SUPERVISOR)
        return self._reset_password(staff, username)

    @route("POST", "/api/password", expected_exceptions=EXPECTED_HERE)
    def api_change_password(self, request):
        staff = self._api_staff(request, "agent", changing_password=True)
        return self._change_password(staff, read_json(request))

    # -- pages ----------------------------------------------------------------------------------

    @route("GET", "/plans", expected_exceptions=EXPECTED_HERE)
    def plans_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._plans_form(staff))

    @route("POST", "/plans", expected_exceptions=EXPECTED_HERE)
    def plans_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            action = request.form.get("action")
            values = _plan_from_form(request.form)
            try:
                if action == "desks":
                    done = self._add_desks(staff, {k: request.form.get(k) or None for k in
                                                   ("plan_id", "desks", "date_from", "date_to")})
                    return self._plans_form(staff, values, added=done)
                plan, extra = self._plan(values)
                if action == "create":
                    created = self._create_plan(staff, values)
                    return self._plans_form(staff, values, created=created)
                return self._plans_form(staff, values, preview=self.slots.preview_plan(plan, extra))
            except InvalidRequest as error:
                return self._plans_form(staff, values, errors=error.fields, message=error.message,
                                        status=400)
            except NotFound as error:
                return self._plans_form(staff, values, errors=error.fields, message=error.message,
                                        status=404)
        return self._page(request, SUPERVISOR, handle)

    @route("GET", "/releases", expected_exceptions=EXPECTED_HERE)
    def releases_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._releases_form(
            staff, request.args.to_dict()))

    @route("POST", "/releases", expected_exceptions=EXPECTED_HERE)
    def releases_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            form = {k: v for k, v in request.form.items() if k != "csrf"}
            try:
                # the page's date-time field is Paris wall time without an offset
                local = datetime.fromisoformat(form.get("due") or "")
                due = local.replace(tzinfo=PARIS) if local.tzinfo is None else local
                self._reschedule(staff, {"batch_id": form.get("batch_id"), "due": due.isoformat()})
            except ValueError:
                return self._releases_form(staff, {}, message="Date et heure invalides.",
                                           status=400)
            except (InvalidRequest, NotFound) as error:
                return self._releases_form(staff, {}, message=error.message, status=error.status)
            return pages.redirect("/releases?moved=" + form["batch_id"])
        return self._page(request, SUPERVISOR, handle)

    @route("GET", "/review", expected_exceptions=EXPECTED_HERE)
    def review_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._review_form(
            staff, request.args.to_dict()))

    @route("POST", "/review", expected_exceptions=EXPECTED_HERE)
    def review_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            form = {k: v for k, v in request.form.items() if k != "csrf"}
            action = form.pop("action", "")
            try:
                if action in ("allow", "disallow"):
                    (self._allow if action == "allow" else self._disallow)(staff, form)
                else:
                    self._decide(staff, dict(form, decision=action))
            except (InvalidRequest, NotFound) as error:
                return self._review_form(staff, {}, message=error.message, status=error.status,
                                         errors=error.fields)
            return pages.redirect("/review?done=1")
        return self._page(request, SUPERVISOR, handle)

    @route("GET", "/waiver", expected_exceptions=EXPECTED_HERE)
    def waiver_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._render(
            staff, "waiver.html.j2", values={}, errors={}, message=None, answer=None,
            verified=None))

    @route("POST", "/waiver", expected_exceptions=EXPECTED_HERE)
    def waiver_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            values = {k: v for k, v in request.form.items() if k != "csrf"}
            answer = verified = None
            try:
                if values.get("action") == "verify":
                    verified = self._verify_text(values.get("attestation", ""))
                else:
                    answer = self._waiver(staff, {k: values.get(k) or None for k in
                                                  ("foreigner_number", "email", "expiry", "filing")})
            except InvalidRequest as error:
                return self._render(staff, "waiver.html.j2", status=400, values=values,
                                    errors=error.fields, message=error.message, answer=None,
                                    verified=None)
            return self._render(staff, "waiver.html.j2", values=values, errors={}, message=None,
                                answer=answer, verified=verified)
        return self._page(request, SUPERVISOR, handle)

    @route("GET", "/notifications", expected_exceptions=EXPECTED_HERE)
    def notifications_page(self, request):
        def handle(staff):
            found = self._notifications()  # its `status` is not _render's HTTP status
            return self._render(staff, "notifications.html.j2", resent=request.args.get("resent"),
                                outbox=found["status"], failed=found["failed"])
        return self._page(request, SUPERVISOR, handle)

    @route("POST", "/notifications", expected_exceptions=EXPECTED_HERE)
    def notifications_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            self._resend(staff, {"key": request.form.get("key")})
            return pages.redirect("/notifications?resent=1")
        return self._page(request, SUPERVISOR, handle)

    @route("POST", "/accounts/reset", expected_exceptions=EXPECTED_HERE)
    def reset_password_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            try:
                reset = self._reset_password(staff, request.form.get("username", ""))
            except (InvalidRequest, NotFound) as error:
                return self._accounts_form(staff, None, error.fields, error.message, error.status)
            return self._accounts_form(staff, reset=reset)
        return self._page(request, SUPERVISOR, handle)

    @route("GET", "/password", expected_exceptions=EXPECTED_HERE)
    def password_page(self, request):
        return self._page(request, "agent", lambda staff: self._render(
            staff, "password.html.j2", errors={}, message=None), changing_password=True)

    @route("POST", "/password", expected_exceptions=EXPECTED_HERE)
    def password_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            try:
                self._change_password(staff, {"password": request.form.get("password"),
                                              "again": request.form.get("again")})
            except InvalidRequest as error:
                return self._render(staff, "password.html.j2", status=400, errors=error.fields,
                                    message=error.message)
            return pages.redirect("/day")
        return self._page(request, "agent", handle, changing_password=True)

    # -- the work -------------------------------------------------------------------------------

    def _plan(self, body):
        """(plan as the slots service takes it, extra?) once the gateway checked it."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", {"_schema": ["Not an object."]})
        plan = {k: v for k, v in body.items() if k != "extra"}
        extra = load_or_raise(PLAN_EXTRA, {"extra": body.get("extra", False)}, InvalidRequest)["extra"]
        load_or_raise(PLAN, plan, InvalidRequest)  # the fields and reasons, before any RPC
        return plan, extra

    def _create_plan(self, staff, body):
        plan, extra = self._plan(body)
        created = (self.slots.open_extra_plan if extra else self.slots.create_from_plan)(plan)
        self._record(staff["username"], "extra_plan_opened" if extra else "plan_created",
                     f"plan:{created['plan_id']}", None,
                     dict(created, site=plan["site"], procedure=plan["procedure"]))
        return created

    def _add_desks(self, staff, body):
        data = load_or_raise(DESKS, body, InvalidRequest)
        # a key per HTTP request: added once however often RabbitMQ delivers the call
        done = self.slots.add_desks(data["plan_id"], data["desks"],
                                    data["date_from"] and data["date_from"].isoformat(),
                                    data["date_to"] and data["date_to"].isoformat(),
                                    idempotency_key=secrets.token_hex(16))
        self._record(staff["username"], "desks_added", f"plan:{data['plan_id']}", None, done)
        return done

    def _schedule(self, args):
        data = load_or_raise(FIGURES, args, InvalidRequest)
        return self.slots.schedule_for(data["procedure"], data["plan_id"],
                                       data["include_released"], data["limit"])

    def _reschedule(self, staff, body):
        data = load_or_raise(BATCH_DUE, body, InvalidRequest)
        before = self.slots.schedule_for(plan_id=None, include_released=True, limit=1000)
        was = next((b.get("due") for b in before["batches"] if b["id"] == data["batch_id"]), None)
        moved = self.slots.reschedule(data["batch_id"], data["due"].isoformat(), staff["username"])
        self._record(staff["username"], "release_rescheduled", f"release:{data['batch_id']}",
                     {"due": was}, {"due": moved.get("due")})
        return moved

    def _figures(self, args):
        data = load_or_raise(FIGURES, args, InvalidRequest)
        return dict(self.slots.capacity(data["procedure"], data["site"]),
                    **self.slots.last_releases(data["procedure"], data["site"], data["limit"]))

    def _cases(self, state):
        if state not in ("open", "decided"):
            raise InvalidRequest("Some fields are not valid.", {"state": ["open or decided."]})
        cases = self.fraud.cases(state, 100)
        references = [b["reference"] for c in cases for b in c["bookings"]]
        statuses = self.booking.statuses(references) if references else {}
        for case in cases:
            for booking in case["bookings"]:
                booking["status"] = (statuses.get(booking["reference"]) or {}).get("status")
        return cases

    def _decide(self, staff, body):
        """A whole case (`case_id`) or one booking of it (`reference`): cancel or clear."""
        data = load_or_raise(DECISION, body, InvalidRequest)
        if data["case_id"]:
            done = self.fraud.decide_case(data["case_id"], data["decision"], staff["username"],
                                          data["note"])
            obj, after = f"review_case:{data['case_id']}", {"state": done.get("state")}
        else:
            done = self.fraud.decide(data["reference"], data["decision"], staff["username"],
                                     data["note"])
            obj, after = f"booking:{data['reference']}", {"review": done.get("state")}
        self._record(staff["username"], f"review_{data['decision']}", obj, {"review": "open"},
                     dict(after, decision=data["decision"], note=data["note"]))
        return done

    def _allow(self, staff, body):
        data = load_or_raise(ALLOW, body, InvalidRequest)
        until = data["until"]
        if until is not None:  # a day on the page: the exemption holds to its end, Paris time
            until = datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=PARIS)
        entry = self.fraud.allow(data["kind"], data["value"], staff["username"], data["why"],
                                 until and until.isoformat())
        # the value may be an e-mail: the audit names the entry by kind, not by the address
        self._record(staff["username"], "allow_list_added", f"allow:{data['kind']}", None,
                     {"why": data["why"], "until": entry.get("until")})
        return entry

    def _disallow(self, staff, body):
        data = load_or_raise(DISALLOW, body, InvalidRequest)
        removed = self.fraud.disallow(data["kind"], data["value"], staff["username"])
        self._record(staff["username"], "allow_list_removed", f"allow:{data['kind']}",
                     {"why": removed.get("why"), "until": removed.get("until")}, None)
        return removed

    def _counts(self, args):
        data = load_or_raise(PERIOD, args, InvalidRequest)
        since = datetime.combine(data["since"], datetime.min.time(), tzinfo=PARIS)
        until = datetime.combine(data["until"] + timedelta(days=1), datetime.min.time(), tzinfo=PARIS)
        return {"since": data["since"].isoformat(), "until": data["until"].isoformat(),
                "counts": self.fraud.counts(since.isoformat(), until.isoformat())}

    def _waiver(self, staff, body):
        data = load_or_raise(WAIVER, body, InvalidRequest)
        # the same form checked here gives the page its field errors; booking answers
        answer = self.booking.penalty_waiver(data["foreigner_number"], data["email"],
                                             data["expiry"].isoformat(), data["filing"].isoformat())
        evidence = answer["evidence"]
        # who was asked about stays out of the log: the answer and the dates only
        self._record(staff["username"], "waiver_answered", "waiver", None,
                     {"waived": answer["waived"], "expiry": answer["expiry"],
                      "filing": answer["filing"],
                      "attempts": len(evidence["attempts"]) + len(evidence["after_expiry"])})
        return answer

    def _verify_text(self, text):
        """The check of an attestation from its verification code (typed, or its QR scanned:
        the verify page's address), or from the JSON document as downloaded from the API."""
        if not text.lstrip().startswith("{"):
            code = parse_code(text)
            if code is None:
                raise InvalidRequest(
                    "Code de vérification illisible.",
                    {"attestation": ["Un code compte 16 lettres et chiffres (XXXX-XXXX-XXXX-XXXX) ; "
                                     "scannez le QR code ou collez l'attestation JSON."]})
            return self.booking.attestation_by_code(code)
        try:
            document = json.loads(text)
        except ValueError:
            raise InvalidRequest("Not an attestation (JSON expected).",
                                 {"attestation": ["Paste the downloaded attestation as is."]})
        checked = self.booking.verify_attestation(load_or_raise(ATTESTATION, document, InvalidRequest))
        return dict(checked, found=True, attestation=document["attestation"])

    def _notifications(self):
        return {"status": self.notify.outbox_status(), "failed": self.notify.failed_messages(50)}

    def _resend(self, staff, body):
        data = load_or_raise(RESEND, body, InvalidRequest)
        done = self.notify.resend(data["key"], idempotency_key=secrets.token_hex(16))
        self._record(staff["username"], "message_resent", f"message:{data['key']}", None,
                     {"state": done.get("state")})
        return done

    def _reset_password(self, staff, username):
        account = self.store.account(username) if isinstance(username, str) else None
        if account is None:
            raise NotFound("No such account.")
        if username == staff["username"]:
            raise InvalidRequest("Change your own password on the password page.",
                                 {"username": ["Your own account."]})
        temporary = secrets.token_urlsafe(12)  # 16 characters, shown once to the supervisor
        self.store.reset_password(username, self.settings.password_hasher.hash(temporary))
        self.store.end_sessions_of(username)
        self._record(staff["username"], "password_reset", f"account:{username}",
                     {"must_change_password": bool(account.get("must_change_password"))},
                     {"must_change_password": True})
        return {"id": username, "temporary_password": temporary, "must_change_password": True}

    def _change_password(self, staff, body):
        data = load_or_raise(PASSWORD, body, InvalidRequest)
        problem = password_problem(data["password"])
        if problem:
            raise InvalidRequest("Some fields are not valid.", {"password": [problem]})
        if data.get("again") is not None and data["again"] != data["password"]:
            raise InvalidRequest("The two passwords differ.", {"again": ["Differs."]})
        self.store.set_new_password(staff["username"], self.settings.password_hasher.hash(data["password"]),
                                    staff["_id"])
        self._record(staff["username"], "password_changed", f"account:{staff['username']}",
                     None, {"must_change_password": False})
        return {"password_changed": True}

    # -- page forms -----------------------------------------------------------------------------

    def _plans_form(self, staff, values=None, errors=None, message=None, status=200, preview=None,
                    created=None, added=None):
        figures = self.slots.capacity()
        releases = self.slots.last_releases(limit=10)
        return self._render(staff, "plans.html.j2", status=status,
                            values=values or {"weekdays": ["monday", "tuesday", "thursday", "friday"],
                                              "hours": ["08:30-12:00"], "slot_minutes": "20",
                                              "desks": "2"},
                            errors=errors or {}, message=message, preview=preview, created=created,
                            added=added, figures=figures["figures"], releases=releases["releases"])

    def _releases_form(self, staff, args, message=None, status=200):
        try:
            schedule = self._schedule({k: v for k, v in args.items() if k != "moved"})
        except InvalidRequest as error:
            schedule, message, status = {"batches": []}, error.message, 400
        return self._render(staff, "releases.html.j2", status=status, batches=schedule["batches"],
                            query=args, message=message, moved=args.get("moved"),
                            now=datetime.now(timezone.utc))

    def _review_form(self, staff, args, message=None, status=200, errors=None):
        state = args.get("state", "open")
        today = datetime.now(PARIS).date()
        period = {"since": args.get("since") or (today - timedelta(days=30)).isoformat(),
                  "until": args.get("until") or today.isoformat()}
        try:
            counts = self._counts(period)
        except InvalidRequest as error:
            counts, message, status = {"counts": {}}, error.message, 400
        return self._render(staff, "review.html.j2", status=status, cases=self._cases(
            state if state in ("open", "decided") else "open"), allow=self.fraud.allow_list(),
            counts=counts["counts"], period=period, message=message, errors=errors or {},
            done=args.get("done"), state=state)
