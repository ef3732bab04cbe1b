"""Monitoring's rules as plain functions: queue ownership, alarms, growth, figures, plots,
the JSON log formatter and its scrubbing, the parked-event notice."""
import json
import logging
from datetime import datetime, timedelta, timezone

from gateway.admin.monitoring import (DEAD_LETTERS, GROWING, NO_CONSUMER, alarms, growing,
                                      queue_view, service_of, vhost_of)
from gateway.public.fairness import bars, nice_ceiling, procedure_view
from deploy.rabbitmq_definitions import load
from services.booking import figures as booking_figures
from services.common.deadletter import notice
from services.common.logs import JsonFormatter, scrub
from services.slots import figures as slot_figures

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def test_queues_belong_to_the_service_that_consumes_them():
    assert service_of("rpc-booking") == "booking"
    assert service_of("evt-booking-booking_created--notify.on_booking_created") == "notify"
    assert service_of("evt-booking-booking_confirmed--fraud.on_booking_confirmed") == "fraud"
    assert service_of("dead-letters.events") == "bus"
    assert service_of("rpc.reply-standalone_rpc_proxy-1234") == "replies"


def view(name, depth=0, consumers=1):
    return queue_view({"name": name, "messages": depth, "consumers": consumers})


def test_alarms_for_a_queue_without_consumer_and_for_dead_letters():
    queues = [view("rpc-booking"), view("rpc-notify", consumers=0),
              view("dead-letters.events", depth=2, consumers=0), view("dead-letters.rpc", consumers=0)]
    found = {(a["kind"], a["queue"]) for a in alarms(queues, {}, 300, 1000.0)}
    # dead-letter queues have no consumer by design: only their depth is an alarm
    assert found == {(NO_CONSUMER, "rpc-notify"), (DEAD_LETTERS, "dead-letters.events")}


def test_depth_growing_for_the_whole_window_is_an_alarm_and_a_dip_is_not():
    rising = [(0, 1), (100, 3), (200, 3), (300, 7), (400, 9)]
    assert growing(rising, window=300, now=400)
    assert not growing(rising, window=300, now=400 + 1000)  # no sample old enough: not watched
    assert not growing([(0, 1), (100, 5), (200, 2), (400, 9)], window=300, now=400)
    assert not growing([(0, 4), (200, 4), (400, 4)], window=300, now=400)  # flat: a steady queue
    assert not growing([(300, 1), (400, 9)], window=300, now=400)  # watched 100 s only
    history = {"rpc-booking": rising}
    assert [a["kind"] for a in alarms([view("rpc-booking", 9)], history, 300, 400)] == [GROWING]


def test_definitions_declare_the_exchanges_and_do_not_declare_nameko_queues():
    definitions = load()
    assert {"booking.events", "slots.events", "fraud.events", "nameko-rpc", "dead-letters"} <= {
        e["name"] for e in definitions["exchanges"]}
    assert all(e["type"] == "topic" and e["durable"] for e in definitions["exchanges"])
    # nameko declares its own queues without arguments: dead-lettering comes by policy
    assert not [q for q in definitions["queues"] if q["name"].startswith(("rpc-", "evt-"))]
    patterns = {p["pattern"]: p["definition"] for p in definitions["policies"]}
    assert patterns["^evt-"]["dead-letter-exchange"] == "dead-letters"
    assert patterns["^rpc-"]["dead-letter-exchange"] == "dead-letters"
    assert vhost_of("pyamqp://guest:guest@127.0.0.1:5672/") == "/"
    assert vhost_of("pyamqp://guest:guest@127.0.0.1:5672/test_vhost%2F1") == "test_vhost/1"


def test_booking_figures_median_wait_by_week_and_trafficking():
    def booking(days_ahead, created=NOW, status="active", reason=None, procedure="renewal"):
        doc = {"procedure": procedure, "created_at": created, "status": status,
               "slot": {"start": created + timedelta(days=days_ahead)}}
        if reason:
            doc["cancellation"] = {"reason": reason}
        return doc
    found = booking_figures.figures([
        booking(60), booking(50), booking(40, status="cancelled", reason="slot_grabbing"),
        booking(10, created=NOW - timedelta(days=7)), booking(5, status="cancelled", reason="applicant"),
        {"procedure": "renewal", "walk_in": True, "created_at": NOW, "slot": {"start": NOW}},
        {"_id": "RDV-MARKER", "abandoned_hold": True},
    ], ["renewal", "duplicate"], [{"procedure": "renewal"}, {"procedure": "renewal"},
                                  {"procedure": "unknown"}])
    renewal = found["renewal"]
    assert renewal["bookings"] == 5 and renewal["median_wait_days"] == 40
    assert renewal["cancellations"] == {"slot_grabbing": 1, "applicant": 1}
    assert renewal["trafficking_cancelled"] == 1
    assert renewal["failed_attempts"] == 2  # recorded (M7): the page must not say "not recorded"
    assert [w["median_wait_days"] for w in renewal["weeks"]] == [10, 45]
    assert renewal["by_channel"] == {"web": 5, "desk": 0, "phone": 0, "partner": 0}
    assert found["duplicate"] == {"bookings": 0, "median_wait_days": None, "cancellations": {},
                                  "trafficking_cancelled": 0, "weeks": [], "failed_attempts": 0,
                                  "by_channel": {"web": 0, "desk": 0, "phone": 0, "partner": 0}}


def test_slot_figures_time_to_full_next_free_and_decoys_left_out():
    published = NOW - timedelta(hours=2)

    def slot(free, booked, holds=None, decoy=False, start_days=30):
        return {"procedure": "renewal", "capacity": free + booked, "free": free, "booked": booked,
                "start": NOW + timedelta(days=start_days), "published_at": published,
                "holds": holds or {}, "decoy": decoy, "state": "open"}
    full = slot(0, 2, {"a": published.timestamp() + 5, "b": published.timestamp() + 40})
    found = slot_figures.figures([full, slot(1, 0, start_days=12), slot(3, 0, start_days=20),
                                  slot(0, 1, {"x": published.timestamp() + 1}, decoy=True)],
                                 ["renewal"], NOW)["renewal"]
    assert slot_figures.seconds_to_full(full) == 40
    assert found["released"] == 6 and found["booked"] == 2 and found["free"] == 4
    assert found["full_slots"] == 1 and found["median_seconds_to_full"] == 40
    assert found["days_to_next_free"] == 12


def test_plot_geometry_and_scale():
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 12, 48, 51, 250)] == [1, 0.5, 1, 10, 20, 50, 100, 500]
    plot = bars([("16/11", 40), ("23/11", None), ("30/11", 20)])
    assert plot["max"] == 50
    first, missing, third = plot["bars"]
    assert missing["h"] == 0 and first["h"] == 2 * third["h"]
    assert first["y"] + first["h"] == plot["axis_y"]
    assert first["x"] + first["w"] <= plot["width"]


def test_fairness_section_when_a_service_did_not_answer():
    section = procedure_view("renewal", None, None)
    assert section["wait_plot"] is None and section["median_wait_days"] is None


def record(message, *args, exc_info=None):
    return logging.LogRecord("services.test", logging.INFO, __file__, 1, message, args, exc_info)


def test_json_lines_scrub_emails_and_tokens():
    line = json.loads(JsonFormatter().format(record(
        "GET /bookings/RDV-1?token=abc.def-123&x=1 from %s; body {\"token\": \"s3cr3t\"}; "
        "X-Booking-Token: zz9; Authorization: Bearer eyJhbGc", "Amina.Diallo+rdv@Example.org")))
    assert line["level"] == "INFO" and line["logger"] == "services.test"
    for secret in ("Amina", "Example.org", "abc.def-123", "s3cr3t", "zz9", "eyJhbGc"):
        assert secret not in line["message"], line["message"]
    assert "RDV-1" in line["message"] and "[email]" in line["message"]
    assert "call_id" not in line  # outside a worker


def test_parked_notice_has_no_payload_and_no_email():
    body, headers, key = notice("notify", "e-1", "booking_created",
                                "contract: smtp said no to someone@example.org", 5.0)
    assert key == "parked.notify.booking_created"
    assert "someone@example.org" not in json.dumps([body, headers])
    assert set(body) == {"service", "event_id", "event_type", "reason", "parked_at"}
