"""Fraud through real RabbitMQ: from booking_created to the booking cancelled and
fraud_detected on the bus, with the real booking and slots services."""
import time
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from services.booking.service import BookingService
from services.fraud.service import FraudService
from services.slots.service import SlotsService
from tests.helpers import applicant, plan


@pytest.fixture
def fraud_config(config):
    # every test booking comes right after the plan is made: only the address signals decide
    return dict(config, FRAUD_FAST_SECONDS=0, FRAUD_QUICK_SECONDS=0, FRAUD_MAX_ATTEMPTS=3)


@pytest.fixture
def rpc(fraud_config):
    with ClusterRpcProxy(fraud_config, timeout=30) as proxy:
        yield proxy


@pytest.fixture
def system(container_factory, fraud_config, rpc):
    containers = {cls.name: container_factory(cls, fraud_config)
                  for cls in (SlotsService, BookingService, FraudService)}
    for container in containers.values():
        container.start()
    rpc.slots.create_from_plan(plan(desks=50, days=3), release="now")
    return containers


class Booker:
    def __init__(self, rpc):
        self.rpc = rpc
        today = datetime.now(timezone.utc).date()
        self.slot = rpc.slots.list_open("renewal", today.isoformat(),
                                        (today + timedelta(days=10)).isoformat())["slots"][0]["id"]

    def book(self, family, given, email, ip="198.51.100.1", birth="1988-03-14", agent="Firefox"):
        return self.rpc.booking.create(
            applicant(self.slot, family_name=family, given_names=given, email=email, birth_date=birth),
            {"ip": ip, "user_agent": agent})

    def status(self, booked, timeout=10):
        return self.rpc.booking.get(booked["reference"], booked["token"])

    def wait_status(self, booked, status, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            seen = self.status(booked)
            if seen["status"] == status:
                return seen
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)


@pytest.fixture
def booker(system, rpc):
    return Booker(rpc)


def settle(seconds=1.5):
    time.sleep(seconds)


def test_one_email_several_people_cancels_them_all(booker, bus, rpc):
    detected = bus("fraud", "fraud_detected")
    a = booker.book("Benali", "Yasmine", "seller.rdv@gmail.com", ip="198.51.100.1")
    b = booker.book("Diallo", "Awa", "Seller.RDV+2@gmail.com", ip="198.51.100.2")
    for booked in (a, b):
        assert booker.wait_status(booked, "cancelled")["cancel_reason"] == "multiple_bookings_same_email"
    refs = sorted([a["reference"], b["reference"]])
    events = [detected.wait_for()[1] for _ in range(2)]
    assert sorted(e["reference"] for e in events) == refs
    assert all(e["rule"] == "multiple_bookings_same_email" and e["action"] == "cancelled" for e in events)
    [decision] = rpc.fraud.decisions_for(a["reference"])
    assert sorted(decision["evidence"]["bookings"]) == refs and decision["evidence"]["identities"] == 2


def test_the_same_person_twice_keeps_the_earliest(booker):
    first = booker.book("Okafor", "Ifeoma", "ifeoma@example.org")
    second = booker.book("OKAFOR", "ifeoma", "ifeoma@example.org", ip="198.51.100.9")
    assert booker.wait_status(second, "cancelled")["cancel_reason"] == "multiple_bookings_same_email"
    settle()
    assert booker.status(first)["status"] == "active"


def test_a_placeholder_name_is_cancelled_and_a_real_one_is_not(booker, rpc):
    fake = booker.book("test", "test", "a1@example.org", ip="198.51.100.3")
    real = booker.book("Nguyễn", "Thị Minh Khai", "khai@example.org", ip="198.51.100.4")
    assert booker.wait_status(fake, "cancelled")["cancel_reason"] == "name_not_exact"
    settle()
    assert booker.status(real)["status"] == "active"
    [decision] = rpc.fraud.decisions_for(fake["reference"])
    assert decision["evidence"] == {"field": "family_name", "reason": "placeholder"}


def test_one_address_many_identities_is_cancelled_as_slot_grabbing(booker, rpc):
    people = [("Kaya", "Ayşe"), ("Demir", "Mustafa"), ("Şahin", "Elif"), ("Çelik", "Hüseyin"),
              ("Aydın", "Emre")]
    cluster = [booker.book(f, g, f"{f.lower()}{i}@example.org", ip="203.0.113.66", birth=f"198{i}-01-01")
               for i, (f, g) in enumerate(people)]
    honest = booker.book("Mensah", "Kwame", "kwame@example.org", ip="192.0.2.10")
    for booked in cluster:
        assert booker.wait_status(booked, "cancelled")["cancel_reason"] == "slot_grabbing"
    settle()
    assert booker.status(honest)["status"] == "active"
    decisions = rpc.fraud.decisions_for(cluster[-1]["reference"])
    assert decisions[0]["evidence"]["client_ip"] == "203.0.113.66"
    assert decisions[0]["evidence"]["signals"]["identities_same_address"] >= 4


def test_grey_zone_goes_to_staff_review(container_factory, fraud_config, rpc, bus):
    # with speed counting, two people from one address land in the grey zone
    config = dict(fraud_config, FRAUD_FAST_SECONDS=60)
    for cls in (SlotsService, BookingService, FraudService):
        container_factory(cls, config).start()
    rpc.slots.create_from_plan(plan(desks=50, days=3), release="now")
    booker = Booker(rpc)
    first = booker.book("Haddad", "Nour", "nour@example.org", ip="203.0.113.7", birth="1990-01-01")
    second = booker.book("Khalil", "Maya", "maya@example.org", ip="203.0.113.7", birth="1991-01-01")
    deadline = time.monotonic() + 10
    while not rpc.fraud.review_queue():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [case] = rpc.fraud.review_queue()
    # events are handled concurrently: whichever booking's check saw both identities is flagged
    flagged, other = (first, second) if case["id"] == first["reference"] else (second, first)
    assert case["id"] == flagged["reference"]
    assert case["evidence"]["signals"]["identities_same_address"] == 2
    assert booker.status(flagged)["status"] == "active"  # nobody cancelled on a suspicion
    decided = rpc.fraud.decide(flagged["reference"], "cancel", "agent.martin", "same family? no")
    assert decided["state"] == "cancelled"
    assert booker.wait_status(flagged, "cancelled")["cancel_reason"] == "slot_grabbing"
    assert booker.status(other)["status"] == "active"
    assert rpc.fraud.review_queue() == []
    counts = rpc.fraud.counts("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    assert counts == {"slot_grabbing": {"review": 1, "cancel": 1}}


def handled(mongo, references):
    """True once fraud's inbox has handled the booking_created of each of these bookings."""
    indexed = {d["_id"] for d in mongo("fraud")["bookings"].find({"_id": {"$in": list(references)}})}
    done = mongo("fraud")["inbox"].count_documents({"event_type": "booking_created", "state": "done"})
    return indexed == set(references) and done >= len(references)


def wait_handled(mongo, booked, timeout=15):
    deadline = time.monotonic() + timeout
    while not handled(mongo, [b["reference"] for b in booked]):
        assert time.monotonic() < deadline, "fraud did not handle the bookings"
        time.sleep(0.1)


def test_the_allow_list_exempts_an_address(booker, rpc, mongo):
    rpc.fraud.allow("client", "203.0.113.99", "agent.martin", "Cimade office booking for its clients")
    helped = [booker.book(f, g, f"{f.lower()}@example.org", ip="203.0.113.99", birth=f"197{i}-05-05")
              for i, (f, g) in enumerate([("Warsame", "Hodan"), ("Osman", "Ayaan"), ("Farah", "Mo"),
                                          ("Abebe", "Bikila"), ("Tesfaye", "Selam")])]
    wait_handled(mongo, helped)  # fraud has screened all five: the rule had its chance
    assert all(booker.status(b)["status"] == "active" for b in helped)
    assert rpc.fraud.decisions_for(helped[-1]["reference"]) == []
    [entry] = rpc.fraud.allow_list()
    assert entry["by"] == "agent.martin" and entry["id"] == "client:203.0.113.99"
    assert entry["at"].endswith("Z")


def test_without_the_allow_list_the_same_address_is_cancelled(booker, mongo):
    # the control for the test above: the same five from one address, nobody allowed
    helped = [booker.book(f, g, f"{f.lower()}@example.org", ip="203.0.113.98", birth=f"197{i}-05-05")
              for i, (f, g) in enumerate([("Warsame", "Hodan"), ("Osman", "Ayaan"), ("Farah", "Mo"),
                                          ("Abebe", "Bikila"), ("Tesfaye", "Selam")])]
    assert booker.wait_status(helped[-1], "cancelled")["cancel_reason"] == "slot_grabbing"


def test_fraud_learns_of_cancellations_from_the_bus(booker, mongo):
    booked = booker.book("Sow", "Aminata", "aminata@example.org")
    wait_handled(mongo, [booked])
    booker.rpc.booking.cancel(booked["reference"], booked["token"])
    deadline = time.monotonic() + 10
    while mongo("fraud")["bookings"].find_one({"_id": booked["reference"]})["status"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    group = mongo("fraud")["groups"].find_one({"_id": "email:aminata@example.org"})
    assert group["members"][booked["reference"]]["status"] == "cancelled"


def test_cancel_then_book_again_with_the_same_email_is_not_cancelled(booker, mongo):
    first = booker.book("Sow", "Aminata", "aminata@example.org")
    wait_handled(mongo, [first])
    booker.rpc.booking.cancel(first["reference"], first["token"])
    again = booker.book("Sow", "Aminata", "aminata@example.org", ip="198.51.100.77")
    wait_handled(mongo, [first, again])
    assert booker.status(again)["status"] == "active"
    assert booker.status(first)["cancel_reason"] == "applicant"
    assert booker.rpc.fraud.decisions_for(again["reference"]) == []


def test_the_same_event_twice_makes_one_decision_and_one_cancellation(booker, bus, rpc, fraud_config):
    created = bus("booking", "booking_created")
    cancelled = bus("booking", "booking_cancelled")
    detected = bus("fraud", "fraud_detected")
    fake = booker.book("xxx", "Paul", "p@example.org")
    _, event = created.wait_for()
    booker.wait_status(fake, "cancelled")
    dispatch = event_dispatcher(fraud_config)
    for _ in range(3):
        dispatch("booking", "booking_created", event)
    settle(2)
    assert len(rpc.fraud.decisions_for(fake["reference"])) == 1
    assert len(cancelled.drain()) == 1
    assert len(detected.drain()) == 1


def test_events_that_arrive_while_fraud_is_down_are_handled_when_it_is_back(
        container_factory, fraud_config, rpc):
    for cls in (SlotsService, BookingService):
        container_factory(cls, fraud_config).start()
    fraud = container_factory(FraudService, fraud_config)
    fraud.start()  # declares its durable queues
    fraud.stop()
    rpc.slots.create_from_plan(plan(desks=5), release="now")
    booker = Booker(rpc)
    fake = booker.book("Inconnu", "Inconnu", "x@example.org")
    settle()
    assert booker.status(fake)["status"] == "active"
    container_factory(FraudService, fraud_config).start()
    assert booker.wait_status(fake, "cancelled")["cancel_reason"] == "name_not_exact"


def test_a_failing_event_is_retried_then_parked_and_can_be_replayed(
        container_factory, fraud_config, rpc):
    config = dict(fraud_config, RPC_TIMEOUT=1)
    container_factory(SlotsService, config).start()
    booking = container_factory(BookingService, config)
    booking.start()
    fraud = container_factory(FraudService, config)
    fraud.start()
    fraud.stop()
    rpc.slots.create_from_plan(plan(desks=5), release="now")
    booker = Booker(rpc)
    fake = booker.book("test", "Jean", "j@example.org")
    booking.stop()  # fraud cannot cancel: each try fails
    container_factory(FraudService, config).start()
    deadline = time.monotonic() + 30
    while not rpc.fraud.parked_events():
        assert time.monotonic() < deadline
        time.sleep(0.3)
    [parked] = rpc.fraud.parked_events()
    assert parked["attempts"] == 3 and "booking" in parked["last_error"]
    container_factory(BookingService, config).start()
    assert rpc.fraud.replay(parked["id"]) == {"event_id": parked["id"], "replayed": True,
                                              "state": "done"}
    assert booker.wait_status(fake, "cancelled")["cancel_reason"] == "name_not_exact"
    assert rpc.fraud.parked_events() == []


def test_many_people_on_one_email_booked_at_once_are_all_cancelled(
        container_factory, fraud_config, booker, rpc):
    container_factory(FraudService, fraud_config).start()  # a second fraud process races the first
    people = [("Wang", "Fang"), ("Zhang", "Ziyi"), ("Liu", "Yang"), ("Chen", "Mei Ling"), ("Zhou", "Enlai")]
    replies = [rpc.booking.create.call_async(
        applicant(booker.slot, family_name=f, given_names=g, email=f"broker+{i}@gmail.com",
                  birth_date=f"198{i}-07-07"), {"ip": f"198.51.100.{50 + i}", "user_agent": "UA"})
        for i, (f, g) in enumerate(people)]
    booked = [reply.result() for reply in replies]
    for one in booked:
        assert booker.wait_status(one, "cancelled", timeout=15)["cancel_reason"] == "multiple_bookings_same_email"


def test_booking_statuses_for_services_with_their_own_index(booker, rpc):
    booked = booker.book("Sow", "Ousmane", "ousmane@example.org")
    rpc.booking.cancel(booked["reference"], booked["token"])
    assert rpc.booking.statuses([booked["reference"], "RDV-0000-0000"]) == {
        booked["reference"]: {"status": "cancelled", "cancel_reason": "applicant"}}
