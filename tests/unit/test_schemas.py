from datetime import date, timedelta

import pytest

from gateway.public.schemas import BookingAccessSchema, SlotQuerySchema
from services.common.errors import InvalidRequest
from services.common.schemas import BookingRequestSchema, ClientSchema, load_or_raise
from services.common.slot_schemas import OpeningPlanSchema
from tests.helpers import applicant, plan


def load(data, schema=BookingRequestSchema):
    return load_or_raise(schema(), data, InvalidRequest)


def reasons(data, schema=BookingRequestSchema):
    with pytest.raises(InvalidRequest) as caught:
        load(data, schema)
    return caught.value.fields


def test_valid_request_is_loaded_as_given():
    data = load(applicant("abc123", family_name="N'Diaye-Ba", given_names="Éloïse Marie"))
    assert data["family_name"] == "N'Diaye-Ba"
    assert data["given_names"] == "Éloïse Marie"
    assert data["birth_date"] == date(1988, 3, 14)


@pytest.mark.parametrize("field", ["procedure", "slot_id", "family_name", "given_names",
                                   "birth_date", "email"])
def test_required_fields(field):
    data = applicant("abc123")
    del data[field]
    assert field in reasons(data)


def test_operator_keys_are_unknown_fields():
    data = applicant("abc123")
    data["$where"] = "sleep(1000)"
    data["email"] = {"$gt": ""}
    found = reasons(data)
    assert found["$where"] == ["Unknown field."]
    assert "email" in found


@pytest.mark.parametrize("field", ["slot_id", "family_name", "given_names", "phone",
                                   "foreigner_number"])
def test_operator_objects_and_strings_are_refused(field):
    for value in ({"$gt": ""}, "$gt", " $ne"):
        data = applicant("abc123")
        data[field] = value
        assert field in reasons(data)


def test_control_characters_and_absurd_lengths():
    assert "family_name" in reasons(applicant("abc123", family_name="Ben\x00ali"))
    assert "family_name" in reasons(applicant("abc123", family_name="A" * 101))
    assert "email" in reasons(applicant("abc123", email="a" * 250 + "@example.org"))
    assert "slot_id" in reasons(applicant("x" * 65))


def test_wrong_types():
    found = reasons(applicant(123, family_name=["Benali"], birth_date=19880314))
    assert set(found) >= {"slot_id", "family_name", "birth_date"}


@pytest.mark.parametrize("value", ["1988-02-30", "14/03/1988", "", "tomorrow"])
def test_invalid_birth_dates(value):
    assert "birth_date" in reasons(applicant("abc123", birth_date=value))


def test_birth_date_in_the_future():
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    assert reasons(applicant("abc123", birth_date=tomorrow))["birth_date"] == ["Must not be in the future."]


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.org", "a b@example.org"])
def test_malformed_email(email):
    assert "email" in reasons(applicant("abc123", email=email))


@pytest.mark.parametrize("number", ["123456789", "12345678901", "12345abcde", "12 345 678 90"])
def test_malformed_foreigner_number(number):
    assert "foreigner_number" in reasons(applicant("abc123", foreigner_number=number))


@pytest.mark.parametrize("procedure", ["renewal", "renewal_10y"])
def test_foreigner_number_required_for_renewals(procedure):
    assert "foreigner_number" in reasons(applicant("abc123", procedure=procedure, foreigner_number=None))


def test_foreigner_number_optional_for_first_application():
    data = load(applicant("abc123", procedure="first_application", foreigner_number=None))
    assert data["foreigner_number"] is None


def test_blank_family_name_is_refused_but_empty_given_names_allowed():
    assert "family_name" in reasons(applicant("abc123", family_name="   "))
    assert load(applicant("abc123", given_names=""))["given_names"] == ""


def test_unknown_procedure():
    assert "procedure" in reasons(applicant("abc123", procedure="bribe"))


def test_not_an_object():
    with pytest.raises(InvalidRequest) as caught:
        load_or_raise(BookingRequestSchema(), ["a"], InvalidRequest)
    assert "_schema" in caught.value.fields


def test_client_schema():
    assert load({"ip": "203.0.113.9", "user_agent": "Firefox"}, ClientSchema)["ip"] == "203.0.113.9"
    assert "ip" in reasons({"ip": {"$ne": None}}, ClientSchema)


def test_slot_query_defaults_and_limits():
    query = load({"procedure": "renewal"}, SlotQuerySchema)
    assert (query["to"] - query["from_"]).days == 91
    assert "to" in reasons({"procedure": "renewal", "from": "2027-01-10", "to": "2027-01-01"}, SlotQuerySchema)
    assert "to" in reasons({"procedure": "renewal", "from": "2027-01-01", "to": "2027-06-01"}, SlotQuerySchema)
    assert "per_page" in reasons({"procedure": "renewal", "per_page": "5000"}, SlotQuerySchema)
    assert "procedure" in reasons({"procedure": "$gt"}, SlotQuerySchema)


def test_booking_access():
    assert load({"reference": "RDV-AB12-CD34", "token": "t"}, BookingAccessSchema)
    assert "reference" in reasons({"reference": "RDV-1", "token": "t"}, BookingAccessSchema)
    assert "token" in reasons({"reference": "RDV-AB12-CD34", "token": ""}, BookingAccessSchema)


def test_opening_plan_schema():
    loaded = load(plan(), OpeningPlanSchema)
    assert loaded["hours"][0][0].hour == 9
    assert "hours.0" in reasons(plan(hours=["12:00-09:00"]), OpeningPlanSchema)
    assert "weekdays.0" in reasons(plan(weekdays=["funday"]), OpeningPlanSchema)
    assert "desks" in reasons(plan(desks=0), OpeningPlanSchema)
    assert "site" in reasons(dict(plan(), site="$where"), OpeningPlanSchema)


@pytest.mark.parametrize("bad", ["Ben\u2028ali", "Ben\u2029ali", "Ben\u200bali", "Ben\u202eila",
                                 "Ben\ufeffali", "Ben\u00adali", "Ben\ue000ali", "Ben\ud800ali",
                                 "Ben\x85ali", "Ben\tali"])
@pytest.mark.parametrize("field", ["family_name", "given_names"])
def test_names_refuse_invisible_and_line_breaking_characters(field, bad):
    found = reasons(applicant("abc123", **{field: bad}))
    assert list(found) == [field]
    assert "invisible" in found[field][0] and "U+" in found[field][0]


@pytest.mark.parametrize("good", ["N'Diaye-Ba", "N’Diaye", "Nguyễn Văn", "Éloïse Marie",
                                  "E\u0301loi\u0308se", "O'Brien  Smith", "Müller-Lüdenscheidt",
                                  "محمد", "王 小明"])
def test_names_keep_spaces_apostrophes_hyphens_and_combining_marks(good):
    assert load(applicant("abc123", given_names=good))["given_names"] == good


@pytest.mark.parametrize("email", ["josé@example.fr", "yasmine@exämple.fr", "пример@example.org"])
def test_internationalised_e_mail_addresses_are_refused_with_a_clear_message(email):
    found = reasons(applicant("abc123", email=email))
    assert list(found) == ["email"]
    assert "cannot deliver" in found["email"][0]


@pytest.mark.parametrize("params, field", [
    ({"from": "9999-12-31"}, "from"),
    ({"to": "9999-12-31"}, "to"),
    ({"from": "0001-01-01"}, "from"),
])
def test_slot_search_dates_far_away_are_refused(params, field):
    assert field in reasons(dict(params, procedure="renewal"), SlotQuerySchema)


# -- the language of the pages used (issue 21): fr, en or ar; anything else is a 400 ---------

@pytest.mark.parametrize("lang", ["fr", "en", "ar"])
def test_lang_takes_every_language_of_the_pages(lang):
    from services.common.schemas import AttemptRequestSchema
    assert load(dict(applicant("abc123"), lang=lang))["lang"] == lang
    attempt = {"procedure": "renewal", "email": "a@example.org", "lang": lang}
    assert load(attempt, AttemptRequestSchema)["lang"] == lang


@pytest.mark.parametrize("lang", ["de", "AR", "", "arabic", {"$gt": ""}, ["ar"], 1])
def test_an_unknown_language_is_refused_naming_the_field(lang):
    from services.common.schemas import AttemptRequestSchema
    from services.common.request_schemas import RequestFilingSchema
    assert "lang" in reasons(dict(applicant("abc123"), lang=lang))
    attempt = {"procedure": "renewal", "email": "a@example.org", "lang": lang}
    assert "lang" in reasons(attempt, AttemptRequestSchema)
    filing = dict(applicant(None), availability={"sites": ["montpellier"], "times": [
        {"weekday": "monday", "from": "08:00", "to": "12:00"}]}, lang=lang)
    filing.pop("slot_id", None)
    assert "lang" in reasons(filing, RequestFilingSchema)


def test_lang_is_french_when_not_given():
    from services.common.schemas import AttemptRequestSchema
    assert load(applicant("abc123"))["lang"] == "fr"
    assert load({"procedure": "renewal", "email": "a@example.org"}, AttemptRequestSchema)["lang"] == "fr"
