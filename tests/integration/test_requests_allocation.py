"""Issue 12 end to end over RabbitMQ and SMTP: requests filed through the public gateway, a
release allocated by draw, offers e-mailed; one accepted (a booking like today's), one
declined and one lapsed (the requests service's clock moved past the deadline), their places
handed to the next requests."""
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.exceptions import ConfigurationError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.public.service import PublicGateway
from services.common.errors import InvalidRequest
from services.booking.service import BookingService
from services.notify.service import NotifyService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from services.common.tokens import TokenSigner
from tests.conftest import REQUEST_TOKEN_SECRET, TOKEN_SECRET
from tests.helpers import confirm_token_of, plan, wait_until
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


def with_mailed_token(sink, filed):
    """The filing's answer and the token of its e-mail's link: the answer carries none, the
    person proves the mailbox by following the link."""
    assert "token" not in filed, "the token must reach the mailbox only"

    def mailed():
        for message in sink.messages():
            if filed["reference"] in str(message["Subject"]):
                text = message.get_body(preferencelist=("plain",)).get_content()
                return re.search(rf"/requests/{filed['reference']}/confirm\?token=([\w-]+)", text)
    assert wait_until(mailed, timeout=15), f"no e-mail for {filed['reference']}"
    return dict(filed, token=mailed().group(1))


def offers_to(sink, reference):
    return [m for m in sink.messages() if reference in str(m["Subject"]) and "propos" in str(m["Subject"])]


def test_requests_allocated_offered_accepted_declined_lapsed(system, http, sink, mongo, bus):
    rpc, clock = system
    bookings = bus("booking", "booking_created")
    confirmations = bus("booking", "booking_confirmed")
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
        filed.append(with_mailed_token(sink, answer.json()))
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
        ([state(i)["state"] for i in range(5)], list(mongo("requests")["offers"].find()))
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
    assert created["offer_id"] == "OFR-" + booking["reference"][4:]
    _, confirmed = confirmations.wait_for(lambda t, p: p["reference"] == booking["reference"])
    assert confirmed["offer_id"] == created["offer_id"]
    # born confirmed: its e-mail says so and asks for no confirmation
    assert wait_until(lambda: [m for m in sink.messages() if booking["reference"] in str(m["Subject"])])
    mail = [m for m in sink.messages() if booking["reference"] in str(m["Subject"])]
    assert len(mail) == 1 and str(mail[0]["Subject"]).startswith("Rendez-vous confirmé"), \
        [str(m["Subject"]) for m in mail]
    text = mail[0].get_body(preferencelist=("plain",)).get_content()
    assert "/confirm?token=" not in text and "PAS ENCORE" not in text and "CONFIRMÉ" in text
    # a retried acceptance finds the same booking
    again = http.post(f"/api/requests/{filed[0]['reference']}/accept", headers=token0)
    assert again.status_code == 200 and again.json()["booking"]["reference"] == booking["reference"]
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


def offered_pair(http, rpc, sink):
    """Two confirmed requests for one place (next Tuesday 09:00 at Montpellier): the first is
    offered it, the second waits. Their answers (reference, token)."""
    rpc.requests.set_mode("renewal", "requests", by="chief")
    day = next_weekday(date.today() + timedelta(days=2), 1)
    filed = []
    for i, (family, given, days) in enumerate(PEOPLE[:2]):
        answer = http.post("/api/requests", json={
            "procedure": "renewal", "family_name": family, "given_names": given,
            "birth_date": "1990-01-0%d" % (i + 1), "email": f"pair{i}@example.org",
            "foreigner_number": f"022345678{i}",
            "permit_expiry": (date.today() + timedelta(days=days)).isoformat(),
            "availability": availability(day)})
        assert answer.status_code == 201, answer.text
        filed.append(with_mailed_token(sink, answer.json()))
        assert http.post(f"/api/requests/{filed[-1]['reference']}/confirm",
                         headers={"X-Request-Token": filed[-1]["token"]}).json()["state"] == "waiting"
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=["09:00-09:30"], desks=1), release="now")
    assert wait_until(lambda: state_of(http, filed[0])["state"] == "offered", timeout=20)
    assert state_of(http, filed[1])["state"] == "waiting"
    return filed


def state_of(http, request):
    return http.get(f"/api/requests/{request['reference']}",
                    headers={"X-Request-Token": request["token"]}).json()


def test_an_acceptance_in_progress_is_out_of_the_lapse_reach(system, http, sink, mongo):
    """An offer taken for acceptance does not lapse under it (the place would go to the next
    request while it becomes a booking); an acceptance whose caller died is offered again, and
    then lapses as any offer."""
    rpc, clock = system
    first, second = offered_pair(http, rpc, sink)
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    offers = mongo("requests")["offers"]
    # an acceptance has taken the offer (as accept() does before calling booking)
    offers.update_one({"_id": offer_id}, {"$set": {"state": "accepting", "accepting_ts": 4e9}})
    # meanwhile the person cannot withdraw or decline it: one of the two would lose
    token = {"X-Request-Token": first["token"]}
    for answer in (http.delete(f"/api/requests/{first['reference']}", headers=token),
                   http.post(f"/api/requests/{first['reference']}/decline", headers=token)):
        assert answer.status_code == 409 and answer.json()["fields"]["state"] == ["accepting"]
    ticks = mongo("requests")["leases"].find_one({"_id": "tick"})["runs"]
    clock.at = datetime.now(timezone.utc) + timedelta(hours=49)
    time.sleep(1.5)  # five timer periods past the deadline
    assert mongo("requests")["leases"].find_one({"_id": "tick"})["runs"] > ticks  # it ran
    assert offers.find_one({"_id": offer_id})["state"] == "accepting"
    assert state_of(http, second)["state"] == "waiting"
    # its caller died long ago and no booking was made: offered again, then lapsed, and the
    # place goes to the next request
    offers.update_one({"_id": offer_id}, {"$set": {"accepting_ts": 1.0}})
    assert wait_until(lambda: state_of(http, second)["state"] == "offered", timeout=10)
    assert offers.find_one({"_id": offer_id})["state"] == "lapsed"
    assert state_of(http, first)["state"] == "waiting"


def test_an_acceptance_cut_short_after_the_booking_is_finished(system, http, sink, mongo):
    """The booking was made but the acceptance died before recording it: the timer finds the
    booking and the request is booked; the place is never offered to the next."""
    rpc, clock = system
    first, second = offered_pair(http, rpc, sink)
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    offer = state_of(http, first)["offer"]
    created = rpc.booking.create(
        {"procedure": "renewal", "slot_id": offer["slot_id"], "family_name": PEOPLE[0][0],
         "given_names": PEOPLE[0][1], "birth_date": "1990-01-01", "email": "pair0@example.org",
         "foreigner_number": "0223456780"},
        {"ip": "192.0.2.1"}, offer={"reference": "RDV-" + offer_id[4:], "hold_id": offer_id})
    assert created["status"] == "active"
    mongo("requests")["offers"].update_one({"_id": offer_id},
                                           {"$set": {"state": "accepting", "accepting_ts": 1.0}})
    assert wait_until(lambda: state_of(http, first)["state"] == "booked", timeout=10)
    assert state_of(http, first)["booking_reference"] == created["reference"]
    clock.at = datetime.now(timezone.utc) + timedelta(hours=49)
    time.sleep(1.5)
    assert state_of(http, second)["state"] == "waiting"
    assert rpc.slots.holds(offer["slot_id"]) == [offer_id]


def test_concurrent_acceptances_make_one_booking(system, http, sink, mongo):
    """A double tap or a retry racing the first: one booking, every answer naming it."""
    rpc, clock = system
    first, _ = offered_pair(http, rpc, sink)
    slot_id = state_of(http, first)["offer"]["slot_id"]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http.post(
            f"/api/requests/{first['reference']}/accept",
            headers={"X-Request-Token": first["token"]}), range(6)))
    made = {a.json()["booking"]["reference"] for a in answers if a.status_code == 200}
    assert len(made) == 1 and all(a.status_code == 200 for a in answers), \
        [(a.status_code, a.text) for a in answers]
    assert mongo("booking")["bookings"].count_documents({"slot.id": slot_id}) == 1
    assert len(rpc.slots.holds(slot_id)) == 1
    # and the offer is recorded accepted: left `offered`, it would lapse and pass the place on
    offer = mongo("requests")["offers"].find_one({"request_id": first["reference"]})
    assert offer["state"] == "accepted" and state_of(http, first)["state"] == "booked"


def test_requests_refuse_to_start_without_their_own_token_key(container_factory, config):
    """Request links are signed under REQUEST_TOKEN_SECRET, not the booking key: a service
    configured with the booking key only does not start."""
    container = container_factory(RequestsService, dict(config, REQUEST_TOKEN_SECRET=None))
    with pytest.raises(ConfigurationError):
        container.start()


def test_a_request_token_is_signed_with_the_request_key(system, http, sink, mongo):
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    filed = http.post("/api/requests", json={
        "procedure": "renewal", "family_name": "Diallo", "given_names": "Aminata",
        "birth_date": "1990-01-01", "email": "key@example.org", "foreigner_number": "0323456780",
        "availability": availability(next_weekday(date.today(), 1))}).json()
    filed = with_mailed_token(sink, filed)
    salt = mongo("requests")["requests"].find_one({"_id": filed["reference"]})["token_salt"]
    assert filed["token"] == TokenSigner(REQUEST_TOKEN_SECRET).token_for(filed["reference"], salt)
    assert filed["token"] != TokenSigner(TOKEN_SECRET).token_for(filed["reference"], salt)


def test_a_place_left_held_by_an_ended_offer_is_passed_on(system, http, sink, mongo):
    """A crash between ending an offer (lapsed here) and passing its place on: the timer's
    sweep finds the place still held under the dead offer and passes it to the next request."""
    rpc, _ = system
    first, second = offered_pair(http, rpc, sink)
    offers = mongo("requests")["offers"]
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    slot_id = state_of(http, first)["offer"]["slot_id"]
    # what _lapse leaves when the process dies before _pass_on
    offers.update_one({"_id": offer_id}, {"$set": {"state": "lapsed", "ended_ts": 1.0}})
    mongo("requests")["requests"].update_one({"_id": first["reference"]},
                                            {"$set": {"state": "waiting"}, "$unset": {"offer_id": ""}})
    assert wait_until(lambda: state_of(http, second)["state"] == "offered", timeout=15)
    assert state_of(http, second)["offer"]["slot_id"] == slot_id
    new_offer = mongo("requests")["requests"].find_one({"_id": second["reference"]})["offer_id"]
    assert rpc.slots.holds(slot_id) == [new_offer]
    assert offers.find_one({"_id": offer_id})["settled"]


def test_an_offer_cannot_be_accepted_by_an_e_mail_that_holds_a_booking(system, http, sink, mongo):
    """One e-mail, one person: the person already has an appointment (another procedure)
    under this e-mail; accepting says so (409) and the offer stays theirs to decline."""
    rpc, _ = system
    first, _ = offered_pair(http, rpc, sink)
    rpc.slots.create_from_plan(plan(procedure="first_application", desks=1, days=7), release="now")
    slot = rpc.slots.list_open("first_application", date.today().isoformat(),
                               (date.today() + timedelta(days=10)).isoformat(), 1, 1)["slots"][0]
    made = http.post("/api/bookings", json={
        "procedure": "first_application", "slot_id": slot["id"], "family_name": PEOPLE[0][0],
        "given_names": PEOPLE[0][1], "birth_date": "1990-01-01", "email": "pair0@example.org"})
    assert made.status_code == 201, made.text
    assert http.post(f"/api/bookings/{made.json()['reference']}/confirm",
                     headers={"X-Booking-Token": confirm_token_of(mongo, made.json()["reference"])}
                     ).status_code == 200
    answer = http.post(f"/api/requests/{first['reference']}/accept",
                       headers={"X-Request-Token": first["token"]})
    assert answer.status_code == 409 and answer.json()["error"] == "email_has_booking"
    assert state_of(http, first)["state"] == "offered"
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    assert mongo("requests")["offers"].find_one({"_id": offer_id})["state"] == "offered"
