"""Erasure of personal data past its retention (services/common/retention.py): each service's
real timer pass, run through its entrypoint against the stand-in store, erases what is due and
keeps what is too recent; what staff and applicants see of an erased record still answers."""
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from nameko.exceptions import ConfigurationError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import entrypoint_hook, replace_dependencies

from services.booking import evidence
from services.booking.service import BookingService
from services.booking.store import BookingStore
from services.common.errors import NotFound
from services.common.lease import Leases
from services.fraud.service import FraudService
from services.fraud.store import FraudStore, group_ids
from services.notify.service import NotifyService
from services.register.service import RegisterService
from services.requests.service import RequestsService
from services.common import signing
from services.common.tokens import TokenSigner
from tests.conftest import ATTESTATION_KEY, TOKEN_SECRET
from tests.integration.conftest import FixedClock, paris
from tests.integration.test_admin_gateway import page_session
from tests.helpers import wait_until

DAY = 86400


def announced(mongo, reference):
    """Every event of the booking is marked sent (marks are written in batches): a booking
    with an event still to announce waits for it before it is erased."""
    assert wait_until(lambda: all(entry["state"] == "done" for entry in mongo("booking")["bookings"]
                                  .find_one({"_id": reference})["outbox"].values()), timeout=15)


def run_pass(container):
    with entrypoint_hook(container, "erase_expired") as erase:
        return erase()


@pytest.fixture
def booking_instance(counter, container_factory, counter_config):
    """A second booking instance on the counter's booking clock: the test runs its timer's
    pass through the entrypoint (the timer itself fires once an hour)."""
    second = container_factory(BookingService, counter_config)
    replace_dependencies(second, clock=counter.booking_clock)
    second.start()
    return second


def test_a_booking_past_its_retention_is_erased_and_a_recent_one_kept(
        counter, booking_instance, mongo, http):
    bookings = mongo("booking")["bookings"]
    old = counter.book(family_name="Erased", given_names="Anna", phone="+33 6 00 00 00 01")
    kept = counter.book(family_name="Kept", given_names="Bruno")
    # the kept one comes ten days later (the whole document: the stand-in keeps a bare
    # datetime given to $set as text)
    later = bookings.find_one({"_id": kept["reference"]})
    later["slot"]["start"] += timedelta(days=10)
    later["slot"]["end"] += timedelta(days=10)
    bookings.replace_one({"_id": kept["reference"]}, later)
    announced(mongo, old["reference"])

    # the last minute of the 365th day after the appointment's: too recent, nothing erased
    counter.booking_clock.at = paris(counter.day + timedelta(days=365), 23, 59)
    assert run_pass(booking_instance)["bookings"] == 0
    assert bookings.find_one({"_id": old["reference"]})["identity"]["family_name"] == "Erased"

    # the day after: the old one is erased, the one ten days later is kept
    counter.booking_clock.at = paris(counter.day + timedelta(days=366), 0, 1)
    assert run_pass(booking_instance)["bookings"] == 1
    erased = bookings.find_one({"_id": old["reference"]})
    assert erased["erased_ts"] > 0
    assert erased["identity"] == {"family_name": None, "given_names": None, "birth_date": None,
                                  "foreigner_number": None}
    assert erased["email"] is None and erased["email_key"] is None and erased["phone"] is None
    assert erased["person_key"] is None and erased["client"] == {}
    assert "idempotency" not in erased and "unconfirmed_claims" not in erased
    # what the figures and the audit read stays
    assert erased["status"] == "active" and erased["procedure"] == "renewal"
    assert erased["slot"]["id"] == counter.slot["id"] and erased["created_at"]
    assert erased["token_hash"]
    still = bookings.find_one({"_id": kept["reference"]})
    assert still["identity"]["family_name"] == "Kept" and "erased_ts" not in still

    # a pass again changes nothing (idempotent); the figures still count it
    assert run_pass(booking_instance)["bookings"] == 0
    assert bookings.find_one({"_id": old["reference"]})["erased_ts"] == erased["erased_ts"]
    figures = counter.rpc.booking.figures(days=56)
    assert figures["procedures"]

    # the applicant's view says erased; there is no convocation left; no cancellation
    view = counter.rpc.booking.get(old["reference"], old["token"])
    assert view["erased"] is True and view["family_name"] is None and view["email"] is None
    with pytest.raises(NotFound):
        counter.rpc.booking.convocation(old["reference"], old["token"])
    assert counter.rpc.booking.get(kept["reference"], kept["token"])["erased"] is False

    # the staff day view of that day: JSON and page
    headers = counter.bearer("agent")
    day = f"site=montpellier&date={counter.day.isoformat()}"
    api = counter.http.get(f"/api/day?{day}", headers=headers)
    assert api.status_code == 200, api.text
    rows = {b["id"]: b for b in api.json()["bookings"]}
    assert rows[old["reference"]]["erased"] is True
    assert rows[old["reference"]]["family_name"] is None
    page_session(counter.http, "agent")
    page = counter.http.get(f"/day?{day}")
    assert page.status_code == 200
    assert "effacé" in page.text and "None" not in page.text
    assert counter.http.get(f"/day?{day}&q=non").status_code == 200  # no "None" to match


def test_the_lease_keeps_the_pass_to_one_instance(counter, booking_instance, mongo):
    old = counter.book()
    announced(mongo, old["reference"])
    counter.booking_clock.at = paris(counter.day + timedelta(days=400), 12)
    leases = Leases(mongo("booking")["leases"])
    assert leases.acquire("retention", "another-instance", 600, time.time())
    assert run_pass(booking_instance) is None  # another instance holds it: nothing done
    bookings = mongo("booking")["bookings"]
    assert "erased_ts" not in bookings.find_one({"_id": old["reference"]})
    leases.release("retention", "another-instance")
    assert run_pass(booking_instance)["bookings"] == 1
    assert bookings.find_one({"_id": old["reference"]})["identity"]["given_names"] is None
    # given back after the pass: the next one need not wait the lease out
    assert leases.state("retention")["until_ts"] == 0


def test_attempts_are_erased_and_attestation_records_deleted_past_the_retention(
        counter, booking_instance, mongo):
    db = mongo("booking")
    now = counter.booking_clock.at = datetime.now(timezone.utc)
    old_ts, recent_ts = (now - timedelta(days=400)).timestamp(), (now - timedelta(days=10)).timestamp()

    def attempt(reference, at_ts):
        return {"_id": reference, "file": "file-" + uuid.uuid4().hex[:24], "procedure": "renewal",
                "email": f"{reference.lower()}@example.org", "email_key": f"{reference.lower()}@example.org",
                "foreigner_number": "1234567890", "lang": "fr",
                "at": datetime.fromtimestamp(at_ts, timezone.utc), "at_ts": at_ts,
                "token_hash": "h", "token_salt": "s", "outbox": {"recorded": {"state": "done"}}}

    db["attempts"].insert_many([attempt("ATT-OLD0-0001", old_ts), attempt("ATT-NEW0-0001", recent_ts)])
    db["attestations"].insert_many([
        {"_id": "OLDCODE", "file": "f", "attestation": {"applicant": {"email": "a@example.org"}},
         "signature": "x", "issued_ts": old_ts},
        {"_id": "NEWCODE", "file": "f", "attestation": {"applicant": {"email": "a@example.org"}},
         "signature": "x", "issued_ts": recent_ts}])
    done = run_pass(booking_instance)
    assert done["attempts"] == 1 and done["attestations"] == 1
    old = db["attempts"].find_one({"_id": "ATT-OLD0-0001"})
    assert old["email"] is None and old["foreigner_number"] is None and old["file"] is None
    assert old["procedure"] == "renewal" and old["at_ts"] == old_ts and old["erased_ts"]
    assert db["attempts"].find_one({"_id": "ATT-NEW0-0001"})["email"] == "att-new0-0001@example.org"
    assert db["attestations"].find_one({"_id": "OLDCODE"}) is None
    assert db["attestations"].find_one({"_id": "NEWCODE"}) is not None
    # staff looking the applicant up find only what is kept; the figures still count both
    found = counter.rpc.booking.attempts_of(foreigner_number="1234567890")["attempts"]
    assert [a["reference"] for a in found] == ["ATT-NEW0-0001"]
    assert run_pass(booking_instance) == {"bookings": 0, "attempts": 0, "attestations": 0,
                                          "claims": 0}


def test_claim_documents_keyed_by_an_address_are_deleted_once_idle_for_the_period(
        counter, booking_instance, mongo):
    """The counters of unconfirmed bookings are keyed by a client's network address or a mail
    domain: once they count nothing for the period, their document goes; a live one stays."""
    claims = mongo("booking")["unconfirmed_claims"]
    now = counter.booking_clock.at = datetime.now(timezone.utc)
    old, recent = time.time() - 400 * DAY, time.time() - 10 * DAY
    claims.insert_many([
        {"_id": "client:203.0.113.9", "n": 0, "refs": {}, "changed_ts": old},
        {"_id": "domain:example.org", "n": 0, "refs": {}},  # from before changes were timed
        {"_id": "client:198.51.100.7", "n": 1, "refs": {"RDV-LIVE-0001": now.timestamp() + 3600},
         "changed_ts": old},  # counts a booking: never deleted
        {"_id": "client:192.0.2.1", "n": 0, "refs": {}, "changed_ts": recent}])
    assert run_pass(booking_instance)["claims"] == 2
    assert sorted(doc["_id"] for doc in claims.find({})) == ["client:192.0.2.1",
                                                             "client:198.51.100.7"]
    # taking and ending a claim stamp the change: it is idle from then on
    store = BookingStore(mongo("booking"))
    assert store.claims.take("client:192.0.2.1", 3, "RDV-NEW0-0001", time.time() + 60, time.time())
    taken = claims.find_one({"_id": "client:192.0.2.1"})
    assert taken["n"] == 1 and taken["changed_ts"] > recent
    store.claims.end("client:192.0.2.1", "RDV-NEW0-0001")
    ended = claims.find_one({"_id": "client:192.0.2.1"})
    assert ended["n"] == 0 and ended["changed_ts"] >= taken["changed_ts"]
    assert run_pass(booking_instance)["claims"] == 0


def test_an_erased_receipt_lists_nothing_and_gets_no_attestation(counter, booking_instance, mongo):
    db = mongo("booking")
    now = counter.booking_clock.at = datetime.now(timezone.utc)
    signer = TokenSigner(TOKEN_SECRET)

    def attempt(reference, at_ts, file):
        token = signer.token_for(reference, "salt")
        return token, {"_id": reference, "file": file, "procedure": "renewal",
                       "email": f"{reference.lower()}@example.org",
                       "email_key": f"{reference.lower()}@example.org",
                       "foreigner_number": None, "lang": "fr",
                       "at": datetime.fromtimestamp(at_ts, timezone.utc), "at_ts": at_ts,
                       "token_hash": TokenSigner.hash_token(token), "token_salt": "salt",
                       "outbox": {"recorded": {"state": "done"}}}

    old_ts = (now - timedelta(days=400)).timestamp()
    # two people's old attempts: once erased, both have file None
    mine, first = attempt("ATT-MINE-0001", old_ts, "file-mine")
    _, other = attempt("ATT-THEM-0001", old_ts + 60, "file-them")
    db["attempts"].insert_many([first, other])
    # an attestation signed over them while they were on record (the receipt holder kept it)
    issued = counter.rpc.booking.attestation("ATT-MINE-0001", mine)
    assert run_pass(booking_instance)["attempts"] == 2
    assert db["attempts"].find_one({"_id": "ATT-MINE-0001"})["file"] is None

    # the receipt (its token hash kept) opens nothing: as a wrong token
    with pytest.raises(NotFound):
        counter.rpc.booking.attempts("ATT-MINE-0001", mine)
    with pytest.raises(NotFound):
        counter.rpc.booking.attestation("ATT-MINE-0001", mine)
    # an attestation signed over erased attempts (file None, as one issued before this fix
    # could be) does not verify as valid: its attempts are no longer on record
    key = signing.load_private_key(ATTESTATION_KEY)
    erased_view = [evidence.attempt_view(db["attempts"].find_one({"_id": ref}))
                   for ref in ("ATT-MINE-0001", "ATT-THEM-0001")]
    forged = dict(issued["attestation"], file=None, attempts=erased_view)
    answer = counter.rpc.booking.verify_attestation(
        {"attestation": forged, "signature": signing.sign(key, forged)})
    assert answer["signature_valid"] is True
    assert answer["valid"] is False and answer["attempts_on_record"] is False
    # the one issued before the erasure no longer verifies either
    answer = counter.rpc.booking.verify_attestation(
        {"attestation": issued["attestation"], "signature": issued["signature"]})
    assert answer["valid"] is False


@pytest.fixture
def requests_instance(container_factory, config):
    clock = FixedClock()
    container = container_factory(RequestsService, config)
    replace_dependencies(container, clock=clock)
    container.start()
    return container, clock


def stored_request(reference, state, closed_ts=None, filed_ts=None, **extra):
    doc = {"_id": reference, "procedure": "renewal", "state": state,
           "identity": {"family_name": "Benali", "given_names": "Yasmine",
                        "birth_date": "1988-03-14", "foreigner_number": "1234567890"},
           "permit_expiry": "2027-01-31", "email": "yasmine@example.org",
           "email_key": "yasmine@example.org", "phone": "+33 6 12 34 56 78", "lang": "fr",
           "availability": {"days": ["mon"]}, "filed_ts": filed_ts or time.time() - 500 * DAY,
           "filed_day": "2025-08-01", "confirm_by_ts": 0, "missed": 0,
           "claim_keys": ["email:renewal:yasmine@example.org", "number:renewal:1234567890"],
           "token_hash": "h", "token_salt": "s", "outbox": {"filed": {"state": "done"}}}
    if closed_ts is not None:
        doc["closed_ts"] = closed_ts
    doc.update(extra)
    return doc


def test_closed_requests_past_their_retention_lose_their_identity(requests_instance, mongo):
    container, clock = requests_instance
    requests = mongo("requests")["requests"]
    now = time.time()
    requests.insert_many([
        stored_request("REQ-OLD-EXPIRED", "expired", closed_ts=now - 400 * DAY),
        stored_request("REQ-OLD-WITHDRAWN", "withdrawn", closed_ts=now - 366 * DAY),
        # booked before `closed_ts` was recorded on booking: counted from its filing
        stored_request("REQ-OLD-BOOKED", "booked", booking_reference="RDV-AAAA-BBBB"),
        stored_request("REQ-RECENT-EXPIRED", "expired", closed_ts=now - 300 * DAY),
        stored_request("REQ-STILL-WAITING", "waiting"),  # filed 500 days ago, still open
        stored_request("REQ-UNSENT", "withdrawn", closed_ts=now - 400 * DAY,
                       outbox={"filed": {"state": "pending"}}),  # its event still to announce
    ])
    assert run_pass(container) == {"requests": 3, "events": 0}
    for reference in ("REQ-OLD-EXPIRED", "REQ-OLD-WITHDRAWN", "REQ-OLD-BOOKED"):
        doc = requests.find_one({"_id": reference})
        assert doc["identity"] == {"family_name": None, "given_names": None, "birth_date": None,
                                   "foreigner_number": None}, reference
        assert doc["email"] is None and doc["email_key"] is None and doc["phone"] is None
        assert "claim_keys" not in doc and doc["erased_ts"]
        assert doc["procedure"] == "renewal" and doc["permit_expiry"] == "2027-01-31"
        assert doc["availability"] == {"days": ["mon"]}
    for reference in ("REQ-RECENT-EXPIRED", "REQ-STILL-WAITING", "REQ-UNSENT"):
        doc = requests.find_one({"_id": reference})
        assert doc["identity"]["family_name"] == "Benali" and "erased_ts" not in doc, reference
    assert requests.find_one({"_id": "REQ-OLD-BOOKED"})["booking_reference"] == "RDV-AAAA-BBBB"
    assert run_pass(container) == {"requests": 0, "events": 0}  # idempotent
    # a year on, the recent one's turn
    clock.at = datetime.now(timezone.utc) + timedelta(days=70)
    assert run_pass(container) == {"requests": 1, "events": 0}
    assert requests.find_one({"_id": "REQ-RECENT-EXPIRED"})["email"] is None


def test_requests_closed_before_closed_ts_was_recorded_are_erased_too(requests_instance, mongo):
    """Expired and withdrawn requests closed by an earlier release have no `closed_ts`: an
    expired one counts from its time to confirm, a withdrawn one from its filing."""
    container, clock = requests_instance
    requests = mongo("requests")["requests"]
    now = time.time()
    requests.insert_many([
        stored_request("REQ-LEGACY-EXPIRED", "expired", filed_ts=now - 402 * DAY,
                       confirm_by_ts=now - 400 * DAY),
        stored_request("REQ-LEGACY-WITHDRAWN", "withdrawn", filed_ts=now - 400 * DAY),
        # no time to confirm on record: from its filing
        stored_request("REQ-LEGACY-EXPIRED-NOCONF", "expired", filed_ts=now - 400 * DAY,
                       confirm_by_ts=None),
        stored_request("REQ-RECENT-EXPIRED", "expired", filed_ts=now - 300 * DAY,
                       confirm_by_ts=now - 299 * DAY),
        stored_request("REQ-RECENT-WITHDRAWN", "withdrawn", filed_ts=now - 300 * DAY),
    ])
    requests.update_one({"_id": "REQ-LEGACY-EXPIRED-NOCONF"}, {"$unset": {"confirm_by_ts": ""}})
    assert run_pass(container) == {"requests": 3, "events": 0}
    for reference in ("REQ-LEGACY-EXPIRED", "REQ-LEGACY-WITHDRAWN", "REQ-LEGACY-EXPIRED-NOCONF"):
        doc = requests.find_one({"_id": reference})
        assert doc["email"] is None and doc["identity"]["family_name"] is None, reference
        assert doc["erased_ts"] and "claim_keys" not in doc, reference
    for reference in ("REQ-RECENT-EXPIRED", "REQ-RECENT-WITHDRAWN"):
        doc = requests.find_one({"_id": reference})
        assert doc["email"] == "yasmine@example.org" and "erased_ts" not in doc, reference
    # their turn comes with the days, through the watermark's window
    clock.at = datetime.now(timezone.utc) + timedelta(days=70)
    assert run_pass(container) == {"requests": 2, "events": 0}


def test_the_claims_an_erased_request_still_held_are_deleted(requests_instance, mongo):
    """A crash between a request's closing and the freeing of its keys leaves its claims
    (their ids are an e-mail key, a foreigner number): its erasure deletes them, and only
    them."""
    container, clock = requests_instance
    db = mongo("requests")
    now = time.time()
    db["requests"].insert_many([
        stored_request("REQ-OLD-CRASHED", "withdrawn", closed_ts=now - 400 * DAY),
        stored_request("REQ-NOW-WAITING", "waiting", filed_ts=now - 10 * DAY,
                       email="amina@example.org",
                       claim_keys=["email:renewal:amina@example.org"])])
    db["claims"].insert_many([
        {"_id": "email:renewal:yasmine@example.org", "request_id": "REQ-OLD-CRASHED"},
        {"_id": "number:renewal:1234567890", "request_id": "REQ-OLD-CRASHED"},
        {"_id": "email:renewal:amina@example.org", "request_id": "REQ-NOW-WAITING"}])
    assert run_pass(container) == {"requests": 1, "events": 0}
    assert "claim_keys" not in db["requests"].find_one({"_id": "REQ-OLD-CRASHED"})
    assert [doc["_id"] for doc in db["claims"].find({})] == ["email:renewal:amina@example.org"]


def message(key, state, days_ago, **extra):
    created = datetime.now(timezone.utc) - timedelta(days=days_ago)
    doc = {"_id": key, "event_type": "booking_confirmed", "reference": "RDV-AAAA-BBBB",
           "attempts": 1, "next_attempt_ts": created.timestamp(), "created_at": created,
           "last_error": None, "kind": "confirmed", "to": "yasmine@example.org",
           "subject": "Rendez-vous confirmé", "text": "Bonjour Yasmine Benali", "html": "<p>Bonjour</p>",
           "ics": None, "state": state}
    doc.update(extra)
    return doc


def test_messages_past_their_retention_lose_recipient_and_body(container_factory, config, mongo):
    container = container_factory(NotifyService, dict(config, NOTIFY_RETENTION_DAYS=90))
    container.start()
    messages = mongo("notify")["messages"]
    messages.insert_many([
        message("old-sent:confirmed", "done", 91, sent_ts=1.0),
        message("old-parked:confirmed", "parked", 200, failed_ts=1.0,
                last_error="550 5.1.1 <yasmine@example.org>: Recipient address rejected",
                event={"email": "yasmine@example.org"}),
        message("old-capped:confirmed", "capped", 120),
        message("recent-sent:confirmed", "done", 89),
        # still waiting for a retry, however old: it may yet be sent
        message("old-retrying:confirmed", "retrying", 200, next_attempt_ts=time.time() + 3600),
    ])
    # copies of events kept after a failure: a parked one and one handled after retries
    inbox = mongo("notify")["inbox"]
    payload = {"event_id": "e-old", "email": "yasmine@example.org"}
    inbox.insert_many([
        {"_id": "e-old", "event_type": "booking_confirmed", "state": "parked", "attempts": 8,
         "event": payload, "at_ts": time.time() - 100 * DAY,
         "last_error": "SMTPRecipientsRefused({'yasmine@example.org': (550, b'unknown')})"},
        {"_id": "e-old-done", "event_type": "booking_confirmed", "state": "done", "attempts": 2,
         "event": payload, "at_ts": time.time() - 100 * DAY},
        {"_id": "e-recent", "event_type": "booking_confirmed", "state": "parked", "attempts": 8,
         "event": payload, "at_ts": time.time() - 10 * DAY},
        {"_id": "e-plain", "event_type": "booking_confirmed", "state": "done", "attempts": 0,
         "at_ts": time.time() - 100 * DAY}])  # handled at once: no copy kept
    assert run_pass(container) == {"messages": 3, "events": 2}
    assert inbox.find_one({"_id": "e-old"})["event"] is None
    assert inbox.find_one({"_id": "e-old"})["last_error"] is None  # it named the address
    assert inbox.find_one({"_id": "e-old-done"})["event"] is None
    assert inbox.find_one({"_id": "e-recent"})["event"] == payload
    assert "event" not in inbox.find_one({"_id": "e-plain"})
    for key in ("old-sent:confirmed", "old-parked:confirmed", "old-capped:confirmed"):
        doc = messages.find_one({"_id": key})
        assert doc["to"] is None and doc["text"] is None and doc["html"] is None, key
        assert doc["subject"] is None and doc.get("event") is None and doc["erased_ts"]
        assert doc["kind"] == "confirmed" and doc["reference"] == "RDV-AAAA-BBBB"
        assert doc["last_error"] is None, key  # an SMTP error names the recipient
    for key in ("recent-sent:confirmed", "old-retrying:confirmed"):
        assert messages.find_one({"_id": key})["to"] == "yasmine@example.org", key
    assert run_pass(container) == {"messages": 0, "events": 0}
    with ClusterRpcProxy(config, timeout=20) as rpc:
        # staff see the erased failed message, and cannot send it again
        failed = {m["id"]: m for m in rpc.notify.failed_messages()}
        assert failed["old-parked:confirmed"]["erased"] and failed["old-parked:confirmed"]["to"] is None
        assert "yasmine" not in str(failed["old-parked:confirmed"])  # nor in its last error
        with pytest.raises(NotFound):
            rpc.notify.resend("old-parked:confirmed")
        with pytest.raises(NotFound):  # an erased event cannot be replayed
            rpc.notify.replay("e-old")
        counts = rpc.notify.outbox_status()  # still counted
        assert counts["done"] == 2 and counts["parked"] == 1 and counts["retrying"] == 1


def fraud_entry(reference, email, person, created_ts, ip="203.0.113.9"):
    entry = {"_id": reference, "status": "active", "email_key": email, "identity_key": person,
             "client_ip": ip, "user_agent": "", "created_ts": created_ts,
             "seconds_after_publication": 30.0, "decoy": False, "slot_id": "s1",
             "procedure": "renewal", "foreigner_number": "1234567890"}
    entry["groups"] = group_ids(entry, 600.0)
    return entry


def test_fraud_forgets_old_bookings_and_the_evidence_of_old_decisions(container_factory, config, mongo):
    container = container_factory(FraudService, config)
    container.start()
    db = mongo("fraud")
    store = FraudStore(db)
    now = time.time()
    old_ts, recent_ts = now - 400 * DAY, now - 10 * DAY
    caps = {"ip": 500, "ua": 30}
    # two bookings on one e-mail, a year apart; one alone on its own e-mail, long ago
    store.add_booking(fraud_entry("RDV-OLD0-0001", "shared@example.org", "p-old", old_ts), caps)
    store.add_booking(fraud_entry("RDV-NEW0-0001", "shared@example.org", "p-new", recent_ts), caps)
    store.add_booking(fraud_entry("RDV-OLD0-0002", "alone@example.org", "p-alone", old_ts), caps)
    evidence = {"email": "shared@example.org", "client_ip": "203.0.113.9"}
    db["decisions"].insert_many([
        {"_id": "d-old", "reference": "RDV-OLD0-0001", "rule": "multiple_bookings_same_email",
         "action": "cancel", "evidence": evidence, "at_ts": old_ts,
         "outbox": {"detected": {"state": "done"}}},
        {"_id": "d-new", "reference": "RDV-NEW0-0001", "rule": "multiple_bookings_same_email",
         "action": "cancel", "evidence": evidence, "at_ts": recent_ts,
         "outbox": {"detected": {"state": "done"}}}])
    db["reviews"].insert_many([
        {"_id": "RDV-OLD0-0001", "state": "cleared", "rule": "slot_grabbing", "evidence": evidence,
         "at_ts": old_ts, "case_id": "address:203.0.113.9:1"},
        {"_id": "RDV-OLD0-0002", "state": "open", "rule": "slot_grabbing", "evidence": evidence,
         "at_ts": old_ts}])
    db["cases"].insert_many([
        {"_id": "address:203.0.113.9:1", "kind": "address", "client_ip": "203.0.113.9",
         "state": "decided", "evidence": evidence, "at_ts": old_ts},
        {"_id": "address:203.0.113.9:2", "kind": "address", "client_ip": "203.0.113.9",
         "state": "open", "evidence": evidence, "at_ts": old_ts}])

    done = run_pass(container)
    assert done == {"index": 2, "decisions": 1, "reviews": 2, "events": 0}
    assert db["bookings"].find_one({"_id": "RDV-OLD0-0001"}) is None
    assert db["bookings"].find_one({"_id": "RDV-NEW0-0001"}) is not None
    # the shared e-mail's group keeps the recent booking only; the lone one's group is gone
    members = store.members(["email:shared@example.org", "email:alone@example.org",
                             "person:p-old", "person:p-new"])
    assert [m["_id"] for m in members["email:shared@example.org"]] == ["RDV-NEW0-0001"]
    assert members["email:alone@example.org"] == [] and members["person:p-old"] == []
    assert db["groups"].find_one({"_id": "email:alone@example.org"}) is None
    assert db["groups"].find_one({"_id": "person:p-old"}) is None
    assert db["groups"].find_one({"_id": f"ip:203.0.113.9:{int(old_ts // 600)}"}) is None
    assert db["groups"].find_one({"_id": f"ip:203.0.113.9:{int(recent_ts // 600)}"}) is not None
    # the audit keeps who was decided what and why, not the evidence
    old = db["decisions"].find_one({"_id": "d-old"})
    assert old["evidence"] == {} and old["rule"] == "multiple_bookings_same_email"
    assert old["action"] == "cancel" and old["reference"] == "RDV-OLD0-0001" and old["erased_ts"]
    assert db["decisions"].find_one({"_id": "d-new"})["evidence"] == evidence
    cleared = db["reviews"].find_one({"_id": "RDV-OLD0-0001"})
    assert cleared["evidence"] == {} and "case_id" not in cleared and cleared["state"] == "cleared"
    assert db["reviews"].find_one({"_id": "RDV-OLD0-0002"})["evidence"] == evidence  # still open
    assert db["cases"].find_one({"_id": "address:203.0.113.9:1"}) is None
    assert db["cases"].find_one({"_id": "address:203.0.113.9:2"}) is not None
    assert run_pass(container) == {"index": 0, "decisions": 0, "reviews": 0, "events": 0}
    with ClusterRpcProxy(config, timeout=20) as rpc:  # staff lists still answer
        assert rpc.fraud.review_queue(state="cleared")
        assert rpc.fraud.decisions_for("RDV-OLD0-0001")
        assert rpc.fraud.cases(state="open")


def test_the_watermark_moves_only_over_a_window_erased_whole(mongo):
    """A pass reads only from where the erasure is complete (less a day), so that it does not
    grow with every record ever erased; the mark never passes a record left behind."""
    store = BookingStore(mongo("booking"))
    store.ensure_indexes()
    bookings = store.bookings
    now = datetime.now(timezone.utc)

    def stored(reference, days_ago, pending=False):
        start = now - timedelta(days=days_ago)
        bookings.insert_one({
            "_id": reference, "status": "active", "procedure": "renewal",
            "slot": {"id": "s", "site": "montpellier", "start": start, "end": start},
            "identity": {"family_name": "Benali", "given_names": "Yasmine",
                         "birth_date": "1988-03-14", "foreigner_number": "1234567890"},
            "email": "y@example.org", "created_at": start,
            "outbox": {"created": {"state": "pending" if pending else "done"}}})

    def erased(reference):
        return "erased_ts" in bookings.find_one({"_id": reference})

    stored("A", 500)
    stored("B", 450)
    stored("C", 420, pending=True)  # its event not announced yet
    before = now - timedelta(days=365)
    # the batch is full (2 of 2): more may be left, the mark stays unset
    assert store.erase_bookings(before, time.time(), 2) == 2
    assert store.retention_marks.through("bookings") is None
    # all seen, but C waits for its event: the mark still stays
    assert store.erase_bookings(before, time.time(), 200) == 0
    assert store.retention_marks.through("bookings") is None and not erased("C")
    bookings.update_one({"_id": "C"}, {"$set": {"outbox.created.state": "done"}})
    assert store.erase_bookings(before, time.time(), 200) == 1 and erased("C")
    assert store.retention_marks.through("bookings") == pytest.approx(before.timestamp(), abs=0.01)
    # the next passes read from the mark (less a day), not from the beginning
    stored("D", 364)  # not due yet
    later = now - timedelta(days=360)
    assert store.erase_bookings(later, time.time(), 200) == 1 and erased("D")
    assert store.retention_marks.through("bookings") == pytest.approx(later.timestamp(), abs=0.01)
    # a record older than the mark less a day is not read again (none can appear there: a
    # booking's appointment is never in the past when it is made)
    stored("E", 380)
    assert store.erase_bookings(later, time.time(), 200) == 0 and not erased("E")


OLD_INV, NEW_INV, UNSENT_INV = ("INV-" + c * 24 for c in "ABC")


def test_renewal_invitations_past_their_retention_lose_who_they_were_for(
        container_factory, config, mongo):
    container = container_factory(RegisterService, config)
    container.start()
    invitations = mongo("register")["invitations"]
    signer_tokens = {}

    def invitation(ref, days_ago, pending=False):
        token = uuid.uuid4().hex
        signer_tokens[ref] = token
        return {"_id": ref, "number": "1234567890", "expiry": "2026-01-31",
                "email": "y@example.org", "procedure": "renewal", "family_name": "Benali",
                "given_names": "Yasmine", "at_ts": time.time() - days_ago * DAY,
                "token_salt": "s", "token_hash": TokenSigner.hash_token(token),
                "outbox": {"sent": {"state": "pending" if pending else "done"}}}

    invitations.insert_many([invitation(OLD_INV, 400), invitation(NEW_INV, 30),
                             invitation(UNSENT_INV, 400, pending=True)])
    assert run_pass(container) == {"invitations": 1}
    old = invitations.find_one({"_id": OLD_INV})
    assert old["number"] is None and old["email"] is None and old["family_name"] is None
    assert old["given_names"] is None and old["erased_ts"]
    assert old["procedure"] == "renewal" and old["expiry"] == "2026-01-31" and old["token_hash"]
    for ref in (NEW_INV, UNSENT_INV):
        assert invitations.find_one({"_id": ref})["email"] == "y@example.org", ref
    assert run_pass(container) == {"invitations": 0}
    with ClusterRpcProxy(config, timeout=20) as rpc:  # its link opens nothing, the same 404
        with pytest.raises(NotFound):
            rpc.register.invitation(OLD_INV, signer_tokens[OLD_INV])


def test_a_decided_review_keeps_its_evidence_while_its_case_is_open(mongo):
    """Staff deciding a case read the evidence of its reviews, decided ones too: a decided
    review is erased only when it has no case, or its case is decided or gone."""
    db = mongo("fraud")
    store = FraudStore(db)
    now = time.time()
    old_ts = now - 400 * DAY
    evidence = {"email": "shared@example.org", "client_ip": "203.0.113.9"}

    def review(reference, **extra):
        return dict({"_id": reference, "state": "cleared", "rule": "slot_grabbing",
                     "evidence": evidence, "at_ts": old_ts}, **extra)

    db["reviews"].insert_many([
        review("RDV-OPEN-0001", case_id="address:203.0.113.9:1"),  # its case still open
        review("RDV-OPEN-0002", case_id="address:203.0.113.9:1", state="open"),
        review("RDV-NONE-0001"),  # no case
        review("RDV-GONE-0001", case_id="address:203.0.113.9:0")])  # its case deleted
    db["cases"].insert_one({"_id": "address:203.0.113.9:1", "kind": "address",
                            "client_ip": "203.0.113.9", "state": "open", "evidence": evidence,
                            "at_ts": old_ts})
    before = now - 365 * DAY
    assert store.erase_reviews(before, now, 100) == 2
    kept = db["reviews"].find_one({"_id": "RDV-OPEN-0001"})
    assert kept["evidence"] == evidence and kept["case_id"] == "address:203.0.113.9:1"
    assert "erased_ts" not in kept
    for reference in ("RDV-NONE-0001", "RDV-GONE-0001"):
        gone = db["reviews"].find_one({"_id": reference})
        assert gone["evidence"] == {} and "case_id" not in gone and gone["erased_ts"], reference
    # staff decide the case: its reviews (and the case, that old) go at the next pass
    db["reviews"].update_one({"_id": "RDV-OPEN-0002"}, {"$set": {"state": "cleared"}})
    db["cases"].update_one({"_id": "address:203.0.113.9:1"}, {"$set": {"state": "decided"}})
    assert store.erase_reviews(before, now, 100) == 3  # two reviews, one case
    assert db["reviews"].find_one({"_id": "RDV-OPEN-0001"})["evidence"] == {}
    assert db["cases"].find_one({"_id": "address:203.0.113.9:1"}) is None


@pytest.mark.parametrize("service, key", [
    (BookingService, "BOOKING_RETENTION_DAYS"), (FraudService, "BOOKING_RETENTION_DAYS"),
    (RequestsService, "REQUEST_RETENTION_DAYS"), (RegisterService, "REQUEST_RETENTION_DAYS"),
    (NotifyService, "NOTIFY_RETENTION_DAYS")])
def test_a_service_refuses_to_start_with_a_retention_period_below_the_floor(
        container_factory, config, service, key):
    """Erasure cannot be undone: a 0 (or -1, typed for "never") would erase current records."""
    container = container_factory(service, dict(config, **{key: 0}))
    with pytest.raises(ConfigurationError, match=key):
        container.start()
