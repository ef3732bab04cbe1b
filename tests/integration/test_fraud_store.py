"""The fraud index against the embedded store: bucketed, capped groups stay small and exact."""
import pytest
from pymongo.errors import BulkWriteError

from services.common.mongo import MongoStore
from services.fraud.screening import index_entry, watched_groups
from services.fraud.store import CANCELLED, FraudStore, group_ids, window_group_ids
from tests.helpers import booking_event

WINDOW = 600.0


@pytest.fixture
def store(mongo):
    return FraudStore(mongo(MongoStore("fraud", FraudStore).name))


def entry(reference, ts, ip="198.51.100.7", agent="Mozilla/5.0 (X11; Linux x86_64)", email=None,
          family="Benali"):
    event = booking_event(reference=reference, client={"ip": ip, "user_agent": agent},
                          email=email or f"{reference.lower()}@example.org")
    event["identity"]["family_name"] = family
    found = index_entry(event, {"provider_rules": True, "window": WINDOW})
    found["created_ts"] = ts
    found["groups"] = group_ids(found, WINDOW)
    return found


def test_groups_are_cut_into_window_buckets():
    booking = entry("RDV-AAAA-0001", ts=1199.0)
    assert booking["groups"] == ["email:rdv-aaaa-0001@example.org",
                                 "person:benali|yasmine|1988-03-14", "number:0123456789",
                                 "ip:198.51.100.7:1",
                                 "ua:Mozilla/5.0 (X11; Linux x86_64):1"]
    # a window ending at 1201 starts at 601: buckets 1 and 2
    assert window_group_ids("ip", "198.51.100.7", 601.0, 1201.0, WINDOW) == [
        "ip:198.51.100.7:1", "ip:198.51.100.7:2"]
    assert window_group_ids("ua", "x", 1200.0, 1799.0, WINDOW) == ["ua:x:2"]


def test_a_window_across_two_buckets_sees_both(store):
    store.add_booking(entry("RDV-AAAA-0001", ts=1190.0), {"ip": 10, "ua": 10})
    later = entry("RDV-AAAA-0002", ts=1210.0)
    store.add_booking(later, {"ip": 10, "ua": 10})
    watched = watched_groups(later, WINDOW)
    found = store.members(watched["ip"])
    assert sorted(m["_id"] for ids in found.values() for m in ids) == ["RDV-AAAA-0001", "RDV-AAAA-0002"]


def test_a_popular_user_agent_stops_growing_at_its_cap(store):
    for i in range(30):
        store.add_booking(entry(f"RDV-AAAA-{i:04d}", ts=1000.0 + i, ip=f"198.51.100.{i}"),
                          {"ip": 500, "ua": 5})
    ua = store.members(["ua:Mozilla/5.0 (X11; Linux x86_64):1"])["ua:Mozilla/5.0 (X11; Linux x86_64):1"]
    assert len(ua) == 5
    assert set(ua[0]) == {"_id", "identity_key", "created_ts"}  # no more than the rule counts
    assert store.bookings.count_documents({}) == 30  # the index itself keeps every booking


def test_a_redelivered_booking_takes_no_second_place_in_a_capped_group(store):
    first = entry("RDV-AAAA-0001", ts=1000.0, family="Benali")
    store.add_booking(first, {"ip": 2, "ua": 2})
    store.add_booking(first, {"ip": 2, "ua": 2})
    store.add_booking(entry("RDV-AAAA-0002", ts=1001.0, family="Diallo"), {"ip": 2, "ua": 2})
    ip = store.members(["ip:198.51.100.7:1"])["ip:198.51.100.7:1"]
    assert sorted(m["_id"] for m in ip) == ["RDV-AAAA-0001", "RDV-AAAA-0002"]


def test_a_status_change_never_adds_a_member_a_full_group_left_out(store):
    store.add_booking(entry("RDV-AAAA-0001", ts=1000.0), {"ip": 1, "ua": 1})
    store.add_booking(entry("RDV-AAAA-0002", ts=1001.0, email="shared@example.org"), {"ip": 1, "ua": 1})
    store.set_status("RDV-AAAA-0002", CANCELLED)
    ip = store.members(["ip:198.51.100.7:1"])["ip:198.51.100.7:1"]
    assert [m["_id"] for m in ip] == ["RDV-AAAA-0001"]
    email = store.members(["email:shared@example.org"])["email:shared@example.org"]
    assert [(m["_id"], m["status"]) for m in email] == [("RDV-AAAA-0002", CANCELLED)]


class FailingGroups:
    """A groups collection whose bulk write fails with the given write-error codes."""

    def __init__(self, codes):
        self.codes = codes

    def bulk_write(self, writes, ordered):
        raise BulkWriteError({"writeErrors": [{"index": i, "code": c, "errmsg": "x"}
                                              for i, c in enumerate(self.codes)]})


def test_a_full_group_is_no_error_but_a_real_write_error_is_not_swallowed(store):
    store.groups = FailingGroups([11000, 11000])  # capped groups said no: nothing to report
    store.add_booking(entry("RDV-AAAA-0001", ts=1000.0), {"ip": 1, "ua": 1})
    store.groups = FailingGroups([11000, 121])  # document failed validation: the event must retry
    with pytest.raises(BulkWriteError):
        store.add_booking(entry("RDV-AAAA-0002", ts=1000.0), {"ip": 1, "ua": 1})


def test_a_status_change_touches_its_own_booking_only(store):
    """The MongoDB stand-in reads `{_id: x, $or: [a, b]}` as `_id = x AND a OR b`: a status
    change once written that way landed on another booking's entry (one whose time matched),
    and a booking restored brought another, cancelled one back."""
    store.add_booking(entry("RDV-AAAA-0001", ts=1000.0), {"ip": 10, "ua": 10})
    store.add_booking(entry("RDV-AAAA-0002", ts=1001.0, ip="198.51.100.8"), {"ip": 10, "ua": 10})
    store.set_status("RDV-AAAA-0001", CANCELLED, 1100.0)
    store.set_status("RDV-AAAA-0002", CANCELLED, 1150.0)
    store.set_status("RDV-AAAA-0002", "active", 1200.0)
    statuses = {doc["_id"]: (doc["status"], doc["status_ts"]) for doc in store.bookings.find()}
    assert statuses == {"RDV-AAAA-0001": (CANCELLED, 1100.0), "RDV-AAAA-0002": ("active", 1200.0)}
