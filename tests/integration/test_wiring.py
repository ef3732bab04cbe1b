"""One delivery wiring in every service (issue 20): each service's outbox goes out through the
common relay every OUTBOX_RELAY_SECONDS, and every event a service takes goes through the
common inbox, whose parked events reach the `dead-letters` exchange."""
import time
import uuid

import pytest
from nameko.standalone.events import event_dispatcher

from services.common import contract
from services.common.deadletter import EXCHANGE
from services.common.outbox import Outbox
from services.common.tokens import new_salt
from services.fraud.service import FraudService
from services.notify.service import NotifyService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.helpers import BusListener

TAKERS = (FraudService, NotifyService, RequestsService)
# far beyond every wait below: only the relay can send what these tests leave pending
NEVER = 600


def handled_events(service_cls):
    """{(source service, event)} of the service's nameko event handlers."""
    found = set()
    for name in dir(service_cls):
        for entrypoint in getattr(getattr(service_cls, name), "nameko_entrypoints", ()):
            if hasattr(entrypoint, "event_type"):
                found.add((entrypoint.source_service, entrypoint.event_type))
    return found


@pytest.fixture
def wiring_config(config):
    # no mail server: nothing here is mailed; the services' own periodic jobs wait
    return dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_TIMEOUT=1,
                RELEASE_TIMER_SECONDS=NEVER, REQUEST_TIMER_SECONDS=NEVER)


@pytest.fixture
def dead_letters(wiring_config):
    listener = BusListener(wiring_config["AMQP_URI"], None, "parked.#", exchange=EXCHANGE.name)
    yield listener
    listener.close()


def test_the_contract_names_who_takes_each_event():
    """What each service's handlers take is what the contract says it listens to, and the
    inbox has a handler for each (the one used for replays too)."""
    for service_cls in TAKERS:
        taken = {event for _, event in handled_events(service_cls)}
        assert taken == {name for name, e in contract.EVENTS.items()
                         if service_cls.name in e.consumers}, service_cls.name
        for source, event in handled_events(service_cls):
            assert contract.EVENTS[event].producer == source


def test_an_event_parked_in_any_service_is_announced_on_dead_letters(
        container_factory, wiring_config, dead_letters):
    """Every handler of every service, each the first event its instance takes: an event its
    handler cannot process (not the contract's payload: the inbox parks it at once) reaches
    `dead-letters` under `parked.<service>.<event>`."""
    dispatch = event_dispatcher(wiring_config)
    announced = []
    for service_cls in TAKERS:
        for source, event in sorted(handled_events(service_cls)):
            container = container_factory(service_cls, wiring_config)
            container.start()
            event_id = str(uuid.uuid4())
            dispatch(source, event, {"event_id": event_id, "reference": "not-a-payload"})
            key, notice = dead_letters.wait_for(lambda _, body: body["event_id"] == event_id)
            assert key == f"parked.{service_cls.name}.{event}"
            assert notice["reason"].startswith("contract") and "not-a-payload" not in str(notice)
            container.stop()  # the next event goes to a fresh instance
            announced.append(key)
    # every (consumer, event) pair of the contract among these services was tried
    assert len(announced) == sum(service_cls.name in e.consumers for e in contract.EVENTS.values()
                                 for service_cls in TAKERS)


def pending(event_id):
    # written long ago, its writer's grace over: the relay's to send
    return Outbox.entry(event_id, time.time() - 60, 0)


def test_the_relay_sends_a_pending_slots_released(container_factory, wiring_config, mongo, bus):
    listener = bus("slots", "slots_released")
    container_factory(SlotsService, wiring_config).start()
    event_id = str(uuid.uuid4())
    mongo("slots")["releases"].insert_one({
        "_id": "rel-relayed", "plan_id": "p", "site": "montpellier", "procedure": "renewal",
        "state": "released", "released_ts": time.time() - 60, "places": 3, "slot_ids": [],
        "outbox": {"released": pending(event_id)}})
    _, event = listener.wait_for(lambda _, e: e["event_id"] == event_id, timeout=10)
    assert event["batch_id"] == "rel-relayed" and event["count"] == 3


def test_the_relay_sends_a_pending_request_filed(container_factory, wiring_config, mongo, bus):
    listener = bus("requests", "request_filed")
    container_factory(RequestsService, wiring_config).start()
    event_id = str(uuid.uuid4())
    mongo("requests")["requests"].insert_one({
        "_id": "REQ-RELA-YED1", "procedure": "renewal", "email": "relayed@example.org",
        "state": "unconfirmed", "confirm_by_ts": time.time() + 3600, "token_salt": new_salt(),
        "outbox": {"filed": pending(event_id)}})
    _, event = listener.wait_for(lambda _, e: e["event_id"] == event_id, timeout=10)
    assert event["reference"] == "REQ-RELA-YED1" and event["token"]
