"""One booking followed across separately running services by its call id in their JSON logs,
and no log line with the applicant's e-mail, name, birth date or the booking's token."""
import re
import json
import time

from tests.conftest import free_port
from tests.helpers import MailSink, applicant, plan

EMAIL = "l.ferreira.logs@example.org"


def lines_of(system):
    """{process log file name: [parsed JSON lines]}; every line must be JSON."""
    found = {}
    for path in system.log_dir.glob("*.log"):
        parsed = []
        for raw in path.read_text().splitlines():
            if raw.strip():
                try:
                    parsed.append(json.loads(raw))
                except ValueError:
                    raise AssertionError(f"not a JSON line in {path.name}: {raw[:200]}")
        found[path.name] = parsed
    return found


def worker_line(lines, process, entrypoint):
    for line in lines[process]:
        if line["logger"] == "worker" and line["message"].startswith(entrypoint + " "):
            return line
    return None


def wait_for_line(system, process, entrypoint, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = worker_line(lines_of(system), process, entrypoint)
        if line:
            return line
        time.sleep(0.3)
    raise AssertionError(f"no {entrypoint} line in {process}\n{system.logs()}")


def processes_with(lines, call_id):
    return {name.split("-")[0] for name, parsed in lines.items()
            if any(call_id in (line.get("call_id_stack") or []) for line in parsed)}


def test_a_booking_followed_by_its_call_id_without_personal_data(system, http, tmp_path):
    sink = MailSink(free_port(), tmp_path / "mail").start()
    # Python's own warnings (eventlet's deprecation at import) go to stderr before logging is set up
    system.env.update(SMTP_PORT=str(sink.port), LOG_LEVEL="INFO", ACCESS_LOG_LEVEL="INFO",
                      PYTHONWARNINGS="ignore")
    for name in ("slots", "booking", "notify", "fraud", "public_gateway"):
        system.start(name)
    system.wait_ready()
    system.wait_consuming("evt-booking-booking_created--notify")
    system.wait_consuming("evt-booking-booking_confirmed--fraud")
    with system.rpc() as rpc:
        rpc.slots.create_from_plan(plan(procedure="first_application", desks=2), release="now")
    slot_id = http.get("/api/slots", params={"procedure": "first_application"}).json()["slots"][0]["id"]
    request = applicant(slot_id, procedure="first_application", foreigner_number=None,
                        family_name="Ferreira-Logtest", given_names="Lucia", email=EMAIL,
                        birth_date="1979-07-21")
    booked = http.post("/api/bookings", json=request).json()
    reference, token = booked["reference"], booked["token"]
    [mail] = sink.wait_for(1)
    # the link in the e-mail (token in the query string, as access logs would show it)
    confirm_token = re.search(r"/confirm\?token=([\w-]+)",
                              mail.get_body(("plain",)).get_content()).group(1)
    page = http.get(f"/bookings/{reference}/confirm", params={"token": confirm_token})
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert http.post(f"/bookings/{reference}/confirm", data={"csrf_token": csrf}).status_code == 200

    # booking: gateway -> booking -> slots (hold) -> notify (booking_created, its e-mail)
    wait_for_line(system, "notify-2.log", "notify.on_booking_created")
    created = wait_for_line(system, "public_gateway-4.log", "public_gateway.create_booking")
    assert created["service"] == "public_gateway" and created["call_id_stack"] == [created["call_id"]]
    lines = lines_of(system)
    assert processes_with(lines, created["call_id"]) == {"public_gateway", "booking", "slots", "notify"}
    # confirmation: gateway -> booking -> fraud (booking_confirmed, screened)
    wait_for_line(system, "fraud-3.log", "fraud.on_booking_confirmed")
    confirmed = wait_for_line(system, "public_gateway-4.log", "public_gateway.confirm_form")
    lines = lines_of(system)
    assert {"public_gateway", "booking", "fraud"} <= processes_with(lines, confirmed["call_id"])

    # an access line was written for the link with the token, scrubbed
    everything = "\n".join(p.read_text() for p in system.log_dir.glob("*.log"))
    assert f"/bookings/{reference}/confirm?token=[redacted]" in everything
    for secret in (token, confirm_token, EMAIL, "Ferreira-Logtest", "Lucia", "1979-07-21"):
        assert secret not in everything, secret
    sink.stop()
