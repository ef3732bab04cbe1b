"""Notify through real RabbitMQ events and real SMTP into the project's Maildir sink."""
import time
import uuid
from unittest.mock import patch
from datetime import datetime, timedelta, timezone

import icalendar
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from services.booking.service import BookingService
from services.common import contract
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.integration.conftest import nothing_left_to_send, notify_outbox, timers_looked
from tests.helpers import MailSink, applicant, booking_event, plan, wait_until


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


def stays(sink, expected, config, notify_deliveries, notify_passes, delivered, processes=1):
    """The mail received is exactly `expected` (references), and nothing more can come."""
    nothing_left_to_send(config, notify_deliveries, notify_passes, delivered, processes)
    assert references(sink.messages()) == expected


def test_booking_created_sends_one_confirmation(container_factory, notify_config, sink, publish,
                                                notify_deliveries, notify_passes):
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
    stays(sink, ["RDV-AB12-CD34"], notify_config, notify_deliveries, notify_passes, delivered=1)
    assert notify_outbox(notify_config)["done"] == 1


def test_the_same_event_delivered_many_times_sends_once(container_factory, notify_config, sink, publish,
                                                        notify_deliveries, notify_passes):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    container_factory(NotifyService, notify_config).start()  # two notify processes' worth
    event = booking_event()
    for _ in range(6):
        publish("booking_created", event)
    sink.wait_for(1)
    stays(sink, ["RDV-AB12-CD34"], notify_config, notify_deliveries, notify_passes, delivered=6, processes=2)
    assert notify_outbox(notify_config) == {"pending": 0, "in_progress": 0, "retrying": 0,
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
        container_factory, notify_config, sink, publish, notify_deliveries, notify_passes):
    # two notify processes' worth, each event delivered twice: still one message per booking
    for _ in range(2):
        container_factory(NotifyService, notify_config).start()  # the mail server is down
    # sixty people (one address each: one address gets at most MAIL_PER_ADDRESS_PER_DAY)
    events = [booking_event(reference=f"RDV-{i:04d}-AAAA", email=f"person{i}@example.org")
              for i in range(60)]
    for event in events + events:
        publish("booking_created", event)
    notify_deliveries.wait_for(120, timeout=30)  # both processes took every copy, the server down
    timers_looked(notify_passes, processes=2)  # ...and their timers found it still down
    status = notify_outbox(notify_config)
    assert status["pending"] + status["in_progress"] + status["retrying"] == 60
    assert status["done"] == 0
    sink.start()
    sink.wait_for(60, timeout=30)
    stays(sink, sorted(f"RDV-{i:04d}-AAAA" for i in range(60)), notify_config, notify_deliveries, notify_passes,
          delivered=120, processes=2)
    assert notify_outbox(notify_config)["done"] == 60


def test_a_message_that_keeps_failing_is_parked_and_blocks_nothing(
        container_factory, notify_config, sink, publish, mongo):
    config = dict(notify_config, NOTIFY_MAX_ATTEMPTS=2)
    container_factory(NotifyService, config).start()
    publish("booking_created", booking_event(reference="RDV-FAIL-0001"))
    deadline = time.monotonic() + 15
    while notify_outbox(config)["parked"] != 1:
        assert time.monotonic() < deadline, notify_outbox(config)
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


def test_temporary_smtp_refusals_are_retried(container_factory, notify_config, sink, publish,
                                             notify_deliveries, notify_passes):
    sink.tempfail = 2  # "451 try again later" twice
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", booking_event())
    sink.wait_for(1)
    stays(sink, ["RDV-AB12-CD34"], notify_config, notify_deliveries, notify_passes, delivered=1)
    with ClusterRpcProxy(notify_config, timeout=10) as rpc:
        assert rpc.notify.outbox_status()["done"] == 1


def test_messages_survive_a_restart_of_notify(container_factory, notify_config, sink, publish,
                                              notify_deliveries):
    first = container_factory(NotifyService, notify_config)
    first.start()
    publish("booking_created", booking_event(reference="RDV-KEEP-0001"))
    notify_deliveries.wait_for(1)  # in its outbox (acked once taken)
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
        container_factory, notify_config, sink, publish, notify_deliveries, notify_passes):
    """The outbox record is stored already claimed by the worker that will send it: if that
    worker dies before sending, the message waits out its lease and is then sent, once."""
    config = dict(notify_config, NOTIFY_LEASE_SECONDS=2, NOTIFY_SWEEP_SECONDS=0.5)
    sink.start()
    dying = container_factory(NotifyService, config)
    with patch.object(NotifyService, "_send_all", side_effect=RuntimeError("killed mid-send")):
        dying.start()
        publish("booking_created", booking_event(reference="RDV-LOST-0001"))
        # stored already claimed by the dying worker, then it dies
        assert wait_until(lambda: notify_outbox(config)["in_progress"] == 1, timeout=10), notify_outbox(config)
        notify_deliveries.wait_for(1)  # its handler returned (else the kill races the count)
        dying.kill()
    assert sink.messages() == []
    container_factory(NotifyService, config).start()
    assert references(sink.wait_for(1, timeout=15)) == ["RDV-LOST-0001"]
    stays(sink, ["RDV-LOST-0001"], config, notify_deliveries, notify_passes, delivered=1)


def test_messages_in_a_row_share_one_smtp_session(container_factory, notify_config, sink, publish):
    sink.start()
    container_factory(NotifyService, notify_config).start()
    for n in range(1, 4):
        publish("booking_created", booking_event(reference=f"RDV-SESS-000{n}"))
        sink.wait_for(n)
    peers = {m["X-Peer"] for m in sink.messages()}
    assert len(peers) == 1, peers  # one client address and port: one session for all three


def test_a_session_the_server_dropped_costs_a_reconnect_not_a_message(
        container_factory, notify_config, sink, publish, notify_deliveries, notify_passes):
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
    stays(sink, ["RDV-DROP-0001", "RDV-DROP-0002"], notify_config, notify_deliveries, notify_passes, delivered=2)
    assert notify_outbox(notify_config) == {"pending": 0, "in_progress": 0, "retrying": 0,
                                    "done": 2, "parked": 0}


def open_slot(rpc):
    rpc.slots.create_from_plan(plan(desks=1), release="now")
    today = datetime.now(timezone.utc).date()
    return rpc.slots.list_open("renewal", today.isoformat(),
                               (today + timedelta(days=30)).isoformat())["slots"][0]


def subjects(messages):
    return sorted(m["Subject"].split(" – ")[0] for m in messages)


def test_a_confirmed_booking_gets_one_confirmed_e_mail_even_when_its_event_comes_twice(
        container_factory, notify_config, sink, bus, publish, notify_deliveries, notify_passes):
    sink.start()
    for cls in (SlotsService, BookingService, NotifyService):
        container_factory(cls, notify_config).start()
    confirmations = bus("booking", "booking_confirmed")
    with ClusterRpcProxy(notify_config, timeout=20) as rpc:
        booked = rpc.booking.create(applicant(open_slot(rpc)["id"]), {"ip": "203.0.113.1"})
        sink.wait_for(1)  # "to be confirmed"
        rpc.booking.confirm(booked["reference"], booked["confirm_token"])
        _, event = confirmations.wait_for()
    publish("booking_confirmed", event)  # delivered again, as after a crash
    messages = sink.wait_for(2)
    # booking_created, booking_confirmed and its copy
    stays(sink, [booked["reference"]] * 2, notify_config, notify_deliveries, notify_passes, delivered=3)
    assert subjects(messages) == ["Rendez-vous confirmé / Appointment confirmed",
                                  "À confirmer / To be confirmed"]
    [confirmed] = [m for m in messages if "confirmé" in m["Subject"]]
    text = confirmed.get_body(("plain",)).get_content()
    assert "CONFIRMÉ" in text and "CONFIRMED" in text and "PAS ENCORE DÉFINITIF" not in text
    convocation = (f"https://rdv.example.fr/bookings/{booked['reference']}/convocation"
                   f"?token={booked['token']}")
    assert convocation in text and booked["confirm_token"] not in text
    [attachment] = [p for p in confirmed.iter_attachments() if p.get_content_type() == "text/calendar"]
    vevent = icalendar.Calendar.from_ical(attachment.get_content()).walk("VEVENT")[0]
    assert str(vevent.get("uid")).startswith(booked["reference"] + "@")


def test_a_booking_born_confirmed_from_an_offer_gets_exactly_one_confirmed_e_mail(
        container_factory, notify_config, sink, notify_deliveries, notify_passes):
    sink.start()
    for cls in (SlotsService, BookingService, NotifyService):
        container_factory(cls, notify_config).start()
    with ClusterRpcProxy(notify_config, timeout=20) as rpc:
        offer = {"reference": "RDV-OFFR-0001", "hold_id": "OFR-OFFR-0001"}
        booked = rpc.booking.create(applicant(open_slot(rpc)["id"]), {"ip": "203.0.113.1"},
                                    offer=offer)
        assert booked["status"] == "active"
        [message] = sink.wait_for(1)
    stays(sink, ["RDV-OFFR-0001"], notify_config, notify_deliveries, notify_passes, delivered=1)
    assert message["Subject"].startswith("Rendez-vous confirmé / Appointment confirmed")
    text = message.get_body(("plain",)).get_content()
    assert "accepté la place proposée" in text
    assert f"/bookings/RDV-OFFR-0001/convocation?token={booked['token']}" in text


def test_the_public_can_send_one_address_a_bounded_number_of_messages_a_day(
        container_factory, notify_config, sink, publish, mongo, notify_deliveries, notify_passes):
    """Booking links, receipts and notices of unconfirmed bookings count, per normalised
    address; the confirmed appointment and notices about a confirmed booking always go."""
    sink.start()
    config = dict(notify_config, MAIL_PER_ADDRESS_PER_DAY=3)
    container_factory(NotifyService, config).start()
    # five booking links to one mailbox, spelt five ways
    spellings = ["victim@gmail.com", "Victim@Gmail.com", "vic.tim@gmail.com",
                 "victim+1@gmail.com", " VICTIM@googlemail.com "]
    bombs = [f"RDV-BOMB-000{n}" for n in range(len(spellings))]
    for reference, address in zip(bombs, spellings):
        publish("booking_created", booking_event(reference=reference, email=address))
    sink.wait_for(3)
    publish("booking_cancelled", booking_event(
        reference="RDV-BOMB-0009", name="booking_cancelled", reason="not_confirmed",
        email="victim@gmail.com"))
    # owed to the owner of the mailbox: sent past the limit
    publish("booking_confirmed", booking_event(
        reference="RDV-OWED-0001", name="booking_confirmed", email="victim@gmail.com",
        token="tok"))
    publish("booking_cancelled", booking_event(
        reference="RDV-OWED-0002", name="booking_cancelled", reason="slot_grabbing",
        email="victim@gmail.com", was_confirmed=True))
    # another address is not affected
    publish("booking_created", booking_event(reference="RDV-ELSE-0001", email="other@example.org"))
    messages = mongo("notify")["messages"]
    assert wait_until(lambda: messages.count_documents({}) == 9, timeout=15)
    sink.wait_for(6)
    sent = [r for r in references(sink.messages()) if r in bombs]
    assert len(sent) == 3
    stays(sink, sorted(sent + ["RDV-ELSE-0001", "RDV-OWED-0001", "RDV-OWED-0002"]), config,
          notify_deliveries, notify_passes, delivered=9)
    capped = {m["reference"]: m for m in messages.find({"state": "capped"})}
    assert set(capped) == set(bombs) - set(sent) | {"RDV-BOMB-0009"}
    with ClusterRpcProxy(config, timeout=10) as rpc:
        assert rpc.notify.outbox_status()["done"] == 6
        # kept, not sent: staff may still send one (a person who needs more goes through them)
        assert rpc.notify.resend(capped["RDV-BOMB-0009"]["_id"])["state"] == "done"
    assert "RDV-BOMB-0009" in references(sink.wait_for(7))


@pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "at-once"])
def test_the_same_resend_delivered_twice_sends_the_message_once_more(
        container_factory, notify_config, sink, publish, together):
    """One effect under redelivery (issue 25): staff's resend carries the request's key; the
    same call delivered twice puts the message back in the queue once, one e-mail more; a new
    request (another key) sends it again."""
    from tests.integration.test_idempotent_writes import deliver
    sink.start()
    container_factory(NotifyService, notify_config).start()
    event = booking_event(reference="RDV-SENT-0001")
    publish("booking_created", event)
    sink.wait_for(1)
    key = f"{event['event_id']}:confirmation"  # the message's key (notify/rules.idempotency_key)

    def settled(count):
        outbox = notify_outbox(notify_config)
        return len(sink.messages()) >= count and outbox["done"] == 1 and outbox["pending"] == 0 \
            and outbox["in_progress"] == 0 and outbox["retrying"] == 0

    replies = deliver(notify_config["AMQP_URI"], "notify", "resend",
                      {"key": key, "idempotency_key": "resend-" + "r" * 20}, together=together)
    assert [r["error"] for r in replies] == [None, None], replies
    assert wait_until(lambda: settled(2), timeout=15), notify_outbox(notify_config)
    with ClusterRpcProxy(notify_config, timeout=10) as rpc:  # a new request: sent again
        assert rpc.notify.resend(key, idempotency_key="another-" + "r" * 20)["state"] == "done"
    assert wait_until(lambda: settled(3), timeout=15), notify_outbox(notify_config)
    # nothing is left to send: the second delivery added no e-mail
    assert references(sink.messages()) == ["RDV-SENT-0001"] * 3


def test_arabic_e_mails_through_smtp_right_to_left_then_french(container_factory, notify_config,
                                                                sink, publish):
    """Issue 21: a person who used the Arabic pages gets every e-mail in Arabic (right to left,
    the free notice French first then Arabic) then French, readable as received over SMTP."""
    sink.start()
    container_factory(NotifyService, notify_config).start()
    publish("booking_created", booking_event("RDV-ARAB-0001", lang="ar", email="yasmine@example.org"))
    publish("booking_cancelled", booking_event("RDV-ARAB-0002", name="booking_cancelled",
                                               reason="not_confirmed", lang="ar",
                                               email="samira@example.org"))
    publish("attempt_recorded", contract.build(
        "attempt_recorded", event_id=str(uuid.uuid4()), occurred_at="2027-03-02T08:30:00Z",
        reference="ATT-ARAB-0003", procedure="renewal", email="karim@example.org",
        foreigner_number=None, recorded_at="2027-03-02T08:30:00Z", token="t", lang="ar"))
    publish("booking_reminder_due", contract.build(
        "booking_reminder_due", event_id=str(uuid.uuid4()), occurred_at="2027-03-02T07:00:00Z",
        reference="RDV-ARAB-0004", procedure="renewal_10y", site="montpellier", slot_id="abc",
        slot_start="2027-03-04T08:30:00Z", slot_end="2027-03-04T08:50:00Z",
        email="nour@example.org", token="t", reminded_at="2027-03-02T07:00:00Z", lang="ar",
        identity={"family_name": "Haddad", "given_names": "Nour", "birth_date": "1990-01-01"}))
    # generous on a loaded machine; when one is missing, say which and where it stands
    try:
        received = sink.wait_for(4, timeout=90)
    except AssertionError:
        raise AssertionError(f"received {[str(m['Subject']) for m in sink.messages()]}, "
                             f"outbox {notify_outbox(notify_config)}")
    messages = {m["Subject"].split(" – ")[1]: m for m in received}
    assert sorted(messages) == ["ATT-ARAB-0003", "RDV-ARAB-0001", "RDV-ARAB-0002", "RDV-ARAB-0004"]
    for reference, message in messages.items():
        subject = str(message["Subject"])
        assert any("\u0600" <= c <= "\u06ff" for c in subject.split(" / ")[0]), subject
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert '<html lang="ar" dir="rtl">' in html and '<section lang="ar" dir="rtl">' in html
        assert text.index("GRATUITS") < text.index("مجانية") < text.index("=== العربية ===") \
            < text.index("=== FRANÇAIS ===")
        assert "ENGLISH" not in text
        assert f"\u2066{reference}\u2069" in text  # isolated inside the Arabic sentences
    created = messages["RDV-ARAB-0001"].get_body(("plain",)).get_content()
    assert "أكّده بفتح هذا الرابط" in created and "&lang=ar" in created
    cancelled = messages["RDV-ARAB-0002"].get_body(("plain",)).get_content()
    assert "لم يُؤكَّد هذا الموعد في الوقت المحدد" in cancelled  # the reason, in Arabic
    receipt = messages["ATT-ARAB-0003"].get_body(("plain",)).get_content()
    assert "سجّل محاولاتك قبل انتهاء بطاقة إقامتك" in receipt  # M7's rule, in Arabic
    assert "/attempts/ATT-ARAB-0003/attestation?token=t&lang=ar" in receipt
    reminder = messages["RDV-ARAB-0004"].get_body(("plain",)).get_content()
    assert "ما يجب إحضاره:" in reminder and "جواز سفرك" in reminder  # the documents, in Arabic
    assert "/bookings/RDV-ARAB-0004/cancel?token=t&lang=ar" in reminder  # "I can no longer come"
