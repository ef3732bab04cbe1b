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


def person(family, given, birth):
    return {"family_name": family, "given_names": given, "birth_date": birth}


def case_of(screening, reference):
    review = screening.store.reviews.find_one({"_id": reference})
    return review and review["case_id"]


def test_a_decoy_takes_its_e_mail_and_person_with_it_and_sends_the_address_to_review(world):
    screening, booking, sent = world
    seller, cafe = "seller@example.org", "203.0.113.50"
    neighbour = booked(booking, "RDV-DDDD-0001", email="fatou@example.org", client={"ip": cafe, "user_agent": "x"},
                       identity=person("Ndiaye", "Fatou", "1985-05-05"))
    same_email = booked(booking, "RDV-DDDD-0002", email=seller, client={"ip": "198.51.100.20", "user_agent": "x"},
                        identity=person("Traore", "Moussa", "1979-01-01"))
    same_person_here = booked(booking, "RDV-DDDD-0003", email="k1@example.org", client={"ip": cafe, "user_agent": "x"},
                              identity=person("Keita", "Salif", "1990-02-02"))
    same_person_elsewhere = booked(booking, "RDV-DDDD-0004", email="salif.keita@example.org",
                                   client={"ip": "192.0.2.44", "user_agent": "y"},
                                   identity=person("KEITA", "Salif", "1990-02-02"))
    for event in (neighbour, same_email, same_person_here, same_person_elsewhere):
        screening.screen(event)
    assert booking.cancelled == {}  # nothing so far: one e-mail, one person each... except Keita twice
    decoy = booked(booking, "RDV-DDDD-0005", email=seller, decoy=True, slot_id="decoy-slot",
                   client={"ip": cafe, "user_agent": "x"}, identity=person("Keita", "Salif", "1990-02-02"))
    screening.screen(decoy)
    # the decoy booking and what is tied to its booker: same e-mail, same person from there
    assert booking.cancelled == {"RDV-DDDD-0005": "slot_grabbing", "RDV-DDDD-0002": "slot_grabbing",
                                 "RDV-DDDD-0003": "slot_grabbing"}
    # an address shared, or the same person booked from elsewhere: people at a desk decide
    case = case_of(screening, "RDV-DDDD-0001")
    assert case and case == case_of(screening, "RDV-DDDD-0004") and case.startswith(f"address:{cafe}:")
    [stored] = screening.store.cases_in("open", 10)
    assert stored["_id"] == case and stored["strong"]
    assert "decoy" in " ".join(stored["summary"])
    reviewed = {e["reference"]: e for e in sent if e["action"] == "review"}
    assert set(reviewed) == {"RDV-DDDD-0001", "RDV-DDDD-0004"}
    assert reviewed["RDV-DDDD-0001"]["evidence"]["link"] == "address"
    assert reviewed["RDV-DDDD-0004"]["evidence"]["link"] == "identity"


def test_a_cybercafe_cluster_goes_to_one_review_case_and_nobody_is_cancelled(world):
    screening, booking, sent = world
    people = [("Kaya", "Ayşe"), ("Demir", "Mustafa"), ("Şahin", "Elif"), ("Çelik", "Hüseyin"),
              ("Aydın", "Emre")]
    for i, (family, given) in enumerate(people):
        screening.screen(booked(booking, f"RDV-CCCC-000{i}", email=f"{family.lower()}{i}@example.org",
                                seconds_after_publication=0.5,
                                client={"ip": "203.0.113.66", "user_agent": "curl"},
                                identity=person(family, given, f"198{i}-01-01")))
    assert booking.cancelled == {}
    [case] = screening.store.cases_in("open", 10)
    members = screening.store.reviews_of([case["_id"]])[case["_id"]]
    assert sorted(r["_id"] for r in members) == [f"RDV-CCCC-000{i}" for i in range(5)]
    assert case["strong"]  # the old cancel mark: shown first, decided by people
    assert any("5 different people booked from one network address" in line for line in case["summary"])
    assert {e["action"] for e in sent} == {"review"}


def test_an_allow_listed_address_skips_the_address_rules(world):
    screening, booking, sent = world
    screening.store.allow({"_id": "client:198.51.100.99", "kind": "client", "value": "198.51.100.99"})
    for i in range(5):
        screening.screen(booked(booking, f"RDV-EEEE-000{i}", email=f"p{i}@example.org",
                                seconds_after_publication=0.5,
                                client={"ip": "198.51.100.99", "user_agent": "x"},
                                identity=person(f"Name{'abcde'[i]}", "Given", f"197{i}-01-01")))
    assert booking.cancelled == {} and sent == [] and screening.store.cases_in("open", 10) == []


@pytest.mark.parametrize("offer", [False, True])
def test_an_accepted_offer_is_not_judged_on_its_speed(world, offer):
    """Two people accepting their offers from one address right after the release: a family's
    quick bookings go to review (speed plus a shared address); accepted offers (issue 12) were
    given, not raced for, so the speed counts for nothing and nobody is sent to review."""
    screening, booking, sent = world
    for i, (family, given) in enumerate([("Kaya", "Ayşe"), ("Kaya", "Mehmet")]):
        extra = {"offer_id": f"OFR-FFFF-000{i}"} if offer else {}
        screening.screen(booked(booking, f"RDV-FFFF-000{i}", email=f"kaya{i}@example.org",
                                seconds_after_publication=0.5,
                                client={"ip": "203.0.113.70", "user_agent": "x"},
                                identity=person(family, given, f"198{i}-01-01"), **extra))
    assert booking.cancelled == {}
    assert len(screening.store.cases_in("open", 10)) == (0 if offer else 1)
