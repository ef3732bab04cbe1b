"""Issue 12 end to end over RabbitMQ and SMTP: requests filed through the public gateway, a
release allocated by draw, offers e-mailed; one accepted (a booking like today's), one
declined and one lapsed (the requests service's clock moved past the deadline), their places
handed to the next requests."""
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.public.service import PublicGateway
from services.common.errors import InvalidRequest
from services.booking.service import BookingService
from services.notify.service import NotifyService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.helpers import plan, wait_until
from tests.integration.conftest import FixedClock

PEOPLE = [  # (family, given, permit expiry): the order the draw must give
    ("Diallo", "Aminata", -20),   # expired 20 days ago: within the grace, first
    ("Nguyen", "Thi Lan", 10),
    ("Haddad", "Karim", 30),
    ("Popescu", "Andrei", 60),
    ("Mensah", "Kofi", 90),
]


def next_weekday(start, weekday):
    return start + timedelta(days=(weekday - start.weekday()) % 7 or 7)


@pytest.fixture
def system(container_factory, config, sink):
    cfg = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
               NOTIFY_RETRY_BASE_SECONDS=0.2, NOTIFY_RETRY_MAX_SECONDS=1,
               REQUEST_TIMER_SECONDS=0.3, REQUEST_OFFER_HOURS=48)
    clock = FixedClock()
    for cls in (SlotsService, BookingService, NotifyService, PublicGateway):
        container_factory(cls, cfg).start()
    requests = container_factory(RequestsService, cfg)
    replace_dependencies(requests, clock=clock)
    requests.start()
    with ClusterRpcProxy(cfg, timeout=20) as rpc:
        yield rpc, clock


def availability(day):
    return {"sites": ["montpellier"],
            "times": [{"weekday": ["monday", "tuesday", "wednesday", "thursday", "friday"][day.weekday()],
                       "from": "08:00", "to": "12:00"}]}


def offers_to(sink, reference):
    return [m for m in sink.messages() if reference in str(m["Subject"]) and "propos" in str(m["Subject"])]


def test_requests_allocated_offered_accepted_declined_lapsed(system, http, sink, mongo, bus):
    rpc, clock = system
    bookings = bus("booking", "booking_created")
    rpc.requests.set_mode("renewal", "requests", by="chief")
    day = next_weekday(date.today() + timedelta(days=2), 1)  # a Tuesday
    today = date.today()
    filed = []
    for i, (family, given, days) in enumerate(PEOPLE):
        body = {"procedure": "renewal", "family_name": family, "given_names": given,
                "birth_date": "1990-01-0%d" % (i + 1), "email": f"person{i}@example.org",
                "foreigner_number": f"012345678{i}",
                "permit_expiry": (today + timedelta(days=days)).isoformat(),
                "availability": availability(day)}
        answer = http.post("/api/requests", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["state"] == "unconfirmed"
        filed.append(answer.json())
    # one open request per e-mail and per foreigner number; M4 before the draw
    again = http.post("/api/requests", json=dict(body, foreigner_number="9999999999"))
    assert again.status_code == 409 and "email" in again.json()["fields"]
    placeholder = http.post("/api/requests", json=dict(body, email="x@example.org",
                                                        foreigner_number="8888888888",
                                                        family_name="Test", given_names="Test"))
    assert placeholder.status_code == 400 and "family_name" in placeholder.json()["fields"]
    # the confirmation e-mails, then the links
    sink.wait_for(5)
    for request in filed:
        token = {"X-Request-Token": request["token"]}
        assert http.post(f"/api/requests/{request['reference']}/confirm", headers=token).json()["state"] == "waiting"

    # three places, released by the secret schedule (a batch moved to now)
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=["09:00-10:30"], desks=1), release="schedule")
    # nothing to grab meanwhile: the open API neither lists nor books the procedure
    listing = http.get(f"/api/slots?procedure=renewal&from={day}&to={day}").json()
    assert listing["slots"] == []
    for batch in rpc.slots.schedule_for(procedure="renewal")["batches"]:
        try:
            rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
        except InvalidRequest:  # its random instant came already
            pass

    def state(i):
        return http.get(f"/api/requests/{filed[i]['reference']}",
                        headers={"X-Request-Token": filed[i]["token"]}).json()
    assert wait_until(lambda: [state(i)["state"] for i in range(5)] ==
                      ["offered", "offered", "offered", "waiting", "waiting"], timeout=20), \
        [state(i)["state"] for i in range(5)]
    for i in range(3):
        assert wait_until(lambda: offers_to(sink, filed[i]["reference"]), timeout=15)
    offered = [state(i)["offer"] for i in range(3)]
    assert len({o["slot_id"] for o in offered}) == 3
    slot_id = offered[0]["slot_id"]
    grab = http.post("/api/bookings", json={"procedure": "renewal", "slot_id": slot_id,
                                            "family_name": "Martin", "given_names": "Paul",
                                            "birth_date": "1980-01-01", "email": "paul@example.org",
                                            "foreigner_number": "1112223334"})
    assert grab.status_code == 409

    # accepted: a booking like today's (booking_created on the bus, confirmed, convocation)
    token0 = {"X-Request-Token": filed[0]["token"]}
    accepted = http.post(f"/api/requests/{filed[0]['reference']}/accept", headers=token0)
    assert accepted.status_code == 200, accepted.text
    booking = accepted.json()["booking"]
    assert accepted.json()["state"] == "booked" and booking["slot"]["id"] == slot_id
    _, created = bookings.wait_for(lambda t, p: p["reference"] == booking["reference"])
    assert created["identity"]["family_name"] == "Diallo"
    seen = http.get(f"/api/bookings/{booking['reference']}",
                    headers={"X-Booking-Token": booking["token"]}).json()
    assert seen["status"] == "active"
    assert rpc.slots.holds(slot_id) == [booking_hold := "OFR-" + booking["reference"][4:]]
    assert booking_hold

    # declined: the place goes to the next in line (Popescu), who is e-mailed
    declined_slot = state(1)["offer"]["slot_id"]
    answer = http.post(f"/api/requests/{filed[1]['reference']}/decline",
                       headers={"X-Request-Token": filed[1]["token"]})
    assert answer.json()["state"] == "waiting"
    assert wait_until(lambda: state(3)["state"] == "offered", timeout=10)
    assert state(3)["offer"]["slot_id"] == declined_slot
    assert wait_until(lambda: offers_to(sink, filed[3]["reference"]), timeout=15)
    # Popescu accepts before the clock moves
    assert http.post(f"/api/requests/{filed[3]['reference']}/accept",
                     headers={"X-Request-Token": filed[3]["token"]}).json()["state"] == "booked"

    # lapsed: past the deadline the place goes to the next one who can come: Nguyen (who
    # declined once and kept their place in line) before Mensah
    lapsed_slot = state(2)["offer"]["slot_id"]
    clock.at = datetime.now(timezone.utc) + timedelta(hours=49)
    assert wait_until(lambda: state(2)["state"] == "waiting", timeout=10)
    assert wait_until(lambda: state(1)["state"] == "offered", timeout=10)
    assert state(1)["offer"]["slot_id"] == lapsed_slot
    assert state(4)["state"] == "waiting"
    # every place is held by exactly one offer or booking: none offered twice
    holds = [h for o in offered for h in rpc.slots.holds(o["slot_id"])]
    assert len(holds) == 3 and len(set(holds)) == 3
    # the draws are on record and replay
    draws = list(mongo("requests")["draws"].find({}, {"_id": 1}))
    assert draws and all(rpc.requests.draw_record(d["_id"])["replays"] for d in draws)
    counts = rpc.requests.counts()
    assert sum(counts["by_procedure"]["renewal"].values()) == 3  # two booked, three open
