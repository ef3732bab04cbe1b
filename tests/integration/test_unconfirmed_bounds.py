"""What unconfirmed bookings may hold at once (issue 25): per client address and per mailbox
domain, refused before a place is held, given back when the booking leaves `pending`."""
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.booking.service import BookingService
from services.common.errors import SlotFull, TooManyUnconfirmed
from services.slots.service import SlotsService
from tests.helpers import applicant, plan, wait_until


def start(container_factory, config, **settings):
    config = dict(config, **settings)
    container_factory(SlotsService, config).start()
    container_factory(BookingService, config).start()
    return config


def window():
    today = datetime.now(timezone.utc).date()
    return today.isoformat(), (today + timedelta(days=30)).isoformat()


def open_slot(rpc, other_than=None):
    found = rpc.slots.list_open("renewal", *window())["slots"]
    return next(slot for slot in found if slot["id"] != other_than)


def person(n, slot_id, domain="example.org"):
    """Distinct people (names, birth dates, e-mails): only the bound under test is shared."""
    return applicant(slot_id, email=f"person{n}@{domain}", family_name=f"Martin{chr(65 + n)}",
                     birth_date=f"19{70 + n}-01-0{1 + n % 9}")


def test_one_address_holds_at_most_its_bound_unconfirmed(container_factory, config):
    config = start(container_factory, config, UNCONFIRMED_PER_CLIENT=2, UNCONFIRMED_PER_DOMAIN=0)
    client = {"ip": "203.0.113.7", "user_agent": "pytest"}
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=5), release="now")
        slot = open_slot(rpc)
        first = rpc.booking.create(person(0, slot["id"]), client)
        rpc.booking.create(person(1, slot["id"]), client)
        with pytest.raises(TooManyUnconfirmed) as refused:
            rpc.booking.create(person(2, slot["id"]), client)
        assert "_client" in refused.value.fields and "confirmation" in refused.value.message
        # refused before anything was held: the slot still has its three other places
        assert rpc.slots.get(slot["id"])["free"] == 3
        # another address is not concerned
        rpc.booking.create(person(3, slot["id"]), {"ip": "198.51.100.4", "user_agent": "pytest"})
        # one confirmed from its mailbox no longer counts
        rpc.booking.confirm(first["reference"], first["confirm_token"])
        rpc.booking.create(person(4, slot["id"]), client)


def test_ipv6_addresses_count_by_their_64(container_factory, config):
    config = start(container_factory, config, UNCONFIRMED_PER_CLIENT=1, UNCONFIRMED_PER_DOMAIN=0)
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=3), release="now")
        slot = open_slot(rpc)
        rpc.booking.create(person(0, slot["id"]), {"ip": "2001:db8:1:2::1"})
        with pytest.raises(TooManyUnconfirmed):  # the same subscriber's next address
            rpc.booking.create(person(1, slot["id"]), {"ip": "2001:db8:1:2::beef"})
        rpc.booking.create(person(2, slot["id"]), {"ip": "2001:db8:1:3::1"})


def test_one_small_domain_is_bounded_a_large_provider_is_not(container_factory, config):
    config = start(container_factory, config, UNCONFIRMED_PER_CLIENT=0, UNCONFIRMED_PER_DOMAIN=2)
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=6), release="now")
        slot = open_slot(rpc)
        made = [rpc.booking.create(person(n, slot["id"], "traffic.example"), {"ip": f"192.0.2.{n}"})
                for n in range(2)]
        with pytest.raises(TooManyUnconfirmed) as refused:  # from yet another address
            rpc.booking.create(person(2, slot["id"], "TRAFFIC.example"), {"ip": "192.0.2.9"})
        assert "email" in refused.value.fields
        # gmail.com is shared by millions of strangers: no per-domain bound there
        for n in range(3, 6):
            rpc.booking.create(person(n, slot["id"], "gmail.com"), {"ip": f"192.0.2.{n}"})
        # a cancelled booking no longer counts
        rpc.booking.cancel(made[0]["reference"], made[0]["token"])
        rpc.booking.create(person(6, slot["id"], "traffic.example"), {"ip": "192.0.2.20"})


def test_an_expired_booking_and_a_refused_hold_give_their_claim_back(container_factory, config):
    config = start(container_factory, config, UNCONFIRMED_PER_CLIENT=1, UNCONFIRMED_PER_DOMAIN=0,
                   BOOKING_CONFIRM_MINUTES=0.02, BOOKING_EXPIRY_SWEEP_SECONDS=0.2)
    client = {"ip": "203.0.113.8"}
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=1), release="now")
        slot = open_slot(rpc)
        forgotten = rpc.booking.create(person(0, slot["id"]), client)
        assert wait_until(lambda: rpc.booking.get(forgotten["reference"], forgotten["token"])
                          ["status"] == "cancelled", timeout=15)
        # the slot is full now (its place held back): the refused hold leaves no claim behind
        with pytest.raises(SlotFull):
            rpc.booking.create(person(1, slot["id"]), client)
        rpc.booking.create(person(2, open_slot(rpc, other_than=slot["id"])["id"]), client)


def test_unconfirmed_bookings_hold_at_most_a_share_of_a_release(container_factory, config):
    """Many addresses and domains (a trafficker's) still cannot keep more than the share of one
    release pending: the next pending booking is refused before any place is held."""
    config = start(container_factory, config, UNCONFIRMED_RELEASE_SHARE=0.5)
    with ClusterRpcProxy(config, timeout=20) as rpc:
        # one release: five weekday slots of two desks, ten places, five of them pending at most
        created = rpc.slots.create_from_plan(plan(desks=2, days=7, hours=["09:00-09:30"]),
                                             release="now")
        assert created["open"] == 5
        ids = [s["id"] for s in rpc.slots.list_open("renewal", *window())["slots"]]
        made = [rpc.booking.create(person(n, ids[n // 2], f"d{n}.example"), {"ip": f"192.0.2.{n}"})
                for n in range(5)]
        free = sum(s["free"] for s in rpc.slots.list_open(
            "renewal", *window())["slots"])
        with pytest.raises(TooManyUnconfirmed) as refused:
            rpc.booking.create(person(5, ids[4], "d5.example"), {"ip": "192.0.2.5"})
        assert "slot_id" in refused.value.fields
        assert sum(s["free"] for s in rpc.slots.list_open("renewal", *window())["slots"]) == free
        # confirmed or cancelled, a booking no longer counts against the release
        rpc.booking.confirm(made[0]["reference"], made[0]["confirm_token"])
        rpc.booking.create(person(5, ids[4], "d5.example"), {"ip": "192.0.2.5"})
        rpc.booking.cancel(made[1]["reference"], made[1]["token"])
        rpc.booking.create(person(6, ids[3], "d6.example"), {"ip": "192.0.2.6"})
        with pytest.raises(TooManyUnconfirmed):
            rpc.booking.create(person(7, ids[3], "d7.example"), {"ip": "192.0.2.7"})


def test_each_release_carries_its_own_share(container_factory, config, mongo):
    """A scheduled batch, released, marks its slots with its id and the share of its real
    places; a place given back comes back as a release of its own."""
    from tests.integration.test_releases import Clock, slots_instance

    config = dict(config, UNCONFIRMED_RELEASE_SHARE=0.5, FREED_PLACE_MIN_SECONDS=1,
                  FREED_PLACE_MAX_SECONDS=2)
    clock = Clock()
    slots_instance(container_factory, config, clock)
    container_factory(BookingService, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        created = rpc.slots.create_from_plan(
            plan(desks=3, days=14, start=datetime.now(timezone.utc).date() + timedelta(days=30)))
        batch = rpc.slots.schedule_for(plan_id=created["plan_id"], limit=1)["batches"][0]
        clock.jump_to(datetime.fromisoformat(batch["due"].replace("Z", "+00:00"))
                      + timedelta(seconds=1))
        slots = mongo("slots")["slots"]
        assert wait_until(lambda: slots.find_one({"_id": batch["slot_ids"][0]})["state"] == "open",
                          timeout=20)
        places = 3 * len(batch["slot_ids"])
        for slot_id in batch["slot_ids"]:
            assert slots.find_one({"_id": slot_id})["release"] == {
                "id": batch["id"], "bound": -(-places // 2)}
        made = rpc.booking.create(person(0, batch["slot_ids"][0]), {"ip": "192.0.2.1"})
        rpc.booking.cancel(made["reference"], made["token"])
        assert wait_until(lambda: (slots.find_one({"_id": batch["slot_ids"][0]})["release"] or {})
                          .get("id", "").startswith(batch["slot_ids"][0] + "@"), timeout=20)
        assert slots.find_one({"_id": batch["slot_ids"][0]})["release"]["bound"] == 1
