"""Staff gateway (port 8001, internal): the counter's pages and the JSON API behind them.

It owns staff accounts, sessions and the audit log (the `admin` database); everything else it
asks of the services over bounded RPC, so a service that does not answer gives a 503 page or
JSON, never a hang. Every endpoint checks the session and the role here, server-side. The JSON
API takes `Authorization: Bearer`, the pages the session cookie (and a CSRF token on every
form): a cookie never authorises an API call, so another site cannot make a browser call it.
"""
import time
import uuid
from urllib.parse import urlencode
from datetime import date, datetime, time as clock_time, timedelta, timezone

from gateway.admin import pages
from gateway.admin.monitoring import BusMonitor
from gateway.readiness import gather, ready_answer
from gateway.admin.accounts import AccountLocked, LoginFailed, authenticate, new_account
from gateway.admin.auth import (COOKIE, LOGIN_CSRF_COOKIE, AdminSettings, CsrfRefused, Forbidden,
                                Locked, Unauthenticated, allowed, audit_entry, session_key)
from gateway.admin.schemas import (AccountSchema, AttendanceBodySchema, AuditQuerySchema,
                                   CheckInBodySchema, DayQuerySchema, DaySearchSchema, LoginSchema,
                                   UndoBodySchema, WalkInBodySchema)
from gateway.admin.store import AccountExists, AdminStore
from gateway.admin import allocation, counter, desk, partners, register, supervision
from gateway.csrf import new_binding
from gateway.http import MAX_BODY_BYTES, json_http, json_response, read_json
from services.common.clock import Clock
from services.common.logs import CallIdLogging
from services.common.metrics import Metrics
from services.common.errors import EXPECTED, DomainError, InvalidRequest, NotFound, Refused
from services.common.mongo import MongoStore
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import load_or_raise
from services.common.timers import config_timer
from services.common.timeutil import PARIS, iso_utc

EXPECTED_HERE = EXPECTED + (Unauthenticated, Forbidden, Locked, CsrfRefused)  # and subclasses
LOGIN, ACCOUNT, DAY_QUERY = LoginSchema(), AccountSchema(), DayQuerySchema()
CHECK_IN, WALK_IN, AUDIT_QUERY = CheckInBodySchema(), WalkInBodySchema(), AuditQuerySchema()
UNDO, ATTENDANCE, DAY_SEARCH = UndoBodySchema(), AttendanceBodySchema(), DaySearchSchema()
FIELDS_FR = "Vérifiez les champs signalés."  # the counter's pages say it in French
INVALID_FIELDS = "Some fields are not valid."  # load_or_raise's message, for the JSON API
# a supervisor's lock lasts until a supervisor unlocks (epoch seconds far ahead: a number, not inf)
LOCKED_FOR_GOOD = 32503680000  # 3000-01-01
MONITORED = ("slots", "booking", "fraud", "notify")
FIGURE_DAYS = 28  # the monitoring page's domain figures cover the last four weeks

route = json_http


def _iso_ts(ts):
    return iso_utc(datetime.fromtimestamp(ts, timezone.utc)) if ts else None


def _account_view(account):
    locked_until = account.get("locked_until_ts", 0)
    locked = locked_until > time.time()
    return {"id": account["_id"], "role": account["role"], "site": account["site"],
            "locked": locked, "locked_until": _iso_ts(locked_until) if locked else None,
            "must_change_password": bool(account.get("must_change_password")),
            "created_at": _iso_ts(account.get("created_ts"))}


def _audit_view(entry):
    # str(): entries written before audit_entry() gave every one a uuid carry an ObjectId
    return {"id": str(entry["_id"]), "who": entry["who"], "action": entry["action"],
            "object": entry["object"], "before": entry.get("before"), "after": entry.get("after"),
            "at": _iso_ts(entry["at_ts"])}


def _back_to_day(form, done):
    """The day view the form was sent from (its site and date only: no name in the URL)."""
    query = {k: form[k] for k in ("site", "date") if form.get(k)}
    return "/day?" + urlencode(dict(query, done=done))


def _form(request):
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise InvalidRequest("The form is too large.", {"_body": ["At most 16 KiB."]})
    return {k: v for k, v in request.form.items() if k != "csrf"}


class PasswordChangeRequired(Forbidden):
    code = "password_change_required"
    default_message = ("Choisissez d'abord un nouveau mot de passe (POST /api/password). / "
                       "Set a new password first.")


# the module, not the class: `nameko run` takes every class with entrypoints in this module
# for a service, and the mixin alone has no name
class AdminGateway(supervision.Supervision, allocation.Allocation, desk.Desk, partners.Partners,
                   register.RegisterAdmin):
    name = "admin_gateway"

    store = MongoStore("admin", AdminStore)
    booking = BoundedRpcProxy("booking")
    fraud = BoundedRpcProxy("fraud")
    requests = BoundedRpcProxy("requests")  # allocation by request (allocation.py)
    register_service = BoundedRpcProxy("register")  # the permits' register (register.py)
    # an import reads and writes the whole register: bounded by its own, longer timeout
    register_import = BoundedRpcProxy("register", timeout_key="REGISTER_IMPORT_TIMEOUT")
    settings = AdminSettings()
    clock = Clock()
    # monitoring: the bus, the services' health (short bound) and their domain figures
    bus = BusMonitor()
    metrics = Metrics()
    log_context = CallIdLogging()
    slots = BoundedRpcProxy("slots")
    notify = BoundedRpcProxy("notify")
    slots_health = BoundedRpcProxy("slots", timeout_key="HEALTH_RPC_TIMEOUT")
    booking_health = BoundedRpcProxy("booking", timeout_key="HEALTH_RPC_TIMEOUT")
    fraud_health = BoundedRpcProxy("fraud", timeout_key="HEALTH_RPC_TIMEOUT")
    notify_health = BoundedRpcProxy("notify", timeout_key="HEALTH_RPC_TIMEOUT")
    requests_health = BoundedRpcProxy("requests", timeout_key="HEALTH_RPC_TIMEOUT")
    register_health = BoundedRpcProxy("register", timeout_key="HEALTH_RPC_TIMEOUT")

    # -- public bits ---------------------------------------------------------------------------

    @route("GET", "/health", expected_exceptions=EXPECTED_HERE)
    def health(self, request):
        return {"status": "ok"}

    @route("GET", "/ready", expected_exceptions=EXPECTED_HERE)
    def ready(self, request):
        """200 when the broker and the services the counter calls answer, else 503."""
        status, body = ready_answer(gather({"booking": self.booking_health,
                                            "fraud": self.fraud_health}))
        return status, body

    @route("GET", "/metrics", expected_exceptions=EXPECTED_HERE)
    def metrics_page(self, request):
        """Prometheus text format; the staff gateway is internal (127.0.0.1 by default)."""
        self.metrics.set_health(self._health())
        return self.metrics.response()

    @config_timer("MONITOR_SAMPLE_SECONDS")
    def sample_bus(self):
        """Depths sampled between page views, for the "depth keeps growing" alarm."""
        self.bus.snapshot()

    @route("GET", "/static/admin.css", expected_exceptions=EXPECTED_HERE)
    def stylesheet(self, request):
        return pages.css()

    # -- JSON API ------------------------------------------------------------------------------

    @route("POST", "/api/login", expected_exceptions=EXPECTED_HERE)
    def api_login(self, request):
        data = load_or_raise(LOGIN, read_json(request), InvalidRequest)
        signed, record = self._log_in(data["username"], data["password"])
        return 201, {"token": signed, "expires_at": _iso_ts(record["expires_ts"]),
                     "username": record["username"], "role": record["role"], "site": record["site"],
                     "must_change_password": record["must_change_password"]}

    @route("POST", "/api/logout", expected_exceptions=EXPECTED_HERE)
    def api_logout(self, request):
        staff = self._api_staff(request, "agent")
        self._log_out(staff)
        return {"logged_out": True}

    @route("GET", "/api/me", expected_exceptions=EXPECTED_HERE)
    def api_me(self, request):
        staff = self._api_staff(request, "agent")
        return {"username": staff["username"], "role": staff["role"], "site": staff["site"]}

    @route("GET", "/api/day", expected_exceptions=EXPECTED_HERE)
    def api_day(self, request):
        staff = self._api_staff(request, "agent")
        return self._day(staff, request.args.to_dict())

    @route("POST", "/api/checkin", expected_exceptions=EXPECTED_HERE)
    def api_check_in(self, request):
        staff = self._api_staff(request, "agent")
        outcome = self._check_in(staff, read_json(request))
        if outcome["result"] == "refused":
            return json_response(409, dict(outcome, error="check_in_refused", fields={}))
        if outcome["result"] == "mismatch":  # nothing changed: look again, then decide
            return json_response(409, dict(outcome, error="names_differ", fields={}))
        return outcome

    @route("POST", "/api/bookings/<reference>/undo-cancellation", expected_exceptions=EXPECTED_HERE)
    def api_undo(self, request, reference):
        staff = self._api_staff(request, "supervisor")
        return self._undo(staff, reference, read_json(request))

    @route("POST", "/api/bookings/<reference>/attendance", expected_exceptions=EXPECTED_HERE)
    def api_attendance(self, request, reference):
        staff = self._api_staff(request, "agent")
        return self._attendance(staff, reference, read_json(request))

    @route("POST", "/api/walk-ins", expected_exceptions=EXPECTED_HERE)
    def api_walk_in(self, request):
        staff = self._api_staff(request, "agent")
        return 201, self._walk_in(staff, read_json(request))

    @route("GET", "/api/accounts", expected_exceptions=EXPECTED_HERE)
    def api_accounts(self, request):
        self._api_staff(request, "supervisor")
        return {"accounts": [_account_view(a) for a in self.store.all_accounts()]}

    @route("POST", "/api/accounts", expected_exceptions=EXPECTED_HERE)
    def api_create_account(self, request):
        staff = self._api_staff(request, "supervisor")
        return 201, self._create_account(staff, read_json(request))

    @route("POST", "/api/accounts/<username>/<action>", expected_exceptions=EXPECTED_HERE)
    def api_lock(self, request, username, action):
        staff = self._api_staff(request, "supervisor")
        return self._lock(staff, username, action)

    @route("GET", "/api/audit", expected_exceptions=EXPECTED_HERE)
    def api_audit(self, request):
        self._api_staff(request, "supervisor")
        return {"entries": self._audit(request.args.to_dict())}

    @route("GET", "/api/monitoring", expected_exceptions=EXPECTED_HERE)
    def api_monitoring(self, request):
        self._api_staff(request, "supervisor")
        return self._monitoring()

    # -- pages ---------------------------------------------------------------------------------

    @route("GET", "/monitoring", expected_exceptions=EXPECTED_HERE)
    def monitoring_page(self, request):
        return self._page(request, "supervisor", lambda staff: self._render(
            staff, "monitoring.html.j2", view=self._monitoring()))

    @route("GET", "/", expected_exceptions=EXPECTED_HERE)
    def home(self, request):
        return pages.redirect("/day")

    @route("GET", "/login", expected_exceptions=EXPECTED_HERE)
    def login_page(self, request):
        return self._login_form(request)

    @route("POST", "/login", expected_exceptions=EXPECTED_HERE)
    def login_submit(self, request):
        binding = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not self.settings.csrf.valid(request.form.get("csrf"), binding):
            return self._login_form(request, CsrfRefused.default_message, 403)
        try:
            data = load_or_raise(LOGIN, _form(request), InvalidRequest)
            signed, record = self._log_in(data["username"], data["password"])
        except DomainError as error:
            return self._login_form(request, error.message, error.status)
        response = pages.redirect("/password" if record["must_change_password"] else "/day")
        self.settings.cookie(response, signed)
        return response

    @route("POST", "/logout", expected_exceptions=EXPECTED_HERE)
    def logout_page(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            self._log_out(staff)
            response = pages.redirect("/login")
            self.settings.clear_cookie(response)
            return response
        return self._page(request, "agent", handle)

    @route("GET", "/day", expected_exceptions=EXPECTED_HERE)
    def day_page(self, request):
        return self._page(request, "agent", lambda staff: self._day_form(
            staff, request.args.to_dict(), done=request.args.get("done")))

    @route("POST", "/day/attendance", expected_exceptions=EXPECTED_HERE)
    def day_attendance_submit(self, request):
        return self._day_action(request, "agent", "marked", lambda staff, form: self._attendance(
            staff, form.get("reference"), {"state": form.get("state")}))

    @route("POST", "/day/undo", expected_exceptions=EXPECTED_HERE)
    def day_undo_submit(self, request):
        return self._day_action(request, "supervisor", "restored", lambda staff, form: self._undo(
            staff, form.get("reference"), {"why": form.get("why")}))

    def _day_action(self, request, role, done, act):
        """A form of the day view: CSRF, the action, then back to the same day; or that day
        again with the reason (in French)."""
        def handle(staff):
            self._check_csrf(request, staff)
            form = _form(request)
            try:
                act(staff, form)
            except (InvalidRequest, Refused, NotFound) as error:
                message = FIELDS_FR if error.message == INVALID_FIELDS else error.message
                return self._day_form(staff, form, message=message, status=error.status)
            return pages.redirect(_back_to_day(form, done))
        return self._page(request, role, handle)

    @route("GET", "/checkin", expected_exceptions=EXPECTED_HERE)
    def check_in_page(self, request):
        # from the day view's "Arrivée" link: the reference is typed already
        values = {"reference": request.args.get("reference", "")[:20]}
        return self._page(request, "agent", lambda staff: self._render(
            staff, "checkin.html.j2", values=values, errors={}, message=None, outcome=None,
            focus="family_name"))

    @route("POST", "/checkin", expected_exceptions=EXPECTED_HERE)
    def check_in_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            values = _form(request)
            if values.get("code") and not (values.get("family_name") or "").strip():
                # the code was scanned before the names were typed: now the names
                return self._render(staff, "checkin.html.j2", values=values, errors={},
                                    message="Saisissez le nom lu sur la pièce d'identité.",
                                    outcome=None, focus="family_name")
            try:
                outcome = self._check_in(staff, values)
            except InvalidRequest as error:
                message = FIELDS_FR if error.message == INVALID_FIELDS else error.message
                return self._render(staff, "checkin.html.j2", status=400, values=values,
                                    errors=error.fields, message=message, outcome=None,
                                    focus="family_name")
            # one page per arrival: the outcome above, the empty form for the next person
            # below (after a mismatch, the same person's names and both decisions)
            again = values if outcome["result"] == "mismatch" else {}
            return self._render(staff, "checkin.html.j2", values=again, errors={},
                                message=None, outcome=outcome, focus="family_name",
                                status=409 if outcome["result"] in ("refused", "mismatch") else 200)
        return self._page(request, "agent", handle)

    @route("GET", "/walk-in", expected_exceptions=EXPECTED_HERE)
    def walk_in_page(self, request):
        return self._page(request, "agent", lambda staff: self._render(
            staff, "walk_in.html.j2", values={"procedure": "renewal_10y"}, errors={},
            message=None, rule=self.booking.walk_in_rule()["text"], created=None))

    @route("POST", "/walk-in", expected_exceptions=EXPECTED_HERE)
    def walk_in_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            values = _form(request)
            try:
                created = self._walk_in(staff, values)
            except DomainError as error:
                if error.status == 503:
                    raise
                message = FIELDS_FR if error.message == INVALID_FIELDS else error.message
                return self._render(staff, "walk_in.html.j2", status=error.status, values=values,
                                    errors=error.fields, message=message,
                                    rule=self.booking.walk_in_rule()["text"], created=None)
            return self._render(staff, "walk_in.html.j2", values={"procedure": "renewal_10y"},
                                errors={}, message=None, created=created,
                                rule=self.booking.walk_in_rule()["text"])
        return self._page(request, "agent", handle)

    @route("GET", "/audit", expected_exceptions=EXPECTED_HERE)
    def audit_page(self, request):
        def handle(staff):
            query = request.args.to_dict()
            return self._render(staff, "audit.html.j2", entries=self._audit(query), query=query)
        return self._page(request, "supervisor", handle)

    @route("GET", "/accounts", expected_exceptions=EXPECTED_HERE)
    def accounts_page(self, request):
        return self._page(request, "supervisor", lambda staff: self._accounts_form(staff))

    @route("POST", "/accounts", expected_exceptions=EXPECTED_HERE)
    def accounts_submit(self, request):
        def handle(staff):
            self._check_csrf(request, staff)
            values = _form(request)
            try:
                if values.get("action") in ("lock", "unlock"):
                    self._lock(staff, values.get("username", ""), values["action"])
                else:
                    values.pop("action", None)
                    self._create_account(staff, values)
            except (InvalidRequest, NotFound) as error:
                values.pop("password", None)
                return self._accounts_form(staff, values, error.fields, error.message, error.status)
            return pages.redirect("/accounts")
        return self._page(request, "supervisor", handle)

    # -- the work, shared by pages and API -------------------------------------------------------

    def _log_in(self, username, password):
        settings, now_ts = self.settings, time.time()
        try:
            account = authenticate(self.store, username, password, now_ts,
                                   settings.max_failures, settings.lock_seconds,
                                   settings.password_hasher)
        except LoginFailed as failed:
            # an unknown name may be a password typed in the wrong field: not written down
            who = username if failed.known else "unknown"
            self._record(who, "login_failed", f"account:{who}")
            raise Unauthenticated("Identifiant ou mot de passe incorrect. / Wrong username or password.")
        except AccountLocked as locked:
            self._record(username, "login_refused_locked", f"account:{username}",
                         after={"locked_until": _iso_ts(locked.until_ts)})
            raise Locked()
        signed, record = settings.new_session(account, now_ts)
        # after a reset, the session only lets its holder set a new password
        record["must_change_password"] = bool(account.get("must_change_password"))
        self.store.add_session(record)
        self._record(account["_id"], "login", f"account:{account['_id']}")
        return signed, record

    def _log_out(self, staff):
        self.store.end_session(staff["_id"])
        self._record(staff["username"], "logout", f"account:{staff['username']}")

    def _day(self, staff, args):
        query = load_or_raise(DAY_QUERY, args, InvalidRequest)
        site = query["site"] or staff["site"]
        if site != staff["site"] and not allowed(staff["role"], "supervisor"):
            raise Forbidden("Agents see the bookings of their own site only. / "
                            "Un agent ne voit que son site.")
        day = query["date"] or self._today()
        return self.booking.day_view(site, day.isoformat())

    def _check_in(self, staff, body):
        data = load_or_raise(CHECK_IN, body, InvalidRequest)
        outcome = self.booking.check_in(dict(
            data, birth_date=data["birth_date"] and data["birth_date"].isoformat(),
            site=staff["site"], day=self._today().isoformat(), agent=staff["username"]))
        reference = outcome["booking"]["id"]
        how = {"by": "code" if data["code"] else "reference"}  # no name, no birth date here
        if outcome["result"] == "checked_in":
            self._record(staff["username"], "check_in", f"booking:{reference}",
                         {"status": "active"}, dict(how, status="checked_in"))
        elif outcome["result"] == "mismatch":
            self._record(staff["username"], "check_in_names_differ", f"booking:{reference}",
                         {"status": "active"}, dict(how, status="active"))
        elif outcome["reason"] == "name_mismatch" and outcome["booking"]["status"] == "cancelled":
            self._record(staff["username"], "check_in_name_mismatch", f"booking:{reference}",
                         {"status": "active"},
                         dict(how, status="cancelled", cancel_reason="name_mismatch"))
        if outcome["booking"].get("cancel_reason") in pages.FRAUD_REASONS:
            outcome["fraud_decisions"] = self._fraud_decisions(reference)
        return outcome

    def _undo(self, staff, reference, body):
        """A supervisor takes back a name-mismatch cancellation the same day, saying why."""
        data = load_or_raise(UNDO, body, InvalidRequest)
        if not isinstance(reference, str):
            raise InvalidRequest(FIELDS_FR, {"reference": ["Obligatoire."]})
        obj = f"booking:{reference.strip().upper()[:20]}"
        before = {"status": "cancelled", "cancel_reason": "name_mismatch"}
        try:
            restored = self.booking.undo_cancellation(reference, staff["username"], data["why"])
        except Refused as refused:  # what was tried is written down too, with why not
            self._record(staff["username"], "cancellation_undo_refused", obj, before,
                         {"why": data["why"], "refused": refused.message})
            raise
        self._record(staff["username"], "cancellation_undone", obj, before,
                     {"status": restored["status"], "why": data["why"]})
        return restored

    def _attendance(self, staff, reference, body):
        data = load_or_raise(ATTENDANCE, body, InvalidRequest)
        if not isinstance(reference, str):
            raise InvalidRequest(FIELDS_FR, {"reference": ["Obligatoire."]})
        marked = self.booking.mark_attendance({"reference": reference, "state": data["state"],
                                               "site": staff["site"], "agent": staff["username"]})
        self._record(staff["username"], "attendance_marked", f"booking:{marked['id']}",
                     {"attendance": marked.get("previous_attendance")},
                     {"attendance": data["state"]})
        return marked

    def _fraud_decisions(self, reference):
        try:
            return self.fraud.decisions_for(reference)
        except DomainError:
            return None  # the booking's own evidence is shown; fraud's detail when it answers

    def _walk_in(self, staff, body):
        data = load_or_raise(WALK_IN, body, InvalidRequest)
        # one key per HTTP request: the call delivered twice is one walk-in
        created = self.booking.register_walk_in(dict(
            data, birth_date=data["birth_date"].isoformat(), site=staff["site"],
            agent=staff["username"]), idempotency_key=uuid.uuid4().hex)
        self._record(staff["username"], "walk_in_registered", f"booking:{created['id']}", None,
                     {"status": created["status"], "procedure": created["procedure"],
                      "site": created["site"]})
        return created

    def _create_account(self, staff, body):
        data = load_or_raise(ACCOUNT, body, InvalidRequest)
        try:
            account = new_account(data["username"], data["password"], data["role"], data["site"],
                                  time.time(), self.settings.password_hasher)
            self.store.create_account(account)
        except AccountExists:
            raise InvalidRequest("This username is taken.", {"username": ["Taken."]})
        view = _account_view(account)
        self._record(staff["username"], "account_created", f"account:{account['_id']}", None,
                     {"role": account["role"], "site": account["site"]})
        return view

    def _lock(self, staff, username, action):
        if action not in ("lock", "unlock"):
            raise NotFound("Unknown action.")
        account = self.store.account(username) if isinstance(username, str) else None
        if account is None:
            raise NotFound("No such account.")
        if username == staff["username"]:
            raise InvalidRequest("You cannot lock yourself out.", {"username": ["Your own account."]})
        before = {"locked": account.get("locked_until_ts", 0) > time.time()}
        if action == "lock":
            self.store.lock(username, LOCKED_FOR_GOOD)
            self.store.end_sessions_of(username)  # a lock takes effect at once
        else:
            self.store.unlock(username)
        self._record(staff["username"], f"account_{action}ed", f"account:{username}", before,
                     {"locked": action == "lock"})
        return _account_view(self.store.account(username))

    def _audit(self, args):
        query = load_or_raise(AUDIT_QUERY, args, InvalidRequest)
        since = until = None
        if query["day"]:
            start = datetime.combine(query["day"], clock_time(0), tzinfo=PARIS)
            since, until = start.timestamp(), (start + timedelta(days=1)).timestamp()
        return [_audit_view(e) for e in self.store.find_audit(query["person"], query["object"],
                                                              since, until)]

    def _health(self):
        return gather({"slots": self.slots_health, "booking": self.booking_health,
                       "fraud": self.fraud_health, "notify": self.notify_health,
                       "requests": self.requests_health, "register": self.register_health})

    def _monitoring(self):
        """The bus (management API), each service's health, and the domain figures; a part
        that does not answer is None with the others shown."""
        now = self.clock.now()
        since, until = now - timedelta(days=FIGURE_DAYS), now

        def ask(call):
            try:
                return call()
            except DomainError:
                return None
        return {
            "at": iso_utc(now),
            "bus": self.bus.snapshot(),
            "services": self._health(),
            "figures": {
                "days": FIGURE_DAYS,
                "slots": ask(lambda: self.slots.figures(FIGURE_DAYS)),
                "booking": ask(lambda: self.booking.figures(FIGURE_DAYS)),
                "fraud_decisions": ask(lambda: self.fraud.counts(iso_utc(since), iso_utc(until))),
                "mail": ask(lambda: self.notify.outbox_status()),
            },
        }

    def _record(self, who, action, obj, before=None, after=None):
        self.store.append_audit(audit_entry(who, action, obj, before, after))

    def _today(self):
        return self.clock.now().astimezone(PARIS).date()

    # -- sessions, roles, CSRF -------------------------------------------------------------------

    def _staff(self, signed):
        session_id = self.settings.session_id(signed)
        if session_id is None:
            return None
        staff = self.store.session(session_key(session_id))
        if staff is None or staff["expires_ts"] <= time.time():
            return None
        return staff

    def _api_staff(self, request, role, changing_password=False):
        header = request.headers.get("Authorization", "")
        signed = header[7:].strip() if header.lower().startswith("bearer ") else None
        staff = self._staff(signed)
        if staff is None:
            raise Unauthenticated()
        if staff.get("must_change_password") and not changing_password:
            raise PasswordChangeRequired()
        if not allowed(staff["role"], role):
            raise Forbidden()
        return staff

    def _page(self, request, role, handle, changing_password=False):
        """Run a page handler for a logged-in member of staff with `role`, or say why not."""
        staff = self._staff(request.cookies.get(COOKIE))
        if staff is None:
            return pages.redirect("/login")
        if staff.get("must_change_password") and not changing_password:
            return pages.redirect("/password")
        if not allowed(staff["role"], role):
            return self._render(staff, "error.html.j2", status=403, code=403,
                                message=Forbidden.default_message)
        try:
            return handle(staff)
        except DomainError as error:
            return self._render(staff, "error.html.j2", status=error.status, code=error.status,
                                message=error.message)

    def _check_csrf(self, request, staff):
        if not self.settings.csrf.valid(request.form.get("csrf"), staff["session_id_for_csrf"]):
            raise CsrfRefused()

    def _render(self, staff, template, status=200, **values):
        return pages.render(template, status=status, staff=staff,
                            csrf=self.settings.csrf.issue(staff["session_id_for_csrf"]), **values)

    def _login_form(self, request, message=None, status=200):
        binding = request.cookies.get(LOGIN_CSRF_COOKIE) or new_binding()
        response = pages.render("login.html.j2", status=status, message=message,
                                csrf=self.settings.csrf.issue(binding))
        response.set_cookie(LOGIN_CSRF_COOKIE, binding, httponly=True, samesite="Strict",
                            secure=self.settings.cookie_secure, path="/login")
        return response

    def _accounts_form(self, staff, values=None, errors=None, message=None, status=200, reset=None):
        return self._render(staff, "accounts.html.j2", status=status,
                            accounts=[_account_view(a) for a in self.store.all_accounts()],
                            values=values or {"role": "agent", "site": staff["site"]},
                            errors=errors or {}, message=message, reset=reset)

    def _day_form(self, staff, args, message=None, status=200, done=None):
        day = self._day(staff, {k: args.get(k) for k in ("site", "date") if args.get(k)})
        try:
            search = load_or_raise(DAY_SEARCH, {k: args[k] for k in ("q", "show") if args.get(k)},
                                   InvalidRequest)
        except InvalidRequest:
            search, message, status = {"q": "", "show": "all"}, FIELDS_FR, 400
        shown = counter.shown(day["bookings"], search["q"], search["show"])
        return self._render(staff, "day.html.j2", status=status, day=day, shown=shown,
                            search=search, message=message, done=done,
                            today=self._today().isoformat(), **self._day_links(staff, day))

    def _day_links(self, staff, day):
        current = date.fromisoformat(day["day"])
        link = "/day?site={}&date={}".format
        return {"previous": link(day["site"], current - timedelta(days=1)),
                "next": link(day["site"], current + timedelta(days=1)),
                "today_link": link(day["site"], self._today()),
                "sites": {code: link(code, current) for code in pages.SITES}
                if allowed(staff["role"], "supervisor") else {}}
