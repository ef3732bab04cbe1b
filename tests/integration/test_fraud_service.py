"""Fraud through real RabbitMQ: from booking_created to the booking cancelled and
fraud_detected on the bus, with the real booking and slots services."""
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo import ReturnDocument

from services.booking import events as booking_events
from services.booking.service import BookingService
from services.fraud.service import FraudService
from services.slots.service import SlotsService
from services.common.errors import EmailHasBooking, InvalidRequest, NotFound, Refused
from tests.helpers import Calls, applicant, booking_event, plan, wait_until


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

    def book(self, family, given, email, ip="198.51.100.1", birth="1988-03-14", agent="Firefox",
             confirm=True, slot=None, **details):
        """Book, and confirm as the owner of the mailbox would (fraud screens confirmed bookings)."""
        booked = self.rpc.booking.create(
            applicant(slot or self.slot, family_name=family, given_names=given, email=email,
                      birth_date=birth, **details),
            {"ip": ip, "user_agent": agent})
        if confirm:
            self.rpc.booking.confirm(booked["reference"], booked["confirm_token"])
        return booked

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


@pytest.fixture
def deliveries():
    """Each event delivery fraud has taken through its inbox, copies included."""
    with Calls(FraudService, "take_event") as calls:
        yield calls


def wait_taken(deliveries, booked, event_type="booking_confirmed", copies=1):
    """Fraud has taken each booking's `event_type` `copies` times: whatever it decides on it
    is decided (a cancellation is an RPC to booking made while taking the event)."""
    for reference in {b["reference"] for b in booked}:
        deliveries.wait_for(copies, match=lambda args, result, reference=reference:
                            args[0] == event_type and args[1]["reference"] == reference)


def test_a_second_person_on_one_email_is_refused_up_front_without_the_name(booker, mongo):
    a = booker.book("Benali", "Yasmine", "seller.rdv@gmail.com", ip="198.51.100.1")
    with pytest.raises(EmailHasBooking) as caught:
        booker.book("Diallo", "Awa", "Seller.RDV+2@gmail.com", ip="198.51.100.2")
    assert a["reference"] in caught.value.message and "Benali" not in caught.value.message
    wait_handled(mongo, [a])
    assert booker.status(a)["status"] == "active"  # told before, nothing cancelled after


def test_the_same_person_twice_is_told_up_front_and_nothing_is_cancelled(booker, mongo):
    first = booker.book("Okafor", "Ifeoma", "ifeoma@example.org")
    with pytest.raises(EmailHasBooking) as caught:
        booker.book("OKAFOR", "ifeoma", "Ifeoma@example.org", ip="198.51.100.9")
    assert first["reference"] in caught.value.message
    wait_handled(mongo, [first])
    assert booker.status(first)["status"] == "active"


def test_a_placeholder_name_is_cancelled_and_a_real_one_is_not(booker, rpc, deliveries):
    fake = booker.book("test", "test", "a1@example.org", ip="198.51.100.3")
    real = booker.book("Nguyễn", "Thị Minh Khai", "khai@example.org", ip="198.51.100.4")
    assert booker.wait_status(fake, "cancelled")["cancel_reason"] == "name_not_exact"
    wait_taken(deliveries, [real])
    assert booker.status(real)["status"] == "active"
    [decision] = rpc.fraud.decisions_for(fake["reference"])
    assert decision["evidence"] == {"field": "family_name", "reason": "placeholder"}


def wait_case(rpc, size, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        cases = rpc.fraud.cases()
        if cases and len(cases[0]["bookings"]) >= size:
            return cases
        assert time.monotonic() < deadline, cases
        time.sleep(0.2)


def test_one_address_many_identities_is_one_review_case_that_staff_decide_whole(booker, rpc, mongo):
    people = [("Kaya", "Ayşe"), ("Demir", "Mustafa"), ("Şahin", "Elif"), ("Çelik", "Hüseyin"),
              ("Aydın", "Emre")]
    # ASCII addresses: the booking schema refuses addresses that need SMTPUTF8
    cluster = [booker.book(f, g, f"person{i}@example.org", ip="203.0.113.66", birth=f"198{i}-01-01")
               for i, (f, g) in enumerate(people)]
    honest = booker.book("Mensah", "Kwame", "kwame@example.org", ip="192.0.2.10")
    wait_handled(mongo, cluster + [honest])
    [case] = wait_case(rpc, 5)
    refs = sorted(b["reference"] for b in cluster)
    assert sorted(b["reference"] for b in case["bookings"]) == refs
    assert case["id"].startswith("address:203.0.113.66:") and case["state"] == "open"
    assert any("5 different people" in line for line in case["summary"])
    assert all(b["summary"] and b["state"] == "open" for b in case["bookings"])
    # an address is not a person: nobody is cancelled on it
    assert all(booker.status(b)["status"] == "active" for b in cluster + [honest])
    decided = rpc.fraud.decide_case(case["id"], "cancel", "agent.martin", "a cybercafé, checked")
    assert decided["state"] == "decided" and decided["decided_by"] == "agent.martin"
    assert {b["state"] for b in decided["bookings"]} == {"cancelled"}
    for booked in cluster:
        assert booker.wait_status(booked, "cancelled")["cancel_reason"] == "slot_grabbing"
    assert booker.status(honest)["status"] == "active"
    assert rpc.fraud.cases() == [] and rpc.fraud.cases("decided")[0]["id"] == case["id"]
    with pytest.raises(NotFound):
        rpc.fraud.decide_case("address:nowhere:1", "clear", "agent.martin")
    with pytest.raises(InvalidRequest):
        rpc.fraud.decide_case({"$gt": ""}, "clear", "agent.martin")


def test_a_pending_booking_on_a_victim_s_email_never_cancels_the_victim(booker, mongo, deliveries):
    # someone types the victim's e-mail, in upper case, under another name, and never confirms
    forged = booker.book("Doe", "John", "AMINA.Sow@example.org", ip="198.51.100.200", confirm=False)
    victim = booker.book("Sow", "Amina", "amina.sow@example.org", ip="198.51.100.201")
    wait_handled(mongo, [victim])
    wait_taken(deliveries, [forged], "booking_cancelled")  # the last event there is to take
    assert booker.status(victim)["status"] == "active"
    # the forged one can never be confirmed now: its place went back when the victim confirmed
    forged_now = booker.status(forged)
    assert (forged_now["status"], forged_now["cancel_reason"]) == ("cancelled", "email_already_used")
    assert booker.rpc.fraud.decisions_for(victim["reference"]) == []


def test_a_decoy_booking_cancels_nobody_and_goes_to_review_with_what_is_linked_to_it(
        container_factory, fraud_config, rpc, mongo):
    config = dict(fraud_config, SLOTS_DECOY_SHARE=0.2)
    for cls in (SlotsService, BookingService, FraudService):
        container_factory(cls, config).start()
    rpc.slots.create_from_plan(plan(desks=5, days=3), release="now")
    rpc.slots.create_from_plan(plan(procedure="first_application", desks=5, days=3), release="now")
    booker = Booker(rpc)
    today = datetime.now(timezone.utc).date()
    decoy = next(s for s in rpc.slots.list_open("renewal", today.isoformat(),
                                                (today + timedelta(days=10)).isoformat(),
                                                include_decoys=True)["slots"] if s["decoy"])
    other = rpc.slots.list_open("first_application", today.isoformat(),
                                (today + timedelta(days=10)).isoformat())["slots"][0]
    # a script: a first real-looking booking, then a decoy with the same e-mail after the
    # first one was cancelled... by nobody: the up-front rules stop a second active one on
    # one e-mail or for one person and procedure, so the script uses another identity on a
    # fresh e-mail, and the same person again for another procedure
    first = booker.book("Bakayoko", "Issa", "issa.b@example.org", ip="203.0.113.80",
                        slot=other["id"], procedure="first_application")
    neighbour = booker.book("Camara", "Mariam", "mariam@example.org", ip="203.0.113.80",
                            birth="1992-02-02")
    caught = booker.book("Bakayoko", "Issa", "script7@example.org", ip="203.0.113.80",
                         slot=decoy["id"])
    # issue 24: honest API users book decoys too; staff decide, with the links in front of them
    [case] = wait_case(rpc, 3)
    assert sorted(b["reference"] for b in case["bookings"]) == sorted(
        b["reference"] for b in (first, neighbour, caught))
    assert "decoy" in " ".join(case["summary"]) and case["strong"]
    assert [booker.status(b)["status"] for b in (first, neighbour, caught)] == ["active"] * 3


def two_in_the_grey_zone(container_factory, fraud_config, rpc, mongo):
    """With speed counting, two people from one address land in the grey zone: the booker and
    their two bookings, once both are in the review queue."""
    config = dict(fraud_config, FRAUD_FAST_SECONDS=60)
    for cls in (SlotsService, BookingService, FraudService):
        container_factory(cls, config).start()
    rpc.slots.create_from_plan(plan(desks=50, days=3), release="now")
    booker = Booker(rpc)
    first = booker.book("Haddad", "Nour", "nour@example.org", ip="203.0.113.7", birth="1990-01-01")
    second = booker.book("Khalil", "Maya", "maya@example.org", ip="203.0.113.7", birth="1991-01-01")
    wait_handled(mongo, [first, second])
    assert wait_until(lambda: len(rpc.fraud.review_queue()) == 2, timeout=10)
    return booker, first, second


def test_grey_zone_goes_to_staff_review(container_factory, fraud_config, rpc, bus, mongo):
    booker, first, second = two_in_the_grey_zone(container_factory, fraud_config, rpc, mongo)
    # the cluster (both) is reviewed together; a decision can also take one booking alone
    queue = rpc.fraud.review_queue()
    assert sorted(r["id"] for r in queue) == sorted([first["reference"], second["reference"]])
    assert len({r["case_id"] for r in queue}) == 1
    assert all(r["evidence"]["signals"]["identities_same_address"] == 2 for r in queue)
    assert booker.status(first)["status"] == "active"  # nobody cancelled on a suspicion
    decided = rpc.fraud.decide(first["reference"], "cancel", "agent.martin", "same family? no")
    assert decided["state"] == "cancelled"
    assert booker.wait_status(first, "cancelled")["cancel_reason"] == "slot_grabbing"
    assert booker.status(second)["status"] == "active"
    assert [r["id"] for r in rpc.fraud.review_queue()] == [second["reference"]]
    [case] = rpc.fraud.cases()  # still open: one booking in it is undecided
    rpc.fraud.decide(second["reference"], "clear", "agent.martin", "her sister")
    assert rpc.fraud.cases() == [] and rpc.fraud.review_queue() == []
    assert booker.status(second)["status"] == "active"
    counts = rpc.fraud.counts("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    assert counts == {"slot_grabbing": {"review": 2, "cancel": 1}}


def test_a_decision_delivered_again_is_answered_as_the_first_and_finishes_one_cut_short(
        container_factory, fraud_config, rpc, mongo):
    booker, first, second = two_in_the_grey_zone(container_factory, fraud_config, rpc, mongo)
    # a first delivery closed the review and died before cancelling: the booking is still active
    mongo("fraud")["reviews"].update_one({"_id": first["reference"]},
                                         {"$set": {"state": "cancelled", "decided_by": "agent.martin"}})
    assert booker.status(first)["status"] == "active"
    again = rpc.fraud.decide(first["reference"], "cancel", "agent.martin", "same family? no")
    assert again["state"] == "cancelled"
    assert booker.wait_status(first, "cancelled")["cancel_reason"] == "slot_grabbing"
    # the same decision twice: the same answer, nothing more; the other decision: refused
    cleared = rpc.fraud.decide(second["reference"], "clear", "agent.martin", "her sister")
    assert rpc.fraud.decide(second["reference"], "clear", "agent.martin", "her sister") == cleared
    with pytest.raises(Refused):
        rpc.fraud.decide(second["reference"], "cancel", "agent.martin", "changed my mind")
    assert booker.status(second)["status"] == "active"
    with pytest.raises(NotFound):
        rpc.fraud.decide("RDV-NO-SUCH-ONE", "cancel", "agent.martin", "")
    counts = rpc.fraud.counts("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    assert counts == {"slot_grabbing": {"review": 2, "cancel": 1}}


def handled(mongo, references):
    """True once fraud's inbox has handled the booking_created of each of these bookings."""
    indexed = {d["_id"] for d in mongo("fraud")["bookings"].find({"_id": {"$in": list(references)}})}
    done = mongo("fraud")["inbox"].count_documents({"event_type": "booking_confirmed", "state": "done"})
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


def test_without_the_allow_list_the_same_address_goes_to_review(booker, rpc, mongo):
    # the control for the test above: the same five from one address, nobody allowed
    helped = [booker.book(f, g, f"{f.lower()}@example.org", ip="203.0.113.98", birth=f"197{i}-05-05")
              for i, (f, g) in enumerate([("Warsame", "Hodan"), ("Osman", "Ayaan"), ("Farah", "Mo"),
                                          ("Abebe", "Bikila"), ("Tesfaye", "Selam")])]
    [case] = wait_case(rpc, 5)
    assert case["id"].startswith("address:203.0.113.98:")
    assert all(booker.status(b)["status"] == "active" for b in helped)


def test_fraud_learns_of_cancellations_from_the_bus(booker, mongo):
    booked = booker.book("Sow", "Aminata", "aminata@example.org")
    wait_handled(mongo, [booked])
    booker.rpc.booking.cancel(booked["reference"], booked["token"])

    def status_in_index_and_group():
        entry = mongo("fraud")["bookings"].find_one({"_id": booked["reference"]})
        group = mongo("fraud")["groups"].find_one({"_id": "email:aminata@example.org"})
        return entry["status"], group["members"][booked["reference"]]["status"]
    # two writes (the index, then each group): wait for both rather than read between them
    assert wait_until(lambda: status_in_index_and_group() == ("cancelled", "cancelled"),
                      timeout=10), status_in_index_and_group()


def test_cancel_then_book_again_with_the_same_email_is_not_cancelled(booker, mongo):
    first = booker.book("Sow", "Aminata", "aminata@example.org")
    wait_handled(mongo, [first])
    booker.rpc.booking.cancel(first["reference"], first["token"])
    again = booker.book("Sow", "Aminata", "aminata@example.org", ip="198.51.100.77")
    wait_handled(mongo, [first, again])
    assert booker.status(again)["status"] == "active"
    assert booker.status(first)["cancel_reason"] == "applicant"
    assert booker.rpc.fraud.decisions_for(again["reference"]) == []


def test_the_same_event_twice_makes_one_decision_and_one_cancellation(booker, bus, rpc, fraud_config,
                                                                     deliveries):
    created = bus("booking", "booking_confirmed")
    cancelled = bus("booking", "booking_cancelled")
    detected = bus("fraud", "fraud_detected")
    fake = booker.book("xxx", "Paul", "p@example.org")
    _, event = created.wait_for()
    booker.wait_status(fake, "cancelled")
    dispatch = event_dispatcher(fraud_config)
    for _ in range(3):
        dispatch("booking", "booking_confirmed", event)
    wait_taken(deliveries, [fake], copies=4)  # the first and its three copies
    assert len(rpc.fraud.decisions_for(fake["reference"])) == 1
    assert len(cancelled.drain()) == 1
    assert len(detected.drain()) == 1


def test_events_that_arrive_while_fraud_is_down_are_handled_when_it_is_back(
        container_factory, fraud_config, rpc, mongo):
    for cls in (SlotsService, BookingService):
        container_factory(cls, fraud_config).start()
    fraud = container_factory(FraudService, fraud_config)
    fraud.start()  # declares its durable queues
    fraud.stop()
    rpc.slots.create_from_plan(plan(desks=5), release="now")
    booker = Booker(rpc)
    fake = booker.book("Inconnu", "Inconnu", "x@example.org")
    # its booking_confirmed is on the bus (published by booking's relay), waiting for fraud
    bookings = mongo("booking")["bookings"]
    assert wait_until(lambda: bookings.find_one({"_id": fake["reference"]})["outbox"]["confirmed"]
                      ["state"] == "done", timeout=10)
    assert booker.status(fake)["status"] == "active"  # confirmed; fraud has not seen it yet
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


def test_many_people_on_one_email_that_slipped_past_the_up_front_check_are_all_cancelled(
        container_factory, fraud_config, booker, rpc, mongo):
    container_factory(FraudService, fraud_config).start()  # a second fraud process races the first
    people = [("Wang", "Fang"), ("Zhang", "Ziyi"), ("Liu", "Yang"), ("Chen", "Mei Ling"), ("Zhou", "Enlai")]
    booked = [booker.book(f, g, f"broker+{i}@gmail.com", birth=f"198{i}-07-07",
                          ip=f"198.51.100.{50 + i}", confirm=False)
              for i, (f, g) in enumerate(people)]
    # confirmations at the same instant all pass the up-front check (it reads, then writes):
    # made so here, then announced at once, as the booking service would
    bookings = mongo("booking")["bookings"]
    dispatch = event_dispatcher(fraud_config)
    for one in booked:
        bookings.update_one({"_id": one["reference"]}, {"$set": {"status": "active"}})
    for i, one in enumerate(booked):
        stored = bookings.find_one({"_id": one["reference"]})
        dispatch("booking", "booking_confirmed", booking_event(
            reference=one["reference"], name="booking_confirmed", email=stored["email"],
            email_normalised="broker@gmail.com", identity=stored["identity"],
            client={"ip": f"198.51.100.{50 + i}", "user_agent": "UA"}))
    for one in booked:
        assert booker.wait_status(one, "cancelled", timeout=15)["cancel_reason"] == "multiple_bookings_same_email"
    decisions = rpc.fraud.decisions_for(booked[0]["reference"])
    assert decisions[0]["evidence"]["identities"] >= 2


def test_booking_statuses_for_services_with_their_own_index(booker, rpc):
    booked = booker.book("Sow", "Ousmane", "ousmane@example.org")
    rpc.booking.cancel(booked["reference"], booked["token"])
    assert rpc.booking.statuses([booked["reference"], "RDV-0000-0000"]) == {
        booked["reference"]: {"status": "cancelled", "cancel_reason": "applicant"}}


def test_two_confirmations_on_one_mailbox_at_once_a_decoy_and_a_real_slot_both_cancelled(
        container_factory, fraud_config, rpc, mongo):
    """Issue 25: a script confirms two people on one mailbox at the same instant, one on a
    decoy slot: both bookings are cancelled (M3: one e-mail, two people), whichever handler
    reads the index first.

    The confirmations overlap for sure: both wait on the bus while fraud is down (its queue
    declared), then two fraud processes take them at once."""
    config = dict(fraud_config, SLOTS_DECOY_SHARE=0.2)
    for cls in (SlotsService, BookingService):
        container_factory(cls, config).start()
    fraud = container_factory(FraudService, config)
    fraud.start()  # declares its durable queue, then goes away
    fraud.stop()
    rpc.slots.create_from_plan(plan(desks=5, days=3), release="now")
    booker = Booker(rpc)
    today = datetime.now(timezone.utc).date()
    decoy = next(s for s in rpc.slots.list_open("renewal", today.isoformat(),
                                                (today + timedelta(days=10)).isoformat(),
                                                include_decoys=True)["slots"] if s["decoy"])
    pairs = [booker.book("Sylla", "Aminata", "grab.pair@example.org", birth="1991-04-04",
                         ip="198.51.100.30", slot=decoy["id"], confirm=False),
             booker.book("Barry", "Ibrahima", "grab.pair@example.org", birth="1987-06-06",
                         ip="198.51.100.31", confirm=False)]
    confirm_at_once(mongo, config, pairs)
    for _ in range(2):  # two fraud processes take the two events at once
        container_factory(FraudService, config).start()
    for one in pairs:
        assert booker.wait_status(one, "cancelled", timeout=20)["cancel_reason"] == \
            "multiple_bookings_same_email"


def confirm_at_once(mongo, config, booked):
    """Confirm pending bookings at the same instant: each passed the up-front checks before the
    others were written, as confirmations racing would; announced as the booking service does."""
    bookings, dispatch = mongo("booking")["bookings"], event_dispatcher(config)
    for one in booked:
        stored = bookings.find_one_and_update(
            {"_id": one["reference"]},
            {"$set": {"status": "active", "confirmed_ts": time.time(),
                      "outbox.confirmed": {"event_id": str(uuid.uuid4())}}},
            return_document=ReturnDocument.AFTER)
        dispatch("booking", "booking_confirmed", booking_events.confirmed_event(stored, "token-for-the-e-mail"))


def test_one_person_confirmed_twice_at_once_with_two_e_mails_keeps_the_first(
        container_factory, fraud_config, rpc, mongo):
    """Issue 25: the same person booked and confirmed twice at the same instant with two
    e-mail addresses, from two addresses: both pass the up-front check, fraud cancels the
    later confirmation (with its evidence) and keeps the first."""
    for cls in (SlotsService, BookingService):
        container_factory(cls, fraud_config).start()
    fraud = container_factory(FraudService, fraud_config)
    fraud.start()  # declares its durable queue, then goes away: the two events wait together
    fraud.stop()
    rpc.slots.create_from_plan(plan(desks=5, days=3), release="now")
    booker = Booker(rpc)
    twice = [booker.book("N'Diaye", "Awa Marie", "awa.home@example.org", birth="1990-05-05",
                         ip="198.51.100.61", confirm=False),
             booker.book("NDIAYE", "awa-marie", "awa.work@example.org", birth="1990-05-05",
                         ip="192.0.2.62", confirm=False)]
    confirm_at_once(mongo, fraud_config, twice)
    for _ in range(2):
        container_factory(FraudService, fraud_config).start()
    later = booker.wait_status(twice[1], "cancelled", timeout=20)
    assert later["cancel_reason"] == "multiple_bookings_same_person"
    wait_handled(mongo, twice)
    assert booker.status(twice[0])["status"] == "active"
    [decision] = rpc.fraud.decisions_for(twice[1]["reference"])
    assert decision["evidence"]["kept"] == twice[0]["reference"]


def test_an_undone_cancellation_counts_again_whatever_order_the_events_arrive_in(
        container_factory, fraud_config, mongo, deliveries):
    """booking_restored (issue 21): the index says active again, so a second booking of the
    same person is seen (M3); a cancellation delivered late, after its undo, changes nothing."""
    container_factory(FraudService, fraud_config).start()
    dispatch = event_dispatcher(fraud_config)
    reference = "RDV-UNDO-0001"
    cancelled = booking_event(reference, name="booking_cancelled", reason="name_mismatch",
                              occurred_at="2027-02-02T09:00:00Z")
    restored = booking_event(reference, name="booking_restored", token="t", restored_by="chief",
                             occurred_at="2027-02-02T09:30:00Z")

    def statuses():
        entry = mongo("fraud")["bookings"].find_one({"_id": reference}) or {}
        group = mongo("fraud")["groups"].find_one({"_id": "email:yasmine.benali@example.org"}) or {}
        return entry.get("status"), (group.get("members") or {}).get(reference, {}).get("status")

    def taken(event_type, copies=1):
        deliveries.wait_for(copies, match=lambda args, result: args[0] == event_type)

    dispatch("booking", "booking_confirmed", booking_event(reference, name="booking_confirmed"))
    taken("booking_confirmed")
    dispatch("booking", "booking_cancelled", cancelled)
    taken("booking_cancelled")
    assert statuses() == ("cancelled", "cancelled")
    dispatch("booking", "booking_restored", restored)
    taken("booking_restored")
    assert statuses() == ("active", "active")
    # the cancellation again (its relay's resend under another delivery): older than the undo
    dispatch("booking", "booking_cancelled", dict(cancelled, event_id=str(uuid.uuid4())))
    taken("booking_cancelled", copies=2)
    assert statuses() == ("active", "active")


def test_a_cancellation_fraud_takes_before_the_confirmation_is_kept_and_never_reviewed(
        container_factory, fraud_config, rpc, mongo, deliveries):
    """booking_cancelled and booking_confirmed come on separate queues: a booking's
    cancellation may be taken first. The index still ends cancelled (entry and groups), the
    booking joins no review case, and copies of either event handled again change nothing.
    Before, the confirmation wrote the booking as active and it went to staff review."""
    config = dict(fraud_config, FRAUD_FAST_SECONDS=60)  # the speed counts: two people, one case
    container_factory(FraudService, config).start()
    dispatch = event_dispatcher(config)
    ip = "203.0.113.50"

    def confirmed(reference, email, family):
        return booking_event(reference, name="booking_confirmed", email=email,
                             email_normalised=email, seconds_after_publication=1.0,
                             client={"ip": ip, "user_agent": "x"},
                             identity={"family_name": family, "given_names": "Nour",
                                       "birth_date": "1990-01-01"})

    kept = confirmed("RDV-RACE-0001", "nour@example.org", "Haddad")
    gone = confirmed("RDV-RACE-0002", "maya@example.org", "Khalil")
    cancelled = booking_event("RDV-RACE-0002", name="booking_cancelled", reason="applicant",
                              was_confirmed=True, email="maya@example.org",
                              email_normalised="maya@example.org",
                              occurred_at="2027-02-01T10:05:00Z")

    def taken(event_type, reference, copies=1):
        deliveries.wait_for(copies, match=lambda args, result: args[0] == event_type
                            and args[1]["reference"] == reference)

    def index_of(reference):
        entry = mongo("fraud")["bookings"].find_one({"_id": reference}) or {}
        groups = mongo("fraud")["groups"].find({"_id": {"$in": entry.get("groups") or []}})
        return entry.get("status"), {g["members"][reference]["status"] for g in groups
                                     if not g["_id"].startswith("ua:")}

    dispatch("booking", "booking_cancelled", cancelled)
    taken("booking_cancelled", gone["reference"])
    dispatch("booking", "booking_confirmed", kept)
    taken("booking_confirmed", kept["reference"])
    dispatch("booking", "booking_confirmed", gone)
    taken("booking_confirmed", gone["reference"])
    assert index_of(gone["reference"]) == ("cancelled", {"cancelled"})
    assert [r["id"] for r in rpc.fraud.review_queue()] == [kept["reference"]]
    [case] = rpc.fraud.cases()
    assert [b["reference"] for b in case["bookings"]] == [kept["reference"]]

    # copies: the same deliveries again (the inbox drops them), and each handled again as when
    # its "handled" mark was lost (another event id), the confirmation last
    for event_type, event in (("booking_confirmed", gone), ("booking_cancelled", cancelled)):
        dispatch("booking", event_type, event)
    taken("booking_confirmed", gone["reference"], copies=2)
    taken("booking_cancelled", gone["reference"], copies=2)
    for event_type, event in (("booking_cancelled", cancelled), ("booking_confirmed", gone)):
        dispatch("booking", event_type, dict(event, event_id=str(uuid.uuid4())))
        taken(event_type, gone["reference"], copies=3)
    assert index_of(gone["reference"]) == ("cancelled", {"cancelled"})
    assert [r["id"] for r in rpc.fraud.review_queue()] == [kept["reference"]]

    # the other one cancelled too, in the usual order: its open review learns of it, and the
    # case, with nothing left to decide, is closed
    dispatch("booking", "booking_cancelled", booking_event(
        kept["reference"], name="booking_cancelled", reason="applicant", was_confirmed=True,
        email="nour@example.org", email_normalised="nour@example.org",
        occurred_at="2027-02-01T10:06:00Z"))
    taken("booking_cancelled", kept["reference"])
    assert index_of(kept["reference"]) == ("cancelled", {"cancelled"})
    assert rpc.fraud.review_queue() == [] and rpc.fraud.cases() == []
    [closed] = rpc.fraud.review_queue(state="cancelled")
    assert (closed["id"], closed["decided_by"], closed["cancelled_elsewhere"]) == \
        (kept["reference"], "booking", "applicant")
