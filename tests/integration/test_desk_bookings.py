"""Issue 21: an agent books for a person without internet or e-mail, through the staff
gateway, on a real bus, store and SMTP sink: born confirmed, channel and agent recorded, no
e-mail, M3 by identity, a printable convocation, audited, counted by channel."""
import pytest

from gateway.admin.store import AdminStore
from services.common.errors import PersonHasBooking
from services.common.exact_names import person_key
from tests.integration.test_admin_gateway import page_session
from tests.helpers import wait_until

PERSON = {"procedure": "renewal", "family_name": "Ndiaye", "given_names": "Aïssatou",
          "birth_date": "1979-11-02", "foreigner_number": "9876543210",
          "postal_address": "12 rue de la Loge, 34000 Montpellier", "channel": "desk"}


def desk_book(counter, username="agent", **overrides):
    body = dict(PERSON, slot_id=counter.slot["id"], **overrides)
    return counter.http.post("/api/desk/bookings", json=body, headers=counter.bearer(username))


def test_a_desk_booking_is_confirmed_marked_audited_and_sends_no_mail(counter, mongo, bus, sink):
    events = bus("booking")
    answer = desk_book(counter)
    assert answer.status_code == 201, answer.text
    booked = answer.json()
    assert booked["status"] == "active" and booked["channel"] == "desk" and booked["by"] == "agent"
    assert booked["convocation"]["code"].startswith(booked["id"] + ".")
    stored = mongo("booking")["bookings"].find_one({"_id": booked["id"]})
    assert stored["email"] is None and stored["postal_address"] == PERSON["postal_address"]
    # who and what in the audit, under the agent's name; no name or address there
    entries = AdminStore(mongo("admin")).find_audit(who="agent")
    entry = next(e for e in entries if e["action"] == "desk_booking")
    assert entry["object"] == f"booking:{booked['id']}" and entry["after"]["channel"] == "desk"
    assert "Ndiaye" not in str(entry)
    # the day view says how it came in
    day = counter.http.get("/api/day", params={"date": counter.day.isoformat()},
                           headers=counter.bearer("agent")).json()
    row = next(b for b in day["bookings"] if b["id"] == booked["id"])
    assert row["channel"] == "desk" and row["by"] == "agent"
    # the desk checks the printed convocation like any (M4 at the counter)
    checked = counter.http.post("/api/checkin", headers=counter.bearer("agent"), json={
        "code": booked["convocation"]["code"], "family_name": "NDIAYE", "given_names": "Aissatou"})
    assert checked.status_code == 200 and checked.json()["result"] == "checked_in", checked.text
    # nothing to mail: no booking_created/confirmed at all, and the sink stays empty. Nothing
    # in its outbox for them (no relay can send one later), and whatever the answered RPCs
    # published is on the bus
    outbox = mongo("booking")["bookings"].find_one({"_id": booked["id"]})["outbox"]
    assert not {"created", "confirmed"} & set(outbox), outbox
    kinds = [kind for kind, _ in events.fenced()]
    assert "booking_checked_in" in kinds
    assert "booking_created" not in kinds and "booking_confirmed" not in kinds
    assert sink.messages() == []


def test_one_active_booking_per_person_whatever_the_channel(counter):
    first = desk_book(counter)
    assert first.status_code == 201, first.text
    reference = first.json()["id"]
    # the same person typed otherwise, on the phone: refused, naming the booking held
    again = desk_book(counter, channel="phone", family_name="N'DIAYE", given_names="aissatou",
                      foreigner_number="1234567890", postal_address=None, phone="04 67 00 00 00")
    assert again.status_code == 409 and reference in again.json()["message"], again.text
    assert again.json()["error"] == "person_has_booking" and "family_name" in again.json()["fields"]
    # (another procedure is another booking: the one rule's test in test_booking_service.py)
    # a person who booked on the web (confirmed from the e-mail) holds a place too
    web = counter.book(family_name="Diallo", given_names="Awa", birth_date="1990-05-06",
                       foreigner_number="1111111111")
    refused = desk_book(counter, family_name="DIALLO", given_names="Awa", birth_date="1990-05-06",
                        foreigner_number="2222222222")
    assert refused.status_code == 409 and web["reference"] in refused.json()["message"]


def test_a_web_booking_is_refused_when_the_person_holds_a_desk_booking(counter, mongo):
    """One rule for both channels: the desk booking stores the person's `person_key`, which
    the web's up-front check reads; the applicant's refusal names nothing."""
    booked = desk_book(counter, foreigner_number="5555555555").json()
    stored = mongo("booking")["bookings"].find_one({"_id": booked["id"]})
    assert stored["person_key"] == person_key("Ndiaye", "Aïssatou", "1979-11-02")
    # typed otherwise on the site, another foreigner number, an e-mail of their own
    with pytest.raises(PersonHasBooking) as caught:
        counter.book(family_name="N'DIAYE", given_names="aissatou", birth_date="1979-11-02",
                     foreigner_number="6666666666")
    assert booked["id"] not in caught.value.message
    # and by the foreigner number alone, whatever the names
    with pytest.raises(PersonHasBooking):
        counter.book(family_name="Other", given_names="Name", birth_date="1970-01-01",
                     foreigner_number="5555555555")


def test_one_person_booked_at_once_by_several_agents_gets_one_booking(counter, mongo):
    """Issue 21: the up-front check is a read; agents at the desk and on the phone booking the
    same person at the same moment all pass it. Each booking, once written, looks again and
    steps back (its place with it) when it finds another: never two; maybe none, and the
    agent's next try books."""
    from concurrent.futures import ThreadPoolExecutor
    import requests

    headers = counter.bearer("agent")

    def one(i):
        with requests.Session() as http:  # a connection of its own: the calls overlap
            return http.post(f"{counter.http.base}/api/desk/bookings",
                             json=dict(PERSON, slot_id=counter.slot["id"],
                                       channel=("desk", "phone")[i % 2],
                                       phone="04 67 00 00 0%d" % i),
                             headers=headers, timeout=30)

    def active():
        return [b["_id"] for b in mongo("booking")["bookings"].find(
            {"procedure": "renewal", "status": "active", "identity.family_name": "Ndiaye"})]
    before = counter.rpc.slots.get(counter.slot["id"])
    agents = before["capacity"] - before["booked"]  # each holds a place before it looks again
    with ThreadPoolExecutor(agents) as pool:
        answers = list(pool.map(one, range(agents)))
    made = [a.json()["id"] for a in answers if a.status_code == 201]
    assert len(made) <= 1 and active() == made, [a.text for a in answers]
    assert all(a.status_code == 409 and a.json()["error"] == "person_has_booking"
               for a in answers if a.status_code != 201), [a.text for a in answers]
    if not made:  # every one stepped back: the next try books
        made = [one(9).json()["id"]]
    assert active() == made
    # the others' places went back: one place taken in all
    assert wait_until(lambda: counter.rpc.slots.get(counter.slot["id"])["booked"] == before["booked"] + 1,
                      timeout=10), counter.rpc.slots.get(counter.slot["id"])


def test_bad_input_is_a_clear_400(counter):
    for overrides, field in [({"postal_address": None}, "postal_address"),
                             ({"channel": "web"}, "channel"),
                             ({"email": "someone@example.org"}, "email"),
                             ({"birth_date": "1979-13-40"}, "birth_date"),
                             ({"foreigner_number": None}, "foreigner_number")]:
        answer = desk_book(counter, **overrides)
        assert answer.status_code == 400 and field in answer.json()["fields"], (overrides, answer.text)
    assert counter.http.post("/api/desk/bookings", json=PERSON).status_code == 401


def test_the_desk_page_books_and_prints(counter):
    http = counter.http
    token = page_session(http, "agent")
    form = http.get("/desk", params={"procedure": "renewal"})
    assert form.status_code == 200 and 'name="slot_id"' in form.text
    values = dict(PERSON, slot_id=counter.slot["id"], site="montpellier", phone="")
    refused = http.post("/desk", data=values, allow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    missing = http.post("/desk", data=dict(values, csrf=token, postal_address=""))
    assert missing.status_code == 400 and "adresse postale ou un numéro" in missing.text
    assert 'value="Ndiaye"' in missing.text  # what was typed is kept
    done = http.post("/desk", data=dict(values, csrf=token))
    assert done.status_code == 200 and "Rendez-vous réservé" in done.text, done.text
    assert "12 rue de la Loge" in done.text and "<svg" in done.text
    reference = done.text.split("<h1>Convocation ")[1].split("<")[0]
    letter = http.get(f"/desk/bookings/{reference}/convocation.pdf", params={"post": "1"})
    assert letter.status_code == 200 and letter.headers["Content-Type"] == "application/pdf"
    assert letter.headers["Cache-Control"] == "no-store" and letter.content.startswith(b"%PDF")


def test_channels_count_in_the_figures_and_a_cancelled_desk_booking_mails_nobody(counter, bus, sink):
    events = bus("booking", "booking_cancelled")
    booked = desk_book(counter).json()
    counter.book(family_name="Martin", given_names="Paul")
    figures = counter.rpc.booking.figures(7)["procedures"]["renewal"]
    assert figures["by_channel"] == {"web": 1, "desk": 1, "phone": 0, "partner": 0}
    sink.wait_for(2)  # the web booking's two messages
    counter.rpc.booking.system_cancel(booked["id"], "staff", {}, "agent")
    _, event = events.wait_for(timeout=10)
    assert event["reference"] == booked["id"] and event["email"] is None

    def handled():  # the web booking's created and confirmed, then this cancellation
        return counter.rpc.notify.health()["backlog"]["inbox"]["done"] >= 3
    assert wait_until(handled, timeout=10), counter.rpc.notify.health()
    assert counter.rpc.notify.parked_events() == []
    assert len(sink.messages()) == 2
