"""Outbox, inbox and leases against the embedded store (services/common/)."""
import time

import pytest

from services.common.errors import InvalidRequest
from services.common.inbox import BUSY, GO, HANDLED, EventInHand, Inbox
from services.common.lease import Leases
from services.common.outbox import Outbox
from tests.helpers import booking_event


@pytest.fixture
def db(mongo):
    return mongo("delivery")


def test_a_lease_is_held_by_one_owner_until_it_expires(db):
    leases = Leases(db["leases"])
    assert leases.acquire("sweep", "a", 10, now_ts=100.0)
    assert not leases.acquire("sweep", "b", 10, now_ts=105.0)  # a's lease runs
    assert leases.acquire("sweep", "a", 10, now_ts=106.0)      # a renews it
    assert not leases.acquire("sweep", "b", 10, now_ts=115.0)
    assert leases.acquire("sweep", "b", 10, now_ts=116.5)      # a stopped renewing: b takes over
    assert leases.state("sweep")["owner"] == "b" and leases.state("sweep")["runs"] == 3
    leases.release("sweep", "b")
    assert leases.acquire("sweep", "a", 10, now_ts=117.0)      # released early: no wait


def test_a_lease_held_by_another_is_refused_whatever_else_the_asker_holds(db):
    """An owner holding one job's lease asks for another job's, held by someone else: refused,
    and its own lease untouched (the stand-in once read the lease's filter so that the asker's
    own lease matched: it "took" the job and two instances ran it)."""
    leases = Leases(db["leases"])
    assert leases.acquire("release", "a", 10, now_ts=100.0)
    assert leases.acquire("sweep", "b", 10, now_ts=100.0)
    assert not leases.acquire("sweep", "a", 10, now_ts=105.0)
    assert leases.state("sweep")["owner"] == "b"
    assert leases.state("release")["until_ts"] == 110.0 and leases.state("release")["runs"] == 1


def test_an_outbox_record_is_claimed_by_one_relay_only(db):
    docs = db["things"]
    outbox = Outbox(docs, ["created"])
    outbox.ensure_indexes()
    docs.insert_one({"_id": "x", "outbox": {"created": Outbox.entry("e1", 100.0, 5.0)}})
    docs.insert_one({"_id": "y", "outbox": {"created": Outbox.entry("e2", 100.0, 5.0)}})
    assert outbox.due("created", now_ts=104.0) == []  # its writer has it for the grace period
    first = outbox.due("created", now_ts=106.0, lease_seconds=30)
    assert sorted(d["_id"] for d in first) == ["x", "y"]
    assert outbox.due("created", now_ts=107.0) == []  # a second relay finds them claimed
    outbox.sent("x", "created")
    outbox.sent_marks["created"].flush()
    again = outbox.due("created", now_ts=140.0)  # the claim ran out: y (not sent) comes back
    assert [d["_id"] for d in again] == ["y"]
    assert docs.find_one({"_id": "x"})["outbox"]["created"]["state"] == "done"


def test_the_inbox_handles_an_event_once(db):
    inbox = Inbox(db["inbox"])
    handled = []
    event = booking_event()
    inbox.handle("booking_created", event, handled.append)
    inbox.handle("booking_created", event, handled.append)  # before the done mark is written
    inbox.done_marks.flush()
    inbox.handle("booking_created", event, handled.append)  # after
    assert [e["event_id"] for e in handled] == [event["event_id"]]
    assert inbox.claim(event["event_id"], "booking_created") == HANDLED


def test_a_failing_event_is_retried_then_parked_then_replayed(db):
    inbox = Inbox(db["inbox"], max_attempts=3)
    event = booking_event()
    calls = []

    def broken(e):
        calls.append(e)
        raise RuntimeError("booking service down")

    for _ in range(2):  # each failure is raised, so that nameko requeues the event
        with pytest.raises(RuntimeError):
            inbox.handle("booking_created", event, broken)
    inbox.handle("booking_created", event, broken)  # the third: parked, not raised
    assert len(calls) == 3
    [parked] = inbox.parked(10)
    assert parked["_id"] == event["event_id"] and parked["attempts"] == 3
    assert "booking service down" in parked["last_error"]
    inbox.handle("booking_created", event, broken)  # a late copy of a parked event: nothing
    assert len(calls) == 3
    done = inbox.replay(event["event_id"], {"booking_created": calls.append})
    assert done["state"] == "done" and len(calls) == 4
    assert inbox.parked(10) == []
    assert inbox.replay(event["event_id"], {"booking_created": calls.append}) is None


def test_an_event_that_breaks_the_contract_is_parked_at_once_with_the_reason(db):
    inbox = Inbox(db["inbox"])
    handled = []
    inbox.handle("booking_created", {"event_id": "broken-1", "reference": "R"}, handled.append)
    inbox.handle("booking_created", "not even an object", handled.append)
    assert handled == []
    parked = {p["_id"]: p for p in inbox.parked(10)}
    assert parked["broken-1"]["last_error"].startswith("contract:")
    assert "procedure" in parked["broken-1"]["last_error"]
    assert len(parked) == 2
    with pytest.raises(InvalidRequest):  # replaying cannot mend it; it stays parked
        inbox.replay("broken-1", {"booking_created": handled.append})
    assert "broken-1" in {p["_id"] for p in inbox.parked(10)}


def test_an_event_in_hand_elsewhere_is_busy_until_its_lease_runs_out(db):
    now = [1000.0]
    inbox = Inbox(db["inbox"], clock=lambda: now[0])
    assert inbox.claim("e", "booking_created") == GO
    assert inbox.claim("e", "booking_created") == BUSY
    now[0] += 121  # the worker that had it died: its lease ran out
    assert inbox.claim("e", "booking_created") == GO
    # a shorter lease (INBOX_LEASE_SECONDS) is taken over sooner
    inbox.lease_seconds = 30
    assert inbox.claim("f", "booking_created") == GO
    now[0] += 29
    assert inbox.claim("f", "booking_created") == BUSY
    now[0] += 2
    assert inbox.claim("f", "booking_created") == GO


def test_an_event_in_hand_stays_busy_while_another_events_lease_has_run_out(db):
    """Another event whose worker died (its lease over) takes nothing from this one's: a copy
    of an event in hand is BUSY, and the dead worker's event is the one taken over."""
    now = [1000.0]
    inbox = Inbox(db["inbox"], clock=lambda: now[0])
    assert inbox.claim("dead", "booking_created") == GO
    now[0] += 121
    assert inbox.claim("live", "booking_created") == GO
    assert inbox.claim("live", "booking_created") == BUSY
    assert db["inbox"].find_one({"_id": "dead"})["lease_ts"] == 1120.0  # not taken by "live"
    assert inbox.claim("dead", "booking_created") == GO


def test_the_inbox_lease_comes_from_the_configuration(container_factory, config):
    """Each service's inbox takes INBOX_LEASE_SECONDS from its settings (services/common)."""
    from nameko.testing.services import entrypoint_hook

    from services.fraud.service import FraudService

    container = container_factory(FraudService, dict(config, INBOX_LEASE_SECONDS=7))
    container.start()
    with entrypoint_hook(container, "parked_events") as parked:
        parked()  # a worker that reads its inbox
    [store] = [d.store for d in container.dependencies if d.attr_name == "store"]
    assert store.inbox.lease_seconds == 7


def test_a_copy_of_an_event_in_hand_is_requeued_not_dropped(db, monkeypatch):
    """Its holder may have died between the claim and the end (kill -9 of one of two
    instances): dropping the copy lost the event (issue 23); requeued, it is handled once the
    lease runs out."""
    monkeypatch.setattr("services.common.inbox.BUSY_PAUSE_SECONDS", 0)
    now = [1000.0]
    inbox = Inbox(db["inbox"], clock=lambda: now[0])
    event = booking_event()
    assert inbox.claim(event["event_id"], "booking_created") == GO  # then its worker dies
    handled = []
    with pytest.raises(EventInHand):
        inbox.handle("booking_created", event, handled.append)
    assert handled == []
    now[0] += 121
    inbox.handle("booking_created", event, handled.append)
    assert [e["event_id"] for e in handled] == [event["event_id"]]
    inbox.handle("booking_created", event, handled.append)  # a later copy: handled already
    assert len(handled) == 1


def test_outbox_claims_hold_across_clients(mongo_uri, db_prefix, db):
    """Two relays with their own connections, as two service instances have."""
    from services.common.mongo import connect

    docs = db["things"]
    docs.insert_many([{"_id": f"d{i}", "outbox": {"created": Outbox.entry(f"e{i}", 0.0, 0.0)}}
                      for i in range(40)])
    other = connect(mongo_uri)
    try:
        a = Outbox(docs, ["created"])
        b = Outbox(other[f"{db_prefix}delivery"]["things"], ["created"])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda o: [d["_id"] for d in o.due("created", time.time())], [a, b]))
    finally:
        other.close()
    assert sorted(got[0] + got[1]) == sorted(f"d{i}" for i in range(40))
    assert not set(got[0]) & set(got[1])


def test_a_relay_pass_sends_every_route_past_a_failing_record_and_only_under_its_lease(db):
    from services.common.relay import relay_pass

    docs = db["things"]
    outbox = Outbox(docs, ["created", "cancelled"])
    docs.insert_many([{"_id": i, "outbox": {"created": Outbox.entry(f"e{i}", 0.0, 0.0)}}
                      for i in ("a", "b", "c")])
    docs.insert_one({"_id": "d", "outbox": {"cancelled": Outbox.entry("ed", 0.0, 0.0)}})
    sent = []

    def announce(doc):
        if doc["_id"] == "b":
            raise RuntimeError("broker gone for this one")
        sent.append(doc["_id"])

    leases = Leases(db["leases"])
    routes = [(outbox, "created", announce), (outbox, "cancelled", announce)]
    assert relay_pass(leases, "other", 5.0, [], clock=lambda: 100.0) == 0
    assert relay_pass(leases, "me", 5.0, routes, clock=lambda: 101.0) is None  # other's lease
    assert relay_pass(leases, "me", 5.0, routes, clock=lambda: 116.0) == 3
    assert sorted(sent) == ["a", "c", "d"]
    # the failed one stays pending: a later pass takes it once its claim runs out
    assert docs.find_one({"_id": "b"})["outbox"]["created"]["state"] == "pending"
