"""Book over HTTP against separately running services and see the event on the bus."""
import re
from datetime import date, timedelta

from deploy import run
from tests.conftest import free_port
from tests.helpers import MailSink, applicant, plan


def test_book_over_http_see_the_event_on_the_bus_and_get_the_mail(system, http, bus, tmp_path):
    sink = MailSink(free_port(), tmp_path / "mail").start()
    system.env["SMTP_PORT"] = str(sink.port)
    for name in ("slots", "booking", "notify", "public_gateway"):
        system.start(name)
    system.wait_ready()
    system.wait_consuming("evt-booking-booking_created--notify")
    with system.rpc() as rpc:
        rpc.slots.create_from_plan(plan(procedure="first_application", desks=2), release="now")
    listener = bus("booking")

    slots = http.get("/api/slots", params={"procedure": "first_application"}).json()["slots"]
    assert slots, system.logs()
    response = http.post("/api/bookings", json=applicant(
        slots[0]["id"], procedure="first_application", foreigner_number=None,
        family_name="Okonkwo", given_names="Chinedu Emmanuel", email="c.okonkwo@example.org"))
    assert response.status_code == 201, response.text
    booked = response.json()

    event_type, event = listener.wait_for()
    assert event_type == "booking_created"
    assert event["reference"] == booked["reference"]
    assert event["identity"]["family_name"] == "Okonkwo"
    assert event["slot_id"] == slots[0]["id"]

    [confirmation] = sink.wait_for(1)
    assert booked["reference"] in confirmation["Subject"]
    assert confirmation["To"] == "c.okonkwo@example.org"
    # the link in the e-mail, then its button, as the applicant would
    link = next(line.strip() for line in confirmation.get_body(("plain",)).get_content().splitlines()
                if "/confirm?token=" in line)
    path = link.split("://", 1)[1].split("/", 1)[1]
    page = http.get(f"/{path}")  # the token goes into this booking's cookie; the page has a button
    assert page.status_code == 200 and "token=" not in page.url
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    done = http.post(f"/bookings/{booked['reference']}/confirm", data={"csrf_token": csrf})
    assert "Votre rendez-vous est confirmé" in done.text
    event_type, event = listener.wait_for()
    assert (event_type, event["reference"]) == ("booking_confirmed", booked["reference"])

    gone = http.delete(f"/api/bookings/{booked['reference']}", headers={"X-Booking-Token": booked["token"]})
    assert gone.json()["status"] == "cancelled"
    event_type, event = listener.wait_for()
    assert (event_type, event["reason"]) == ("booking_cancelled", "applicant")
    # "to be confirmed", "confirmed" (with the convocation), "cancelled"
    assert len(sink.wait_for(3)) == 3
    sink.stop()


def test_demo_plan_loads_only_into_an_empty_database(system):
    system.start("slots")
    system.start("booking")
    system.start("public_gateway")
    system.wait_ready()
    assert run.load_demo_plan_if_empty(system.env) > 0
    assert run.load_demo_plan_if_empty(system.env) == 0
    with system.rpc() as rpc:
        # part of the demo is open at start, the rest waits in the secret schedule
        listed = rpc.slots.list_open("renewal", date.today().isoformat(),
                                     (date.today() + timedelta(weeks=9)).isoformat(), 1, 200)
        assert listed["slots"]
        assert rpc.slots.schedule_for(procedure="renewal")["batches"]
    plans = run.demo_plans(date(2027, 1, 4))
    assert plans[0]["from"] == "2027-01-05"
    assert plans[0]["to"] == (date(2027, 1, 5) + timedelta(weeks=8)).isoformat()

