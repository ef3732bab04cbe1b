"""An applicant opens a booking whose personal data were erased past BOOKING_RETENTION_DAYS
(services/common/retention.py): every page answers, says so, and shows no blanks."""
import time
from html import unescape

from services.booking.store import BOOKING_ERASED, BOOKING_UNSET
from services.common.retention import erasure
from tests.helpers import confirm_token_of
from tests.pages.conftest import FORM, csrf_of, first_slot_path


def erased_booking(http, mongo):
    slot_id = first_slot_path(http).rsplit("/", 1)[1]
    created = http.post("/api/bookings", json=dict(FORM, procedure="renewal", slot_id=slot_id))
    assert created.status_code == 201, created.text
    reference, token = created.json()["reference"], created.json()["token"]
    assert http.post(f"/api/bookings/{reference}/confirm", headers={
        "X-Booking-Token": confirm_token_of(mongo, reference)}).json()["status"] == "active"
    # what the booking service's retention pass writes (the pass itself: tests/integration/
    # test_retention.py)
    bookings = mongo("booking")["bookings"]
    assert bookings.update_one({"_id": reference},
                               erasure(BOOKING_ERASED, time.time(), BOOKING_UNSET)).modified_count
    return reference, token


def test_an_erased_booking_answers_on_every_page_without_its_identity(http, site, mongo):
    reference, token = erased_booking(http, mongo)
    headers = {"X-Booking-Token": token}
    view = http.get(f"/api/bookings/{reference}", headers=headers)
    assert view.status_code == 200, view.text
    assert view.json()["erased"] is True and view.json()["family_name"] is None
    for lang, said in (("fr", "effacé au terme de la durée de conservation"),
                       ("en", "erased at the end of the retention period"),
                       ("ar", "مُحيت عند انتهاء مدة الحفظ")):
        page = http.get(f"/bookings/{reference}", params={"token": token, "lang": lang})
        assert page.status_code == 200, page.text
        text = unescape(page.text)
        assert said in text and reference in text and "None" not in text
        assert "Benali" not in text and "Yasmine" not in text
    # no convocation without a name: a plain 404, never a 500
    for path in ("convocation", "convocation.pdf"):
        answer = http.get(f"/bookings/{reference}/{path}", params={"token": token})
        assert answer.status_code == 404, (path, answer.status_code)
    # the calendar and the cancel page answer; a cancellation is refused, not failed
    assert http.get(f"/bookings/{reference}/calendar.ics", params={"token": token}).status_code < 500
    assert http.get(f"/bookings/{reference}/cancel", params={"token": token}).status_code < 500
    cancel = http.delete(f"/api/bookings/{reference}", headers=headers)
    assert cancel.status_code == 409 and cancel.json()["error"] == "refused", cancel.text
    page = http.get(f"/bookings/{reference}/cancel", params={"token": token})
    refused = http.post(f"/bookings/{reference}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409, refused.status_code
    assert mongo("booking")["bookings"].find_one({"_id": reference})["status"] == "active"
