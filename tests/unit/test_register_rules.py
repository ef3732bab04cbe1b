"""The register's rules (issue 24): reading an export, the diff of an import, the matching
key (M4's folding), the invitations due and their order."""
from datetime import date, datetime, timezone

import pytest

from services.common.register_check import (WRONG_PROCEDURE_FIELD, checked_procedures, match_key,
                                           register_books, request_requires,
                                           visa_checked_procedures, visa_in_time, visa_match_key,
                                           visa_number, wrong_procedure, wrong_renewal)
from services.common.reference_data import PROCEDURES
from services.register import rules

HEADER = "foreigner_number,family_name,given_names,birth_date,permit_kind,expiry,email\n"
ROWS = ("0412345678,N'Diaye,Awa Marie,1990-04-02,temporary,2027-03-01,awa@example.org\n"
        "0498765432,Benali,Karim,12/11/1985,resident_10y,2027-05-20,\n")


def test_an_export_is_read_whole_with_both_date_forms_and_an_optional_email():
    entries = rules.parse_export(HEADER + ROWS, max_lines=10)
    assert entries["0412345678"] == {"family_name": "N'Diaye", "given_names": "Awa Marie",
                                     "birth_date": "1990-04-02", "permit_kind": "temporary",
                                     "expiry": "2027-03-01", "email": "awa@example.org"}
    assert entries["0498765432"]["birth_date"] == "1985-11-12"
    assert entries["0498765432"]["email"] is None
    # semicolons, columns in another order, a byte-order mark, no email column
    other = ("\ufeffexpiry;permit_kind;foreigner_number;family_name;given_names;birth_date\n"
             "2027-03-01;multi_year;0412345678;Ndiaye;Awa;1990-04-02\n")
    assert rules.parse_export(other, 10)["0412345678"]["permit_kind"] == "multi_year"


@pytest.mark.parametrize("line, field, reason", [
    ("041234567,A,B,1990-04-02,temporary,2027-03-01,", "foreigner_number", "not 10 digits"),
    ("0412345678,,B,1990-04-02,temporary,2027-03-01,", "family_name", "empty"),
    ("0412345678,A,B,1990-13-02,temporary,2027-03-01,", "birth_date", "not a date"),
    ("0412345678,A,B,1990-04-02,visa,2027-03-01,", "permit_kind", "one of"),
    ("0412345678,A,B,1990-04-02,temporary,soon,", "expiry", "not a date"),
    ("0412345678,A,B,1990-04-02,temporary,2027-03-01,not-an-address", "email", "not an e-mail"),
    ("0412345678,$gt,B,1990-04-02,temporary,2027-03-01,", "family_name", "not a name"),
    ("0412345678,A\u200b,B,1990-04-02,temporary,2027-03-01,", "family_name", "invisible"),
    ("0412345678,A,B,1990-04-02,temporary", "_line", "5 fields"),
    ("0498765432,Dup,B,1990-04-02,temporary,2027-03-01,", "foreigner_number", "repeated"),
])
def test_a_bad_line_names_its_line_field_and_reason(line, field, reason):
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(HEADER + ROWS + line + "\n", max_lines=10)
    assert (problem.value.line, problem.value.field) == (4, field)
    assert reason in problem.value.reason


def test_a_header_without_a_required_column_or_an_empty_file_is_refused():
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export("foreigner_number,family_name\n0412345678,A\n", 10)
    assert problem.value.line == 1 and "given_names" in problem.value.reason
    for text in ("", HEADER):
        with pytest.raises(rules.ImportProblem):
            rules.parse_export(text, 10)
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(HEADER + ROWS, max_lines=1)
    assert "more than 1" in problem.value.reason


def test_the_diff_says_added_changed_with_its_fields_and_removed():
    old = rules.parse_export(HEADER + ROWS, 10)
    new = rules.parse_export(
        HEADER + "0412345678,N'Diaye,Awa Marie,1990-04-02,temporary,2028-03-01,awa@example.org\n"
        "0400000001,Nouveau,Jean,1970-01-01,temporary,2027-01-01,\n", 10)
    assert rules.diff(old, new) == {"added": ["0400000001"],
                                    "changed": [{"foreigner_number": "0412345678",
                                                 "fields": ["expiry"]}],
                                    "removed": ["0498765432"]}
    assert rules.diff(old, old) == {"added": [], "changed": [], "removed": []}


def test_a_renewal_matches_by_number_birth_date_and_the_family_name_folded_as_m4():
    entry = rules.parse_export(HEADER + ROWS, 10)["0412345678"]
    stored = rules.stored_match("0412345678", entry)
    for family in ("N'Diaye", "NDIAYE", "ndiaye", "N DIAYE", "N’Diaye"):
        assert rules.lookup_match("0412345678", "1990-04-02", family) == stored
    assert rules.lookup_match("0412345679", "1990-04-02", "Ndiaye") != stored
    assert rules.lookup_match("0412345678", "1990-04-03", "Ndiaye") != stored
    assert rules.lookup_match("0412345678", "1990-04-02", "Ndiay") != stored
    # given names are not part of the match: the permit's spelling of them varies most
    assert match_key("0412345678", "1990-04-02", "Ndiaye").count("|") == 2


def test_invitations_due_are_in_the_window_with_an_email_soonest_expiry_first():
    today = date(2027, 1, 1)
    entries = [("1", {"expiry": "2027-03-01", "email": "a@x.org"}),   # 59 days: past the window
               ("2", {"expiry": "2027-03-02", "email": "b@x.org"}),   # 60 days
               ("3", {"expiry": "2027-05-01", "email": "c@x.org"}),   # 120 days
               ("4", {"expiry": "2027-05-02", "email": "d@x.org"}),   # 121 days: not yet
               ("5", {"expiry": "2027-04-01", "email": None}),        # no contact
               ("6", {"expiry": "2027-03-15", "email": "f@x.org"})]
    due = rules.due_invitations(entries, today, 120, 60, limit=10)
    assert [n for n, _ in due] == ["2", "6", "3"]
    assert [n for n, _ in rules.due_invitations(entries, today, 120, 60, limit=2)] == ["2", "6"]


def test_one_invitation_id_per_permit_keyed():
    digest = lambda text: __import__("hashlib").sha256(("k" + text).encode()).digest()  # noqa: E731
    entry = {"expiry": "2027-03-01"}
    same = rules.permit_id(digest, "0412345678", entry)
    assert same == rules.permit_id(digest, "0412345678", dict(entry))
    assert same != rules.permit_id(digest, "0412345678", {"expiry": "2028-03-01"})
    assert same.startswith("INV-") and len(same) == 28


def test_checked_procedures_default_to_renewals_and_none_means_none():
    assert checked_procedures({}) == {"renewal", "renewal_10y"}
    assert checked_procedures({"REGISTER_CHECKED_PROCEDURES": "none"}) == set()
    assert checked_procedures({"REGISTER_CHECKED_PROCEDURES": "renewal"}) == {"renewal"}


def test_the_fairness_page_counts_renewal_and_first_application_places_apart():
    from gateway.public.fairness import by_kind, procedure_view

    slots = {"procedures": {
        "renewal": {"released": 10, "booked": 7, "days_to_next_free": None, "next_free": None,
                    "median_seconds_to_full": None, "weeks": []},
        "renewal_10y": {"released": 4, "booked": 4, "days_to_next_free": None, "next_free": None,
                        "median_seconds_to_full": None, "weeks": []},
        "first_application": {"released": 6, "booked": 2, "days_to_next_free": None,
                              "next_free": None, "median_seconds_to_full": None, "weeks": []},
        "duplicate": {"released": 50, "booked": 50, "days_to_next_free": None,
                      "next_free": None, "median_seconds_to_full": None, "weeks": []}}}
    sections = [procedure_view(code, slots, None) for code in
                ("renewal", "renewal_10y", "first_application", "duplicate", "change_of_status")]
    rows = {row["kind"]: row for row in by_kind(sections)}
    assert (rows["renewals"]["released"], rows["renewals"]["booked"]) == (14, 11)
    assert (rows["first_applications"]["released"], rows["first_applications"]["booked"]) == (6, 2)
    assert by_kind([procedure_view("renewal", None, None)])[0]["booked"] is None


# -- long-stay visas (first applications) ------------------------------------------------------

VISA_HEADER = "visa_number,family_name,given_names,birth_date,visa_kind,validity_end\n"
VISA_ROWS = ("FRA123456789,N'Diaye,Awa Marie,1990-04-02,vls_ts,2027-03-01\n"
             "fra 9876-54321,Benali,Karim,12/11/1985,VLS-TS,2027-05-20\n")


def test_a_visa_export_is_read_by_the_same_code_its_numbers_folded():
    visas = rules.parse_export(VISA_HEADER + VISA_ROWS, 10, rules.VISAS)
    assert visas["FRA123456789"] == {"family_name": "N'Diaye", "given_names": "Awa Marie",
                                     "birth_date": "1990-04-02", "visa_kind": "vls_ts",
                                     "validity_end": "2027-03-01"}
    # as copied from a sticker: spaces, hyphens, lower case; the kind as the software writes it
    assert visas["FRA987654321"]["visa_kind"] == "vls_ts"
    assert visas["FRA987654321"]["birth_date"] == "1985-11-12"
    # a permits' export is not a visas' one, nor the reverse
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(HEADER + ROWS, 10, rules.VISAS)
    assert problem.value.field == "_header" and "visa_number" in problem.value.reason
    with pytest.raises(rules.ImportProblem):
        rules.parse_export(VISA_HEADER + VISA_ROWS, 10)
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(VISA_HEADER + VISA_ROWS, 1, rules.VISAS)
    assert "more than 1 visas" in problem.value.reason
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(VISA_HEADER, 10, rules.VISAS)
    assert "no visa in the file" in problem.value.reason


@pytest.mark.parametrize("line, field, reason", [
    ("FRA1,A,B,1990-04-02,vls_ts,2027-03-01", "visa_number", "6 to 20"),
    ("FRA12345678$,A,B,1990-04-02,vls_ts,2027-03-01", "visa_number", "6 to 20"),
    ("FRA000000001,,B,1990-04-02,vls_ts,2027-03-01", "family_name", "empty"),
    ("FRA000000001,A,B,1990-02-30,vls_ts,2027-03-01", "birth_date", "not a date"),
    ("FRA000000001,A,B,1990-04-02,schengen_c,2027-03-01", "visa_kind", "one of"),
    ("FRA000000001,A,B,1990-04-02,vls_ts,later", "validity_end", "not a date"),
    ("FRA 1234 56789,Dup,B,1990-04-02,vls_ts,2027-03-01", "visa_number", "repeated"),
])
def test_a_bad_visa_line_names_its_line_field_and_reason(line, field, reason):
    with pytest.raises(rules.ImportProblem) as problem:
        rules.parse_export(VISA_HEADER + VISA_ROWS + line + "\n", 10, rules.VISAS)
    assert (problem.value.line, problem.value.field) == (4, field)
    assert reason in problem.value.reason


def test_the_visas_diff_is_keyed_by_visa_number():
    old = rules.parse_export(VISA_HEADER + VISA_ROWS, 10, rules.VISAS)
    new = rules.parse_export(VISA_HEADER + "FRA123456789,N'Diaye,Awa Marie,1990-04-02,vls,"
                                           "2027-03-01\n", 10, rules.VISAS)
    assert rules.diff(old, new, rules.VISAS) == {
        "added": [], "removed": ["FRA987654321"],
        "changed": [{"visa_number": "FRA123456789", "fields": ["visa_kind"]}]}


def test_a_first_application_matches_by_visa_number_birth_date_and_folded_family_name():
    entry = rules.parse_export(VISA_HEADER + VISA_ROWS, 10, rules.VISAS)["FRA123456789"]
    stored = rules.stored_visa_match("FRA123456789", entry)
    for number, family in (("FRA123456789", "N'Diaye"), ("fra 123 456 789", "NDIAYE"),
                           ("FRA-123456789", "n diaye")):
        assert rules.lookup_visa_match(number, "1990-04-02", family) == stored
    assert rules.lookup_visa_match("FRA123456788", "1990-04-02", "Ndiaye") != stored
    assert rules.lookup_visa_match("FRA123456789", "1990-04-03", "Ndiaye") != stored
    assert rules.lookup_visa_match("FRA123456789", "1990-04-02", "Ndiay") != stored
    # a visa's key is never a permit's, whatever the digits
    assert visa_match_key("0412345678", "1990-04-02", "Ndiaye") != match_key(
        "0412345678", "1990-04-02", "Ndiaye")
    assert visa_number(" fra.123-456 789 ") == "FRA123456789"


def test_visa_checked_procedures_default_to_first_applications_and_none_means_none():
    assert visa_checked_procedures({}) == {"first_application"}
    assert visa_checked_procedures({"VISA_CHECKED_PROCEDURES": "none"}) == set()
    assert visa_checked_procedures({"VISA_CHECKED_PROCEDURES": ""}) == {"first_application"}
    assert visa_checked_procedures(
        {"VISA_CHECKED_PROCEDURES": "first_application, change_of_status"}) == {
        "first_application", "change_of_status"}


def test_what_a_request_must_carry_follows_the_settings_by_default():
    """One rule (register_books) for what the requests service checks and what GET
    /api/procedures and the request form say: first applications a visa, renewals a permit."""
    requires = {code: request_requires(code, {}) for code in PROCEDURES}
    assert requires == {
        "first_application": [{"field": "visa_number", "checked_against": "visas"}],
        "renewal": [{"field": "foreigner_number", "checked_against": "permits"}],
        "renewal_10y": [{"field": "foreigner_number", "checked_against": "permits"}],
        "change_of_status": [], "duplicate": []}
    assert register_books("first_application", {}) == ("visas",)
    assert register_books("renewal", {"VISA_CHECKED_PROCEDURES": ""}) == ("permits",)


def test_what_a_request_must_carry_follows_the_settings_changed():
    config = {"VISA_CHECKED_PROCEDURES": "change_of_status",
              "REGISTER_CHECKED_PROCEDURES": "renewal_10y,duplicate"}
    assert request_requires("first_application", config) == []
    assert request_requires("change_of_status", config) == [
        {"field": "visa_number", "checked_against": "visas"}]
    # a renewal no register checks still needs its number (the staff find the file by it)
    assert request_requires("renewal", config) == [
        {"field": "foreigner_number", "checked_against": None}]
    assert request_requires("renewal_10y", config) == [
        {"field": "foreigner_number", "checked_against": "permits"}]
    # a procedure that is not a renewal, checked against the permits: its number is required
    assert request_requires("duplicate", config) == [
        {"field": "foreigner_number", "checked_against": "permits"}]
    # both settings name it: both, in the order the requests service checks them
    both = {"VISA_CHECKED_PROCEDURES": "duplicate", "REGISTER_CHECKED_PROCEDURES": "duplicate"}
    assert register_books("duplicate", both) == ("visas", "permits")
    assert [r["field"] for r in request_requires("duplicate", both)] == [
        "visa_number", "foreigner_number"]
    off = {"VISA_CHECKED_PROCEDURES": "none", "REGISTER_CHECKED_PROCEDURES": "none"}
    assert register_books("first_application", off) == ()
    assert request_requires("first_application", off) == []


def test_the_filing_schema_takes_a_visa_number_as_typed_and_refuses_operators():
    from services.common.request_schemas import RequestFilingSchema
    from marshmallow import ValidationError

    base = {"procedure": "first_application", "family_name": "Diop", "given_names": "Awa",
            "birth_date": "1990-04-02", "email": "awa@example.org",
            "availability": {"sites": ["montpellier"],
                             "times": [{"weekday": "monday", "from": "08:00", "to": "12:00"}]}}
    assert RequestFilingSchema().load(base)["visa_number"] is None
    assert RequestFilingSchema().load(dict(base, visa_number="fra 1234 5678"))["visa_number"]
    for bad in ("F1", "FRA$12345678", "-- -- -- --", "A" * 21, {"$gt": ""}):
        with pytest.raises(ValidationError) as error:
            RequestFilingSchema().load(dict(base, visa_number=bad))
        assert "visa_number" in error.value.messages


def test_a_permit_is_renewed_by_the_procedure_of_its_kind_and_another_renewal_is_wrong():
    assert [rules.procedure_for({"permit_kind": k}) for k in ("temporary", "multi_year",
                                                               "resident_10y")] == [
        "renewal", "renewal", "renewal_10y"]
    assert wrong_renewal("renewal_10y", "renewal") and wrong_renewal("renewal", "renewal_10y")
    assert not wrong_renewal("renewal", "renewal")
    assert not wrong_renewal("renewal_10y", "renewal_10y")
    # a procedure that is not a renewal (checked against the permits by a supervisor's
    # choice) is not compared: no permit kind is renewed by it
    assert not wrong_renewal("change_of_status", "renewal")


def test_the_wrong_procedure_refusal_names_the_right_one_in_both_languages():
    message, fields = wrong_procedure("renewal_10y")
    assert fields == {WRONG_PROCEDURE_FIELD: ["renewal_10y"]}
    assert "Renouvellement de la carte de résident de 10 ans" in message
    assert "Renewal of a 10-year resident card" in message
    assert "Rien n'a été déposé" in message and "Nothing was filed" in message


def test_a_visa_leads_to_a_first_application_until_its_grace_after_its_end():
    today = date(2027, 3, 1)
    assert visa_in_time("2027-09-01", today, 90)  # valid for months yet
    assert visa_in_time("2027-03-01", today, 90)  # its last day
    assert visa_in_time("2026-12-01", today, 90)  # ended 90 days ago: the last day of grace
    assert not visa_in_time("2026-11-30", today, 90)  # 91 days ago
    assert not visa_in_time("2020-01-01", today, 90)
    assert visa_in_time("2026-11-30", today, 91)  # the grace is the setting's
    assert not visa_in_time("2027-02-28", today, 0)  # no grace: the visa in force only
    assert visa_in_time("2027-03-01", today, 0)


def test_the_visa_grace_defaults_to_ninety_days():
    from services.common.settings import setting
    assert setting({}, "VISA_VALIDITY_GRACE_DAYS") == 90
    assert setting({"VISA_VALIDITY_GRACE_DAYS": "30"}, "VISA_VALIDITY_GRACE_DAYS") == 30


def test_the_requests_service_checks_by_the_same_rule_and_asks_for_a_missing_number():
    """The requests service decides its checks by register_books, so what GET /api/procedures
    says is what it checks; a procedure checked against the permits that is not a renewal
    (the schema asks only renewals for the number) answers 400 naming the field, before the
    register is asked, as a first application without its visa does."""
    from nameko.testing.services import worker_factory
    from services.common.errors import InvalidRequest
    from services.common.register_check import FOREIGNER_NUMBER_MISSING
    from services.requests.service import RequestsService

    config = {"VISA_CHECKED_PROCEDURES": "change_of_status",
              "REGISTER_CHECKED_PROCEDURES": "duplicate"}
    service = worker_factory(RequestsService, config=config)
    person = {"birth_date": date(1990, 4, 2), "family_name": "Diop"}
    with pytest.raises(InvalidRequest) as missing:
        service._register_check(dict(person, procedure="duplicate"), "key")
    assert missing.value.fields == {"foreigner_number": [FOREIGNER_NUMBER_MISSING]}
    assert not service.register.match.called
    # unchecked under these settings: nothing asked of the register, nothing vouched
    assert service._register_check(dict(person, procedure="first_application"), "key") == (
        None, False)
    service.register.match_visa.return_value = {"matched": True, "validity_end": "2100-01-01"}
    service.clock.now.return_value = datetime(2026, 12, 8, tzinfo=timezone.utc)
    service._setting = lambda key: 90
    assert service._register_check(dict(person, procedure="change_of_status",
                                        visa_number="FRA123456789"), "key") == ("visas", False)
    assert not service.register.match.called
