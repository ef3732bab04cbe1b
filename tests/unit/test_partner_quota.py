"""Issue 24, accredited partners: the plain rules of quotas, states and API keys."""
from datetime import date, datetime, timezone

import pytest

from services.common.schemas import load_or_raise
from services.common.errors import InvalidRequest
from services.requests import quota
from services.common.request_schemas import PartnerFilingSchema, PartnerSchema, PersonFilingSchema

PARTNER = {"_id": "PTN-ABCD-EFGH", "name": "Cimade", "quotas": {"renewal": 3, "first_application": 0},
           "expires": "2026-12-31", "suspended": False}
AVAILABLE = {"sites": ["montpellier"], "times": [{"weekday": "monday", "from": "08:00", "to": "12:00"}]}


def test_the_week_is_the_paris_iso_week():
    # Sunday 23:30 in Paris is still the week that began on Monday; 00:30 Monday is the next
    sunday_night = datetime(2026, 12, 6, 22, 30, tzinfo=timezone.utc)   # 23:30 Paris
    monday_early = datetime(2026, 12, 6, 23, 30, tzinfo=timezone.utc)   # 00:30 Paris
    assert quota.week_of(quota.paris_day(sunday_night)) == "2026-W49"
    assert quota.week_of(quota.paris_day(monday_early)) == "2026-W50"
    assert quota.week_bounds(date(2026, 12, 9)) == (date(2026, 12, 7), date(2026, 12, 13))
    # one counter per partner, procedure and week
    assert quota.counter_id("PTN-ABCD-EFGH", "renewal", date(2026, 12, 7)) != \
        quota.counter_id("PTN-ABCD-EFGH", "renewal", date(2026, 12, 14))
    # the counter outlives its week (the figures read it during the week)
    assert quota.counter_expiry(date(2026, 12, 7)).date() > date(2026, 12, 13)


def test_who_may_file_for_what():
    today = date(2026, 12, 7)
    assert quota.refusal(PARTNER, "renewal", today) is None
    assert quota.refusal(PARTNER, "first_application", today) == ("procedure", "No quota for this procedure.")
    assert quota.refusal(PARTNER, "renewal_10y", today)[0] == "procedure"
    # the expiry day itself still files; the day after does not
    assert quota.state(PARTNER, date(2026, 12, 31)) == quota.ACTIVE
    assert quota.state(PARTNER, date(2027, 1, 1)) == quota.EXPIRED
    assert quota.refusal(PARTNER, "renewal", date(2027, 1, 1))[0] == "partner"
    suspended = dict(PARTNER, suspended=True)
    assert quota.state(suspended, today) == quota.SUSPENDED
    assert quota.refusal(suspended, "renewal", today) == ("partner", "This partner account is suspended.")


def test_usage_says_what_is_left():
    used = quota.usage(PARTNER, {"renewal": 2}, date(2026, 12, 7))
    assert used["renewal"] == {"quota": 3, "used": 2, "left": 1}
    assert used["first_application"] == {"quota": 0, "used": 0, "left": 0}
    assert quota.usage(PARTNER, {"renewal": 5}, date(2026, 12, 7))["renewal"]["left"] == 0


def test_a_key_opens_its_partner_only():
    key, key_hash = quota.new_key("PTN-ABCD-EFGH")
    assert quota.key_partner(key) == "PTN-ABCD-EFGH"
    assert quota.key_matches(key, key_hash)
    assert key.split(".", 1)[1] not in key_hash  # only a hash is kept
    other, _ = quota.new_key("PTN-ABCD-EFGH")
    assert not quota.key_matches(other, key_hash)
    for bad in ("", None, {"$gt": ""}, "PTN-ABCD-EFGH", "PTN-ABCD-EFGH.short", key + "x"):
        assert quota.key_partner(bad) is None or not quota.key_matches(bad, key_hash)
    assert not quota.key_matches(key, "not a hash")


def test_partner_and_filing_schemas_refuse_what_they_should():
    good = {"name": "Cimade", "contact_email": "accueil@cimade.example.org", "quotas": {"renewal": 5},
            "expires": "2027-06-30", "by": "chief"}
    assert load_or_raise(PartnerSchema(), good, InvalidRequest)["quotas"] == {"renewal": 5}
    for field, value in (("quotas", {"renewal": -1}), ("quotas", {"nope": 3}), ("quotas", {}),
                         ("quotas", {"renewal": "5"}), ("quotas", {"renewal": 501}),
                         ("name", {"$gt": ""}), ("expires", "tomorrow"), ("contact_email", "x")):
        with pytest.raises(InvalidRequest) as caught:
            load_or_raise(PartnerSchema(), dict(good, **{field: value}), InvalidRequest)
        assert any(f.split(".")[0] == field for f in caught.value.fields), (field, value)
    filing = {"procedure": "renewal", "family_name": "Ndiaye", "given_names": "Awa",
              "birth_date": "1980-01-02", "foreigner_number": "1234567890",
              "availability": AVAILABLE, "mailbox": "partner"}
    assert load_or_raise(PartnerFilingSchema(), filing, InvalidRequest)["email"] is None
    with pytest.raises(InvalidRequest) as caught:  # the beneficiary's mailbox needs its address
        load_or_raise(PartnerFilingSchema(), dict(filing, mailbox="beneficiary"), InvalidRequest)
    assert "email" in caught.value.fields
    with pytest.raises(InvalidRequest) as caught:
        load_or_raise(PartnerFilingSchema(), dict(filing, mailbox={"$ne": 1}), InvalidRequest)
    assert "mailbox" in caught.value.fields
    person = dict(filing, channel="phone", phone="04 67 00 00 00")
    del person["mailbox"]
    assert load_or_raise(PersonFilingSchema(exclude=("email",)), person, InvalidRequest)["channel"] == "phone"
    with pytest.raises(InvalidRequest) as caught:  # no way to reach the person
        load_or_raise(PersonFilingSchema(exclude=("email",)), dict(person, phone=None), InvalidRequest)
    assert "postal_address" in caught.value.fields
