"""The public gateway's view of free places (issue 22) over real HTTP and a real RabbitMQ, in
front of the real slots and booking services: it answers listings and "slot full" itself, it
never refuses a place freed more than SLOT_VIEW_SECONDS ago, and what it lets through is still
decided by the slots database."""
import time

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.slots.service import SlotsService
from tests.helpers import applicant, plan, wait_until


@pytest.fixture
def system(container_factory, config, request):
    """Slots, booking and the gateway (its SLOT_VIEW_SECONDS: the test's parameter), slots of
    one desk each; {name: container}."""
    started = {cls.name: container_factory(cls, config) for cls in (SlotsService, BookingService)}
    for container in started.values():
        container.start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1, days=7), release="now")
    started["gateway"] = container_factory(PublicGateway, dict(config, SLOT_VIEW_SECONDS=request.param))
    started["gateway"].start()
    return started


def listed(http):
    response = http.get("/api/slots", params={"procedure": "renewal"})
    assert response.status_code == 200, response.text
    return {s["id"]: s["free"] for s in response.json()["slots"]}


def book(http, slot_id, n):
    return http.post("/api/bookings", json=applicant(slot_id, email=f"p{n}@example.org",
                                                     family_name=f"Benali{'x' * n}"))


def slot_in_store(mongo, slot_id):
    return mongo("slots")["slots"].find_one({"_id": slot_id})


@pytest.mark.parametrize("system", [600], indirect=True)
def test_listings_and_full_slots_are_answered_by_the_gateway_alone(http, system):
    first, second = sorted(listed(http), key=lambda i: i)[:2]
    assert book(http, first, 1).status_code == 201
    # slots and booking gone: what the gateway still answers comes from its own view
    system["slots"].kill()
    system["booking"].kill()
    shown = listed(http)
    assert first not in shown and shown[second] == 1
    refused = book(http, first, 2)
    assert refused.status_code == 409 and refused.json()["error"] == "slot_full"
    # a slot it shows free goes to booking, which is away: 503, never a made-up answer
    assert book(http, second, 3).status_code == 503


@pytest.mark.parametrize("system", [1], indirect=True)
def test_a_place_freed_is_never_refused_after_the_bound(http, system, mongo):
    slot_id = next(iter(listed(http)))
    made = book(http, slot_id, 1).json()
    assert book(http, slot_id, 2).status_code == 409
    http.delete(f"/api/bookings/{made['reference']}", headers={"X-Booking-Token": made["token"]})
    # its secret return brought to now: the release timer gives the place back
    mongo("slots")["slots"].update_one({"_id": slot_id}, {"$set": {"rerelease_ts": time.time()}})
    assert wait_until(lambda: slot_in_store(mongo, slot_id)["free"] == 1, timeout=20)
    time.sleep(1.0)  # SLOT_VIEW_SECONDS: from now on the gateway must not say "full"
    answer = book(http, slot_id, 3)
    assert answer.status_code == 201, answer.text
    assert slot_in_store(mongo, slot_id)["booked"] == 1


@pytest.mark.parametrize("system", [600], indirect=True)
def test_what_the_view_lets_through_is_decided_by_slots(http, system, config, mongo):
    slot_id = next(iter(listed(http)))
    with ClusterRpcProxy(config, timeout=20) as rpc:  # taken behind the gateway's back
        rpc.slots.hold(slot_id, "taken-elsewhere", "renewal")
    assert listed(http)[slot_id] == 1  # the view has not looked since (SLOT_VIEW_SECONDS=600)
    refused = book(http, slot_id, 1)
    assert refused.status_code == 409 and refused.json()["error"] == "slot_full"
    slot = slot_in_store(mongo, slot_id)
    assert slot["booked"] == slot["capacity"] == 1 and slot["free"] == 0
    assert slot_id not in listed(http)  # learnt from the refusal


@pytest.mark.parametrize("system", [600], indirect=True)
def test_a_release_on_the_bus_brings_its_places_into_the_view_at_once(http, system, mongo):
    slot_id = next(iter(listed(http)))
    made = book(http, slot_id, 1).json()
    http.delete(f"/api/bookings/{made['reference']}", headers={"X-Booking-Token": made["token"]})
    assert slot_id not in listed(http)
    # no tick for minutes (SLOT_VIEW_SECONDS=600): only `slots_released` can bring it back
    mongo("slots")["slots"].update_one({"_id": slot_id}, {"$set": {"rerelease_ts": time.time()}})
    assert wait_until(lambda: slot_id in listed(http), timeout=20)


@pytest.mark.parametrize("system", [1], indirect=True)
def test_a_view_older_than_its_bound_is_not_used(http, system):
    assert listed(http)
    system["slots"].kill()
    time.sleep(1.2)
    answer = http.get("/api/slots", params={"procedure": "renewal"})
    assert answer.status_code == 503 and answer.json()["error"] == "service_unavailable"
