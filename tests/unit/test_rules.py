from datetime import date, datetime, time, timedelta, timezone

import pytest

from gateway.public.client import client_address, parse_trusted
from services.booking import events as booking_events
from services.booking import records as booking_records
from services.booking import references as booking_references
from services.booking import views as booking_views
from services.common.errors import InvalidRequest, NotFound, SlotFull, SlotNotBookable
from services.common.exact_names import normalise_name
from services.common.one_email import normalise_email
from services.common.tokens import TokenSigner
from services.slots import rules as slot_rules
from services.slots.plan import decoy_slots, expand_plan

UTC = timezone.utc
KEY = "a-slot-id-key-for-tests"


def a_plan(**overrides):
    base = {"site": "montpellier", "procedure": "renewal", "from": date(2027, 3, 22),
            "to": date(2027, 3, 28), "weekdays": ["monday", "wednesday"],
            "hours": [(time(8, 30), time(10, 0)), (time(14, 0), time(15, 0))],
            "slot_minutes": 30, "desks": 2}
    base.update(overrides)
    return base


def test_plan_expands_chosen_weekdays_and_windows_in_paris_time():
    slots = list(expand_plan(a_plan(), KEY))
    # Monday 22 and Wednesday 24 March: 3 morning + 2 afternoon slots each
    assert len(slots) == 10
    first = slots[0]
    assert first["start"] == datetime(2027, 3, 22, 7, 30, tzinfo=UTC)  # 08:30 CET
    assert first["end"] - first["start"] == timedelta(minutes=30)
    assert {s["start"].date().isoformat() for s in slots} == {"2027-03-22", "2027-03-24"}
    assert all(s["free"] == 2 and s["capacity"] == 2 and s["booked"] == 0 for s in slots)


def test_plan_follows_daylight_saving_time():
    # 29 March 2027 is after the switch to summer time (CEST, UTC+2)
    slots = list(expand_plan(a_plan(**{"from": date(2027, 3, 29), "to": date(2027, 3, 29)}), KEY))
    assert slots[0]["start"] == datetime(2027, 3, 29, 6, 30, tzinfo=UTC)


def test_plan_slot_ids_are_stable_and_distinct():
    first = [s["_id"] for s in expand_plan(a_plan(), KEY)]
    again = [s["_id"] for s in expand_plan(a_plan(), KEY)]
    assert first == again and len(set(first)) == len(first)
    other = [s["_id"] for s in expand_plan(a_plan(procedure="duplicate"), KEY)]
    assert not set(first) & set(other)


def test_a_slot_that_does_not_fit_its_window_is_not_made():
    slots = list(expand_plan(a_plan(hours=[(time(9, 0), time(9, 50))], slot_minutes=30,
                                    weekdays=["monday"]), KEY))
    assert len(slots) == 1


def test_slot_ids_cannot_be_computed_from_the_opening_hours():
    """Keyed: the same plan under another key gives other ids (a script knowing the hours
    cannot send bookings for a slot before it is listed), and the key alone keeps them stable."""
    ids = [s["_id"] for s in expand_plan(a_plan(), KEY)]
    assert not set(ids) & {s["_id"] for s in expand_plan(a_plan(), "another-key-entirely")}
    plan = a_plan(**{"from": date(2027, 3, 22), "to": date(2027, 5, 28)})
    real = list(expand_plan(plan, KEY))
    assert decoy_slots(plan, real, 0.1, KEY) != decoy_slots(plan, real, 0.1, "another-key-entirely")


def slot(**overrides):
    base = {"_id": "s1", "procedure": "renewal", "state": "open", "free": 1,
            "start": datetime(2030, 1, 1, 8, tzinfo=UTC)}
    base.update(overrides)
    return base


@pytest.mark.parametrize("candidate, expected", [
    (None, NotFound),
    (slot(procedure="duplicate"), InvalidRequest),
    (slot(state="closed"), SlotNotBookable),
    # not yet released: answered as an unknown slot, so nothing tells it is coming
    (slot(state="scheduled"), NotFound),
    (slot(start=datetime(2020, 1, 1, tzinfo=UTC)), SlotNotBookable),
    (slot(free=0), SlotFull),
])
def test_slot_refusals(candidate, expected):
    assert isinstance(slot_rules.refusal(candidate, "renewal", datetime.now(UTC)), expected)


def test_a_scheduled_slot_is_refused_exactly_like_an_unknown_one():
    scheduled = slot_rules.refusal(slot(state="scheduled"), "renewal", datetime.now(UTC))
    unknown = slot_rules.refusal(None, "renewal", datetime.now(UTC))
    assert (scheduled.message, scheduled.fields) == (unknown.message, unknown.fields)


def test_a_bookable_slot_has_no_refusal():
    assert slot_rules.refusal(slot(), "renewal", datetime.now(UTC)) is None


def test_references_are_readable_and_unambiguous():
    refs = {booking_references.new_reference() for _ in range(2000)}
    assert len(refs) == 2000
    for ref in refs:
        assert ref.startswith("RDV-") and len(ref) == 13
        assert not set(ref[4:]) & set("ILOU")


def test_tokens_match_only_their_booking_and_key():
    signer = TokenSigner("k" * 32)
    token = signer.token_for("RDV-AAAA-BBBB", "salt1")
    stored = signer.hash_token(token)
    assert stored != token
    assert signer.matches(token, stored)
    assert not signer.matches(signer.token_for("RDV-AAAA-BBBC", "salt1"), stored)
    assert not signer.matches(signer.token_for("RDV-AAAA-BBBB", "salt2"), stored)
    assert not TokenSigner("j" * 32).matches(
        TokenSigner("j" * 32).token_for("RDV-AAAA-BBBB", "salt1"), stored)
    assert not signer.matches(None, stored) and not signer.matches({"$ne": ""}, stored)


def test_seconds_after_publication():
    published = datetime(2027, 1, 1, 10, tzinfo=UTC)
    assert booking_records.seconds_after_publication(published, published + timedelta(seconds=2.5)) == 2.5
    assert booking_records.seconds_after_publication(None, published) is None


def a_booking():
    now = datetime(2027, 1, 4, 9, tzinfo=UTC)
    return {
        "_id": "RDV-AAAA-BBBB", "status": "active", "procedure": "renewal",
        "slot": {"id": "s1", "site": "montpellier", "start": now + timedelta(days=3),
                 "end": now + timedelta(days=3, minutes=20), "published_at": now - timedelta(seconds=4)},
        "identity": {"family_name": "Nguyễn", "given_names": "Thị Mai", "birth_date": "1990-04-12",
                     "foreigner_number": "1234567890"},
        "email": " Mai.Nguyen+rdv@GMail.com ", "phone": None,
        "client": {"ip": "203.0.113.7", "user_agent": "UA"},
        "created_at": now, "seconds_after_publication": 4.0,
        "outbox": {"created": {"event_id": "3b5f0c52-8a7e-4d51-9f1e-2f7c3c1d0a11", "state": "pending"}},
    }


def test_created_event_carries_what_fraud_and_notify_need_and_is_rebuilt_identically():
    event = booking_events.created_event(a_booking(), "tok", "ctok")
    assert event == booking_events.created_event(a_booking(), "tok", "ctok")  # relay resends the same
    assert event["event_id"] == "3b5f0c52-8a7e-4d51-9f1e-2f7c3c1d0a11"
    assert event["occurred_at"] == "2027-01-04T09:00:00Z"
    assert event["email_normalised"] == "mainguyen@gmail.com"
    assert event["identity"]["family_name"] == "Nguyễn"
    assert event["identity"]["family_name_normalised"] == "nguyen"
    assert event["client"]["ip"] == "203.0.113.7"
    assert event["seconds_after_publication"] == 4.0
    assert event["slot_start"] == "2027-01-07T09:00:00Z"
    assert event["token"] == "tok"


def test_decoys_take_no_desk_look_like_slots_and_are_made_once():
    plan = a_plan(**{"to": date(2027, 4, 30)})
    real = list(expand_plan(plan, KEY))
    decoys = decoy_slots(plan, real, 0.1, KEY)
    assert len(decoys) == round(0.1 * len(real))
    real_starts = {s["start"] for s in real}
    for decoy in decoys:
        assert decoy["decoy"] is True and decoy["start"] not in real_starts
        local = decoy["start"].astimezone(slot_rules_paris()).time()
        # one slot before an opening or at a closing, on the plan's own grid: no desk is open
        assert local in {time(8, 0), time(10, 0), time(13, 30), time(15, 0)}
        assert decoy["capacity"] == decoy["free"] == plan["desks"]
        assert decoy["end"] - decoy["start"] == timedelta(minutes=30)
        assert set(decoy) == set(real[0]) | {"decoy"}
    assert decoys == decoy_slots(plan, real, 0.1, KEY)  # the same plan again: the same decoys
    assert decoy_slots(plan, real, 0, KEY) == [] and decoy_slots(plan, [], 0.1, KEY) == []


def slot_rules_paris():
    from services.common.timeutil import PARIS
    return PARIS


def test_a_booking_is_pending_until_confirmed_and_says_so():
    booking = dict(a_booking(), status="pending", confirm_by_ts=datetime(2027, 1, 4, 10, tzinfo=UTC).timestamp())
    view = booking_views.applicant_view(booking)
    assert view["status"] == "pending"
    assert "pas encore définitif" in view["not_final"]["fr"] and "not final" in view["not_final"]["en"]
    assert view["confirm_by"] == "2027-01-04T11:00:00+01:00"
    assert "not_final" not in booking_views.applicant_view(a_booking())
    assert booking_records.confirm_by_ts(1000.0, 60) == 4600.0
    assert booking_records.confirm_by_ts(1000.0, 0) is None


def test_booking_created_says_until_when_it_may_be_confirmed():
    """The producer decides the deadline, the event says it: notify words its e-mail from it."""
    booking = dict(a_booking(), status="pending",
                   confirm_by_ts=datetime(2027, 1, 4, 10, tzinfo=UTC).timestamp())
    assert booking_events.created_event(booking, "tok", "ctok")["confirm_by"] == "2027-01-04T10:00:00Z"
    # born confirmed (an accepted offer) or BOOKING_CONFIRM_MINUTES 0: it never lapses
    assert booking_events.created_event(dict(booking, confirm_by_ts=None), "tok", "ctok")["confirm_by"] is None


def test_confirmed_event_repeats_the_created_facts_without_the_confirmation_token():
    booking = a_booking()
    booking["slot"]["decoy"] = True
    booking["confirmed_ts"] = datetime(2027, 1, 4, 9, 10, tzinfo=UTC).timestamp()
    booking["outbox"]["confirmed"] = {"event_id": "7d2a7e90-1d3b-4c8f-a5e6-0b9d8f7e6c33", "state": "pending"}
    event = booking_events.confirmed_event(booking, "tok")
    created = booking_events.created_event(booking, "tok", "ctok")
    assert event["confirmed_at"] == event["occurred_at"] == "2027-01-04T09:10:00Z"
    assert event["decoy"] is True and created["decoy"] is True
    # the booking's own token, for the confirmed e-mail's convocation link; the link's token
    # has done its work
    assert event["token"] == "tok" and "confirm_token" not in event
    for key in ("reference", "email_normalised", "identity", "client", "seconds_after_publication"):
        assert event[key] == created[key]


def test_cancelled_event_and_applicant_view():
    booking = a_booking()
    booking["status"] = "cancelled"
    booking["cancellation"] = booking_records.cancellation(
        "multiple_bookings_same_email", {"others": ["RDV-X"]}, "fraud", datetime(2027, 1, 4, 9, 5, tzinfo=UTC))
    booking["outbox"]["cancelled"] = {"event_id": "6c2a7e90-1d3b-4c8f-a5e6-0b9d8f7e6c22", "state": "pending"}
    event = booking_events.cancelled_event(booking)
    assert event["reason"] == "multiple_bookings_same_email"
    assert event["evidence"] == {"others": ["RDV-X"]}
    assert event["event_id"] == "6c2a7e90-1d3b-4c8f-a5e6-0b9d8f7e6c22"
    assert event["occurred_at"] == "2027-01-04T09:05:00Z"
    # whether the mailbox had confirmed it: notify always sends the notice of such a booking
    assert event["was_confirmed"] is ("confirmed_ts" in booking)
    booking["confirmed_ts"] = datetime(2027, 1, 4, 9, 0, tzinfo=UTC).timestamp()
    assert booking_events.cancelled_event(booking)["was_confirmed"] is True
    booking.pop("confirmed_ts")
    assert booking_events.cancelled_event(booking)["was_confirmed"] is False
    view = booking_views.applicant_view(booking)
    assert view["cancel_reason"] == "multiple_bookings_same_email"
    assert view["slot"]["start"] == "2027-01-07T10:00:00+01:00"
    assert "token_hash" not in view and "client" not in view


TRUSTED = parse_trusted("127.0.0.1, ::1, 10.0.0.0/8, not-an-address")


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("203.0.113.5", None, "203.0.113.5"),
    ("203.0.113.5", "198.51.100.1", "203.0.113.5"),       # untrusted peer: header ignored
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),        # trusted proxy: client from header
    ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # spoofed left part never reached
    ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # chain of trusted proxies
    ("127.0.0.1", "garbage", "127.0.0.1"),
    ("127.0.0.1", None, "127.0.0.1"),
    ("::1", "2001:db8::7", "2001:db8::7"),
])
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, TRUSTED) == expected


@pytest.mark.parametrize("raw, expected", [
    ("  Jean.Dupont@Example.ORG ", "jean.dupont@example.org"),
    ("jean.dupont+rdv2@gmail.com", "jeandupont@gmail.com"),
    ("Jean.Dupont@googlemail.com", "jeandupont@gmail.com"),
    ("jean+x@hotmail.fr", "jean@hotmail.fr"),
    ("jean+x@example.org", "jean+x@example.org"),
])
def test_normalise_email(raw, expected):
    assert normalise_email(raw) == expected


def test_normalise_email_without_provider_rules():
    assert normalise_email(" J.D+x@Gmail.com", provider_rules=False) == "j.d+x@gmail.com"


@pytest.mark.parametrize("a, b", [
    ("N'Diaye", "NDIAYE"), ("Jean-Pierre", "jean pierre"), ("Élodie", "ELODIE"),
    ("Nguyễn", "Nguyen"), ("Müller", "MULLER"), ("Øster", "oster"), ("Straße", "STRASSE"),
])
def test_normalise_name_folds_case_accents_and_separators(a, b):
    assert normalise_name(a) == normalise_name(b)


def test_normalise_name_keeps_different_names_apart():
    assert normalise_name("Li") != normalise_name("Lin")


def test_settings_keep_defaults_types_and_yes_no_strings(monkeypatch):
    from services.common import settings
    from services.common.settings import setting

    # the defaults come from the one table: give these keys theirs
    for key, default in {"A": True, "F": False, "B": 3, "D": "x", "C": 1, "E": 1.0,
                         "missing": None, "G": False}.items():
        monkeypatch.setitem(settings.DEFAULTS, key, default)
    config = {"A": "false", "B": None, "C": "7", "D": "", "E": "0.5", "F": True, "G": "maybe"}
    assert setting(config, "A") is False  # bool("false") would say True
    assert setting(config, "F") is True
    assert setting(config, "B") == 3 and setting(config, "D") == "x"
    assert setting(config, "C") == 7 and setting(config, "E") == 0.5
    assert setting(config, "missing") is None
    with pytest.raises(ValueError):
        setting(config, "G")
    with pytest.raises(KeyError):  # a key without its one default is a mistake, not None
        setting(config, "UNDECLARED")
