"""Booking service with the real slots service, RabbitMQ and the store; events seen on the bus."""
import time
from datetime import datetime, timedelta, timezone

import eventlet
import pytest
from nameko.exceptions import ConfigurationError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from services.booking.service import BookingService
from services.common.lease import InstanceId
from services.common.rpc import rpc
from services.common.errors import (EmailHasBooking, InvalidRequest, NotFound,
                                    PersonHasBooking, ServiceUnavailable, SlotFull)
from services.common.timeutil import parse_iso
from services.slots.service import SlotsService
from tests.helpers import Calls, applicant, plan, wait_until

CLIENT = {"ip": "203.0.113.7", "user_agent": "pytest"}


@pytest.fixture
def system(container_factory, config):
    """slots + booking running; returns an RPC proxy to the cluster and a free slot."""
    container_factory(SlotsService, config).start()
    container_factory(BookingService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2), release="now")
        yield rpc


def announced(mongo, reference, kind):
    """The booking's `kind` event is marked sent: no relay will send it (again). With the RPC
    that made it answered, everything it published is on the bus (BusListener.fenced)."""
    assert wait_until(lambda: mongo("booking")["bookings"].find_one(
        {"_id": reference})["outbox"][kind]["state"] == "done", timeout=15)


def a_slot(rpc, procedure="renewal"):
    today = datetime.now(timezone.utc).date()
    return rpc.slots.list_open(procedure, today.isoformat(),
                               (today + timedelta(days=30)).isoformat())["slots"][0]


def test_booking_is_stored_held_and_announced(system, bus, mongo):
    listener = bus("booking", "booking_created")
    slot = a_slot(system)
    created = system.booking.create(applicant(slot["id"]), CLIENT)

    event_type, event = listener.wait_for()
    assert event_type == "booking_created"
    assert event["reference"] == created["reference"]
    assert event["slot_id"] == slot["id"] and event["site"] == "montpellier"
    assert event["email_normalised"] == "yasmine.benali@example.org"
    assert event["identity"]["family_name"] == "Benali"
    assert event["client"] == CLIENT
    assert event["seconds_after_publication"] >= 0
    assert event["token"] == created["token"]
    assert event["event_id"] and event["occurred_at"].endswith("Z")

    stored = mongo("booking")["bookings"].find_one({"_id": created["reference"]})
    assert stored["status"] == created["status"] == "pending"  # until the mailbox confirms
    assert event["decoy"] is False
    # the "sent" mark is written with the next batch, a moment later
    assert wait_until(lambda: mongo("booking")["bookings"].find_one(
        {"_id": created["reference"]})["outbox"]["created"]["state"] == "done")
    assert created["token"] not in str(stored)  # only a hash of the token is kept
    assert system.slots.holds(slot["id"]) == [created["reference"]]
    assert system.slots.get(slot["id"])["booked"] == 1


def test_confirm_makes_it_active_once_and_announces_booking_confirmed_once(system, bus, mongo):
    listener = bus("booking", "booking_confirmed")
    slot = a_slot(system)
    created = system.booking.create(applicant(slot["id"]), CLIENT)
    assert "pas encore définitif" in created["not_final"]["fr"] and created["confirm_by"]
    with pytest.raises(NotFound):
        system.booking.confirm(created["reference"], "wrong-token")
    first = system.booking.confirm(created["reference"], created["confirm_token"])
    again = system.booking.confirm(created["reference"], created["confirm_token"])
    assert first["status"] == again["status"] == "active" and "not_final" not in first
    announced(mongo, created["reference"], "confirmed")
    events = listener.fenced()
    assert [e[1]["reference"] for e in events] == [created["reference"]]
    confirmed = events[0][1]
    assert confirmed["email_normalised"] == "yasmine.benali@example.org"
    assert confirmed["client"] == CLIENT and confirmed["confirmed_at"].endswith("Z")
    # the booking's own token, for the confirmed e-mail's convocation link; never the link's
    assert confirmed["token"] == created["token"] and confirmed.get("confirm_token") is None


def test_booking_confirmed_is_on_the_bus_before_the_cleanups_that_follow_it(container_factory, config, bus):
    """Fraud screens from booking_confirmed (issue 22: p95 under 1 s from the confirmation to
    a cancellation): the event leaves first, then the release's count in slots is ended, an
    RPC that took hundreds of ms under a burst. Slots here looks, when told, whether the
    event is already on the bus (it waits for it a while: it cannot come later)."""
    listener = bus("booking", "booking_confirmed")
    seen_when_told = []

    class Slots(SlotsService):
        @rpc
        def confirmed(self, hold_id):
            deadline = time.monotonic() + 5
            while listener.received.empty() and time.monotonic() < deadline:
                eventlet.sleep(0.05)
            seen_when_told.append(not listener.received.empty())
            return super().confirmed(hold_id)

    container_factory(Slots, config).start()
    container_factory(BookingService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc_proxy:
        rpc_proxy.slots.create_from_plan(plan(desks=2), release="now")
        created = rpc_proxy.booking.create(applicant(a_slot(rpc_proxy)["id"]), CLIENT)
        assert rpc_proxy.booking.confirm(created["reference"], created["confirm_token"])["status"] == "active"
    assert seen_when_told == [True]
    assert [e["reference"] for _, e in listener.fenced()] == [created["reference"]]


def test_a_second_confirmed_booking_on_one_email_is_refused_up_front(system):
    slot = a_slot(system)
    first = system.booking.create(applicant(slot["id"]), CLIENT)
    # pending bookings count for nothing: anyone can type someone else's e-mail
    pending_other = system.booking.create(applicant(slot["id"], family_name="Diallo",
                                                    given_names="Awa"), CLIENT)
    system.booking.confirm(first["reference"], first["confirm_token"])
    with pytest.raises(EmailHasBooking) as caught:
        system.booking.create(applicant(slot["id"], email="YASMINE.Benali@Example.org",
                                        family_name="Diallo", given_names="Awa"), CLIENT)
    assert first["reference"] in caught.value.message and "Benali" not in caught.value.message
    assert "une adresse par personne" in caught.value.message and "one e-mail" in caught.value.message
    # the booking made before the first was confirmed can no longer be: its place went back
    other = system.booking.get(pending_other["reference"], pending_other["token"])
    assert (other["status"], other["cancel_reason"]) == ("cancelled", "email_already_used")
    assert system.booking.confirm(pending_other["reference"], pending_other["confirm_token"])["status"] == "cancelled"
    assert system.slots.holds(slot["id"]) == [first["reference"]]
    # once the first is cancelled, the e-mail is free again
    system.booking.cancel(first["reference"], first["token"])
    # (on another slot: the places given back here wait for their re-release)
    again = system.booking.create(applicant(a_slot(system)["id"], family_name="Diallo",
                                            given_names="Awa"), CLIENT)
    assert system.booking.confirm(again["reference"], again["confirm_token"])["status"] == "active"


def test_one_person_with_a_second_e_mail_is_refused_up_front_naming_nothing(system):
    """Issue 25: M3 is one booking per person, not per mailbox. The same folded names and
    birth date, or the same foreigner number, under another e-mail: refused once the first
    is confirmed, without its reference, e-mail or which of the two matched."""
    slot = a_slot(system)
    first = system.booking.create(applicant(slot["id"], email="awa.first@example.org",
                                            family_name="N'Diaye", given_names="Awa Marie"), CLIENT)
    # a pending booking counts for nothing (anyone can type someone else's name)
    second = system.booking.create(applicant(slot["id"], email="awa.second@example.org",
                                             family_name="NDIAYE", given_names="awa-marie"), CLIENT)
    system.booking.confirm(first["reference"], first["confirm_token"])
    tries = {
        "names and birth date": applicant(slot["id"], email="awa.third@example.org",
                                          family_name="Ndiaye", given_names="Awa  Marie",
                                          foreigner_number="9999999999"),
        "foreigner number": applicant(slot["id"], email="someone@example.org", family_name="Kone",
                                      given_names="Fanta", foreigner_number=first_number(system, first)),
    }
    messages = set()
    for how, request in tries.items():
        with pytest.raises(PersonHasBooking) as caught:
            system.booking.create(request, CLIENT)
        assert first["reference"] not in caught.value.message, how
        assert "awa.first" not in caught.value.message and "Ndiaye" not in caught.value.message
        assert caught.value.fields == {"identity": [
            "A confirmed booking for this procedure already exists for this person."]}
        messages.add(caught.value.message)
    assert len(messages) == 1  # which of the two matched is not told
    assert "annulez-le" in messages.pop()
    # the one made before the first was confirmed cannot be confirmed now
    with pytest.raises(PersonHasBooking):
        system.booking.confirm(second["reference"], second["confirm_token"])
    assert system.booking.get(second["reference"], second["token"])["status"] == "pending"
    # another procedure is another booking; and once the first is cancelled, the person may book
    system.slots.create_from_plan(plan(procedure="first_application", desks=2), release="now")
    other = a_slot(system, "first_application")
    system.booking.create(applicant(other["id"], procedure="first_application",
                                    email="awa.third@example.org", family_name="Ndiaye",
                                    given_names="Awa Marie", foreigner_number=None), CLIENT)
    system.booking.cancel(first["reference"], first["token"])
    assert system.booking.confirm(second["reference"], second["confirm_token"])["status"] == "active"


def first_number(system, booked):
    return system.booking.get(booked["reference"], booked["token"])["foreigner_number"]


def test_two_confirmations_at_once_on_one_email_never_both_wait_for_nothing(system):
    # the up-front check reads then writes: at once, both may pass (fraud's M3 is the net);
    # whatever the interleaving, no booking on that e-mail is left pending
    slot = a_slot(system)
    made = [system.booking.create(applicant(slot["id"], given_names=f"Awa{'x' * i}"), CLIENT)
            for i in range(2)]
    replies = [system.booking.confirm.call_async(b["reference"], b["confirm_token"]) for b in made]
    for reply in replies:
        try:
            reply.result()
        except EmailHasBooking:
            pass
    seen = [system.booking.get(b["reference"], b["token"])["status"] for b in made]
    assert "active" in seen and "pending" not in seen


def test_an_unconfirmed_booking_is_released_through_the_cancel_path(container_factory, config, bus):
    sweeps = Calls(BookingService, "expire_unconfirmed", lambda service: service.instance)
    config = dict(config, BOOKING_CONFIRM_MINUTES=0.02, BOOKING_EXPIRY_SWEEP_SECONDS=0.2)
    container_factory(SlotsService, config).start()
    container_factory(BookingService, config).start()
    listener = bus("booking", "booking_cancelled")
    with sweeps, ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2), release="now")
        slot = a_slot(rpc)
        forgotten = rpc.booking.create(applicant(slot["id"]), CLIENT)
        confirmed = rpc.booking.create(applicant(slot["id"], email="awa@example.org"), CLIENT)
        rpc.booking.confirm(confirmed["reference"], confirmed["confirm_token"])
        _, event = listener.wait_for(timeout=15)
        assert event["reference"] == forgotten["reference"] and event["reason"] == "not_confirmed"
        assert event["cancelled_by"] == "system"
        seen = rpc.booking.get(forgotten["reference"], forgotten["token"])
        assert seen["status"] == "cancelled" and seen["cancel_reason"] == "not_confirmed"
        # its place went back through slots' release; the confirmed booking keeps its own
        assert rpc.slots.holds(slot["id"]) == [confirmed["reference"]]
        assert rpc.slots.get(slot["id"])["held_back"] == 1  # back at a random later instant
        # the confirmed one never expires: past its deadline, the expiry sweep has passed
        # twice since (two passes of the one instance) and announced nothing more
        deadline = parse_iso(confirmed["confirm_by"]).timestamp()
        assert wait_until(lambda: time.time() > deadline + 0.1, timeout=15)
        sweeps.wait_for(2, since=sweeps.mark())
        assert listener.fenced() == []
        assert rpc.booking.get(confirmed["reference"], confirmed["token"])["status"] == "active"
        # too late to confirm: the answer says how it stands
        assert rpc.booking.confirm(forgotten["reference"], forgotten["confirm_token"])["status"] == "cancelled"


def test_get_needs_the_right_token(system):
    slot = a_slot(system)
    created = system.booking.create(applicant(slot["id"]), CLIENT)
    seen = system.booking.get(created["reference"], created["token"])
    assert seen["status"] == "pending" and seen["family_name"] == "Benali"
    for reference, token in [(created["reference"], "wrong"), ("RDV-0000-0000", created["token"]),
                             (created["reference"], None), (created["reference"], {"$ne": ""})]:
        with pytest.raises(NotFound) as caught:
            system.booking.get(reference, token)
        assert caught.value.message == "No booking with this reference and token."


def test_cancel_gives_the_place_back_once_and_announces_it_once(system, bus, mongo):
    listener = bus("booking", "booking_cancelled")
    slot = a_slot(system)
    created = system.booking.create(applicant(slot["id"]), CLIENT)
    first = system.booking.cancel(created["reference"], created["token"])
    second = system.booking.cancel(created["reference"], created["token"])
    assert first["status"] == second["status"] == "cancelled"
    assert first["cancel_reason"] == "applicant"
    announced(mongo, created["reference"], "cancelled")
    events = listener.fenced()
    assert [e[1]["reason"] for e in events] == ["applicant"]
    assert events[0][1]["reference"] == created["reference"]
    after = system.slots.get(slot["id"])
    # given back, and held back until its secret return (the freed-place rule)
    assert (after["booked"], after["free"], after["held_back"]) == (0, 1, 1)


def test_system_cancel_records_reason_and_evidence(system, bus):
    listener = bus("booking", "booking_cancelled")
    slot = a_slot(system)
    created = system.booking.create(applicant(slot["id"]), CLIENT)
    with pytest.raises(InvalidRequest):
        system.booking.system_cancel(created["reference"], "because")
    with pytest.raises(NotFound):
        system.booking.system_cancel("RDV-0000-0000", "staff")
    result = system.booking.system_cancel(created["reference"], "multiple_bookings_same_email",
                                          {"other_bookings": ["RDV-AAAA-BBBB"]}, "fraud")
    assert result == {"reference": created["reference"], "status": "cancelled",
                      "cancel_reason": "multiple_bookings_same_email"}
    _, event = listener.wait_for()
    assert event["evidence"] == {"other_bookings": ["RDV-AAAA-BBBB"]}
    assert event["cancelled_by"] == "fraud"
    seen = system.booking.get(created["reference"], created["token"])
    assert seen["cancel_reason"] == "multiple_bookings_same_email"


def test_full_slot_and_invalid_request(system):
    slot = a_slot(system)
    system.booking.create(applicant(slot["id"]), CLIENT)
    system.booking.create(applicant(slot["id"], email="other@example.org"), CLIENT)
    with pytest.raises(SlotFull):
        system.booking.create(applicant(slot["id"], email="third@example.org"), CLIENT)
    with pytest.raises(InvalidRequest) as caught:
        system.booking.create(applicant(slot["id"], email={"$gt": ""}), CLIENT)
    assert "email" in caught.value.fields


def test_no_operation_renames_a_booking():
    # the only writes to a booking after creation are status moves and delivery flags
    # (check_in moves the status; a walk-in is a new record; the others only read)
    # the service and its mixins (bookings.py, counter.py, attempts.py), not the common relay
    rpc_methods = {name for cls in BookingService.__mro__
                   if cls.__module__.startswith("services.booking.")
                   for name, member in vars(cls).items()
                   if hasattr(member, "__call__") and not name.startswith("_")}
    assert rpc_methods == {"create", "get", "confirm", "cancel", "system_cancel", "statuses",
                           "outbox_routes", "expire_unconfirmed", "holds_in_use",
                           "convocation", "check_in", "day_view", "register_walk_in",
                           "walk_in_rule",
                           # the counter: a status move back (a cancellation by mistake undone,
                           # on a new hold) and the day view's attendance mark; no name changes
                           "undo_cancellation", "mark_attendance",
                           # M7 evidence: these write attempts and attestations only, never a booking
                           "record_attempt", "attempts", "attestation", "verify_attestation",
                           "attestation_by_code",
                           "health", "figures", "attempts_of", "penalty_waiver",
                           # issue 21: a reminder mark and its outbox flag; a desk booking is a
                           # new record; a staff convocation only reads
                           "send_reminders", "book_for_person", "staff_convocation",
                           # past BOOKING_RETENTION_DAYS the identity is erased (blanked, never
                           # replaced by another: services/common/retention.py)
                           "erase_expired"}


def test_event_survives_a_crash_between_write_and_dispatch(container_factory, config, bus, mongo):
    """The dispatch step dies after the booking is written: the event still goes out later."""
    listener = bus("booking", "booking_created")
    container_factory(SlotsService, config).start()
    crashing = container_factory(BookingService, config)
    dispatch = replace_dependencies(crashing, "dispatch")
    dispatch.side_effect = RuntimeError("process killed before dispatch")
    crashing.start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2), release="now")
        created = rpc.booking.create(applicant(a_slot(rpc)["id"]), {"ip": "198.51.100.2"})
        crashing.kill()
        # its dispatch failed and it is gone: nothing was published, nobody else could
        assert listener.fenced() == []
        stored = mongo("booking")["bookings"].find_one({"_id": created["reference"]})
        assert stored["outbox"]["created"]["state"] == "pending"

        # the service comes back: its outbox relay sends what was never announced
        container_factory(BookingService, config).start()
        _, event = listener.wait_for(timeout=15)
        assert event["reference"] == created["reference"]
        assert event["event_id"] == stored["outbox"]["created"]["event_id"]
        assert event["token"] == created["token"]
        # the deadline the applicant was given, as notify words it (issue 20)
        assert parse_iso(event["confirm_by"]) == parse_iso(created["confirm_by"])
        assert wait_until(lambda: mongo("booking")["bookings"].find_one(
            {"_id": created["reference"]})["outbox"]["created"]["state"] == "done")
        # once sent, not again: watch over several relay passes (a positive sign they ran)
        passes = relay_passes(mongo)
        assert wait_until(lambda: relay_passes(mongo) >= passes + 3, timeout=10)
        assert listener.fenced() == []


def relay_passes(mongo):
    return mongo("booking")["leases"].find_one({"_id": "outbox_relay"}, {"runs": 1})["runs"]


def test_the_relay_runs_in_one_instance_at_a_time_and_moves_when_it_dies(
        container_factory, config, mongo):
    relays = Calls(BookingService, "relay_outbox", lambda service: service.instance)
    containers = [container_factory(BookingService, config) for _ in range(2)]
    with relays:
        for container in containers:
            container.start()
        leases = mongo("booking")["leases"]
        assert wait_until(lambda: leases.find_one({"_id": "outbox_relay"}) is not None, timeout=5)
        owners, since = [], relays.mark()

        def both_ticked_thrice():
            owners.append(leases.find_one({"_id": "outbox_relay"})["owner"])
            counts = relays.by_instance(since)
            return len(counts) == 2 and min(counts.values()) >= 3

        # both instances tick (each tick tries for the lease) three times; one holds the job
        assert wait_until(both_ticked_thrice, timeout=15, step=0.1), relays.by_instance(since)
    assert len(set(owners)) == 1
    holder = next(c for c in containers
                  if next(d.value for d in c.dependencies if isinstance(d, InstanceId)) == owners[0])
    holder.kill()
    # the lease (three periods) runs out, and the other instance takes the job over
    assert wait_until(lambda: leases.find_one({"_id": "outbox_relay"})["owner"] != owners[0],
                      timeout=10)


def test_cancel_while_slots_is_down_releases_the_place_later(container_factory, config, bus):
    listener = bus("booking", "booking_cancelled")
    slots = container_factory(SlotsService, config)
    slots.start()
    container_factory(BookingService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2), release="now")
        slot = a_slot(rpc)
        created = rpc.booking.create(applicant(slot["id"]), {"ip": "198.51.100.2"})
        slots.stop()
        cancelled = rpc.booking.cancel(created["reference"], created["token"])
        assert cancelled["status"] == "cancelled"
        container_factory(SlotsService, config).start()
        _, event = listener.wait_for(timeout=20)
        assert event["reference"] == created["reference"]
        assert rpc.slots.get(slot["id"])["booked"] == 0


def test_create_answers_unavailable_when_slots_does_not_answer(container_factory, config):
    slots = container_factory(SlotsService, config)
    slots.start()
    container_factory(BookingService, dict(config, RPC_TIMEOUT=1)).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2), release="now")
        slot = a_slot(rpc)
        slots.stop()  # its queue stays: calls wait, and must not wait forever
        with pytest.raises(ServiceUnavailable):
            rpc.booking.create(applicant(slot["id"]), {"ip": "198.51.100.2"})


def test_booking_refuses_to_start_without_a_token_secret(container_factory, config):
    container = container_factory(BookingService, dict(config, BOOKING_TOKEN_SECRET=None))
    with pytest.raises(ConfigurationError):
        container.start()


def test_database_down_mid_booking_answers_unavailable_and_gives_the_place_back(
        container_factory, config, tmp_path):
    from deploy import embedded_mongo
    from tests.conftest import free_port

    # the booking service gets a store of its own, which dies after start
    store, uri = embedded_mongo.start(tmp_path / "booking-store", free_port())
    container_factory(SlotsService, config).start()
    container_factory(BookingService, dict(config, MONGO_URI=uri, RPC_TIMEOUT=10)).start()
    with ClusterRpcProxy(config, timeout=30) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        slot = a_slot(rpc)
        store.kill()
        store.wait()
        with pytest.raises(ServiceUnavailable) as caught:
            rpc.booking.create(applicant(slot["id"]), CLIENT)
        assert "not made" in caught.value.message
        after = rpc.slots.get(slot["id"])
        # the place held first is given back (held back until its return, like any freed place)
        assert (after["booked"], after["free"], after["held_back"]) == (0, 0, 1)
        assert rpc.slots.holds(slot["id"]) == []
