"""The booking form's rules, called directly: what it posts, how errors read, slots by day."""
from datetime import date

from gateway.public import forms
from services.common.errors import InvalidRequest
from services.common.ics import appointment_ics
from services.common.reference_data import DOCUMENTS, PROCEDURES, documents
from services.common.schemas import BookingRequestSchema, load_or_raise
from services.common.timeutil import long_date
from services.common.request_schemas import CLAIM_TAKEN

FORM = {"family_name": "Benali", "given_names": "Yasmine", "birth_date": " 1988-03-14 ",
        "email": " yasmine@example.org ", "phone": "", "foreigner_number": ""}


def schema_errors(body, schema=BookingRequestSchema):
    try:
        load_or_raise(schema(), body, InvalidRequest)
    except InvalidRequest as error:
        return error.fields
    return {}


def test_the_form_posts_what_the_json_api_takes():
    body = forms.booking_request("first_application", "slot1", FORM, "fr")
    assert body == {"procedure": "first_application", "slot_id": "slot1", "family_name": "Benali",
                    "given_names": "Yasmine", "birth_date": "1988-03-14",
                    "email": "yasmine@example.org", "phone": None, "lang": "fr"}
    assert schema_errors(body) == {}
    # the page's language goes with it (the e-mail's links open the pages in it)
    english = forms.booking_request("first_application", "slot1", FORM, "en")
    assert english["lang"] == "en" and schema_errors(english) == {}
    assert schema_errors(dict(english, lang="de")) == {"lang": ["Must be one of: fr, en, ar."]}
    # a renewal needs the foreigner number: left empty, the schema says so on that field
    renewal = forms.booking_request("renewal", "slot1", FORM, "fr")
    assert renewal["foreigner_number"] is None and "foreigner_number" in schema_errors(renewal)


def test_names_are_posted_as_typed():
    body = forms.booking_request("duplicate", "s", dict(FORM, family_name="  de la Cruz "), "fr")
    assert body["family_name"] == "  de la Cruz "  # exact name: the booking keeps it as given


def test_schema_reasons_become_one_message_per_field_in_either_language():
    form = dict(FORM, family_name="", birth_date="2999-01-01", email="nope", phone="abc",
                foreigner_number="12")
    fields = schema_errors(forms.booking_request("renewal", "s", form, "fr"))
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


# issue 12: the request form

def request_schema_errors(body):
    from services.common.request_schemas import RequestFilingSchema
    return schema_errors(body, RequestFilingSchema)


def test_the_request_form_posts_what_the_json_api_takes_with_half_day_windows():
    from werkzeug.datastructures import MultiDict
    form = MultiDict(list(dict(FORM, foreigner_number="0123456789", permit_expiry=" 2031-05-02 ").items())
                     + [("sites", "montpellier"), ("sites", "beziers"), ("sites", "montpellier"),
                        ("times", "tuesday-morning"), ("times", "friday-afternoon")])
    body = forms.request_filing("renewal", form, "fr")
    assert body["procedure"] == "renewal" and body["foreigner_number"] == "0123456789"
    assert body["permit_expiry"] == "2031-05-02" and body["email"] == "yasmine@example.org"
    assert body["availability"] == {
        "sites": ["montpellier", "beziers"],
        "times": [{"weekday": "tuesday", "from": "08:00", "to": "13:00"},
                  {"weekday": "friday", "from": "13:00", "to": "18:00"}]}
    assert request_schema_errors(body) == {}
    # the opening hours (08:30-12:00, 13:30-16:30) fit in the half-days
    from services.requests.allocation import can_come
    from datetime import datetime, timezone
    tuesday_11 = datetime(2030, 1, 1, 10, 40, tzinfo=timezone.utc)  # 11:40 in Paris, a Tuesday
    assert can_come(body["availability"], "montpellier", tuesday_11,
                    tuesday_11.replace(hour=11))
    # a first application: no permit, the date left empty
    first = forms.request_filing("first_application", MultiDict(
        list(dict(FORM, permit_expiry="").items()) + [("sites", "beziers"), ("times", "monday-morning")]), "fr")
    assert first["permit_expiry"] is None and "foreigner_number" not in first
    assert request_schema_errors(first) == {}


def test_request_errors_land_next_to_their_field_and_box_group():
    from werkzeug.datastructures import MultiDict
    form = MultiDict(dict(FORM, permit_expiry="31/02/2030"))
    body = forms.request_filing("renewal", form, "fr")
    fields = request_schema_errors(body)
    errors, other = forms.request_errors(fields, form, "fr")
    assert errors["sites"] == "Cochez au moins un lieu où vous pouvez venir."
    assert errors["times"] == "Cochez au moins une demi-journée où vous pouvez venir."
    assert "vraie date" in errors["permit_expiry"]
    assert other == []
    # a box not from the grid: refused by the schema, shown as "choose from the grid"
    bad = MultiDict([("sites", "paris"), ("times", "sunday-night")])
    errors, _ = forms.request_errors(
        request_schema_errors(forms.request_filing("duplicate", bad, "fr")), bad, "en")
    assert errors["sites"] == "Choose a place from the list."
    assert errors["times"] == "Choose half-days from the grid."
    # the requests service's refusals: M4 and "a confirmed request already open"
    errors, _ = forms.request_errors({"family_name": ["Not an exact name (placeholder)."],
                                      "email": [CLAIM_TAKEN]},
                                     {"family_name": "Test", "email": "a@b.fr"}, "fr")
    assert errors["family_name"].startswith("Écrivez votre vrai nom")
    assert errors["email"].startswith("Une demande confirmée est déjà en cours")


def test_a_first_applications_visa_number_is_posted_trimmed_and_its_errors_read():
    from werkzeug.datastructures import MultiDict
    from services.common.register_check import VISA_MISSING
    cells = [("sites", "beziers"), ("times", "monday-morning")]
    body = forms.request_filing("first_application", MultiDict(
        list(dict(FORM, visa_number=" FRA 1234 5678 ").items()) + cells), "fr")
    assert body["visa_number"] == "FRA 1234 5678" and request_schema_errors(body) == {}
    empty = forms.request_filing("first_application", MultiDict(
        list(dict(FORM, visa_number="").items()) + cells), "fr")
    assert "visa_number" not in empty  # not given: the requests service says it is required
    errors, _ = forms.request_errors({"visa_number": [VISA_MISSING]}, {"visa_number": ""}, "fr")
    assert "vignette collée dans votre passeport" in errors["visa_number"]
    errors, _ = forms.request_errors({"visa_number": ["The visa number: 6 to 20 letters and digits."]},
                                     {"visa_number": "F1"}, "ar")
    assert errors["visa_number"] == "يتكوّن رقم التأشيرة من 6 إلى 20 حرفًا ورقمًا، كما هو مكتوب على الملصق."


def test_a_stored_availability_ticks_the_half_days_it_overlaps():
    assert forms.ticked({"times": [{"weekday": "tuesday", "from": "08:00", "to": "12:00"},
                                   {"weekday": "friday", "from": "11:00", "to": "15:00"}]}) == {
        "tuesday-morning", "friday-morning", "friday-afternoon"}
    assert forms.ticked(forms.availability({"times": ["monday-afternoon"]})) == {"monday-afternoon"}
    days = forms.grid_cells("en")
    assert [d for d, _, _ in days] == ["monday", "tuesday", "wednesday", "thursday", "friday"]
    assert days[0][2] == [("monday-morning", "morning"), ("monday-afternoon", "afternoon")]
