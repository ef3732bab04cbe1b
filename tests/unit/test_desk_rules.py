"""Issue 21: a booking made at the desk is found by the one M3-by-identity check
(services/booking/bookings.py `_refuse_second_person`, on `person_key`) like a web booking."""
from datetime import date, datetime, timezone

from services.booking import desk
from services.common import contract, exact_names

YASMINE = {"family_name": "Benali", "given_names": "Yasmine", "birth_date": date(1988, 3, 14),
           "foreigner_number": None, "procedure": "renewal", "channel": "phone",
           "agent": "agent", "phone": "04 67 00 00 00", "postal_address": None}
SLOT = {"id": "S1", "site": "montpellier", "start": "2030-01-07T09:00:00+00:00",
        "end": "2030-01-07T09:15:00+00:00"}


def made(data):
    return desk.desk_booking("RDV-0000-0001", data, SLOT, datetime(2029, 12, 1, tzinfo=timezone.utc),
                             "token", "salt", "instance")


def test_a_desk_booking_carries_the_person_key_the_web_check_reads():
    booking = made(YASMINE)
    # the same person typed otherwise on the site (a web request: birth date as a date too)
    typed = dict(YASMINE, family_name="BEN-ALI", given_names="yasmine")
    assert booking["person_key"] == exact_names.identity_key(typed)
    # and as a stored identity (birth date as text)
    assert booking["person_key"] == exact_names.identity_key(booking["identity"])
    assert booking["person_key"] != exact_names.identity_key(dict(YASMINE, birth_date=date(1988, 3, 15)))
    assert booking["person_key"] != exact_names.identity_key(dict(YASMINE, given_names="Amina"))


def test_a_desk_booking_is_active_without_e_mail_and_marked():
    booking = made(YASMINE)
    assert booking["status"] == contract.ACTIVE and booking["email"] is None
    assert (booking["channel"], booking["by"]) == ("phone", "agent")
    assert booking["outbox"] == {}


def test_staff_are_told_which_booking_the_person_holds():
    assert "RDV-1234-ABCD" in desk.person_has_booking_message("RDV-1234-ABCD")
