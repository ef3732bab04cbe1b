"""M7: the short verification code of an attestation (services/common/attestation_code.py), what the
public verify page shows of one (gateway/public/attestation.py), and the rule's wording."""
import re
from datetime import date, datetime, timezone

import pytest

from services.common.penalty_waiver import waiver
from gateway.public.attestation import masked, values
from services.booking import evidence
from services.common import attestation_code, signing
from services.common.reference_data import WAIVER_RULE

KEY = signing.load_private_key(signing.new_private_key_text())
ATTEMPT = {"_id": "ATT-AB12-CD34", "file": "file-1", "procedure": "renewal",
           "email": "amina.diallo@example.org", "foreigner_number": "0612345678",
           "at": datetime(2027, 3, 4, 8, 30, tzinfo=timezone.utc)}
FIELDS = evidence.attestation_fields([ATTEMPT], datetime(2027, 3, 5, 10, 0, tzinfo=timezone.utc))
SIGNATURE = signing.sign(KEY, FIELDS)
CODE = attestation_code.attestation_code(SIGNATURE)


def test_the_code_is_16_characters_of_the_reference_alphabet_in_groups_of_four():
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", CODE)
    assert attestation_code.attestation_code(SIGNATURE) == CODE  # derived, not drawn


def test_another_signature_gives_another_code_and_codes_spread_over_80_bits():
    other = signing.sign(KEY, dict(FIELDS, issued_at="2027-03-05T10:00:01Z"))
    assert attestation_code.attestation_code(other) != CODE
    codes = {attestation_code.attestation_code(signing.b64url(bytes([i, j]) * 32))
             for i in range(40) for j in range(50)}
    assert len(codes) == 2000
    # every position takes many values: nothing fixed a guesser could count on
    for position in range(19):
        if position % 5 != 4:
            assert len({code[position] for code in codes}) == 32


@pytest.mark.parametrize("typed", [
    CODE, CODE.lower(), CODE.replace("-", ""), " " + CODE.replace("-", " ") + " ",
    f"https://rdv.example.fr/attestations/verify?code={CODE}",
    f"http://127.0.0.1:8000/attestations/verify?lang=en&code={CODE.lower()}",
])
def test_what_people_and_scanners_type_reads_as_the_code(typed):
    assert attestation_code.parse_code(typed) == CODE


def test_letters_read_for_digits_are_forgiven():
    assert attestation_code.parse_code("O1IL-0000-0000-0000") == "0111-0000-0000-0000"


@pytest.mark.parametrize("typed", [
    None, 12, "", "ABCD", CODE + "A", CODE[:-1], "UUUU-0000-0000-0000", "ABCD-EFGH-JKMN-PQR!",
    "https://rdv.example.fr/attestations/verify", "https://x/?code=", "A" * 400,
    "{\"attestation\": {}}",
])
def test_anything_else_is_not_a_code(typed):
    assert attestation_code.parse_code(typed) is None


def test_check_accepts_the_genuine_and_refuses_an_edit_or_a_missing_attempt():
    on_record = {ATTEMPT["_id"]: ATTEMPT}
    good = evidence.check(KEY.public_key(), FIELDS, SIGNATURE, on_record)
    assert good == dict(good, valid=True, signature_valid=True, attempts_on_record=True)
    later = dict(FIELDS, attempts=[dict(FIELDS["attempts"][0], at="2027-03-10T08:30:00Z")])
    edited = evidence.check(KEY.public_key(), later, SIGNATURE, on_record)
    assert (edited["valid"], edited["signature_valid"]) == (False, False)
    gone = evidence.check(KEY.public_key(), FIELDS, SIGNATURE, {})
    assert (gone["valid"], gone["signature_valid"], gone["attempts_on_record"]) == (False, True, False)
    assert evidence.listed_references(FIELDS) == [ATTEMPT["_id"]]
    assert evidence.listed_references({"attempts": "x"}) == []


def test_an_attestation_is_issued_again_only_when_its_attempts_changed():
    issued = {"attestation": FIELDS}
    assert evidence.same_attempts(issued, dict(FIELDS, issued_at="2027-04-01T00:00:00Z"))
    more = dict(FIELDS, attempts=FIELDS["attempts"] * 2)
    assert not evidence.same_attempts(issued, more)
    assert not evidence.same_attempts(None, FIELDS)


def test_the_public_page_shows_the_person_masked_and_the_attempts_in_paris_time():
    assert masked(FIELDS["applicant"]) == {"number_end": "678", "email": "a…@example.org"}
    assert masked({"foreigner_number": None, "email": "x@y.fr"})["number_end"] is None
    shown = values(FIELDS, "fr")
    [attempt] = shown["attempts"]
    assert (attempt["day"], attempt["time"]) == ("04/03/2027", "09:30")  # UTC+1 in March
    assert attempt["date"] == "jeudi 4 mars 2027"
    assert shown["procedures"][0]["code"] == "renewal"


def test_the_rule_as_worded_is_the_rule_the_waiver_applies():
    """'Record your attempts before your permit expires': an attempt on the expiry day counts,
    one the day after does not, whatever the filing within the two months."""
    assert "avant l'expiration" in WAIVER_RULE["fr"] and "au plus tard le jour" in WAIVER_RULE["fr"]
    assert "before your residence permit expires" in WAIVER_RULE["en"]
    assert "moins de 2 mois" not in WAIVER_RULE["fr"] and "less than" not in WAIVER_RULE["en"]
    expiry, filing = date(2027, 3, 4), date(2027, 4, 20)
    on_the_day = {"reference": "ATT-1", "procedure": "renewal", "at": "2027-03-04T22:30:00Z"}
    next_day = {"reference": "ATT-2", "procedure": "renewal", "at": "2027-03-04T23:30:00Z"}
    assert waiver(expiry, filing, [on_the_day])["waived"]  # 23:30 in Paris, still the 4th
    assert not waiver(expiry, filing, [next_day])["waived"]  # 00:30 in Paris, the 5th
