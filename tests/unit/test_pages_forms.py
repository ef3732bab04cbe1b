"""The booking form's rules, called directly: what it posts, how errors read, slots by day."""
from datetime import date

from gateway.public import forms
from services.common.errors import InvalidRequest
from services.common.ics import appointment_ics
from services.common.reference_data import DOCUMENTS, PROCEDURES, documents
from services.common.schemas import BookingRequestSchema, load_or_raise
from services.common.timeutil import long_date

FORM = {"family_name": "Benali", "given_names": "Yasmine", "birth_date": " 1988-03-14 ",
        "email": " yasmine@example.org ", "phone": "", "foreigner_number": ""}


def schema_errors(body):
    try:
        load_or_raise(BookingRequestSchema(), body, InvalidRequest)
    except InvalidRequest as error:
        return error.fields
    return {}


def test_the_form_posts_what_the_json_api_takes():
    body = forms.booking_request("first_application", "slot1", FORM)
    assert body == {"procedure": "first_application", "slot_id": "slot1", "family_name": "Benali",
                    "given_names": "Yasmine", "birth_date": "1988-03-14",
                    "email": "yasmine@example.org", "phone": None}
    assert schema_errors(body) == {}
    # a renewal needs the foreigner number: left empty, the schema says so on that field
    renewal = forms.booking_request("renewal", "slot1", FORM)
    assert renewal["foreigner_number"] is None and "foreigner_number" in schema_errors(renewal)


def test_names_are_posted_as_typed():
    body = forms.booking_request("duplicate", "s", dict(FORM, family_name="  de la Cruz "))
    assert body["family_name"] == "  de la Cruz "  # exact name: the booking keeps it as given


def test_schema_reasons_become_one_message_per_field_in_either_language():
    form = dict(FORM, family_name="", birth_date="2999-01-01", email="nope", phone="abc",
                foreigner_number="12")
    fields = schema_errors(forms.booking_request("renewal", "s", form))
    french, other = forms.field_errors(fields, form, "fr")
    assert set(french) == {"family_name", "birth_date", "email", "phone", "foreigner_number"}
    assert french["family_name"].startswith("Indiquez votre nom de famille")
    assert french["birth_date"] == "La date de naissance ne peut pas être dans le futur."
    assert "adresse électronique valide" in french["email"]
    assert "exactement 10 chiffres" in french["foreigner_number"]
    english, _ = forms.field_errors(fields, form, "en")
    assert english["birth_date"] == "The date of birth cannot be in the future."
    assert english["foreigner_number"] == "The foreigner number has exactly 10 digits."
    assert other == []


def test_a_missing_foreigner_number_asks_for_it_and_unknown_fields_stay_apart():
    errors, other = forms.field_errors({"foreigner_number": ["Required for renewals: the 10-digit "
                                                             "number on your residence permit."],
                                        "slot_id": ["Not a valid slot id."]},
                                       {"foreigner_number": ""}, "en")
    assert errors == {"foreigner_number": "Enter your foreigner number: the 10 digits on your "
                                          "residence permit."}
    assert other == ["Not a valid slot id."]


def test_slots_are_grouped_by_paris_day_nearest_first():
    slots = [{"id": "b", "start": "2027-03-02T08:00:00+01:00"},
             {"id": "c", "start": "2027-03-01T23:30:00Z"},  # 00:30 on 2 March in Paris
             {"id": "a", "start": "2027-03-01T09:00:00+01:00"}]
    days = forms.slots_by_day(slots, "fr")
    assert [day for day, _ in days] == ["lundi 1 mars 2027", "mardi 2 mars 2027"]
    assert [(s["id"], s["time"]) for s in days[1][1]] == [("c", "00:30"), ("b", "08:00")]
    assert forms.slots_by_day(slots, "en")[0][0] == "Monday 1 March 2027"
    assert forms.slots_by_day([], "fr") == []


def test_every_procedure_lists_its_documents_in_both_languages():
    assert set(DOCUMENTS) == set(PROCEDURES)
    for code in PROCEDURES:
        assert len(documents(code, "fr")) == len(documents(code, "en")) >= 4
    assert any("titre de séjour actuel" in d for d in documents("renewal", "fr"))
    assert long_date(date(2027, 3, 3), "fr") == "mercredi 3 mars 2027"


def test_the_calendar_file_escapes_and_folds():
    from datetime import datetime, timezone

    from icalendar import Calendar

    start = datetime(2027, 3, 4, 8, 30, tzinfo=timezone.utc)
    text = appointment_ics("RDV-AB12-CD34@example.org", start, start, start.replace(minute=50),
                           "Préfecture – " + "x" * 100, "a, b; c", "line\nnext")
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    event = Calendar.from_ical(text).walk("VEVENT")[0]
    assert str(event["LOCATION"]) == "a, b; c" and str(event["DESCRIPTION"]) == "line\nnext"
    assert event["DTSTART"].dt == start
