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


PLACEHOLDER = {"family_name": "Test", "given_names": "Test", "birth_date": "1990-01-01"}


def index_of(store, reference):
    """(the booking's status in the index, its status in each group it joined but its user
    agent's, whose members carry no status)."""
    entry = store.bookings.find_one({"_id": reference})
    groups = {g["_id"]: g["members"][reference]["status"]
              for g in store.groups.find({"_id": {"$in": entry["groups"]}})
              if not g["_id"].startswith("ua:")}
    return entry["status"], groups


def test_a_placeholder_name_is_cancelled_before_indexing_then_indexed_as_cancelled(world):
    """M4 needs nothing but the booking: the cancellation does not wait on the index writes
    (issue 22), and the index then says cancelled, in every group, as before."""
    screening, booking, sent = world
    indexed_at_cancel = []
    cancel = booking.system_cancel

    def system_cancel(reference, *args, **kwargs):
        indexed_at_cancel.append(screening.store.bookings.find_one({"_id": reference}) is not None)
        return cancel(reference, *args, **kwargs)

    booking.system_cancel = system_cancel
    screening.screen(booked(booking, "RDV-AAAA-0001", identity=PLACEHOLDER))
    assert indexed_at_cancel == [False]
    assert booking.cancelled == {"RDV-AAAA-0001": "name_not_exact"}
    status, groups = index_of(screening.store, "RDV-AAAA-0001")
    assert status == "cancelled" and len(groups) >= 3  # its e-mail, its person, its address
    assert set(groups.values()) == {"cancelled"}
    # a later booking on the same e-mail is not judged against it: it no longer counts
    booking.active.discard("RDV-AAAA-0001")
    screening.screen(booked(booking, "RDV-AAAA-0002", email="yasmine.benali@example.org"))
    assert "RDV-AAAA-0002" not in booking.cancelled
    assert [e["reference"] for e in sent] == ["RDV-AAAA-0001"]


def test_a_placeholder_indexed_as_active_before_is_indexed_as_cancelled_when_screened_again(world):
    """An entry written active by an earlier handling (a version that indexed first, cut
    short by a crash): the copy handled again leaves it cancelled, in its groups too."""
    from services.fraud.screening import index_entry

    screening, booking, sent = world
    event = booked(booking, "RDV-AAAA-0003", identity=PLACEHOLDER)
    screening.store.add_booking(index_entry(event, SETTINGS), SETTINGS["group_caps"])
    assert set(index_of(screening.store, "RDV-AAAA-0003")[1].values()) == {"active"}
    screening.screen(event)
    status, groups = index_of(screening.store, "RDV-AAAA-0003")
    assert status == "cancelled" and set(groups.values()) == {"cancelled"}
    assert booking.cancelled == {"RDV-AAAA-0003": "name_not_exact"} and len(sent) == 1


def test_a_placeholder_is_indexed_as_active_when_booking_cannot_cancel_it(world):
    """M4 cancels before indexing: when booking's cancel fails (down, timed out) the booking
    is live, so it is indexed (active) before the error goes up: if the event is parked
    after its last attempt, the booking still counts for the other rules. The redelivery
    cancels it and leaves it cancelled."""
    screening, booking, sent = world
    event = booked(booking, "RDV-AAAA-0004", identity=PLACEHOLDER)
    cancel = booking.system_cancel

    def booking_down(*args, **kwargs):
        raise TimeoutError("booking did not answer")

    booking.system_cancel = booking_down
    with pytest.raises(TimeoutError):
        screening.screen(event)
    status, groups = index_of(screening.store, "RDV-AAAA-0004")
    assert status == "active" and len(groups) >= 3 and set(groups.values()) == {"active"}
    assert booking.cancelled == {} and sent == []
    # booking back: the redelivery cancels it, and the index says so
    booking.system_cancel = cancel
    screening.screen(event)
    assert booking.cancelled == {"RDV-AAAA-0004": "name_not_exact"}
    status, groups = index_of(screening.store, "RDV-AAAA-0004")
    assert status == "cancelled" and set(groups.values()) == {"cancelled"}
    assert [e["reference"] for e in sent] == ["RDV-AAAA-0004"]


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


def test_a_decoy_cancels_nobody_and_sends_what_is_linked_to_it_to_one_review_case(world):
    """Issue 24: a decoy booking is evidence for staff, never a cancellation (honest API users
    book decoys too); one e-mail for two people is still cancelled, by M3."""
    screening, booking, sent = world
    seller, cafe = "seller@example.org", "203.0.113.50"
    neighbour = booked(booking, "RDV-DDDD-0001", email="fatou@example.org", client={"ip": cafe, "user_agent": "x"},
                       identity=person("Ndiaye", "Fatou", "1985-05-05"))
    same_email = booked(booking, "RDV-DDDD-0002", email=seller, client={"ip": "198.51.100.20", "user_agent": "x"},
                        identity=person("Traore", "Moussa", "1979-01-01"))
    same_person_here = booked(booking, "RDV-DDDD-0003", email="k1@example.org", client={"ip": cafe, "user_agent": "x"},
                              identity=person("Keita", "Salif", "1990-02-02"))
    # for another procedure: one person may hold one booking per procedure
    same_person_elsewhere = booked(booking, "RDV-DDDD-0004", email="salif.keita@example.org",
                                   client={"ip": "192.0.2.44", "user_agent": "y"},
                                   identity=person("KEITA", "Salif", "1990-02-02"),
                                   procedure="first_application")
    for event in (neighbour, same_email, same_person_here, same_person_elsewhere):
        screening.screen(event)
    assert booking.cancelled == {}  # nothing so far: one e-mail, one person per procedure each
    decoy = booked(booking, "RDV-DDDD-0005", email=seller, decoy=True, slot_id="decoy-slot",
                   client={"ip": cafe, "user_agent": "x"}, identity=person("Keita", "Salif", "1990-02-02"))
    screening.screen(decoy)
    # the seller's e-mail holds two people: M3 cancels both; the decoy itself cancels nothing
    assert booking.cancelled == {"RDV-DDDD-0005": "multiple_bookings_same_email",
                                 "RDV-DDDD-0002": "multiple_bookings_same_email"}
    # the rest linked to the decoy booking: one strong case, people at a desk decide
    case = case_of(screening, "RDV-DDDD-0001")
    assert case and case.startswith(f"address:{cafe}:")
    assert case == case_of(screening, "RDV-DDDD-0003") == case_of(screening, "RDV-DDDD-0004")
    [stored] = screening.store.cases_in("open", 10)
    assert stored["_id"] == case and stored["strong"]
    assert "decoy" in " ".join(stored["summary"])
    reviewed = {e["reference"]: e for e in sent if e["action"] == "review"}
    assert set(reviewed) == {"RDV-DDDD-0001", "RDV-DDDD-0003", "RDV-DDDD-0004"}
    assert {r: e["evidence"]["link"] for r, e in reviewed.items()} == {
        "RDV-DDDD-0001": "address", "RDV-DDDD-0003": "identity+address", "RDV-DDDD-0004": "identity"}


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


def test_offers_accepted_behind_one_carrier_address_make_no_address_case(world):
    """Issue 24: five people behind one mobile carrier's address accept their offers, then a
    sixth books a place in open mode from there: the offers carry no network evidence (nobody
    raced for them), so no review case holds them, nor anything that only they point at."""
    screening, booking, sent = world
    carrier = "198.51.100.200"
    for i in range(5):
        screening.screen(booked(booking, f"RDV-OOOO-000{i}", email=f"o{i}@example.org",
                                offer_id=f"OFR-OOOO-000{i}", client={"ip": carrier, "user_agent": "x"},
                                identity=person(f"Name{'abcde'[i]}", "Given", f"197{i}-01-01")))
    screening.screen(booked(booking, "RDV-OOOO-0009", email="raced@example.org",
                            client={"ip": carrier, "user_agent": "x"},
                            identity=person("Raced", "Given", "1969-01-01")))
    assert booking.cancelled == {} and sent == [] and screening.store.cases_in("open", 10) == []


class ReadAfter:
    """The fraud store as one handler sees it, held between its index write and its read:
    `meanwhile` runs once (the other handler, whole) just before the first read."""

    def __init__(self, store, meanwhile):
        self._store, self._meanwhile = store, meanwhile

    def members(self, group_ids):
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return self._store.members(group_ids)

    def __getattr__(self, name):
        return getattr(self._store, name)


def screen_in_order(world, first, second, order):
    """Screen two confirmations as two handlers would: one after the other ("sequential"), or
    the first held between its index write and its read while the second runs ("held")."""
    screening, booking, sent = world
    if order == "sequential":
        screening.screen(first)
        screening.screen(second)
        return
    other = Screening(screening.store, booking, SETTINGS, screening.dispatch)
    held = Screening(ReadAfter(screening.store, lambda: other.screen(second)), booking, SETTINGS,
                     screening.dispatch)
    held.screen(first)


ORDERS = [("decoy", "real", "sequential"), ("real", "decoy", "sequential"),
          ("decoy", "real", "held"), ("real", "decoy", "held")]


@pytest.mark.parametrize("first,second,order", ORDERS)
def test_a_decoy_and_a_real_booking_on_one_mailbox_end_alike_in_any_order(world, first, second, order):
    """Issue 25: two people on one mailbox confirmed at the same instant, one on a decoy slot:
    both are cancelled by M3 (one e-mail, two people), whichever handler reads the index first;
    the decoy adds no cancellation of its own (issue 24)."""
    screening, booking, sent = world
    events = {
        "decoy": booked(booking, "RDV-GGGG-0001", email="grab@example.org", decoy=True,
                        slot_id="decoy-slot", client={"ip": "198.51.100.30", "user_agent": "x"},
                        identity=person("Sylla", "Aminata", "1991-04-04")),
        "real": booked(booking, "RDV-GGGG-0002", email="grab@example.org",
                       client={"ip": "198.51.100.31", "user_agent": "x"},
                       identity=person("Barry", "Ibrahima", "1987-06-06")),
    }
    screen_in_order(world, events[first], events[second], order)
    assert booking.cancelled == {"RDV-GGGG-0001": "multiple_bookings_same_email",
                                 "RDV-GGGG-0002": "multiple_bookings_same_email"}
    assert not [d for r in ("RDV-GGGG-0001", "RDV-GGGG-0002")
                for d in screening.store.decisions_for(r) if d["action"] == "cancel"
                and d["rule"] != "multiple_bookings_same_email"]


@pytest.mark.parametrize("first,second,order", ORDERS)
def test_a_decoy_sends_its_address_neighbour_to_the_same_case_in_any_order(world, first, second, order):
    """The address cluster too: a booking that only shares the decoy's address goes to the
    decoy's review case whether it was screened before or after the decoy; nobody is cancelled."""
    screening, booking, sent = world
    cafe = "203.0.113.90"
    events = {
        "decoy": booked(booking, "RDV-HHHH-0001", email="script9@example.org", decoy=True,
                        slot_id="decoy-slot", client={"ip": cafe, "user_agent": "x"},
                        identity=person("Cisse", "Oumar", "1980-08-08")),
        "real": booked(booking, "RDV-HHHH-0002", email="nene@example.org",
                       client={"ip": cafe, "user_agent": "x"},
                       identity=person("Bah", "Nene", "1993-09-09")),
    }
    screen_in_order(world, events[first], events[second], order)
    assert booking.cancelled == {}
    case = case_of(screening, "RDV-HHHH-0002")
    assert case and case.startswith(f"address:{cafe}:") and case == case_of(screening, "RDV-HHHH-0001")
    reviews = {e["reference"]: e["evidence"].get("link") for e in sent if e["action"] == "review"}
    assert reviews == {"RDV-HHHH-0001": None, "RDV-HHHH-0002": "address"}


PAIR_ORDERS = [("one", "two", "sequential"), ("two", "one", "sequential"),
               ("one", "two", "held"), ("two", "one", "held")]


@pytest.mark.parametrize("first,second,order", PAIR_ORDERS)
@pytest.mark.parametrize("match", ["names", "number"])
def test_one_person_twice_for_one_procedure_keeps_the_earliest_in_any_order(world, first, second, order, match):
    """Issue 25: the same person (folded names and birth date, or foreigner number) confirmed
    twice for one procedure under two e-mails at the same instant, from two addresses: the
    later booking is cancelled with evidence, the earlier kept, whichever is screened first."""
    screening, booking, sent = world
    if match == "names":
        identities = (dict(person("N'Diaye", "Awa Marie", "1990-05-05"), foreigner_number="1111111111"),
                      dict(person("NDIAYE", "awa-marie", "1990-05-05"), foreigner_number="2222222222"))
    else:  # a typo in the name, the same foreigner number
        identities = (dict(person("Ndiaye", "Awa", "1990-05-05"), foreigner_number="3333333333"),
                      dict(person("Ndiay", "Awa", "1990-05-05"), foreigner_number="3333333333"))
    events = {
        "one": booked(booking, "RDV-PPPP-0001", email="awa.one@example.org", identity=identities[0],
                      client={"ip": "198.51.100.41", "user_agent": "x"}),
        "two": booked(booking, "RDV-PPPP-0002", email="awa.two@example.org", identity=identities[1],
                      client={"ip": "192.0.2.42", "user_agent": "y"}),
    }
    screen_in_order(world, events[first], events[second], order)
    assert booking.cancelled == {"RDV-PPPP-0002": "multiple_bookings_same_person"}
    [decision] = screening.store.decisions_for("RDV-PPPP-0002")
    assert decision["evidence"]["kept"] == "RDV-PPPP-0001"
    assert decision["evidence"]["bookings"] == ["RDV-PPPP-0001", "RDV-PPPP-0002"]
    assert decision["evidence"]["matched_by"] == [
        "names and birth date" if match == "names" else "foreigner number"]
    assert [(e["reference"], e["action"]) for e in sent] == [("RDV-PPPP-0002", "cancelled")]


def test_one_person_for_two_procedures_or_cancelled_first_is_left_alone(world):
    screening, booking, sent = world
    awa = person("Ndiaye", "Awa", "1990-05-05")
    screening.screen(booked(booking, "RDV-QQQQ-0001", email="a1@example.org", identity=awa))
    screening.screen(booked(booking, "RDV-QQQQ-0002", email="a2@example.org", identity=awa,
                            procedure="first_application"))
    booking.cancelled["RDV-QQQQ-0001"] = "applicant"  # she changed her e-mail: cancel, then book
    screening.store.set_status("RDV-QQQQ-0001", "cancelled")
    screening.screen(booked(booking, "RDV-QQQQ-0003", email="a3@example.org", identity=awa))
    assert booking.cancelled == {"RDV-QQQQ-0001": "applicant"} and sent == []


@pytest.mark.parametrize("first,second,order", ORDERS)
def test_a_decoy_and_the_same_person_booked_elsewhere_end_alike_in_any_order(world, first, second, order):
    """The decoy rule sends the same person from another address and e-mail to review (maybe
    the person the trafficker booked for), with the decoy booking: the same-person rule leaves
    decoy bookings to it, so the outcome does not depend on which was screened first."""
    screening, booking, sent = world
    moussa = person("Traore", "Moussa", "1979-01-01")
    events = {
        "decoy": booked(booking, "RDV-RRRR-0001", email="script3@example.org", decoy=True,
                        slot_id="decoy-slot", client={"ip": "203.0.113.91", "user_agent": "x"},
                        identity=moussa),
        "real": booked(booking, "RDV-RRRR-0002", email="moussa@example.org",
                       client={"ip": "192.0.2.91", "user_agent": "y"}, identity=moussa),
    }
    screen_in_order(world, events[first], events[second], order)
    assert booking.cancelled == {}
    reviews = {e["reference"]: e["evidence"].get("link") for e in sent if e["action"] == "review"}
    assert reviews == {"RDV-RRRR-0001": None, "RDV-RRRR-0002": "identity"}


# -- a booking's cancellation and its confirmation come on separate queues: any order --------

def cancelled_event(reference, at, **fields):
    return booking_event(reference, name="booking_cancelled", reason="applicant",
                         was_confirmed=True, occurred_at=at, **fields)


def restored_event(reference, at, **fields):
    return booking_event(reference, name="booking_restored", token="t", restored_by="chief",
                         occurred_at=at, **fields)


HISTORIES = {
    # the booking's events as booking announced them, and its state once all are handled
    "cancelled": (["confirmed", "cancelled"], "cancelled"),
    "restored": (["confirmed", "cancelled", "restored"], "active"),
    "cancelled again": (["confirmed", "cancelled", "restored", "cancelled again"], "cancelled"),
}


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_the_index_ends_in_the_booking_s_latest_state_in_any_order_with_copies(world, history):
    """Every order of the booking's events, each handled twice (a copy whose "handled" mark was
    lost, after all the others or right after itself): the entry and every group end in the
    booking's latest state. Before, a cancellation handled before the confirmation was lost
    and a confirmation handled again set the groups back to active."""
    import itertools

    screening, booking, sent = world
    names, expected = HISTORIES[history]
    runs = 0
    for order in itertools.permutations(names):
        for copies in ("after all", "right after"):
            runs += 1
            reference, email = f"RDV-ORDR-{runs:04d}", f"order{runs}@example.org"
            who = dict(email=email, email_normalised=email,
                       identity=person("Benali", "Yasmine", f"19{50 + runs}-03-14"))
            events = {"confirmed": booked(booking, reference, name="booking_confirmed",
                                          occurred_at="2027-02-01T10:00:00Z",
                                          client={"ip": f"198.51.100.{runs}", "user_agent": "x"},
                                          **who),
                      "cancelled": cancelled_event(reference, "2027-02-02T09:00:00Z", **who),
                      "restored": restored_event(reference, "2027-02-02T09:30:00Z", **who),
                      "cancelled again": cancelled_event(reference, "2027-02-02T11:00:00Z", **who)}
            handle = {"confirmed": screening.screen, "cancelled": screening.booking_cancelled,
                      "restored": screening.booking_restored, "cancelled again": screening.booking_cancelled}
            handled = (list(order) * 2 if copies == "after all"
                       else [name for name in order for _ in range(2)])
            for name in handled:
                handle[name](events[name])
            status, groups = index_of(screening.store, reference)
            assert (status, set(groups.values())) == (expected, {expected}), (order, copies)
    assert booking.cancelled == {} and sent == []  # nobody screened out: one booking each


class HeldBefore:
    """A collection as one handler sees it: `meanwhile` (the other handler, whole) runs once,
    just before the first call of `method`."""

    def __init__(self, collection, method, meanwhile):
        self._collection, self._method, self._meanwhile = collection, method, meanwhile

    def __getattr__(self, name):
        found = getattr(self._collection, name)
        if name != self._method or self._meanwhile is None:
            return found

        def held(*args, **kwargs):
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()
            return found(*args, **kwargs)
        return held


def test_a_cancellation_handled_between_the_group_writes_and_the_entry_write_is_kept(world, mongo):
    """Two handlers at once: the cancellation runs whole after the confirmation entered the
    booking in its groups and before it wrote its entry; the index ends cancelled, groups too."""
    screening, booking, sent = world
    reference = "RDV-HELD-0001"
    confirmed = booked(booking, reference, name="booking_confirmed")
    held_store = FraudStore(mongo("fraud"))
    held_store.bookings = HeldBefore(held_store.bookings, "insert_one",
                                     lambda: screening.booking_cancelled(cancelled_event(reference, "2027-02-02T09:00:00Z")))
    Screening(held_store, booking, SETTINGS, screening.dispatch).screen(confirmed)
    status, groups = index_of(screening.store, reference)
    assert status == "cancelled" and set(groups.values()) == {"cancelled"}


def grey_pair(booking, prefix):
    """Two people booking from one address within a second of the release: one review case."""
    return [booked(booking, f"RDV-{prefix}-000{i}", name="booking_confirmed",
                   email=f"{prefix.lower()}{i}@example.org", seconds_after_publication=0.5,
                   client={"ip": "203.0.113.44", "user_agent": "x"},
                   identity=person(family, "Given", f"198{i}-01-01"))
            for i, family in enumerate(("Haddad", "Khalil"))]


def open_reviews(store):
    return sorted(r["_id"] for r in store.review_queue("open", 100))


def test_a_booking_cancelled_before_its_confirmation_is_handled_is_never_reviewed(world):
    screening, booking, sent = world
    first, second = grey_pair(booking, "GREY")
    screening.booking_cancelled(cancelled_event(second["reference"], "2027-02-01T10:05:00Z"))
    screening.screen(first)
    screening.screen(second)
    assert open_reviews(screening.store) == [first["reference"]]
    [case] = screening.store.cases_in("open", 10)
    assert case["evidence"]["signals"]["identities_same_address"] == 2  # it did book from there
    assert index_of(screening.store, second["reference"])[0] == "cancelled"


def test_an_open_review_is_closed_when_its_booking_is_cancelled(world):
    screening, booking, sent = world
    first, second = grey_pair(booking, "SHUT")
    screening.screen(first)
    screening.screen(second)
    assert open_reviews(screening.store) == [first["reference"], second["reference"]]
    [case] = screening.store.cases_in("open", 10)
    cancelled = cancelled_event(second["reference"], "2027-02-01T10:05:00Z")
    screening.booking_cancelled(cancelled)
    screening.booking_cancelled(cancelled)  # a copy: nothing more
    review = screening.store.review(second["reference"])
    assert (review["state"], review["decided_by"], review["cancelled_elsewhere"]) == \
        ("cancelled", "booking", "applicant")
    assert open_reviews(screening.store) == [first["reference"]]
    assert screening.store.case(case["_id"])["state"] == "open"  # the other one waits for staff
    screening.booking_cancelled(cancelled_event(first["reference"], "2027-02-01T10:06:00Z"))
    assert screening.store.case(case["_id"])["state"] == "decided"  # nothing left to decide
    assert booking.cancelled == {}  # fraud cancelled nobody: the applicants did


def test_a_review_written_after_its_booking_s_cancellation_was_handled_is_closed_at_once(world):
    """A handler that read the booking active in its groups and writes its review after the
    cancellation looked for one: the review is closed as it is written, its case too."""
    screening, booking, sent = world
    store = screening.store
    store.set_status("RDV-LATE-0001", "cancelled", 100.0, create=True)
    case = {"_id": "address:203.0.113.45:1", "kind": "address", "client_ip": "203.0.113.45",
            "summary": [], "evidence": {}, "strong": False}
    store.open_review({"_id": "RDV-LATE-0001", "state": "open", "rule": "slot_grabbing",
                       "evidence": {}, "at_ts": 100.0}, case=case)
    assert store.review("RDV-LATE-0001")["state"] == "cancelled"
    assert store.case(case["_id"])["state"] == "decided"


def test_a_review_closed_by_a_counter_cancellation_opens_again_when_the_cancellation_is_undone(world):
    """A counter's cancellation (name mismatch) closes the booking's open review; a supervisor
    undoes it the same day (booking_restored): the booking is live again and its evidence
    still waits for staff. Left closed, a suspected grab escapes review through the undo."""
    screening, booking, sent = world
    first, second = grey_pair(booking, "UNDO")
    screening.screen(first)
    screening.screen(second)
    [case] = screening.store.cases_in("open", 10)
    for one in (first, second):
        screening.booking_cancelled(booking_event(one["reference"], name="booking_cancelled",
                                                  reason="name_mismatch", was_confirmed=True,
                                                  occurred_at="2027-02-01T10:05:00Z"))
    assert open_reviews(screening.store) == []
    assert screening.store.case(case["_id"])["state"] == "decided"
    screening.booking_restored(restored_event(second["reference"], "2027-02-01T10:30:00Z"))
    assert index_of(screening.store, second["reference"])[0] == "active"
    assert open_reviews(screening.store) == [second["reference"]]
    assert screening.store.case(case["_id"])["state"] == "open"
