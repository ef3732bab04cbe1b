"""Notify through real RabbitMQ events and real SMTP into the project's Maildir sink."""
import time
from unittest.mock import patch
from datetime import datetime, timedelta, timezone

import icalendar
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from services.booking.service import BookingService
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.helpers import MailSink, applicant, booking_event, plan


@pytest.fixture
def sink(tmp_path):
    started = MailSink(free_port(), tmp_path / "mail")
    yield started
    started.stop()


@pytest.fixture
def notify_config(config, sink):
    return dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
                NOTIFY_RETRY_BASE_SECONDS=0.2, NOTIFY_RETRY_MAX_SECONDS=1,
                NOTIFY_MAX_ATTEMPTS=100, NOTIFY_SWEEP_SECONDS=0.5,
                PUBLIC_BASE_URL="https://rdv.example.fr")


@pytest.fixture
def publish(config):
    dispatch = event_dispatcher(config)
    return lambda event_type, payload: dispatch("booking", event_type, payload)


def references(messages):
    return sorted(m["Subject"].split(" – ")[1] for m in messages)


# past notify's retry cap (1 s), several sweeps (0.5 s) and outbox relay periods (0.5 s)
WATCH_SECONDS = 3


def stays(sink, expected, seconds=WATCH_SECONDS):
    """The mail received stays exactly `expected` (references) for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert references(sink.messages()) == expected
        time.sleep(0.1)


def outbox(config):
    with ClusterRpcProxy(config, timeout=10) as rpc:
        return rpc.notify.outbox_status()


def test_booking_created_sends_one_confirmation(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", booking_event())
    [message] = sink.wait_for(1)
    assert message["To"] == "yasmine.benali@example.org"
    assert message["X-Envelope-To"] == "yasmine.benali@example.org"
    text = message.get_body(("plain",)).get_content()
    assert "Les rendez-vous de la préfecture sont GRATUITS" in text
    assert "Appointments at the prefecture are FREE" in text
    assert "https://rdv.example.fr/bookings/RDV-AB12-CD34?token=secret-token" in text
    html = message.get_body(("html",)).get_content()
    assert "GRATUITS" in html and "FREE" in html
    [attachment] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    assert calendar.walk("VEVENT")[0].decoded("dtstart") == datetime(2027, 3, 4, 8, 30, tzinfo=timezone.utc)
    stays(sink, ["RDV-AB12-CD34"])
    assert outbox(notify_config)["done"] == 1


def test_the_same_event_delivered_many_times_sends_once(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    container_factory(NotifyService, notify_config).start()  # two notify processes' worth
    event = booking_event()
    for _ in range(6):
        publish("booking_created", event)
    sink.wait_for(1)
    stays(sink, ["RDV-AB12-CD34"])
    assert outbox(notify_config) == {"pending": 0, "in_progress": 0, "retrying": 0,
                                    "done": 1, "parked": 0}


def test_cancellation_notice_gives_the_reason(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    event = booking_event(name="booking_cancelled", reason="name_not_exact", evidence={},
                          cancelled_by="fraud")
    publish("booking_cancelled", event)
    [message] = sink.wait_for(1)
    text = message.get_body(("plain",)).get_content()
    assert "Le nom exact de la personne n'a pas été indiqué" in text
    assert "The person's exact name was not given" in text
    assert "GRATUITS" in text
    assert not [p for p in message.iter_attachments()]


def test_real_bookings_produce_confirmation_then_cancellation(container_factory, notify_config, sink):
    sink.start()
    for cls in (SlotsService, BookingService, NotifyService):
        container_factory(cls, notify_config).start()
    with ClusterRpcProxy(notify_config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        today = datetime.now(timezone.utc).date()
        slot = rpc.slots.list_open("renewal", today.isoformat(), (today + timedelta(days=30)).isoformat())["slots"][0]
        booked = rpc.booking.create(applicant(slot["id"]), {"ip": "203.0.113.1"})
        [confirmation] = sink.wait_for(1)
        assert booked["reference"] in confirmation["Subject"]
        body = confirmation.get_body(("plain",)).get_content()
        assert f"token={booked['token']}" in body
        assert f"/bookings/{booked['reference']}/confirm?token={booked['confirm_token']}" in body
        rpc.booking.cancel(booked["reference"], booked["token"])
        messages = sink.wait_for(2)
    cancellation = [m for m in messages if "annulé" in m["Subject"]][0]
    assert "Vous avez annulé ce rendez-vous vous-même" in cancellation.get_body(("plain",)).get_content()


def test_a_booking_nobody_confirmed_is_released_and_the_mail_says_why(container_factory, notify_config, sink):
    sink.start()
    config = dict(notify_config, BOOKING_CONFIRM_MINUTES=0.02, BOOKING_EXPIRY_SWEEP_SECONDS=0.2)
    for cls in (SlotsService, BookingService, NotifyService):
        container_factory(cls, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        today = datetime.now(timezone.utc).date()
        slot = rpc.slots.list_open("renewal", today.isoformat(), (today + timedelta(days=30)).isoformat())["slots"][0]
        booked = rpc.booking.create(applicant(slot["id"]), {"ip": "203.0.113.1"})
        messages = sink.wait_for(2)
        assert rpc.slots.get(slot["id"])["held_back"] == 1  # the place went back, held back for a while
    released = [m for m in messages if "annulé" in m["Subject"]][0]
    text = released.get_body(("plain",)).get_content()
    assert booked["reference"] in released["Subject"]
    assert "pas été confirmé à temps" in text and "not confirmed in time" in text


def test_smtp_outage_during_a_burst_loses_nothing_and_sends_everything_once(
        container_factory, notify_config, sink, publish):
    # two notify processes' worth, each event delivered twice: still one message per booking
    for _ in range(2):
        container_factory(NotifyService, notify_config).start()  # the mail server is down
    events = [booking_event(reference=f"RDV-{i:04d}-AAAA") for i in range(60)]
    for event in events + events:
        publish("booking_created", event)
    time.sleep(3)
    status = outbox(notify_config)
    assert status["pending"] + status["in_progress"] + status["retrying"] == 60
    assert status["done"] == 0
    sink.start()
    sink.wait_for(60, timeout=30)
    stays(sink, sorted(f"RDV-{i:04d}-AAAA" for i in range(60)))
    assert outbox(notify_config)["done"] == 60


def test_a_message_that_keeps_failing_is_parked_and_blocks_nothing(
        container_factory, notify_config, sink, publish, mongo):
    config = dict(notify_config, NOTIFY_MAX_ATTEMPTS=2)
    container_factory(NotifyService, config).start()
    publish("booking_created", booking_event(reference="RDV-FAIL-0001"))
    deadline = time.monotonic() + 15
    while outbox(config)["parked"] != 1:
        assert time.monotonic() < deadline, outbox(config)
        time.sleep(0.2)
    with ClusterRpcProxy(config, timeout=10) as rpc:
        [failed] = rpc.notify.failed_messages()
        assert failed["reference"] == "RDV-FAIL-0001" and failed["attempts"] == 2
        assert "Connection" in failed["last_error"] or "refused" in failed["last_error"].lower()
        sink.start()
        publish("booking_created", booking_event(reference="RDV-NEXT-0002"))
        assert references(sink.wait_for(1)) == ["RDV-NEXT-0002"]
        resent = rpc.notify.resend(failed["id"])
        assert resent["state"] == "done"
    assert references(sink.wait_for(2)) == ["RDV-FAIL-0001", "RDV-NEXT-0002"]


def test_temporary_smtp_refusals_are_retried(container_factory, notify_config, sink, publish):
    sink.tempfail = 2  # "451 try again later" twice
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", booking_event())
    sink.wait_for(1)
    stays(sink, ["RDV-AB12-CD34"])
    with ClusterRpcProxy(notify_config, timeout=10) as rpc:
        assert rpc.notify.outbox_status()["done"] == 1


def test_messages_survive_a_restart_of_notify(container_factory, notify_config, sink, publish):
    first = container_factory(NotifyService, notify_config)
    first.start()
    publish("booking_created", booking_event(reference="RDV-KEEP-0001"))
    time.sleep(1.5)
    first.stop()  # pending in its outbox, the mail server still down
    publish("booking_created", booking_event(reference="RDV-KEEP-0002"))  # while notify is down
    sink.start()
    container_factory(NotifyService, notify_config).start()
    assert references(sink.wait_for(2)) == ["RDV-KEEP-0001", "RDV-KEEP-0002"]


def test_a_malformed_event_is_parked_not_looped(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", {"event_id": "broken-1", "reference": "RDV-BAD0-0000"})
    publish("booking_created", booking_event(reference="RDV-GOOD-0000"))
    assert references(sink.wait_for(1)) == ["RDV-GOOD-0000"]
    with ClusterRpcProxy(notify_config, timeout=10) as rpc:
        [parked] = rpc.notify.parked_events()
        assert rpc.notify.failed_messages() == []
    # refused by the bus contract, with the reason, before any message is composed
    assert parked["id"] == "broken-1" and parked["state"] == "parked"
    assert parked["last_error"].startswith("contract:") and "procedure" in parked["last_error"]


def test_a_sender_that_dies_mid_send_is_replaced_once_its_lease_runs_out(
        container_factory, notify_config, sink, publish):
    """The outbox record is stored already claimed by the worker that will send it: if that
    worker dies before sending, the message waits out its lease and is then sent, once."""
    config = dict(notify_config, NOTIFY_LEASE_SECONDS=2, NOTIFY_SWEEP_SECONDS=0.5)
    sink.start()
    dying = container_factory(NotifyService, config)
    with patch.object(NotifyService, "_send_all", side_effect=RuntimeError("killed mid-send")):
        dying.start()
        publish("booking_created", booking_event(reference="RDV-LOST-0001"))
        time.sleep(1)
        dying.kill()
    assert sink.messages() == []
    container_factory(NotifyService, config).start()
    assert references(sink.wait_for(1, timeout=15)) == ["RDV-LOST-0001"]
    stays(sink, ["RDV-LOST-0001"])


def test_messages_in_a_row_share_one_smtp_session(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    for n in range(1, 4):
        publish("booking_created", booking_event(reference=f"RDV-SESS-000{n}"))
        sink.wait_for(n)
    peers = {m["X-Peer"] for m in sink.messages()}
    assert len(peers) == 1, peers  # one client address and port: one session for all three


def test_a_session_the_server_dropped_costs_a_reconnect_not_a_message(
        container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", booking_event(reference="RDV-DROP-0001"))
    sink.wait_for(1)
    sink.stop()  # the kept session dies with the server
    sink.start()
    publish("booking_created", booking_event(reference="RDV-DROP-0002"))
    messages = sink.wait_for(2)
    assert references(messages) == ["RDV-DROP-0001", "RDV-DROP-0002"]
    assert len({m["X-Peer"] for m in messages}) == 2
    stays(sink, ["RDV-DROP-0001", "RDV-DROP-0002"])
    assert outbox(notify_config) == {"pending": 0, "in_progress": 0, "retrying": 0,
                                    "done": 2, "parked": 0}
