"""One effect under redelivery (issue 25): RabbitMQ delivers an RPC request again when its
consumer dies before acking it, so every writing RPC must make one effect of two deliveries.

The same nameko request message is published twice on the service's queue (as a redelivery
would bring it), or the booking process is killed between its insert and its reply and a new
one gets the request again."""
import time
import uuid
from datetime import date

import eventlet
import pytest
from kombu import Connection, Exchange, Producer, Queue
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from services.booking.service import BookingService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.helpers import applicant, plan, wait_until
from tests.integration.conftest import FixedClock, paris
from tests.integration.test_booking_service import CLIENT, a_slot, system  # noqa: F401
from tests.integration.test_requests_allocation import availability, next_weekday

KEY = "k" + uuid.uuid4().hex  # one HTTP request's key, as the public gateway sends it
PUBLIC = ("reference", "token", "status", "confirm_token", "confirm_by", "slot", "not_final")


def deliver(amqp_uri, service, method, kwargs, copies=2, together=False, timeout=20):
    """Publish the same nameko RPC request `copies` times (same body, same reply address) and
    return the replies' bodies. together: all at once; else each after the previous reply."""
    exchange = Exchange("nameko-rpc", type="topic", durable=True)
    reply_to = f"test-replies-{uuid.uuid4().hex}"
    replies = []
    with Connection(amqp_uri) as conn:
        queue = Queue(reply_to, exchange=exchange, routing_key=reply_to, exclusive=True,
                      auto_delete=True)
        with conn.Consumer(queue, accept=["json"],
                           callbacks=[lambda body, message: (replies.append(body), message.ack())]):
            producer = Producer(conn)

            def publish(i):
                producer.publish({"args": [], "kwargs": kwargs}, exchange=exchange,
                                 routing_key=f"{service}.{method}", reply_to=reply_to,
                                 correlation_id=f"same-request-{i}", serializer="json",
                                 declare=[exchange])

            def wait_for(count):
                deadline = time.monotonic() + timeout
                while len(replies) < count:
                    assert time.monotonic() < deadline, f"{len(replies)} replies of {count}"
                    try:
                        conn.drain_events(timeout=0.5)
                    except (TimeoutError, OSError):
                        pass

            for i in range(copies):
                publish(i)
                if not together:
                    wait_for(i + 1)
            wait_for(copies)
    return replies


@pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "at-once"])
def test_the_same_create_delivered_twice_is_one_booking_and_one_answer(system, config, bus, mongo,
                                                                       together):
    created_events = bus("booking", "booking_created")
    slot = a_slot(system)
    replies = deliver(config["AMQP_URI"], "booking", "create",
                      {"request": applicant(slot["id"]), "client": CLIENT, "idempotency_key": KEY},
                      together=together)

    assert [r["error"] for r in replies] == [None, None]  # never 409 "slot full" for our own
    first, again = (r["result"] for r in replies)
    assert {k: first.get(k) for k in PUBLIC} == {k: again.get(k) for k in PUBLIC}
    assert first["status"] == "pending" and first["token"]
    bookings = list(mongo("booking")["bookings"].find({"abandoned_hold": {"$ne": True}}))
    assert [b["_id"] for b in bookings] == [first["reference"]]
    assert system.slots.holds(slot["id"]) == [first["reference"]]
    assert system.slots.get(slot["id"])["booked"] == 1
    # one announcement (its relay copies, if any, carry the same event id): both deliveries
    # answered, whatever they published is on the bus
    events = created_events.fenced()
    assert {(e["reference"], e["event_id"]) for _, e in events} == {
        (first["reference"], bookings[0]["outbox"]["created"]["event_id"])}
    # the answer's token is the booking's
    assert system.booking.get(first["reference"], again["token"])["status"] == "pending"


def test_the_same_key_with_other_data_is_another_request(system):
    slot = a_slot(system)
    one = system.booking.create(applicant(slot["id"]), CLIENT, idempotency_key=KEY)
    other_slot = system.slots.list_open("renewal", slot["start"][:10], "2100-01-01")["slots"][1]
    other = system.booking.create(applicant(other_slot["id"], email="awa@example.org",
                                            given_names="Awa"), CLIENT, idempotency_key=KEY)
    assert other["reference"] != one["reference"] and other["token"] != one["token"]


STALLS = {"after_insert": "_announce_created", "after_announcement": "_created_answer"}


@pytest.mark.parametrize("stall", sorted(STALLS))
def test_a_booking_process_killed_before_its_reply_answers_the_booking_it_made(
        container_factory, config, bus, mongo, monkeypatch, stall):
    """The first booking process stalls at `stall` (its insert done, its reply not sent) and is
    killed; RabbitMQ gives the unacked request to a new process, whose answer is the booking."""
    created_events = bus("booking", "booking_created")
    stalled, first_process = eventlet.Event(), [True]
    original = getattr(BookingService, STALLS[stall])

    def stall_first(self, *args, **kwargs):
        if first_process[0]:
            stalled.send(True)
            eventlet.sleep(60)  # killed before it wakes
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BookingService, STALLS[stall], stall_first)
    container_factory(SlotsService, config).start()
    first = container_factory(BookingService, config)
    first.start()
    with ClusterRpcProxy(config, timeout=30) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        slot = a_slot(rpc)
        reply = rpc.booking.create.call_async(applicant(slot["id"]), CLIENT, idempotency_key=KEY)
        assert stalled.wait(20), "the first process never reached its stall point"
        stored = mongo("booking")["bookings"].find_one({"status": "pending"})
        assert stored is not None  # inserted, not answered
        first.kill()
        first_process[0] = False
        container_factory(BookingService, config).start()

        answer = reply.result()
        assert answer["reference"] == stored["_id"] and answer["status"] == "pending"
        assert rpc.booking.get(answer["reference"], answer["token"])["status"] == "pending"
        assert [b["_id"] for b in mongo("booking")["bookings"].find()] == [stored["_id"]]
        assert rpc.slots.holds(slot["id"]) == [stored["_id"]]
        assert rpc.slots.get(slot["id"])["booked"] == 1
        # announced once: by the first process, or by the new one's relay from the outbox
        _, event = created_events.wait_for(timeout=15)
        assert event["reference"] == stored["_id"]
        assert wait_until(lambda: mongo("booking")["bookings"].find_one(
            {"_id": stored["_id"]})["outbox"]["created"]["state"] == "done", timeout=15)
        # marked sent (no relay sends it again) and the request answered: nothing more to come
        later = created_events.fenced()
        assert {e["event_id"] for _, e in later} <= {event["event_id"]}


def test_the_same_hold_delivered_twice_takes_one_place(system, config):
    slot = a_slot(system)
    replies = deliver(config["AMQP_URI"], "slots", "hold",
                      {"slot_id": slot["id"], "hold_id": "RDV-SAME-HOLD", "procedure": "renewal"},
                      together=True)
    assert [r["error"] for r in replies] == [None, None]
    assert system.slots.holds(slot["id"]) == ["RDV-SAME-HOLD"]
    assert system.slots.get(slot["id"])["booked"] == 1
    # given back once, however often it is asked
    assert [r["result"] for r in deliver(config["AMQP_URI"], "slots", "release",
                                         {"hold_id": "RDV-SAME-HOLD"})] == [True, False]
    assert system.slots.get(slot["id"])["booked"] == 0


def test_the_same_walk_in_delivered_twice_is_one_walk_in(container_factory, config, mongo):
    booking = container_factory(BookingService, config)
    # a Tuesday morning: walk-ins are allowed (M6)
    replace_dependencies(booking, clock=FixedClock(paris(date(2027, 3, 2), 10)))
    booking.start()
    request = {"procedure": "renewal_10y", "site": "montpellier", "family_name": "Benali",
               "given_names": "Yasmine", "birth_date": "1988-03-14",
               "foreigner_number": "0123456789", "agent": "agent"}
    replies = deliver(config["AMQP_URI"], "booking", "register_walk_in",
                      {"request": request, "idempotency_key": KEY}, together=True)
    assert [r["error"] for r in replies] == [None, None]
    assert replies[0]["result"] == replies[1]["result"]
    assert [w["_id"] for w in mongo("booking")["bookings"].find({"walk_in": True})] == [
        replies[0]["result"]["id"]]


TOGETHER = pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "at-once"])


@TOGETHER
def test_the_same_attempt_delivered_twice_is_one_attempt_and_one_receipt(
        container_factory, config, bus, mongo, together):
    """Nothing is bookable (no slot at all): the attempt is recorded, its receipt announced,
    and counted against the day's limits once, however often the request is delivered."""
    recorded_events = bus("booking", "attempt_recorded")
    container_factory(SlotsService, config).start()
    container_factory(BookingService, config).start()
    request = {"procedure": "renewal", "email": "amina.diallo@example.org",
               "foreigner_number": "0612345678"}
    replies = deliver(config["AMQP_URI"], "booking", "record_attempt",
                      {"request": request, "idempotency_key": KEY}, together=together)

    assert [r["error"] for r in replies] == [None, None]
    first, again = (r["result"] for r in replies)
    assert first == again and first["reference"].startswith("ATT-") and first["token"]
    attempts = list(mongo("booking")["attempts"].find())
    assert [a["_id"] for a in attempts] == [first["reference"]]
    assert "token" not in attempts[0]  # rebuilt from the salt, never stored in clear
    events = recorded_events.fenced()  # both deliveries answered: all they published
    assert {(e["reference"], e["event_id"]) for _, e in events} == {
        (first["reference"], attempts[0]["outbox"]["recorded"]["event_id"])}
    # counted once: per person and per e-mail (the same counter without a number's own)
    assert sorted(c["n"] for c in mongo("booking")["attempt_days"].find()) == [1, 1]
    with ClusterRpcProxy(config, timeout=20) as rpc:
        assert [a["reference"] for a in rpc.booking.attempts(first["reference"], again["token"])[
            "attempts"]] == [first["reference"]]


@TOGETHER
def test_the_same_filing_delivered_twice_is_one_request_and_one_e_mail(
        container_factory, config, bus, mongo, together):
    filed_events = bus("requests", "request_filed")
    container_factory(SlotsService, config).start()
    container_factory(RequestsService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.requests.set_mode("renewal", "requests", by="chief")
        filing = {"procedure": "renewal", "family_name": "Benali", "given_names": "Yasmine",
                  "birth_date": "1988-03-14", "email": "yasmine.benali@example.org",
                  "foreigner_number": "0123456789",
                  "availability": availability(next_weekday(date.today(), 1))}
        replies = deliver(config["AMQP_URI"], "requests", "file",
                          {"request": filing, "idempotency_key": KEY}, together=together)

        assert [r["error"] for r in replies] == [None, None]
        first, again = (r["result"] for r in replies)
        assert first == again and first["reference"].startswith("REQ-") and first["token"]
        stored = list(mongo("requests")["requests"].find())
        assert [r["_id"] for r in stored] == [first["reference"]]
        events = filed_events.fenced()  # both deliveries answered: all they published
        assert {(e["reference"], e["event_id"]) for _, e in events} == {
            (first["reference"], stored[0]["outbox"]["filed"]["event_id"])}
        assert rpc.requests.get(first["reference"], again["token"])["state"] == "unconfirmed"
        # the same key with another filing is another request
        other = rpc.requests.file(dict(filing, email="awa@example.org", given_names="Awa",
                                       foreigner_number="0223456789"), idempotency_key=KEY)
        assert other["reference"] != first["reference"]


@TOGETHER
def test_the_same_add_desks_delivered_twice_adds_the_desks_once(system, config, together):
    """The open slots of the system's plan (two desks): two more desks each, delivered twice,
    are two more places on each slot, not four."""
    plan_id = system.slots.create_from_plan(plan(desks=2), release="now")["plan_id"]  # the same
    before = {s["id"]: s["capacity"] for s in system.slots.list_open(
        "renewal", "2000-01-01", "2100-01-01", 1, 500)["slots"]}
    replies = deliver(config["AMQP_URI"], "slots", "add_desks",
                      {"plan_id": plan_id, "desks": 2, "idempotency_key": KEY}, together=together)
    assert [r["error"] for r in replies] == [None, None]
    assert replies[0]["result"] == replies[1]["result"]
    assert replies[0]["result"]["places"] == 2 * replies[0]["result"]["slots"] > 0
    added = {slot_id: system.slots.get(slot_id)["capacity"] - capacity
             for slot_id, capacity in before.items()}
    assert set(added.values()) == {2}


@TOGETHER
def test_the_same_create_partner_delivered_twice_is_one_partner_and_one_key(
        container_factory, config, mongo, together):
    """Issue 24's partners, under issue 25's rule: the second delivery answers the partner the
    first made, with the same key (derived, never stored), and that key files for it."""
    from services.requests import quota
    container_factory(SlotsService, config).start()
    container_factory(RequestsService, config).start()
    partner = {"name": "Cimade Hérault", "contact_email": "permanence@cimade.example.org",
               "quotas": {"renewal": 5}, "expires": "2099-01-01", "by": "chief"}
    replies = deliver(config["AMQP_URI"], "requests", "create_partner",
                      {"partner": partner, "idempotency_key": KEY}, together=together)
    assert [r["error"] for r in replies] == [None, None], replies
    first, again = (r["result"] for r in replies)
    assert first == again and first["api_key"].startswith(first["id"] + ".")
    [stored] = list(mongo("requests")["partners"].find())
    assert stored["_id"] == first["id"] and first["api_key"] not in str(stored)
    assert quota.key_matches(first["api_key"], stored["key_hash"])
    with ClusterRpcProxy(config, timeout=20) as rpc:  # another request: another partner
        other = rpc.requests.create_partner(partner, idempotency_key="other-" + KEY)
    assert other["id"] != first["id"] and other["api_key"] != first["api_key"]
