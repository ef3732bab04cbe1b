"""Issue 21: the reminder two working days before an appointment, on a real bus, store and
SMTP sink, with the booking service's clock set by the test; the staff day view shows it."""
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from nameko.testing.services import replace_dependencies

from services.booking import reminders
from services.booking.service import BookingService
from services.booking.store import BookingStore
from services.common.outbox import Outbox
from services.common.lease import Leases
from services.common.timeutil import PARIS
from tests.integration.conftest import paris
from tests.integration.test_admin_gateway import page_session
from tests.helpers import wait_until

REMINDER = "booking_reminder_due"


@pytest.fixture
def counter_config(counter_config):
    # passes every 50 ms in each instance, a lease (3 passes) too short to keep two apart
    # for long: only the conditional update on the booking can keep the reminder single
    return dict(counter_config, REMINDER_TIMER_SECONDS=0.05)


def booked_long_ago(counter, mongo, **overrides):
    """A confirmed booking on the counter's slot, made a month before (so its reminder day
    comes after it was made)."""
    conv = counter.book(**overrides)
    bookings = mongo("booking")["bookings"]
    stored = bookings.find_one({"_id": conv["reference"]})
    stored["created_at"] = datetime.now(timezone.utc) - timedelta(days=30)
    # the whole document: the stand-in keeps a bare datetime in $set as text
    bookings.replace_one({"_id": conv["reference"]}, stored)
    return conv


def reminder_day_of(counter):
    start = datetime.fromisoformat(counter.slot["start"]).astimezone(PARIS)
    return reminders.reminder_day(start.date())


def other_reminders(events, first):
    """Reminder events received besides `first`: a relay may publish the same event again
    (same event id: notify drops it), never a second reminder."""
    return [p for _, p in events.fenced() if p["event_id"] != first["event_id"]]


def passes(mongo):
    return Leases(mongo("booking")["leases"]).state("reminders").get("runs", 0)


def test_reminded_once_by_two_instances_with_the_links_and_shown_in_the_day_view(
        counter, container_factory, counter_config, mongo, bus, sink, http):
    events = bus("booking", REMINDER)
    # a second booking instance on the same clock: both run the timer
    second = container_factory(BookingService, counter_config)
    replace_dependencies(second, clock=counter.booking_clock)
    second.start()
    remind_on = reminder_day_of(counter)
    # the evening before its reminder day: nothing, however many passes run
    counter.booking_clock.at = paris(remind_on, 0) - timedelta(minutes=1)
    conv = booked_long_ago(counter, mongo)
    sink.wait_for(2)  # "confirm it", then the confirmed appointment
    seen = passes(mongo)
    assert wait_until(lambda: passes(mongo) >= seen + 10, timeout=20)
    assert events.fenced() == []

    # its reminder day: one event, whichever instance's pass marked it
    counter.booking_clock.at = paris(remind_on, 8)
    _, event = events.wait_for(timeout=20)
    assert event["reference"] == conv["reference"] and event["token"] == conv["token"]
    seen = passes(mongo)
    assert wait_until(lambda: passes(mongo) >= seen + 20, timeout=30)
    assert other_reminders(events, event) == []  # many more passes, still one
    stored = mongo("booking")["bookings"].find_one({"_id": conv["reference"]})
    reference = conv["reference"]
    assert stored["reminded"]["at"].replace(tzinfo=timezone.utc) == counter.booking_clock.at
    # what keeps it single when two passes overlap (lease run out): the conditional update
    again = BookingStore(mongo("booking")).mark_reminded(
        reference, reminders.record(counter.booking_clock.at), Outbox.entry("x", time.time(), 1))
    assert again is None

    # the e-mail, once, through the real SMTP server
    messages = sink.wait_for(3)
    reminders_sent = [m for m in messages if str(m["Subject"]).startswith("Rappel")]
    assert len(reminders_sent) == 1
    text = reminders_sent[0].get_body(("plain",)).get_content()
    token = conv["token"]
    assert f"/bookings/{reference}/convocation?token={token}" in text
    assert f"/bookings/{reference}/cancel?token={token}" in text
    assert "justificatif de domicile" in text and "proof of address" in text
    assert "GRATUIT" in text  # M5 leads every message

    # the day view: the JSON and the page
    headers = counter.bearer("agent")
    day = http.get("/api/day", params={"date": counter.day.isoformat()}, headers=headers).json()
    row = next(b for b in day["bookings"] if b["id"] == reference)
    assert row["reminded_at"] is not None
    page_session(http, "agent")
    page = http.get("/day", params={"date": counter.day.isoformat()}).text
    sent_at = counter.booking_clock.at.astimezone(PARIS)
    assert "<th scope=\"col\">Rappel</th>" in page
    assert f"envoyé le {sent_at:%d/%m à %H:%M}" in page


def test_a_cancelled_booking_is_not_reminded(counter, mongo, bus):
    events = bus("booking", REMINDER)
    counter.booking_clock.at = paris(reminder_day_of(counter), 0) - timedelta(minutes=1)
    kept = booked_long_ago(counter, mongo, family_name="Diallo", given_names="Awa")
    gone = booked_long_ago(counter, mongo, family_name="Nguyen", given_names="Lan")
    counter.rpc.booking.cancel(gone["reference"], gone["token"])
    counter.booking_clock.at = paris(reminder_day_of(counter), 8)
    _, event = events.wait_for(timeout=20)
    assert event["reference"] == kept["reference"]
    seen = passes(mongo)
    assert wait_until(lambda: passes(mongo) >= seen + 10, timeout=20)
    assert other_reminders(events, event) == []


def test_notify_sends_a_reminder_once_per_event(counter, config, sink):
    """At least once on the bus, once in the mailbox: the relay may publish it again."""
    from nameko.standalone.events import event_dispatcher

    from services.common import contract
    start = datetime.fromisoformat(counter.slot["start"]).astimezone(timezone.utc)
    event = contract.build(
        REMINDER, reference="RDV-AB12-CD34", procedure="renewal", site="montpellier",
        slot_id=counter.slot["id"], slot_start=start.isoformat(),
        slot_end=(start + timedelta(minutes=30)).isoformat(), email="awa.diallo@example.org",
        identity={"family_name": "Diallo", "given_names": "Awa", "birth_date": "1990-01-02"},
        token="t" * 40, reminded_at="2027-03-02T07:00:00Z")
    dispatch = event_dispatcher(config)
    dispatch("booking", REMINDER, event)
    dispatch("booking", REMINDER, event)
    # a distinct reminder published after the copy: once it is in, the copy was handled too
    dispatch("booking", REMINDER, dict(event, event_id=str(uuid.uuid4()), reference="RDV-AB12-CD35",
                                       email="lan.nguyen@example.org"))
    found = sink.wait_for(2)
    assert wait_until(lambda: counter.rpc.notify.outbox_status().get("done", 0) >= 2, timeout=10)
    assert sorted(m["To"] for m in sink.messages()) == ["awa.diallo@example.org",
                                                         "lan.nguyen@example.org"]
    assert all(str(m["Subject"]).startswith("Rappel") for m in found)
