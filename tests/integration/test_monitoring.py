"""Monitoring against the real bus: the staff gateway's page and JSON read RabbitMQ's
management API for the test's vhost while the services run; /ready and /metrics on the
staff gateway; parked events reach the dead-letter queue."""
import time
import uuid
from datetime import date, timedelta

import pytest
import requests
from kombu import Connection, Exchange, Producer
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client.parser import text_string_to_metric_families

from deploy import rabbitmq_definitions
from gateway.admin.monitoring import vhost_of
from gateway.admin.service import AdminGateway
from services.booking.service import BookingService
from services.fraud.service import FraudService
from services.notify.service import NotifyService
from services.register.service import RegisterService
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.helpers import applicant, plan
from tests.integration.conftest import add_staff
from tests.integration.test_admin_gateway import csrf_of

MANAGEMENT = "http://127.0.0.1:15672"
NOTIFY_CREATED_QUEUE = "evt-booking-booking_created--notify.on_booking_created"


def apply_definitions(config):
    rabbitmq_definitions.apply(MANAGEMENT, vhost_of(config["AMQP_URI"]))


@pytest.fixture
def system(container_factory, counter_config, mongo, http):
    """Every service and the staff gateway on the test's vhost, with the project's
    definitions applied to it; the containers by name, to stop one."""
    apply_definitions(counter_config)
    containers = {}
    for cls in (SlotsService, BookingService, FraudService, NotifyService, RequestsService,
                RegisterService, AdminGateway):
        containers[cls.name] = container_factory(cls, counter_config)
        containers[cls.name].start()
    add_staff(mongo)
    return containers


def bearer(http, username):
    answer = http.post("/api/login", json={"username": username,
                                           "password": "correct horse battery staple"})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def wait_for(check, timeout=30, every=0.5):
    """check() until it returns something true (the management API's figures lag a few
    seconds behind the broker); that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def queues_of(view):
    return {q["name"]: q for q in view["bus"]["queues"]}


def test_monitoring_is_for_supervisors_only(system, http):
    assert http.get("/api/monitoring").status_code == 401
    assert http.get("/api/monitoring", headers={"Authorization": "Bearer forged"}).status_code == 401
    answer = http.get("/api/monitoring", headers=bearer(http, "agent"))
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
    assert http.get("/monitoring", allow_redirects=False).headers["Location"] == "/login"
    form = http.get("/login")
    http.post("/login", data={"csrf": csrf_of(form.text), "username": "agent",
                              "password": "correct horse battery staple"})
    page = http.get("/monitoring")
    assert page.status_code == 403 and "rpc-booking" not in page.text
    assert 'href="/monitoring"' not in http.get("/day").text  # not in an agent's menu


def test_the_view_lists_the_queues_with_consumers_and_flags_a_stopped_one(system, http):
    auth = bearer(http, "chief")

    def every_queue_consumed():
        view = http.get("/api/monitoring", headers=auth).json()
        queues = queues_of(view)
        wanted = ["rpc-slots", "rpc-booking", "rpc-fraud", "rpc-notify", NOTIFY_CREATED_QUEUE,
                  "evt-booking-booking_confirmed--fraud.on_booking_confirmed"]
        if all(queues.get(name, {}).get("consumers", 0) >= 1 for name in wanted):
            return view
    view = wait_for(every_queue_consumed)
    assert view, "the services' queues never showed their consumers"
    assert view["bus"]["reachable"] is True
    queues = queues_of(view)
    # grouped by the service that consumes them; the definitions' dead-letter queues are there
    assert NOTIFY_CREATED_QUEUE in [q["name"] for q in view["bus"]["services"]["notify"]]
    assert {"dead-letters.events", "dead-letters.rpc"} <= set(queues)
    assert queues["rpc-booking"]["policy"] == "rpc-queues"
    assert not [a for a in view["bus"]["alarms"] if a["kind"] == "no_consumer"]
    assert {name: h["status"] for name, h in view["services"].items()} == {
        "slots": "ok", "booking": "ok", "fraud": "ok", "notify": "ok", "requests": "ok",
        "register": "ok"}

    system["notify"].stop()

    def notify_flagged():
        view = http.get("/api/monitoring", headers=auth).json()
        flagged = {a["queue"] for a in view["bus"]["alarms"] if a["kind"] == "no_consumer"}
        return view if {NOTIFY_CREATED_QUEUE, "rpc-notify"} <= flagged else None
    view = wait_for(notify_flagged)
    assert view, "stopping notify raised no alarm"
    flagged = {a["queue"] for a in view["bus"]["alarms"] if a["kind"] == "no_consumer"}
    assert not {"rpc-booking", "rpc-slots", "rpc-fraud"} & flagged
    assert view["services"]["notify"]["status"] == "unreachable"
    assert view["figures"]["mail"] is None and view["figures"]["booking"] is not None

    # the supervisor's page says the same
    form = http.get("/login")
    http.post("/login", data={"csrf": csrf_of(form.text), "username": "chief",
                              "password": "correct horse battery staple"})
    page = http.get("/monitoring")
    assert page.status_code == 200
    assert f'class="alarm alarm-no_consumer" data-queue="{NOTIFY_CREATED_QUEUE}"' in page.text
    assert 'data-queue="rpc-booking"' in page.text


def test_an_unreachable_management_api_is_said_and_the_rest_works(container_factory, counter_config,
                                                                   mongo, http):
    from tests.conftest import free_port

    config = dict(counter_config, RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{free_port()}")
    for cls in (SlotsService, BookingService, AdminGateway):
        container_factory(cls, config).start()
    add_staff(mongo)
    answer = http.get("/api/monitoring", headers=bearer(http, "chief"))
    assert answer.status_code == 200
    view = answer.json()
    assert view["bus"]["reachable"] is False and "unreachable" in view["bus"]["error"]
    assert view["services"]["booking"]["status"] == "ok"
    assert view["services"]["fraud"]["status"] == "unreachable"
    assert view["figures"]["slots"] is not None
    form = http.get("/login")
    http.post("/login", data={"csrf": csrf_of(form.text), "username": "chief",
                              "password": "correct horse battery staple"})
    page = http.get("/monitoring")
    assert page.status_code == 200 and 'id="bus-unreachable"' in page.text
    # and the counter still works
    assert http.get("/day").status_code == 200


def test_a_parked_event_reaches_the_dead_letter_queue(system, http, counter_config):
    """An event that breaks the contract is parked by notify's inbox, and a notice (no payload:
    it may carry personal data) goes to the dead-letter queue, where the dashboard counts it."""
    auth = bearer(http, "chief")
    assert wait_for(lambda: queues_of(http.get("/api/monitoring", headers=auth).json())
                    .get(NOTIFY_CREATED_QUEUE, {}).get("consumers"))
    event_id = str(uuid.uuid4())
    with Connection(counter_config["AMQP_URI"]) as conn:
        Producer(conn.default_channel).publish(
            {"event_id": event_id, "email": "someone@example.org"},  # not a booking_created
            exchange=Exchange("booking.events", type="topic", durable=True),
            routing_key="booking_created", serializer="json")

    def dead_lettered():
        view = http.get("/api/monitoring", headers=auth).json()
        return view if queues_of(view)["dead-letters.events"]["depth"] >= 1 else None
    view = wait_for(dead_lettered)
    assert view, "the parked event never reached dead-letters.events"
    assert any(a["kind"] == "dead_letters" and a["queue"] == "dead-letters.events"
               for a in view["bus"]["alarms"])
    assert view["services"]["notify"]["backlog"]["inbox"]["parked"] == 1
    vhost = vhost_of(counter_config["AMQP_URI"])
    got = requests.post(f"{MANAGEMENT}/api/queues/{requests.utils.quote(vhost, safe='')}/"
                        "dead-letters.events/get", auth=("guest", "guest"), timeout=5,
                        json={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).json()
    headers = got[0]["properties"]["headers"]
    assert headers["x-event-id"] == event_id and headers["x-service"] == "notify"
    assert headers["x-parked-reason"].startswith("contract")
    assert "someone@example.org" not in got[0]["payload"]


def test_ready_and_metrics_of_the_staff_gateway(system, http):
    assert http.get("/ready").json()["status"] == "ready"
    text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["service"]: s.value for s in families["service_up"].samples}
    assert up == {"slots": 1, "booking": 1, "fraud": 1, "notify": 1, "requests": 1, "register": 1}
    outbox_kinds = {(s.labels["service"], s.labels["kind"]) for s in families["outbox_records"].samples}
    assert {("requests", "filed"), ("requests", "made"), ("booking", "recorded")} <= outbox_kinds
    mail_states = {s.labels["state"] for s in families["mail_messages"].samples}
    assert {"pending", "done", "parked"} <= mail_states
    system["fraud"].stop()
    answer = http.get("/ready")
    assert answer.status_code == 503
    assert answer.json()["services"]["fraud"]["status"] == "unreachable"
