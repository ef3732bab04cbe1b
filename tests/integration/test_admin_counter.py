"""The counter forgives a typo (issue 21, "The counter"): a name mismatch is looked at twice
before it cancels, a supervisor undoes a cancellation by mistake the same day without ever
overbooking, a convocation whose code does not scan is found by reference and birth date, and
the day view marks people absent or excused and finds them by name or reference."""
from datetime import timedelta

from services.booking.store import BookingStore
from services.common.timeutil import utcnow
from tests.helpers import wait_until
from tests.integration.test_admin_gateway import csrf_of, page_session

RIGHT = {"family_name": "BENALI", "given_names": "yasmine"}
TYPO = {"family_name": "Benalli", "given_names": "Yasmine"}


def check_in(counter, conv, names, who="agent", **more):
    return counter.http.post("/api/checkin", headers=counter.bearer(who),
                             json=dict(names, code=conv["code"], **more))


def audit_of(counter, reference):
    return [(e["who"], e["action"], e["before"], e["after"]) for e in counter.http.get(
        f"/api/audit?object=booking:{reference}", headers=counter.bearer("chief")).json()["entries"]]


def slot(counter):
    return counter.rpc.slots.get(counter.slot["id"])


def cancel_by_mismatch(counter, conv):
    answer = check_in(counter, conv, TYPO, confirm_mismatch=True)
    assert answer.status_code == 409 and answer.json()["booking"]["status"] == "cancelled"
    assert wait_until(lambda: slot(counter)["booked"] == 0, timeout=10)  # the place went back


def undo(counter, reference, who="chief", why="faute de frappe de l'agent"):
    return counter.http.post(f"/api/bookings/{reference}/undo-cancellation",
                             headers=counter.bearer(who), json={"why": why})


def test_a_typo_cancels_nothing_until_the_agent_decides_after_a_second_look(counter):
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    first = check_in(counter, conv, TYPO)
    assert first.status_code == 409, first.text
    body = first.json()
    assert (body["error"], body["result"], body["reason"]) == ("names_differ", "mismatch",
                                                               "name_mismatch")
    assert body["booking"]["status"] == "active" and body["booking"]["family_name"] == "Benali"
    assert body["typed"] == {"family_name": "Benalli", "given_names": "Yasmine"}
    assert slot(counter)["booked"] == 1  # the place is still the person's
    # the agent reads the document again and types it right: checked in
    again = check_in(counter, conv, RIGHT)
    assert again.status_code == 200 and again.json()["result"] == "checked_in"
    assert [a for _, a, _, _ in audit_of(counter, conv["reference"])] == [
        "check_in", "check_in_names_differ"]


def test_only_the_explicit_second_decision_cancels(counter, bus):
    listener = bus("booking", "booking_cancelled")
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    assert check_in(counter, conv, {"family_name": "Haddad", "given_names": "Karim"}).json()[
        "booking"]["status"] == "active"
    decided = check_in(counter, conv, {"family_name": "Haddad", "given_names": "Karim"},
                       confirm_mismatch=True)
    assert decided.status_code == 409 and decided.json()["error"] == "check_in_refused"
    assert decided.json()["booking"]["cancel_reason"] == "name_mismatch"
    _, event = listener.wait_for()
    assert event["reason"] == "name_mismatch" and event["evidence"]["second_look"] is True
    # the exact name rule stays: a decision to cancel with the right names checks in instead
    other = counter.book(family_name="Okafor", given_names="Chinedu")
    kept = check_in(counter, other, {"family_name": "OKAFOR", "given_names": "chinedu"},
                    confirm_mismatch=True)
    assert kept.status_code == 200 and kept.json()["result"] == "checked_in"


def test_a_supervisor_undoes_a_cancellation_by_mistake_and_the_place_comes_back(counter, mongo):
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    before = slot(counter)
    assert (before["booked"], before["held_back"]) == (0, 1)
    assert undo(counter, conv["reference"], who="agent").status_code == 403  # supervisors only
    short = undo(counter, conv["reference"], why="")
    assert short.status_code == 400 and "why" in short.json()["fields"]
    answer = undo(counter, conv["reference"])
    assert answer.status_code == 200, answer.text
    restored = answer.json()
    assert restored["status"] == "active" and restored["cancel_reason"] is None
    assert restored["restored"][0]["by"] == "chief"
    after = slot(counter)  # the place it gave back, taken again: nothing over capacity
    assert (after["booked"], after["held_back"], after["free"]) == (1, 0, before["free"])
    assert audit_of(counter, conv["reference"])[0] == (
        "chief", "cancellation_undone", {"status": "cancelled", "cancel_reason": "name_mismatch"},
        {"status": "active", "why": "faute de frappe de l'agent"})
    # again: nothing more to undo, and the person is checked in normally
    assert undo(counter, conv["reference"]).status_code == 409
    assert check_in(counter, conv, RIGHT).json()["result"] == "checked_in"
    # the restored booking's place is its own: the sweeper's question says it is in use
    hold = mongo("booking")["bookings"].find_one({"_id": conv["reference"]})["hold_id"]
    assert hold != conv["reference"] and hold in mongo("slots")["slots"].find_one(
        {"_id": counter.slot["id"]})["holds"]
    assert counter.rpc.booking.holds_in_use([hold]) == [hold]


def test_undo_of_a_booking_without_e_mail_is_not_refused_for_another_without_one(counter, mongo):
    """Desk and phone bookings (and erased ones) have no e-mail key: the undo's "booked again
    on this e-mail" check does not take another booking without one for the same e-mail."""
    bookings = mongo("booking")["bookings"]
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    other = counter.book(family_name="Okafor", given_names="Chinedu")
    for reference in (conv["reference"], other["reference"]):
        bookings.update_one({"_id": reference}, {"$set": {"email_key": None}})
    cancelled = check_in(counter, conv, TYPO, confirm_mismatch=True)
    assert cancelled.status_code == 409 and cancelled.json()["booking"]["status"] == "cancelled"
    assert wait_until(lambda: slot(counter)["booked"] == 1, timeout=10)  # its place went back
    answer = undo(counter, conv["reference"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "active"


def test_undo_refuses_when_the_place_was_booked_again_and_never_overbooks(counter, mongo):
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    # the freed place comes back at once (its random instant moved to now) and others book it
    mongo("slots")["slots"].update_one({"_id": counter.slot["id"]}, {"$set": {"rerelease_ts": 0}})
    assert wait_until(lambda: slot(counter)["free"] == slot(counter)["capacity"], timeout=10)
    for n in range(slot(counter)["capacity"]):
        counter.book(family_name=f"Autre{'abcdefgh'[n]}", given_names="Personne")
    full = slot(counter)
    assert (full["free"], full["held_back"]) == (0, 0)
    answer = undo(counter, conv["reference"])
    assert answer.status_code == 409, answer.text
    assert "complet" in answer.json()["message"]
    assert counter.rpc.booking.statuses([conv["reference"]])[conv["reference"]]["status"] == "cancelled"
    assert slot(counter)["booked"] == full["booked"] == full["capacity"]
    assert audit_of(counter, conv["reference"])[0][1] == "cancellation_undo_refused"


def test_undo_takes_a_free_place_once_it_was_re_released_and_only_the_same_day(counter, mongo):
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    mongo("slots")["slots"].update_one({"_id": counter.slot["id"]}, {"$set": {"rerelease_ts": 0}})
    assert wait_until(lambda: slot(counter)["held_back"] == 0, timeout=10)
    counter.booking_clock.at = counter.booking_clock.at + timedelta(days=1)
    late = undo(counter, conv["reference"])
    assert late.status_code == 409 and "jour même" in late.json()["message"]
    counter.booking_clock.at = counter.booking_clock.at - timedelta(days=1)
    free = slot(counter)["free"]
    assert undo(counter, conv["reference"]).status_code == 200
    assert (slot(counter)["free"], slot(counter)["booked"]) == (free - 1, 1)


def test_an_undo_the_sweeper_judged_abandoned_cannot_finish(mongo):
    """The interleaving forced on the store: the slots sweeper asks about the undo's new hold
    before the undo writes that the hold is its booking's; the undo must then give up (the
    sweeper gives the place back), never restore a booking without a place."""
    store = BookingStore(mongo("booking"))
    hold = "RDV-AAAA-BBBB_u0123abcd"
    assert store.holds_in_use([hold], utcnow()) == []
    assert store.claim_hold(hold, "RDV-AAAA-BBBB", utcnow()) is False
    other = "RDV-AAAA-BBBB_u4567ef01"  # the other order: claimed first, then in use
    assert store.claim_hold(other, "RDV-AAAA-BBBB", utcnow()) is True
    assert store.holds_in_use([other], utcnow()) == [other]


def test_check_in_by_reference_and_birth_date_when_the_code_does_not_scan(counter):
    conv = counter.book(family_name="Benali", given_names="Yasmine", birth_date="1988-03-14")
    agent = counter.bearer("agent")
    wrong = counter.http.post("/api/checkin", headers=agent, json=dict(
        RIGHT, reference=conv["reference"], birth_date="1988-03-15"))
    unknown = counter.http.post("/api/checkin", headers=agent, json=dict(
        RIGHT, reference="RDV-0000-0000", birth_date="1988-03-14"))
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json()["message"] == unknown.json()["message"]  # nothing to probe
    assert wrong.json()["message"].startswith("Référence ou date de naissance incorrecte")
    missing = counter.http.post("/api/checkin", headers=agent, json=dict(
        RIGHT, reference=conv["reference"]))
    assert missing.status_code == 400 and "birth_date" in missing.json()["fields"]
    good = counter.http.post("/api/checkin", headers=agent, json=dict(
        RIGHT, reference=conv["reference"].lower(), birth_date="1988-03-14"))
    assert good.status_code == 200 and good.json()["result"] == "checked_in"
    assert audit_of(counter, conv["reference"])[0][3] == {"by": "reference", "status": "checked_in"}


def test_the_day_view_marks_absent_or_excused_and_finds_people(counter):
    absent = counter.book(family_name="Alpha", given_names="Anna")
    excused = counter.book(family_name="Béta-Durand", given_names="Bruno")
    arrived = counter.book(family_name="Gamma", given_names="Gil")
    check_in(counter, arrived, {"family_name": "Gamma", "given_names": "Gil"})
    http = counter.http
    token = page_session(http, "agent")
    day = f"date={counter.day}&site=montpellier"
    assert http.post("/day/attendance", data={"reference": absent["reference"],
                                              "state": "absent"}).status_code == 403  # no CSRF
    answer = http.post("/day/attendance", allow_redirects=False, data={
        "csrf": token, "reference": absent["reference"], "state": "absent",
        "date": str(counter.day), "site": "montpellier"})
    assert answer.status_code == 303 and "done=marked" in answer.headers["Location"]
    http.post("/day/attendance", data={"csrf": token, "reference": excused["reference"],
                                       "state": "excused", "date": str(counter.day)})
    api = counter.http.get(f"/api/day?{day}", headers=counter.bearer("agent")).json()
    assert (api["counts"]["absent"], api["counts"]["excused"], api["counts"]["checked_in"]) == (1, 1, 1)
    # Béziers' agent cannot mark Montpellier's people; a checked-in person is not "absent"
    other = counter.http.post(f"/api/bookings/{absent['reference']}/attendance",
                              headers=counter.bearer("beziers"), json={"state": "expected"})
    assert other.status_code == 409
    done = counter.http.post(f"/api/bookings/{arrived['reference']}/attendance",
                             headers=counter.bearer("agent"), json={"state": "absent"})
    assert done.status_code == 409
    assert audit_of(counter, absent["reference"])[0][1:] == (
        "attendance_marked", {"attendance": None}, {"attendance": "absent"})
    # search by part of a name (accents and hyphens folded) or by reference; who is checked in
    page = http.get(f"/day?{day}&q=beta durand")
    assert excused["reference"] in page.text and absent["reference"] not in page.text
    assert "Excusé" in page.text
    page = http.get(f"/day?{day}&q={absent['reference'][-4:].lower()}")
    assert absent["reference"] in page.text and excused["reference"] not in page.text
    page = http.get(f"/day?{day}&show=checked_in")
    assert arrived["reference"] in page.text and absent["reference"] not in page.text
    assert http.get(f"/day?{day}&show=nonsense").status_code == 400


def test_pages_undo_with_csrf_and_the_role_and_counter_errors_in_french(counter):
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    http = counter.http
    token = page_session(http, "agent")
    form = {"csrf": token, "reference": conv["reference"], "why": "erreur",
            "date": str(counter.day)}
    assert http.post("/day/undo", data=form).status_code == 403  # an agent may not
    page = http.post("/checkin", data={"csrf": token, "code": "RDV-AAAA-BBBB.forged",
                                       "family_name": "Benali"})
    assert page.status_code == 400 and "Ce n&#39;est pas un code de convocation" in page.text
    assert "Some fields" not in page.text and "Vérifiez les champs signalés" in page.text
    page = http.post("/walk-in", data={"csrf": token, "family_name": "Okafor",
                                       "birth_date": "1980-01-01", "foreigner_number": "12"})
    assert page.status_code == 400 and "exactement 10 chiffres" in page.text
    assert "Vérifiez les champs signalés" in page.text and "digits" not in page.text
    token = page_session(http, "chief")
    day = http.get(f"/day?date={counter.day}")
    assert "Rétablir le rendez-vous" in day.text
    assert http.post("/day/undo", data=dict(form, csrf="forged")).status_code == 403
    answer = http.post("/day/undo", allow_redirects=False, data=dict(form, csrf=csrf_of(day.text)))
    assert answer.status_code == 303 and "done=restored" in answer.headers["Location"]
    assert counter.rpc.booking.statuses([conv["reference"]])[conv["reference"]]["status"] == "active"


def test_undo_refuses_when_the_person_booked_again_meanwhile(counter):
    """M3 holds through an undo: the same person with another e-mail booked and confirmed
    since the cancellation, so restoring would make two bookings."""
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    again = counter.book(family_name="Benali", given_names="Yasmine", email="autre@example.org")
    answer = undo(counter, conv["reference"])
    assert answer.status_code == 409, answer.text
    statuses = counter.rpc.booking.statuses([conv["reference"], again["reference"]])
    assert (statuses[conv["reference"]]["status"], statuses[again["reference"]]["status"]) == (
        "cancelled", "active")


def test_an_undone_cancellation_is_announced_and_the_applicant_told_once(counter, bus, sink, mongo):
    """Issue 21: after an undo, fraud and the applicant learn it (booking_restored): the e-mail
    says the appointment is valid again, with the convocation."""
    restored = bus("booking", "booking_restored")
    conv = counter.book(family_name="Benali", given_names="Yasmine")
    cancel_by_mismatch(counter, conv)
    assert undo(counter, conv["reference"]).status_code == 200
    _, event = restored.wait_for()
    assert (event["reference"], event["restored_by"]) == (conv["reference"], "chief")

    def reinstated():
        return [m for m in sink.messages() if "rétabli" in str(m["Subject"])]
    assert wait_until(reinstated, timeout=20), [str(m["Subject"]) for m in sink.messages()]
    [told] = reinstated()  # one e-mail
    assert conv["reference"] in str(told["Subject"])
    text = told.get_body(("plain",)).get_content()
    assert "/convocation?token=" in text and "valid again" in text
    # marked sent (the marks are written in batches): the relay has nothing of it to send again
    assert wait_until(lambda: mongo("booking")["bookings"].find_one({"_id": conv["reference"]})[
        "outbox"]["restored"]["state"] == "done", timeout=10)
