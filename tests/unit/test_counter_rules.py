"""The counter's rules as plain functions: walk-in mornings (M6), names (M4), codes, signatures."""
from datetime import date, datetime, timezone

import pytest

from services.booking import convocations, views
from services.common import exact_names, signing, walk_ins
from services.common.timeutil import PARIS

HOURS = "08:30-12:00"
TUESDAY, WEDNESDAY = date(2027, 3, 2), date(2027, 3, 3)


def paris(day, hour, minute=0):
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=PARIS).astimezone(timezone.utc)


def test_walk_in_accepted_on_a_tuesday_morning():
    assert walk_ins.refusal("renewal_10y", paris(TUESDAY, 9, 15), HOURS) is None
    assert walk_ins.refusal("renewal_10y", paris(TUESDAY, 8, 30), HOURS) is None


@pytest.mark.parametrize("moment, words", [
    (paris(WEDNESDAY, 9, 0), "mercredi"),
    (paris(TUESDAY, 14, 0), "14:00"),
    (paris(TUESDAY, 12, 0), "12:00"),  # the end of the morning is not in it
    (paris(TUESDAY, 8, 29), "08:29"),
    (paris(date(2027, 3, 6), 9, 0), "samedi"),
])
def test_walk_in_refused_outside_the_rule_with_the_rule_in_the_message(moment, words):
    message = walk_ins.refusal("renewal_10y", moment, HOURS)
    assert words in message
    assert "sauf le mercredi" in message and "08:30 à 12:00" in message


def test_walk_in_only_for_the_10_year_card():
    message = walk_ins.refusal("renewal", paris(TUESDAY, 9, 0), HOURS)
    assert "que sur rendez-vous" in message


def test_hours_are_read_in_paris_time_across_daylight_saving():
    # 07:45 UTC is 09:45 in Paris in summer (UTC+2), 08:45 in winter (UTC+1)
    summer = datetime(2027, 7, 6, 7, 45, tzinfo=timezone.utc)
    assert walk_ins.refusal("renewal_10y", summer, "09:30-12:00") is None
    winter = datetime(2027, 1, 5, 7, 45, tzinfo=timezone.utc)
    assert walk_ins.refusal("renewal_10y", winter, "09:30-12:00") is not None


@pytest.mark.parametrize("text", ["", "8-12", "12:00-08:30", "08:30-25:00", "08:61-12:00", "abc"])
def test_malformed_hours_are_refused(text):
    with pytest.raises(ValueError):
        walk_ins.parse_hours(text)


def booking(family="N'Diaye-Durand", given="Aïssatou Marie"):
    return {"_id": "RDV-AB12-CD34", "identity": {"family_name": family, "given_names": given},
            "slot": {"id": "s1", "site": "montpellier",
                     "start": datetime(2027, 3, 2, 8, 30, tzinfo=timezone.utc)}}


@pytest.mark.parametrize("family, given", [
    ("N'Diaye-Durand", "Aïssatou Marie"), ("NDIAYE DURAND", "AISSATOU-MARIE"),
    ("n diaye durand", "aissatou marie"),
])
def test_names_match_after_normalisation(family, given):
    assert exact_names.names_match(booking(), family, given)


@pytest.mark.parametrize("family, given", [
    ("Diaye-Durand", "Aïssatou Marie"), ("N'Diaye-Durand", "Aïssatou"), ("Dupont", "Jean"),
])
def test_other_names_do_not_match(family, given):
    assert not exact_names.names_match(booking(), family, given)


def test_convocation_signature_covers_reference_name_and_slot():
    key = signing.load_private_key(signing.new_private_key_text())
    fields = convocations.convocation_fields(booking())
    assert fields == {"reference": "RDV-AB12-CD34", "family_name": "N'Diaye-Durand",
                      "given_names": "Aïssatou Marie", "slot_id": "s1",
                      "slot_start": "2027-03-02T08:30:00Z"}
    signature = signing.sign(key, fields)
    code = convocations.convocation_code("RDV-AB12-CD34", signature)
    assert convocations.parse_code(f"  {code.lower()[:13]}{code[13:]}\n") == ("RDV-AB12-CD34", signature)
    assert signing.verify(key.public_key(), signature, fields)
    for changed in ({"family_name": "Dupont"}, {"slot_start": "2027-03-03T08:30:00Z"},
                    {"reference": "RDV-AB12-CD35"}, {"slot_id": "s2"}):
        assert not signing.verify(key.public_key(), signature, dict(fields, **changed))
    other = signing.load_private_key(signing.new_private_key_text())
    assert not signing.verify(other.public_key(), signature, fields)
    assert not signing.verify(key.public_key(), "not-base64!", fields)


@pytest.mark.parametrize("code", ["", "RDV-AB12-CD34", ".abc", "RDV-AB12-CD34."])
def test_malformed_codes(code):
    with pytest.raises(ValueError):
        convocations.parse_code(code)


def test_keys_load_from_base64_and_pem_and_refuse_anything_else():
    from cryptography.hazmat.primitives import serialization

    key = signing.load_private_key(signing.new_private_key_text())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    again = signing.load_private_key(pem)
    assert signing.verify(again.public_key(), signing.sign(key, {"x": 1}), {"x": 1})
    for bad in ("", "short", "aGVsbG8=", None):
        with pytest.raises(ValueError):
            signing.load_private_key(bad)


def test_day_bounds_are_the_paris_day_in_utc():
    start, end = views.day_bounds(date(2027, 7, 6))
    assert start == datetime(2027, 7, 5, 22, 0, tzinfo=timezone.utc)
    assert end == datetime(2027, 7, 6, 22, 0, tzinfo=timezone.utc)
