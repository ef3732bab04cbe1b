"""Issue 12 end to end over RabbitMQ and SMTP: requests filed through the public gateway, a
release allocated by draw, offers e-mailed; one accepted (a booking like today's), one
declined and one lapsed (the requests service's clock moved past the deadline), their places
handed to the next requests."""
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.exceptions import ConfigurationError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.public.service import PublicGateway
from services.common.errors import InvalidRequest, NotFound, Refused
from services.booking.service import BookingService
from services.notify.service import NotifyService
from services.requests.service import RequestsService
from services.requests.store import RequestStore
from services.slots.service import SlotsService
from services.common.tokens import TokenSigner
from tests.conftest import REQUEST_TOKEN_SECRET, TOKEN_SECRET
from tests.helpers import confirm_token_of, plan, wait_until
from tests.integration.conftest import nothing_left_to_send
from tests.integration.conftest import FixedClock, paris

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
def system(container_factory, config, sink, request):
    cfg = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
               NOTIFY_RETRY_BASE_SECONDS=0.2, NOTIFY_RETRY_MAX_SECONDS=1,
               REQUEST_TIMER_SECONDS=0.3, REQUEST_OFFER_HOURS=48,
               NOTIFY_SWEEP_SECONDS=0.5,  # notify looks often: nothing_left_to_send waits on it
               REQUEST_OFFER_FLOOR_HOURS=1)  # the 49 h jumps below leave a place a few hours
    cfg.update(getattr(request, "param", {}))  # a test's own settings (indirect parametrize)
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
    # M4 before the draw
    placeholder = http.post("/api/requests", json=dict(body, email="x@example.org",
                                                        foreigner_number="8888888888",
                                                        family_name="Test", given_names="Test"))
    assert placeholder.status_code == 400 and "family_name" in placeholder.json()["fields"]
    # the confirmation e-mails, then the links
    sink.wait_for(5)
    for request in filed:
        token = {"X-Request-Token": request["token"]}
        assert http.post(f"/api/requests/{request['reference']}/confirm", headers=token).json()["state"] == "waiting"
    # one open request per e-mail and per foreigner number, once confirmed: said at filing
    again = http.post("/api/requests", json=dict(body, foreigner_number="9999999999"))
    assert again.status_code == 409 and "email" in again.json()["fields"]

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


def tick_ran(mongo):
    """The requests timer (which lapses offers) has run a whole pass since the clock moved: its
    lease counts the passes as they begin, so the second one from now began after a whole one."""
    leases = mongo("requests")["leases"]

    def runs():  # no lease yet: the timer has not begun its first pass
        return (leases.find_one({"_id": "tick"}) or {}).get("runs", 0)
    ticks = runs()
    assert wait_until(lambda: runs() >= ticks + 2, timeout=10)


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
    clock.at = datetime.now(timezone.utc) + timedelta(hours=49)
    tick_ran(mongo)
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
    tick_ran(mongo)
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


def test_a_filing_sent_again_with_its_idempotency_key_is_one_request_and_one_e_mail(
        system, http, sink, mongo, config, notify_deliveries, notify_passes):
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    body = {"procedure": "renewal", "family_name": "Benali", "given_names": "Yasmine",
            "birth_date": "1988-03-14", "email": "yasmine.benali@example.org",
            "foreigner_number": "0123456789", "availability": availability(next_weekday(date.today(), 1))}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/api/requests", json=body, headers=key)
    again = http.post("/api/requests", json=body, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json() == again.json() and "token" not in first.json()
    with_mailed_token(sink, first.json())
    nothing_left_to_send(config, notify_deliveries, notify_passes, delivered=1)  # one filing event
    assert len([m for m in sink.messages() if first.json()["reference"] in str(m["Subject"])]) == 1
    assert [r["_id"] for r in mongo("requests")["requests"].find()] == [first.json()["reference"]]
    bad = http.post("/api/requests", json=body, headers={"Idempotency-Key": "short"})
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["Idempotency-Key"]


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


def claimant(rpc, family, given, email, number="0423456780"):
    """A request filed through the RPC (its answer carries the token the e-mail would)."""
    return rpc.requests.file({
        "procedure": "renewal", "family_name": family, "given_names": given,
        "birth_date": "1985-05-05", "email": email, "foreigner_number": number,
        "availability": availability(next_weekday(date.today(), 1))})


def test_an_unconfirmed_request_holds_no_claim_on_the_mailbox_or_the_number(system, http):
    """Someone files on Aminata's e-mail, someone else with her foreigner number: neither
    blocks her own request; hers, confirmed from her mailbox, is the one that counts, and the
    others are refused at their confirmation (409, in French and English), not before."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    on_her_mail = claimant(rpc, "Martin", "Paul", "aminata@example.org", number="0423456789")
    on_her_number = claimant(rpc, "Dupont", "Marc", "marc@example.org")
    hers = claimant(rpc, "Diallo", "Aminata", "Aminata@Example.org")
    assert {r["state"] for r in (on_her_mail, on_her_number, hers)} == {"unconfirmed"}
    assert rpc.requests.confirm(hers["reference"], hers["token"])["state"] == "waiting"
    for other, field in ((on_her_mail, "email"), (on_her_number, "foreigner_number")):
        answer = http.post(f"/api/requests/{other['reference']}/confirm",
                           headers={"X-Request-Token": other["token"]})
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert body["error"] == "refused" and list(body["fields"]) == [field]
        assert "Une autre demande confirmée" in body["message"]
        assert "Another confirmed request" in body["message"]
        assert rpc.requests.get(other["reference"], other["token"])["state"] == "unconfirmed"
    assert rpc.requests.counts()["by_procedure"]["renewal"] == {"waiting": 1, "unconfirmed": 2}
    # once confirmed, the claim is said at filing, before any e-mail goes out
    answer = http.post("/api/requests", json={
        "procedure": "renewal", "family_name": "Diallo", "given_names": "Aminata",
        "birth_date": "1985-05-05", "email": "aminata@example.org", "foreigner_number": "0523456780",
        "availability": availability(next_weekday(date.today(), 1))})
    assert answer.status_code == 409 and list(answer.json()["fields"]) == ["email"]
    # withdrawn, hers frees both: the other request on her number can now be confirmed
    rpc.requests.withdraw(hers["reference"], hers["token"])
    assert rpc.requests.confirm(on_her_number["reference"], on_her_number["token"])["state"] == "waiting"


def test_two_confirmations_on_one_mailbox_at_once_end_with_one_request(system, http, monkeypatch):
    """The first confirmation is stalled after taking its claims, before its request moves to
    waiting; the second, meanwhile, is refused; the first then finishes. One open request."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    first, second = (claimant(rpc, "Diallo", "Aminata", "same@example.org") for _ in range(2))
    claimed, go = threading.Event(), threading.Event()
    move = RequestStore.move

    def stalled_move(store, reference, from_states, changes, unset=None):
        if reference == first["reference"] and changes.get("state") == "waiting":
            claimed.set()
            go.wait(20)
        return move(store, reference, from_states, changes, unset)
    monkeypatch.setattr(RequestStore, "move", stalled_move)
    # over HTTP: the test's one RPC proxy cannot carry two calls at once
    with ThreadPoolExecutor(1) as pool:
        confirming = pool.submit(confirm_over_http, http, first)
        assert wait_until(claimed.is_set, timeout=10)
        refused = confirm_over_http(http, second)
        assert refused.status_code == 409 and "email" in refused.json()["fields"], refused.text
        go.set()
        assert confirming.result(20).json()["state"] == "waiting"
    assert state_of(http, second)["state"] == "unconfirmed"
    assert confirm_over_http(http, second).status_code == 409  # tried again: still refused
    # many at once, unforced: still one
    more = [claimant(rpc, "Nguyen", "Thi Lan", "many@example.org", number="0623456780")
            for _ in range(5)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda r: confirm_over_http(http, r), more))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409], \
        [(a.status_code, a.text) for a in answers]
    assert rpc.requests.counts()["by_procedure"]["renewal"]["waiting"] == 2


def confirm_over_http(http, request):
    return http.post(f"/api/requests/{request['reference']}/confirm",
                     headers={"X-Request-Token": request["token"]})


def test_a_claim_left_by_a_closed_request_is_taken_over(system, mongo):
    """A crash between closing a request and freeing its claims leaves them behind: they do
    not hold against the next request on that e-mail."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    old = claimant(rpc, "Diallo", "Aminata", "left@example.org")
    rpc.requests.confirm(old["reference"], old["token"])
    claims = mongo("requests")["claims"]
    left = list(claims.find({"request_id": old["reference"]}))
    assert len(left) == 3  # e-mail, foreigner number, person
    rpc.requests.withdraw(old["reference"], old["token"])
    claims.insert_many(left)  # as if the withdrawal died before freeing them
    new = claimant(rpc, "Diallo", "Aminata", "left@example.org")
    assert rpc.requests.confirm(new["reference"], new["token"])["state"] == "waiting"
    assert {c["request_id"] for c in claims.find({"_id": {"$in": [c["_id"] for c in left]}})} \
        == {new["reference"]}


def ticks(mongo):
    return (mongo("requests")["leases"].find_one({"_id": "tick"}) or {}).get("runs", 0)


def aged(mongo, draw_id, days):
    """The draw's record as if made `days` ago (re-inserted: the stand-in mishandles a
    datetime in $set)."""
    draws = mongo("requests")["draws"]
    record = draws.find_one({"_id": draw_id})
    draws.delete_one({"_id": draw_id})
    draws.insert_one(dict(record, at=datetime.now(timezone.utc) - timedelta(days=days)))


def test_a_draw_is_recorded_when_it_offers_and_kept_for_the_retention(system, mongo):
    """An open place nobody waiting can come to: the timer passes over it again and again and
    records nothing. A place someone can take: one draw, with its offer, that replays. Past
    the retention its record is deleted, and the lookup says so; a kept draw still replays."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    first = claimant(rpc, "Diallo", "Aminata", "draw0@example.org", number="0723456780")
    rpc.requests.confirm(first["reference"], first["token"])
    # a Wednesday place: nobody waiting said they can come then
    rpc.slots.create_from_plan(plan(days=1, start=tuesday + timedelta(days=1),
                                    hours=["09:00-09:30"], desks=1), release="now")
    since = ticks(mongo)
    assert wait_until(lambda: ticks(mongo) >= since + 5, timeout=20)
    draws = mongo("requests")["draws"]
    assert list(draws.find()) == []
    assert rpc.requests.get(first["reference"], first["token"])["state"] == "waiting"
    # a Tuesday place: offered, and that draw is on record
    rpc.slots.create_from_plan(plan(days=1, start=tuesday, hours=["09:00-09:30"], desks=1),
                               release="now")
    assert wait_until(lambda: rpc.requests.get(first["reference"], first["token"])["state"]
                      == "offered", timeout=20)
    [old] = list(draws.find())
    assert [o["request"] for o in old["offers"]] == [first["reference"]]
    assert rpc.requests.draw_record(old["_id"])["replays"]
    # a second draw later on, for another person and place
    second = claimant(rpc, "Nguyen", "Thi Lan", "draw1@example.org", number="0723456781")
    rpc.requests.confirm(second["reference"], second["token"])
    rpc.slots.create_from_plan(plan(days=1, start=tuesday, hours=["10:00-10:30"], desks=1),
                               release="now")
    assert wait_until(lambda: rpc.requests.get(second["reference"], second["token"])["state"]
                      == "offered", timeout=20)
    [kept] = [d for d in draws.find() if d["_id"] != old["_id"]]
    # the first one past the retention (REQUEST_DRAW_RETENTION_DAYS, 365 by default)
    aged(mongo, old["_id"], days=366)
    assert wait_until(lambda: draws.find_one({"_id": old["_id"]}) is None, timeout=70)
    with pytest.raises(NotFound) as gone:
        rpc.requests.draw_record(old["_id"])
    assert "365 days" in str(gone.value) and "retention" in str(gone.value)
    with pytest.raises(NotFound) as unknown:
        rpc.requests.draw_record("DRW-000000000000")
    assert "No draw with this id" in str(unknown.value)
    assert rpc.requests.draw_record(kept["_id"])["replays"]
    assert mongo("requests")["offers"].find_one({"draw_id": kept["_id"]})["request_id"] \
        == second["reference"]


def test_an_offer_is_answered_before_the_appointment_with_time_for_the_next(system, mongo):
    """The deadline is REQUEST_OFFER_HOURS away but at least REQUEST_OFFER_MARGIN_HOURS (24)
    before the place starts; a place too close to give the floor (REQUEST_OFFER_FLOOR_HOURS,
    1 h here, to answer, and as much before it starts) is not offered, and no draw recorded."""
    rpc, clock = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    start = paris(tuesday, 9)
    request = claimant(rpc, "Diallo", "Aminata", "soon@example.org", number="0823456780")
    rpc.requests.confirm(request["reference"], request["token"])
    clock.at = start - timedelta(hours=1.5)  # too close: 1 h to answer would leave 30 min
    rpc.slots.create_from_plan(plan(days=1, start=tuesday, hours=["09:00-09:30"], desks=1),
                               release="now")
    since = ticks(mongo)
    assert wait_until(lambda: ticks(mongo) >= since + 5, timeout=20)
    assert rpc.requests.get(request["reference"], request["token"])["state"] == "waiting"
    assert list(mongo("requests")["draws"].find()) == []
    # 30 h before: offered, to be answered 24 h before the place (not 48 h from now)
    clock.at = start - timedelta(hours=30)
    assert wait_until(lambda: rpc.requests.get(request["reference"], request["token"])["state"]
                      == "offered", timeout=20)
    offer = rpc.requests.get(request["reference"], request["token"])["offer"]
    assert datetime.fromisoformat(offer["deadline"].replace("Z", "+00:00")) == start - timedelta(hours=24)


def test_an_offer_cannot_be_accepted_by_a_person_who_holds_a_booking_for_it(system, http, sink, mongo):
    """One person, one booking per procedure (issue 25): the person of the first request
    already holds a renewal booked (while renewals were open) under another e-mail; accepting
    the offer says so (409 person_has_booking, naming nothing) and the offer stays to decline."""
    rpc, _ = system
    day = next_weekday(date.today() + timedelta(days=9), 3)
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=["14:00-14:30"], desks=1), release="now")
    slot = rpc.slots.list_open("renewal", day.isoformat(), day.isoformat(), 1, 1)["slots"][0]
    made = http.post("/api/bookings", json={
        "procedure": "renewal", "slot_id": slot["id"], "family_name": PEOPLE[0][0].upper(),
        "given_names": PEOPLE[0][1], "birth_date": "1990-01-01", "email": "aminata.d@example.org",
        "foreigner_number": "0999999999"})
    assert made.status_code == 201, made.text
    reference = made.json()["reference"]
    assert http.post(f"/api/bookings/{reference}/confirm",
                     headers={"X-Booking-Token": confirm_token_of(mongo, reference)}).status_code == 200
    first, _ = offered_pair(http, rpc, sink)
    answer = http.post(f"/api/requests/{first['reference']}/accept",
                       headers={"X-Request-Token": first["token"]})
    assert answer.status_code == 409 and answer.json()["error"] == "person_has_booking"
    assert reference not in answer.text and "aminata.d" not in answer.text
    assert state_of(http, first)["state"] == "offered"
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    assert mongo("requests")["offers"].find_one({"_id": offer_id})["state"] == "offered"


def test_one_open_request_per_person_whatever_the_e_mail_and_number(system, http, sink):
    """Issue 25: the same person (folded names and birth date) files a second request for the
    procedure under another e-mail and foreigner number: refused like a second e-mail."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    day = next_weekday(date.today() + timedelta(days=2), 1)
    body = {"procedure": "renewal", "family_name": "Nguyễn", "given_names": "Thị Lan",
            "birth_date": "1990-01-02", "email": "lan@example.org", "foreigner_number": "0323456781",
            "availability": availability(day)}
    first = with_mailed_token(sink, http.post("/api/requests", json=body).json())
    assert http.post(f"/api/requests/{first['reference']}/confirm",
                     headers={"X-Request-Token": first["token"]}).json()["state"] == "waiting"
    again = http.post("/api/requests", json=dict(body, family_name="NGUYEN", given_names="thi-lan",
                                                 email="lan.other@example.org",
                                                 foreigner_number="0323456782"))
    assert again.status_code == 409 and list(again.json()["fields"]) == ["identity"]
    # someone else entirely is not held back
    other = http.post("/api/requests", json=dict(body, given_names="Thi Mai", email="mai@example.org",
                                                 foreigner_number="0323456783"))
    assert other.status_code == 201, other.text


def test_a_decline_delivered_twice_is_one_decline_and_no_409(system, http, sink, config, mongo):
    """Issue 25: RabbitMQ delivers the decline again when requests dies before its reply."""
    from tests.integration.test_idempotent_writes import deliver

    rpc, _ = system
    first, second = offered_pair(http, rpc, sink)
    replies = deliver(config["AMQP_URI"], "requests", "decline",
                      {"reference": first["reference"], "token": first["token"]})
    assert [r["error"] for r in replies] == [None, None]
    assert replies[0]["result"]["state"] == replies[1]["result"]["state"] == "waiting"
    # the place went to the next request once
    assert wait_until(lambda: state_of(http, second)["state"] == "offered", timeout=20)
    # and counted once as a missed offer (the second missed one sends to the back)
    assert mongo("requests")["requests"].find_one({"_id": first["reference"]})["missed"] == 1


# the sweep of ended offers looks after 2 s rather than 30: it meets the long pass's lease and
# tries again until that lease runs out (8 s)
@pytest.mark.parametrize("system", [{"REQUEST_HOLDING_GRACE_SECONDS": 2}], indirect=True)
def test_a_place_declined_while_an_allocation_runs_still_goes_to_the_next_in_line(system, mongo):
    """Declining passes the place on under the procedure's allocation lease. When a pass holds
    that lease longer than the decline waits (forced here: the lease planted for another
    owner), the place must not go back to slots (held back 30-90 min from the people waiting):
    it stays held by the ended offer and the timer's sweep gives it to the next request."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    people = [claimant(rpc, "Diallo", "Aminata", "line0@example.org", number="0923456780"),
              claimant(rpc, "Nguyen", "Thi Lan", "line1@example.org", number="0923456781")]
    for one in people:
        rpc.requests.confirm(one["reference"], one["token"])
    rpc.slots.create_from_plan(plan(days=1, start=tuesday, hours=["09:00-09:30"], desks=1),
                               release="now")

    def states():
        return [rpc.requests.get(p["reference"], p["token"])["state"] for p in people]
    assert wait_until(lambda: sorted(states()) == ["offered", "waiting"], timeout=20), states()
    first, second = sorted(people, key=lambda p: states()[people.index(p)] != "offered")
    slot_id = rpc.requests.get(first["reference"], first["token"])["offer"]["slot_id"]
    offer_id = mongo("requests")["requests"].find_one({"_id": first["reference"]})["offer_id"]
    mongo("requests")["leases"].delete_one({"_id": "allocate:renewal"})
    mongo("requests")["leases"].insert_one({"_id": "allocate:renewal", "owner": "a-long-pass",
                                            "until_ts": time.time() + 8, "runs": 1})
    assert rpc.requests.decline(first["reference"], first["token"])["state"] == "waiting"
    # not given back to slots meanwhile: still held under the ended offer's id
    assert rpc.slots.holds(slot_id) == [offer_id]
    # the sweep of ended offers (REQUEST_HOLDING_GRACE_SECONDS) passes it on, once it has the lease
    assert wait_until(lambda: rpc.requests.get(second["reference"], second["token"])["state"]
                      == "offered", timeout=60)
    assert rpc.requests.get(second["reference"], second["token"])["offer"]["slot_id"] == slot_id


def newcomer(rpc, i, expiry_days, day, prefix="new"):
    """A renewal request filed through the RPC (its answer carries the token the e-mail would),
    for `day`'s mornings at Montpellier, its permit ending in `expiry_days`."""
    return rpc.requests.file({
        "procedure": "renewal", "family_name": ["Okafor", "Benali", "Silva", "Kowalski",
                                                "Tran", "Mbaye", "Rossi", "Yilmaz"][i],
        "given_names": "Chidi", "birth_date": "1979-03-%02d" % (i + 1),
        "email": f"{prefix}{i}@example.org", "foreigner_number": f"07{i:08d}",
        "permit_expiry": (date.today() + timedelta(days=expiry_days)).isoformat(),
        "availability": availability(day)})


# the timer's safety-net pass (every 0.3 s here) would hold the allocation lease now and then,
# and on a loaded machine outlast the confirmation's patience: this test is the confirmation's
@pytest.mark.parametrize("system", [{"REQUEST_TIMER_SECONDS": 60}], indirect=True)
def test_a_confirmed_request_with_a_free_place_is_offered_it_in_the_same_sitting(
        system, http, sink, mongo):
    """Issue 24: a place released and offered to nobody (nobody waiting could come) goes to
    the first request confirmed for it, at its confirmation: the person books at once, as in
    open mode. A request that cannot come to it waits; the draw is on record as any other."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    rpc.slots.create_from_plan(plan(days=1, start=tuesday, hours=["09:00-09:30"], desks=1),
                               release="now")
    elsewhere = rpc.requests.file(dict(
        procedure="renewal", family_name="Haddad", given_names="Karim", birth_date="1982-02-02",
        email="karim@example.org", foreigner_number="0812345678",
        availability={"sites": ["beziers"], "times": [{"weekday": "tuesday", "from": "08:00",
                                                        "to": "12:00"}]}))
    assert rpc.requests.confirm(elsewhere["reference"], elsewhere["token"])["state"] == "waiting"

    body = {"procedure": "renewal", "family_name": "Diallo", "given_names": "Aminata",
            "birth_date": "1990-01-01", "email": "aminata@example.org",
            "foreigner_number": "0123456780", "availability": availability(tuesday)}
    filed = with_mailed_token(sink, http.post("/api/requests", json=body).json())
    answer = http.post(f"/api/requests/{filed['reference']}/confirm",
                       headers={"X-Request-Token": filed["token"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "offered", answer.json()
    assert parse_iso_utc(answer.json()["offer"]["start"]) == paris(tuesday, 9)
    accepted = http.post(f"/api/requests/{filed['reference']}/accept",
                         headers={"X-Request-Token": filed["token"]})
    assert accepted.status_code == 200 and accepted.json()["state"] == "booked", accepted.text
    assert rpc.requests.get(elsewhere["reference"], elsewhere["token"])["state"] == "waiting"
    offer = mongo("requests")["offers"].find_one({"request_id": filed["reference"]})
    assert rpc.requests.draw_record(offer["draw_id"])["replays"]


def parse_iso_utc(text):
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def test_instant_offers_and_a_release_at_once_offer_no_place_twice_and_skip_nobody(
        system, http, mongo, config):
    """Confirmations (each an instant offer's pass) race the allocation of a release. Places
    short: the 3 places go to the 3 requests first in line (permits ending soonest, waiting
    before), never to a newcomer who confirmed while they were being allocated, and each is
    held by one offer. Then places to spare: everyone who can come gets one, once."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    first = [newcomer(rpc, i, 10 + i, tuesday, prefix="first") for i in range(3)]
    for one in first:
        assert rpc.requests.confirm(one["reference"], one["token"])["state"] == "waiting"
    later = [newcomer(rpc, 3 + i, 200 + i, tuesday) for i in range(5)]

    def release(start, hours):
        # a proxy of its own: the test's one proxy cannot carry two calls at once
        with ClusterRpcProxy(config, timeout=20) as own:
            return own.slots.create_from_plan(plan(days=1, start=start, hours=hours, desks=1),
                                              release="now")
    with ThreadPoolExecutor(len(later) + 1) as pool:
        released = pool.submit(release, tuesday, ["09:00-10:30"])
        confirmed = [pool.submit(confirm_over_http, http, one) for one in later]
        assert released.result()["open"] == 3
        assert [c.result().status_code for c in confirmed] == [200] * 5

    def states(people):
        return [rpc.requests.get(p["reference"], p["token"])["state"] for p in people]
    assert wait_until(lambda: states(first) == ["offered"] * 3, timeout=30), states(first)
    time.sleep(1)  # any offer made to a newcomer by then would be a place taken out of turn
    assert states(later) == ["waiting"] * 5
    offers = list(mongo("requests")["offers"].find({"state": "offered"}))
    assert len(offers) == 3 and len({o["slot_id"] for o in offers}) == 3
    for offer in offers:
        assert rpc.slots.holds(offer["slot_id"]) == [offer["_id"]]

    # now more places than people: each newcomer who can come is offered one place, once
    wednesday = tuesday + timedelta(days=1)
    wednesdays = {"sites": ["montpellier"],
                  "times": [{"weekday": "wednesday", "from": "08:00", "to": "12:00"}]}
    with ThreadPoolExecutor(4) as pool:
        released = pool.submit(release, wednesday, ["09:00-12:00"])
        moved = [pool.submit(http.put, f"/api/requests/{one['reference']}/availability",
                             json=wednesdays, headers={"X-Request-Token": one["token"]})
                 for one in later[:3]]
        assert released.result()["open"] == 6
        assert [m.result().status_code for m in moved] == [200] * 3
    assert wait_until(lambda: states(later[:3]) == ["offered"] * 3, timeout=30), states(later)
    assert states(later[3:]) == ["waiting"] * 2  # Tuesday only: nothing left then
    offers = list(mongo("requests")["offers"].find({"state": "offered"}))
    assert len(offers) == 6 and len({o["slot_id"] for o in offers}) == 6
    assert len({o["request_id"] for o in offers}) == 6
    for offer in offers:
        assert rpc.slots.holds(offer["slot_id"]) == [offer["_id"]]


def test_an_offer_finished_by_two_passes_at_once_keeps_its_place(mongo, config):
    """A slow allocator and the pass that took its lease over both finish one offer: both hold
    its place (one hold id: one place), one moves it to `offered`; the other must leave the
    place held, not take it for a withdrawal and give it back (two live offers on one place
    then: seen in tests/e2e/test_instances.py under load)."""
    from unittest.mock import Mock

    from nameko.testing.services import worker_factory

    store = RequestStore(mongo("requests"))
    store.ensure_indexes()
    start = datetime.now(timezone.utc) + timedelta(days=7)
    store.requests.insert_one({"_id": "REQ-AAAA-BBBB", "state": "offered",
                               "offer_id": "OFR-AAAA-BBBB", "procedure": "renewal",
                               "email": "awa.diallo@example.org", "token_salt": "c2FsdA"})
    store.insert_offer({"_id": "OFR-AAAA-BBBB", "request_id": "REQ-AAAA-BBBB",
                        "procedure": "renewal", "site": "montpellier", "slot_id": "s1",
                        "slot_start_ts": start.timestamp(),
                        "slot_end_ts": (start + timedelta(minutes=15)).timestamp(),
                        "state": "holding", "created_ts": time.time(), "draw_id": None,
                        "from_offer": None, "made_by": "a-slow-pass"})
    read_by_both = store.get_offer("OFR-AAAA-BBBB")
    slots = Mock()
    service = worker_factory(RequestsService, store=store, slots=slots, config=config,
                             clock=FixedClock())
    service.tokens.token_for.return_value = "a-token"
    assert service._hold_and_announce(dict(read_by_both)) == 1
    assert service._hold_and_announce(dict(read_by_both)) == 0  # the other pass, a moment later
    assert slots.hold.call_count == 2 and not slots.release.called
    assert store.get_offer("OFR-AAAA-BBBB")["state"] == "offered"
    # a withdrawal meanwhile is another matter: the place held goes back
    store.insert_offer(dict(read_by_both, _id="OFR-CCCC-DDDD", state="void"))
    assert service._hold_and_announce(dict(read_by_both, _id="OFR-CCCC-DDDD")) == 0
    slots.release.assert_called_once_with("OFR-CCCC-DDDD")


def test_a_change_that_finds_a_pass_running_answers_within_its_caller_s_time(system, http, mongo):
    """A new availability that fits a free place runs the allocation at once, under the
    procedure's lease; when another pass holds it, the wait leaves the caller time to hear the
    answer (the request waiting: that pass, or the next, offers it) instead of a 503 after the
    change was stored."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    one = claimant(rpc, "Diallo", "Aminata", "waits@example.org")
    rpc.requests.confirm(one["reference"], one["token"])
    wednesday = next_weekday(date.today() + timedelta(days=2), 2)
    rpc.slots.create_from_plan(plan(days=1, start=wednesday, hours=["09:00-09:30"], desks=1),
                               release="now")
    leases = mongo("requests")["leases"]
    leases.delete_one({"_id": "allocate:renewal"})
    leases.insert_one({"_id": "allocate:renewal", "owner": "a-long-pass",
                       "until_ts": time.time() + 6, "runs": 1})
    moved = http.put(f"/api/requests/{one['reference']}/availability",
                     json=availability(wednesday), headers={"X-Request-Token": one["token"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["state"] == "waiting"
    assert wait_until(lambda: rpc.requests.get(one["reference"], one["token"])["state"]
                      == "offered", timeout=30)


def release_through_a_batch(slots, day, hours):
    """Slots opened by a release batch (not `release="now"`, which emits no event): their
    `slots_released` event comes from slots' release pass."""
    created = slots.create_from_plan(plan(days=1, start=day, hours=hours, desks=1))
    soon = (datetime.now(timezone.utc) + timedelta(seconds=0.5)).isoformat()
    for batch in slots.schedule_for(plan_id=created["plan_id"])["batches"]:
        slots.reschedule(batch["id"], soon, by="chief")


@pytest.mark.parametrize("system", [{"REQUEST_TIMER_SECONDS": 60}], indirect=True)
def test_places_opened_while_a_pass_runs_go_to_those_still_waiting_in_that_pass(
        system, mongo, monkeypatch):
    """A release comes in batches whose events find the pass running and its lease taken (their
    own pass gives up): the running pass must look again once its offers are made and give the
    places that came meanwhile. Here the second batch is released during the pass's first draw
    and its event finds nobody to act (as when another instance holds the lease); the timer is
    a minute away, so only the running pass can offer the second place."""
    rpc, _ = system
    rpc.requests.set_mode("renewal", "requests", by="chief")
    tuesday = next_weekday(date.today() + timedelta(days=2), 1)
    people = [claimant(rpc, "Diallo", "Aminata", "mid0@example.org", number="0933456780"),
              claimant(rpc, "Nguyen", "Thi Lan", "mid1@example.org", number="0933456781")]
    for one in people:
        rpc.requests.confirm(one["reference"], one["token"])

    draws, events = [], []
    draw_and_offer, on_released = RequestsService._draw_and_offer, RequestsService._on_released

    def first_draw_then_a_release(self, procedure, *args, **kwargs):
        made = draw_and_offer(self, procedure, *args, **kwargs)
        draws.append(made)
        if len(draws) == 1:
            release_through_a_batch(self.slots, tuesday, ["10:00-10:30"])
            # the pass looks again once the new place is open (and its event on its way)
            assert wait_until(lambda: len(self._open_places(procedure)) == 1, timeout=10)
        return made

    def only_the_first_release_allocates(self, event):
        events.append(event["procedure"])
        if len(events) == 1:
            on_released(self, event)

    monkeypatch.setattr(RequestsService, "_draw_and_offer", first_draw_then_a_release)
    monkeypatch.setattr(RequestsService, "_on_released", only_the_first_release_allocates)
    release_through_a_batch(rpc.slots, tuesday, ["09:00-09:30"])

    def states():
        return sorted(rpc.requests.get(p["reference"], p["token"])["state"] for p in people)
    assert wait_until(lambda: states() == ["offered", "offered"], timeout=20), (states(), draws, events)
    assert draws == [1, 1] and wait_until(lambda: len(events) == 2, timeout=10), events
    slots_offered = {rpc.requests.get(p["reference"], p["token"])["offer"]["slot_id"] for p in people}
    assert len(slots_offered) == 2
