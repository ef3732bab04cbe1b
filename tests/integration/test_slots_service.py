"""Slots service in a real container on a real RabbitMQ vhost, with the embedded store."""
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.common.errors import InvalidRequest, NotFound, SlotFull, SlotNotBookable
from services.slots.service import SlotsService
from tests.helpers import plan


@pytest.fixture
def slots(container_factory, config):
    container = container_factory(SlotsService, config)
    container.start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        yield rpc.slots


def first_slot(slots, procedure="renewal"):
    found = slots.list_open(procedure, *window())
    return found["slots"][0]


def window(days=30):
    today = datetime.now(timezone.utc).date()
    return today.isoformat(), (today + timedelta(days=days)).isoformat()


def test_plan_creates_slots_once(slots):
    created = slots.create_from_plan(plan(desks=2, days=7), release="now")
    assert created["created"] == created["slots"] > 0
    again = slots.create_from_plan(plan(desks=2, days=7), release="now")
    assert (again["slots"], again["created"], again["batches"]) == (created["slots"], 0, 0)
    assert not slots.is_empty()


def test_a_plan_loaded_again_under_a_new_id_key_makes_nothing_new(slots, container_factory,
                                                                   config):
    created = slots.create_from_plan(plan(desks=2, days=7), release="now")
    assert created["created"] > 0
    ids = {s["id"] for s in slots.list_open("renewal", *window(), 1, 200)["slots"]}
    rekeyed = dict(config, SLOT_ID_SECRET="another-slot-id-key-" + "x" * 16)
    container_factory(SlotsService, rekeyed).start()  # a second instance, under the new key
    with ClusterRpcProxy(rekeyed, timeout=20) as rpc:
        assert rpc.slots.preview_plan(plan(desks=2, days=7))["slots"] == created["slots"]
        again = [rpc.slots.create_from_plan(plan(desks=2, days=7), release="now")
                 for _ in range(2)]  # whichever instance takes it
    assert [a["created"] for a in again] == [0, 0]
    assert {s["id"] for s in slots.list_open("renewal", *window(), 1, 200)["slots"]} == ids


def test_invalid_plan_is_refused_with_fields(slots):
    with pytest.raises(InvalidRequest) as caught:
        slots.create_from_plan(dict(plan(), desks="many", site={"$gt": ""}))
    assert set(caught.value.fields) == {"desks", "site"}
    assert slots.is_empty()


def test_list_open_is_sorted_filtered_and_paginated(slots):
    slots.create_from_plan(plan(procedure="renewal", days=14), release="now")
    slots.create_from_plan(plan(procedure="duplicate", days=14), release="now")
    first = slots.list_open("renewal", *window(), 1, 5)
    second = slots.list_open("renewal", *window(), 2, 5)
    assert len(first["slots"]) == 5 and first["has_more"]
    starts = [s["start"] for s in first["slots"] + second["slots"]]
    assert starts == sorted(starts) and len(set(starts)) == 10
    assert {s["procedure"] for s in first["slots"]} == {"renewal"}
    assert all(s["free"] == 3 for s in first["slots"])
    # the window excludes days after `to`
    today = datetime.now(timezone.utc).date()
    assert slots.list_open("renewal", today.isoformat(), today.isoformat())["slots"] == []


def test_hold_takes_places_until_full_and_release_gives_back_once(slots):
    slots.create_from_plan(plan(desks=2), release="now")
    slot = first_slot(slots)
    assert slots.hold(slot["id"], "h1", "renewal")["free"] == 1
    assert slots.hold(slot["id"], "h2", "renewal")["free"] == 0
    with pytest.raises(SlotFull):
        slots.hold(slot["id"], "h3", "renewal")
    # a full slot is no longer listed
    assert slot["id"] not in [s["id"] for s in slots.list_open("renewal", *window(), 1, 200)["slots"]]
    assert sorted(slots.holds(slot["id"])) == ["h1", "h2"]
    assert slots.release("h1") is True
    assert slots.release("h1") is False  # twice: nothing more given back
    after = slots.get(slot["id"])
    # given back, yet held back until its secret return (tests/integration/test_releases.py)
    assert (after["free"], after["held_back"], after["booked"]) == (0, 1, 1)


def test_hold_asked_twice_keeps_one_place(slots):
    slots.create_from_plan(plan(desks=3), release="now")
    slot = first_slot(slots)
    slots.hold(slot["id"], "same", "renewal")
    again = slots.hold(slot["id"], "same", "renewal")
    assert (again["free"], again["booked"]) == (2, 1)


def test_hold_refusals(slots, mongo):
    slots.create_from_plan(plan(desks=1), release="now")
    slot = first_slot(slots)
    with pytest.raises(NotFound):
        slots.hold("nope", "h", "renewal")
    with pytest.raises(InvalidRequest) as caught:
        slots.hold(slot["id"], "h", "duplicate")
    assert "slot_id" in caught.value.fields
    mongo("slots")["slots"].update_one({"_id": slot["id"]}, {"$set": {"state": "closed"}})
    with pytest.raises(SlotNotBookable):
        slots.hold(slot["id"], "h", "renewal")


def test_a_past_slot_cannot_be_booked(slots, mongo):
    slots.create_from_plan(plan(desks=1), release="now")
    slot = first_slot(slots)
    # rewrite start with a whole-document replace: the stand-in mangles datetimes given to $set
    doc = mongo("slots")["slots"].find_one({"_id": slot["id"]})
    doc["start"] = datetime.now(timezone.utc) - timedelta(minutes=1)
    mongo("slots")["slots"].replace_one({"_id": slot["id"]}, doc)
    with pytest.raises(SlotNotBookable):
        slots.hold(slot["id"], "h", "renewal")
    assert slot["id"] not in [s["id"] for s in slots.list_open("renewal", *window(), 1, 200)["slots"]]


def test_concurrent_holds_never_exceed_capacity(container_factory, config):
    # two slots-service processes' worth of workers racing: the database decides
    for _ in range(2):
        container_factory(SlotsService, config).start()
    with ClusterRpcProxy(config, timeout=30) as rpc:
        rpc.slots.create_from_plan(plan(desks=3), release="now")
        slot = first_slot(rpc.slots)
        replies = [rpc.slots.hold.call_async(slot["id"], f"h{i}", "renewal") for i in range(120)]
        won, full = 0, 0
        for reply in replies:
            try:
                reply.result()
                won += 1
            except SlotFull:
                full += 1
        assert (won, full) == (3, 117)
        after = rpc.slots.get(slot["id"])
        assert (after["booked"], after["free"]) == (3, 0)
        assert len(rpc.slots.holds(slot["id"])) == 3


def test_decoys_are_listed_only_on_request_look_like_slots_and_can_be_held(container_factory, config):
    container_factory(SlotsService, dict(config, SLOTS_DECOY_SHARE=0.2)).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        created = rpc.slots.create_from_plan(plan(desks=2, days=7), release="now")
        real = rpc.slots.list_open("renewal", *window(), 1, 200)["slots"]
        everything = rpc.slots.list_open("renewal", *window(), 1, 200, include_decoys=True)["slots"]
        decoys = [s for s in everything if s["decoy"]]
        # the plan's answer and the default listing (what pages offer) count real slots only
        assert created["slots"] == len(real) and not any(s["decoy"] for s in real)
        assert len(decoys) == round(0.2 * len(real))
        real_starts = {s["start"] for s in real}
        for decoy in decoys:
            assert decoy["start"] not in real_starts  # no real desk's capacity
            assert decoy["capacity"] == decoy["free"] == 2 and decoy["state"] == "open"
        held = rpc.slots.hold(decoys[0]["id"], "RDV-DECO-0001", "renewal")
        assert held["decoy"] is True and held["free"] == 1
