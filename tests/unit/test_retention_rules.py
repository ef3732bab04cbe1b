"""Erasure of personal data past its retention (services/common/retention.py): what is due,
what is erased, what is kept, and that the views of an erased record still answer."""
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.exceptions import ConfigurationError

from gateway.admin.counter import shown
from services.booking.store import ATTEMPT_ERASED, BOOKING_ERASED, BOOKING_UNSET
from services.booking.views import applicant_view, staff_view
from services.common import retention
from services.common.settings import RETENTION_FLOOR_DAYS, RETENTION_KEYS, retention_days
from services.common.timeutil import PARIS
from services.notify.store import ERASABLE_STATES, MESSAGE_ERASED
from services.requests.rules import CLOSED_STATES, OPEN_STATES
from services.requests.store import REQUEST_ERASED, REQUEST_UNSET

DAY = 86400


def paris(day, hour, minute=0):
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=PARIS).astimezone(timezone.utc)


def booking(**overrides):
    """A booking as services/booking/bookings.py stores it (the fields the views read)."""
    doc = {"_id": "RDV-AB12-CD34", "status": "active", "procedure": "renewal",
           "slot": {"id": "s1", "site": "montpellier", "start": paris(date(2026, 3, 2), 9),
                    "end": paris(date(2026, 3, 2), 9, 20), "published_at": None, "decoy": False},
           "identity": {"family_name": "Benali", "given_names": "Yasmine",
                        "birth_date": "1988-03-14", "foreigner_number": "1234567890"},
           "email": "yasmine@example.org", "email_key": "yasmine@example.org",
           "person_key": "benali|yasmine|1988-03-14", "phone": "+33 6 12 34 56 78",
           "postal_address": None, "client": {"ip": "203.0.113.9"}, "lang": "fr",
           "created_at": paris(date(2026, 1, 5), 10), "token_hash": "h", "token_salt": "s",
           "unconfirmed_claims": ["client:203.0.113.9"], "idempotency": "f", "outbox": {}}
    doc.update(overrides)
    return doc


def apply(doc, update):
    """An update's $set (dotted paths) and $unset on a copy of `doc`, as the store does."""
    out = {key: (dict(value) if isinstance(value, dict) else value) for key, value in doc.items()}
    for path, value in update["$set"].items():
        head, _, tail = path.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    for path in update.get("$unset", {}):
        head, _, tail = path.partition(".")
        if tail:
            (out.get(head) or {}).pop(tail, None)
        else:
            out.pop(head, None)
    return out


def test_due_only_once_the_period_has_passed():
    now = 1_800_000_000.0
    assert retention.is_due(now - 366 * DAY, now, 365)
    assert not retention.is_due(now - 364 * DAY, now, 365)
    assert not retention.is_due(None, now, 365)  # a record without the instant is never due
    assert retention.cutoff_ts(now, 90) == now - 90 * DAY


def test_an_appointment_counts_from_the_end_of_its_paris_day():
    day = date(2026, 3, 2)
    start = paris(day, 9)
    # the last minute of the 365th day after: its day ended 364 days and 23 hours ago
    assert not start < retention.days_after_day(paris(day + timedelta(days=365), 23, 59), 365)
    assert start < retention.days_after_day(paris(day + timedelta(days=366), 0, 1), 365)
    # an appointment late in the day, across the change to summer time
    late = paris(date(2026, 3, 28), 23, 30)
    assert not late < retention.days_after_day(paris(date(2027, 3, 28), 23, 59), 365)
    assert late < retention.days_after_day(paris(date(2027, 3, 29), 0, 0), 365)


def test_a_booking_loses_who_it_was_for_and_keeps_what_figures_and_audit_read():
    cancellation = {"reason": "name_mismatch", "at": paris(date(2026, 3, 2), 9, 5), "by": "agent",
                    "evidence": {"typed": {"family_name": "Other"}}}
    before = booking(status="cancelled", cancellation=cancellation)
    after = apply(before, retention.erasure(BOOKING_ERASED, 1.0, BOOKING_UNSET))
    assert after["identity"] == dict.fromkeys(before["identity"])
    for field in ("email", "email_key", "person_key", "phone", "postal_address"):
        assert after[field] is None, field
    assert after["client"] == {} and "unconfirmed_claims" not in after and "idempotency" not in after
    assert after["cancellation"] == {"reason": "name_mismatch", "at": cancellation["at"], "by": "agent"}
    for kept in ("status", "procedure", "slot", "created_at", "token_hash", "lang"):
        assert after[kept] == before[kept], kept
    assert after["erased_ts"] == 1.0 and retention.erased(after) and not retention.erased(before)
    # nothing personal is left anywhere in the document
    text = repr(after)
    for given in ("Benali", "Yasmine", "1988-03-14", "1234567890", "example.org", "203.0.113",
                  "+33", "Other"):
        assert given not in text, given


def test_the_views_of_an_erased_booking_say_so_and_do_not_fail():
    erased = apply(booking(), retention.erasure(BOOKING_ERASED, 1.0, BOOKING_UNSET))
    applicant = applicant_view(erased)
    assert applicant["erased"] is True and applicant["family_name"] is None
    assert applicant["email"] is None and applicant["birth_date"] is None
    staff = staff_view(erased)
    assert staff["erased"] is True and staff["family_name"] is None and staff["status"] == "active"
    assert staff_view(booking())["erased"] is False
    # the day view's search reads names: an erased row matches no name, its reference still
    rows = [staff, staff_view(booking(_id="RDV-ZZ99-ZZ99"))]
    assert shown(rows, "none") == []
    assert [r["id"] for r in shown(rows, "benali")] == ["RDV-ZZ99-ZZ99"]
    assert [r["id"] for r in shown(rows, "AB12")] == ["RDV-AB12-CD34"]


def test_an_attempt_keeps_its_procedure_and_time_only():
    attempt = {"_id": "ATT-AB12-CD34", "file": "file-abc", "procedure": "renewal",
               "email": "a@example.org", "email_key": "a@example.org", "foreigner_number": "1234567890",
               "lang": "fr", "at_ts": 1.0, "token_hash": "h"}
    after = apply(attempt, retention.erasure(ATTEMPT_ERASED, 2.0))
    assert after["procedure"] == "renewal" and after["at_ts"] == 1.0 and after["token_hash"] == "h"
    assert after["email"] is None and after["foreigner_number"] is None and after["file"] is None


def test_a_request_keeps_its_course_without_identity():
    request = {"_id": "DEM-1", "procedure": "renewal", "state": "expired",
               "identity": {"family_name": "Benali", "given_names": "Yasmine",
                            "birth_date": "1988-03-14", "foreigner_number": "1234567890"},
               "email": "y@example.org", "email_key": "y@example.org", "phone": "+33 6",
               "postal_address": "1 rue X", "permit_expiry": "2027-01-31", "filed_ts": 1.0,
               "closed_ts": 2.0, "availability": {"days": ["mon"]},
               "claim_keys": ["email:renewal:y@example.org"], "idempotency": "f",
               "filed_by": {"kind": "partner", "id": "P1"}}
    after = apply(request, retention.erasure(REQUEST_ERASED, 3.0, REQUEST_UNSET))
    assert after["identity"] == dict.fromkeys(request["identity"])
    assert after["email"] is None and after["phone"] is None and after["postal_address"] is None
    assert "claim_keys" not in after and "idempotency" not in after
    for kept in ("procedure", "state", "permit_expiry", "filed_ts", "closed_ts", "availability",
                 "filed_by"):
        assert after[kept] == request[kept], kept
    # only closed requests are erased: an open one is still being served
    assert set(CLOSED_STATES).isdisjoint(OPEN_STATES)


def test_a_message_keeps_its_kind_and_state():
    message = {"_id": "e1:confirmed", "kind": "confirmed", "state": "done", "reference": "RDV-1",
               "to": "y@example.org", "subject": "Rendez-vous", "text": "Bonjour Yasmine",
               "html": "<p>Bonjour</p>", "ics": "BEGIN:VCALENDAR", "attempts": 1, "sent_ts": 1.0}
    after = apply(message, retention.erasure(MESSAGE_ERASED, 2.0))
    for erased in ("to", "subject", "text", "html", "ics", "event"):
        assert after[erased] is None, erased
    for kept in ("kind", "state", "reference", "attempts", "sent_ts"):
        assert after[kept] == message[kept], kept
    # a message that may still be sent is never erased
    assert "pending" not in ERASABLE_STATES and "retrying" not in ERASABLE_STATES
    assert "in_progress" not in ERASABLE_STATES


def test_a_record_with_an_event_to_announce_waits():
    assert retention.announced({"outbox": {"created": {"state": "done"}}})
    assert retention.announced({"outbox": {}}) and retention.announced({})
    assert not retention.announced({"outbox": {"created": {"state": "done"},
                                               "cancelled": {"state": "pending"}}})


class FakeCollection:
    """find() answers the documents given; update_many() records its condition and modifies
    those of its ids still matching `current` (what the store holds at the write)."""

    def __init__(self, docs, current=None):
        self.docs, self.current, self.conditions = docs, current or {}, []

    def find(self, query, fields):
        docs = self.docs

        class Cursor:
            def limit(self, n):
                return docs[:n]
        return Cursor()

    def update_many(self, condition, update):
        self.conditions.append(condition)
        ids = condition["_id"]["$in"]
        count = sum(1 for i in ids if all(self.current.get(i, {}).get(k) == v
                                          for k, v in condition.items() if k == "status"))

        class Result:
            modified_count = count
        return Result()


def test_an_erasure_writes_only_what_it_read_and_says_when_a_window_is_done():
    docs = [{"_id": "A", "status": "active", "outbox": {}},
            {"_id": "B", "status": "cancelled", "outbox": {"cancelled": {"state": "done"}}},
            {"_id": "C", "status": "active", "outbox": {"cancelled": {"state": "pending"}}}]
    current = {"A": {"status": "active"}, "B": {"status": "cancelled"}}
    collection = FakeCollection(docs, current)
    done, exhausted = retention._erase(collection, {"slot.start": {"$lt": 1}}, {}, 10, "status")
    assert done == 2 and not exhausted  # C waits for its event: the window is not done
    assert sorted((c["status"], tuple(c["_id"]["$in"])) for c in collection.conditions) == [
        ("active", ("A",)), ("cancelled", ("B",))]
    assert all(c["erased_ts"] == {"$exists": False} for c in collection.conditions)
    # all read and all written: done; a full batch: maybe more, not done
    assert retention._erase(FakeCollection(docs[:2], current), {}, {}, 10, "status") == (2, True)
    assert retention._erase(FakeCollection(docs[:2], current), {}, {}, 2, "status") == (2, False)
    # A cancelled between the read and the write: left as it is, and the window stays open
    moved = {"A": {"status": "cancelled"}, "B": {"status": "cancelled"}}
    assert retention._erase(FakeCollection(docs[:2], moved), {}, {}, 10, "status") == (1, False)
    assert retention._erase(FakeCollection([], {}), {}, {}, 10) == (0, True)
    assert retention._erase(FakeCollection(docs, current), {}, {}, 0) == (0, False)


@pytest.mark.parametrize("key", RETENTION_KEYS)
@pytest.mark.parametrize("value", [0, -1, "0", 29.9, "nan", "-365"])
def test_a_retention_period_below_the_floor_is_refused(key, value):
    with pytest.raises(ConfigurationError, match=key):
        retention_days({key: value}, key)


@pytest.mark.parametrize("key", RETENTION_KEYS)
def test_a_retention_period_at_or_above_the_floor_or_unset_is_taken(key):
    assert retention_days({key: RETENTION_FLOOR_DAYS}, key) == RETENTION_FLOOR_DAYS
    assert retention_days({key: "400"}, key) == 400.0
    assert retention_days({}, key) >= RETENTION_FLOOR_DAYS  # the default


def test_a_retention_period_that_is_no_number_is_refused():
    with pytest.raises(ConfigurationError, match="number of days"):
        retention_days({"BOOKING_RETENTION_DAYS": "a year"}, "BOOKING_RETENTION_DAYS")
