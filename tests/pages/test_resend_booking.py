"""A booking sent again (issue 25): the form sent twice and the JSON API's Idempotency-Key give
the booking the first sending made, never a second one nor "slot taken" for one's own place."""
import re
import uuid

from tests.pages.conftest import FORM, csrf_of, first_slot_path

NO_FOLLOW = {"allow_redirects": False}


def test_the_form_sent_twice_is_one_booking_and_the_same_page(http, site, mongo):
    slot_path = first_slot_path(http)  # one desk: one place
    form = http.get(slot_path)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)
    data = dict(FORM, csrf_token=csrf_of(form.text), idempotency_key=key)

    first = http.post(slot_path, data=data, **NO_FOLLOW)
    again = http.post(slot_path, data=data, **NO_FOLLOW)  # a second click, a resend
    assert first.status_code == again.status_code == 303, again.text
    assert first.headers["Location"] == again.headers["Location"]
    assert again.headers["Location"].startswith("/bookings/RDV-")
    assert mongo("booking")["bookings"].count_documents({"status": "pending"}) == 1


def test_the_api_with_the_same_idempotency_key_answers_the_same_booking(http, site, mongo):
    slot_id = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][0]["id"]
    body = {"procedure": "renewal", "slot_id": slot_id, "family_name": "Benali",
            "given_names": "Yasmine", "birth_date": "1988-03-14",
            "email": "yasmine.benali@example.org", "foreigner_number": "0123456789"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/api/bookings", json=body, headers=key)
    again = http.post("/api/bookings", json=body, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert {k: first.json()[k] for k in ("reference", "token", "status")} == \
        {k: again.json()[k] for k in ("reference", "token", "status")}
    assert mongo("booking")["bookings"].count_documents({}) == 1
    # without the key, the place is someone else's request: full
    assert http.post("/api/bookings", json=body).status_code == 409

    bad = http.post("/api/bookings", json=body, headers={"Idempotency-Key": "short"})
    assert bad.status_code == 400
    assert list(bad.json()["fields"]) == ["Idempotency-Key"]
