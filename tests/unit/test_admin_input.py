"""The staff gateway's own input checks, route by route, without starting the stack.

Each case is a request the gateway's validation refuses before asking any service: the route's
answer is a 400 `invalid_request` naming the field, and no RPC was made, so nothing changed
(tests/routes.py). The integration tests send one case of each route over real HTTP, through
the real services, to show the same answer reaching a client (`one_per_route`)."""
from datetime import date, timedelta

import pytest

from gateway.admin.service import AdminGateway
from tests.routes import answer, route_of

CHIEF = {"username": "chief", "role": "supervisor", "site": "montpellier"}
FROM = date.today() + timedelta(days=30)
PLAN = {"site": "beziers", "procedure": "first_application", "from": FROM.isoformat(),
        "to": (FROM + timedelta(days=6)).isoformat(), "weekdays": ["monday", "tuesday"],
        "hours": ["09:00-10:00"], "slot_minutes": 20, "desks": 2}

# the counter, walk-ins, accounts, audit (tests/integration/test_admin_gateway.py)
DESK_INPUT = [
    ("GET", "/api/day?date=tomorrow", None, "date"),
    ("GET", "/api/day?site=paris", None, "site"),
    ("GET", "/api/day?site=$gt", None, "site"),
    ("POST", "/api/checkin", {"code": {"$gt": ""}, "family_name": "A"}, "code"),
    ("POST", "/api/checkin", {"code": "RDV-AAAA-BBBB.abc", "family_name": "A"}, "code"),
    ("POST", "/api/checkin", {"code": "RDV-AAAA-BBBB." + "A" * 86}, "family_name"),
    ("POST", "/api/checkin", {"code": "RDV-AAAA-BBBB." + "A" * 86, "family_name": "A", "x": 1}, "x"),
    ("POST", "/api/walk-ins", {"family_name": "A", "birth_date": "1980-01-01"}, "foreigner_number"),
    ("POST", "/api/walk-ins", {"family_name": "A", "birth_date": "soon", "foreigner_number": "0123456789"}, "birth_date"),
    ("POST", "/api/accounts", {"username": "new", "password": "short", "role": "agent", "site": "montpellier"}, "password"),
    ("POST", "/api/accounts", {"username": "new.one", "password": "x" * 12, "role": "root", "site": "montpellier"}, "role"),
    ("GET", "/api/audit?day=yesterday", None, "day"),
]
# supervisors' work (tests/integration/test_admin_supervision.py); the attestation check is
# not here: its signature is checked by the booking service, so only its HTTP test proves it
SUPERVISION_INPUT = [
    ("POST", "/api/plans/preview", dict(PLAN, desks=0), "desks"),
    ("POST", "/api/plans/preview", dict(PLAN, hours=["10:00-09:00"]), "hours.0"),
    ("POST", "/api/plans", dict(PLAN, site={"$gt": ""}), "site"),
    ("POST", "/api/plans", dict(PLAN, extra="perhaps"), "extra"),
    ("POST", "/api/plans/plan-nothex/desks", {"desks": 1}, "plan_id"),
    ("GET", "/api/releases/schedule?procedure=$gt", None, "procedure"),
    ("POST", "/api/releases/rel-0123456789ab/reschedule", {"due": "2030-01-01T10:00"}, "due"),
    ("GET", "/api/figures?site=paris", None, "site"),
    ("POST", "/api/review/decide", {"decision": "cancel"}, "case_id"),
    ("POST", "/api/review/decide", {"case_id": "x", "decision": "burn"}, "decision"),
    ("POST", "/api/allow-list", {"kind": "ip", "value": "1.2.3.4", "why": "x"}, "kind"),
    ("POST", "/api/allow-list", {"kind": "client", "value": "1.2.3.4", "why": "x", "until": "soon"}, "until"),
    ("GET", "/api/fraud/counts?since=2026-01-02&until=2026-01-01", None, "until"),
    ("POST", "/api/waiver", {"expiry": "2026-01-01", "filing": "2026-02-01"}, "foreigner_number"),
    ("POST", "/api/waiver", {"foreigner_number": "12", "expiry": "2026-01-01", "filing": "2026-02-01"}, "foreigner_number"),
    ("POST", "/api/waiver", {"email": "a@example.org", "expiry": "yesterday", "filing": "2026-02-01"}, "expiry"),
    ("POST", "/api/notifications/resend", {"key": {"$gt": ""}}, "key"),
]
# the switch between booking and requests (tests/integration/test_admin_requests.py)
SWITCH_INPUT = [
    ("POST", "/api/requests/modes/renewal", {"mode": "sometimes"}, "mode"),
    ("POST", "/api/requests/modes/renewal", {}, "mode"),
    ("POST", "/api/requests/modes/renewal", {"mode": {"$gt": ""}}, "mode"),
    ("POST", "/api/requests/modes/renewal", {"mode": "$where"}, "mode"),
    ("POST", "/api/requests/modes/passport", {"mode": "requests"}, "procedure"),
    ("POST", "/api/requests/modes/$gt", {"mode": "requests"}, "procedure"),
    ("POST", "/api/requests/modes/renewal", ["mode", "requests"], "_body"),
    ("POST", "/api/requests/modes/renewal", {"mode": "requests", "by": "someone.else"}, "by"),
]


def one_per_route(cases):
    """The first case of each route: what the HTTP tests send through the real server."""
    seen, picked = set(), []
    for case in cases:
        route = route_of(AdminGateway, case[0], case[1])
        if route not in seen:
            seen.add(route)
            picked.append(case)
    return picked


@pytest.mark.parametrize("method, path, body, field", DESK_INPUT + SUPERVISION_INPUT + SWITCH_INPUT)
def test_bad_input_is_400_with_the_field_and_asks_no_service(method, path, body, field):
    got = answer(AdminGateway, method, path, body, staff=CHIEF)
    assert got.status_code == 400, got.json()
    assert got.json()["error"] == "invalid_request" and field in got.json()["fields"], got.json()
    assert got.rpc_calls() == []  # refused before any service was asked: nothing changed
