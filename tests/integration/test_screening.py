"""Fraud screening called directly: the real fraud store, a fake booking service."""
import pytest

from services.common import contract
from services.fraud import rules
from services.fraud.screening import Screening
from services.fraud.store import FraudStore
from tests.helpers import booking_event

SETTINGS = {
    "provider_rules": True, "same_person": rules.KEEP_EARLIEST,
    "different_people": rules.CANCEL_ALL, "window": 600.0, "release_window": 120.0,
    "fast_seconds": 2.0, "quick_seconds": 10.0, "agent_identities": 10, "cancel_score": 0.8,
    "review_score": 0.4, "group_caps": {"ip": 500, "ua": 30},
}


class FakeBooking:
    """The booking service as fraud uses it: statuses and system_cancel."""

    def __init__(self):
        self.active = set()
        self.cancelled = {}

    def statuses(self, references):
        return {ref: {"status": "cancelled" if ref in self.cancelled else "active",
                      "cancel_reason": self.cancelled.get(ref)}
                for ref in references if ref in self.active or ref in self.cancelled}

    def system_cancel(self, reference, reason, evidence=None, actor="system"):
        self.cancelled.setdefault(reference, reason)
        return {"reference": reference, "status": "cancelled", "cancel_reason": reason}


@pytest.fixture
def world(mongo):
    store = FraudStore(mongo("fraud"))
    store.ensure_indexes()
    booking, sent = FakeBooking(), []
    screening = Screening(store, booking, SETTINGS,
                          lambda name, payload: sent.append(contract.load(name, payload)))
    return screening, booking, sent


def booked(booking, reference, **fields):
    booking.active.add(reference)
    return booking_event(reference=reference, **fields)


def test_a_placeholder_name_is_cancelled_and_announced_once(world):
    screening, booking, sent = world
    event = booked(booking, "RDV-AAAA-0001", identity={
        "family_name": "Test", "given_names": "Test", "birth_date": "1990-01-01"})
    screening.screen(event)
    screening.screen(event)  # a redelivery: same decision, no second announcement
    assert booking.cancelled == {"RDV-AAAA-0001": "name_not_exact"}
    assert [(e["reference"], e["rule"], e["action"]) for e in sent] == [
        ("RDV-AAAA-0001", "name_not_exact", "cancelled")]


def test_one_email_for_two_people_cancels_both(world):
    screening, booking, sent = world
    screening.screen(booked(booking, "RDV-AAAA-0001", email="seller@gmail.com"))
    assert booking.cancelled == {}
    screening.screen(booked(booking, "RDV-AAAA-0002", email="Seller+2@gmail.com",
                            identity={"family_name": "Diallo", "given_names": "Awa",
                                      "birth_date": "1991-02-02"},
                            client={"ip": "198.51.100.9", "user_agent": "x"}))
    assert booking.cancelled == {"RDV-AAAA-0001": "multiple_bookings_same_email",
                                 "RDV-AAAA-0002": "multiple_bookings_same_email"}
    assert sorted(e["reference"] for e in sent) == ["RDV-AAAA-0001", "RDV-AAAA-0002"]


def test_an_honest_booking_is_left_alone(world):
    screening, booking, sent = world
    screening.screen(booked(booking, "RDV-AAAA-0003"))
    assert booking.cancelled == {} and sent == []


def test_a_cancelled_booking_then_a_new_one_on_the_same_email_is_not_cancelled(world):
    screening, booking, sent = world
    first = booked(booking, "RDV-AAAA-0004", email="awa@example.org")
    screening.screen(first)
    booking.active.discard("RDV-AAAA-0004")
    booking.cancelled["RDV-AAAA-0004"] = "applicant"  # she cancelled it herself
    screening.store.set_status("RDV-AAAA-0004", "cancelled")
    screening.screen(booked(booking, "RDV-AAAA-0005", email="awa@example.org"))
    assert "RDV-AAAA-0005" not in booking.cancelled and sent == []
