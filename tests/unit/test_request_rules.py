"""The order of the draw and the allocation (services/requests/allocation.py), seeded; an
offer's deadline and what a missed offer changes (services/requests/rules.py)."""
from datetime import date, datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from services.requests import allocation, rules
from services.common.timeutil import PARIS, WEEKDAYS

TODAY = date(2025, 6, 11)  # a Wednesday
EVERYWHERE = {"sites": ["montpellier", "beziers"],
              "times": [{"weekday": d, "from": "08:00", "to": "18:00"} for d in WEEKDAYS]}


def req(rid, expiry=None, filed="2025-06-02", back=None, availability=EVERYWHERE):
    return {"_id": rid, "permit_expiry": expiry, "filed_day": filed, "back_day": back,
            "availability": availability}


def place(pid, day, hour, site="montpellier", free=1):
    start = datetime(day.year, day.month, day.day, hour, tzinfo=PARIS).astimezone(timezone.utc)
    return {"id": pid, "site": site, "start": start, "end": start + timedelta(minutes=30),
            "free": free}


def test_permits_by_expiry_grace_first_then_first_applications_by_week_then_the_back():
    requests = [
        req("first-later-week", filed="2025-06-09"),
        req("back", expiry="2025-07-01", back="2025-06-10"),
        req("valid-late", expiry="2025-12-01"),
        req("grace", expiry="2025-05-01"),           # expired 6 weeks ago: within two months
        req("beyond-grace", expiry="2025-01-01", filed="2025-06-02"),  # no waiver: by week
        req("valid-soon", expiry="2025-06-20"),
        req("first-early-week", filed="2025-05-26"),
    ]
    result = allocation.draw(requests, TODAY, seed="fixed")["result"]
    assert result[:3] == ["grace", "valid-soon", "valid-late"]
    # first applications and permits beyond the grace: by filing week
    assert result[3:6] == ["first-early-week", "beyond-grace", "first-later-week"]
    assert result[-1] == "back"


def test_grace_is_two_calendar_months():
    assert allocation.within_grace(date(2025, 4, 11), TODAY)
    assert not allocation.within_grace(date(2025, 4, 10), TODAY)
    assert not allocation.within_grace(TODAY, TODAY)  # not expired yet


def test_ties_within_a_week_are_drawn_and_the_record_replays():
    same_week = [req(f"r{i}", filed=f"2025-06-0{2 + i % 5}") for i in range(12)]
    one = allocation.draw(same_week, TODAY, seed="seed-one")
    assert allocation.draw(same_week, TODAY, seed="seed-one")["result"] == one["result"]
    orders = {tuple(allocation.draw(same_week, TODAY, seed=f"s{n}")["result"]) for n in range(20)}
    assert len(orders) > 10  # the seed decides, not the filing order or the id
    assert allocation.replay(one)
    tampered = dict(one, result=list(reversed(one["result"])))
    assert not allocation.replay(tampered)


def test_an_unseeded_draw_uses_a_fresh_secret_seed():
    a, b = allocation.draw([req("a"), req("b")], TODAY), allocation.draw([req("a"), req("b")], TODAY)
    assert a["seed"] != b["seed"] and len(a["seed"]) == 32


def test_only_people_available_at_that_site_and_time():
    mornings_in_beziers = {"sites": ["beziers"],
                           "times": [{"weekday": "thursday", "from": "09:00", "to": "12:00"}]}
    thursday = date(2025, 6, 12)
    requests = [req("a", expiry="2025-06-12", availability=mornings_in_beziers), req("b")]
    places = [place("mtp-thu-9", thursday, 9), place("bez-thu-14", thursday, 14, "beziers"),
              place("bez-thu-11", thursday, 11, "beziers")]
    offers = allocation.allocate(requests, places)
    assert offers == [("a", "bez-thu-11"), ("b", "mtp-thu-9")]
    assert not allocation.can_come(mornings_in_beziers, "beziers", place("x", thursday, 11, "beziers")["start"],
                              place("x", thursday, 12, "beziers")["end"])  # ends 12:30


def test_a_slot_listed_twice_gives_its_places_once():
    # two pages of slots read while one changed can list it twice: its free places count once
    monday = date(2025, 6, 16)
    places = [place("s1", monday, 9, free=2), place("s1", monday, 9, free=2)]
    offers = allocation.allocate([req(f"r{i}") for i in range(5)], places)
    assert offers == [("r0", "s1"), ("r1", "s1")]


def test_full_places_go_to_later_requests_in_order_and_nobody_gets_two():
    monday = date(2025, 6, 16)
    places = [place("late", monday, 11, free=1), place("early", monday, 9, free=2),
              place("beziers", monday, 10, site="beziers", free=1)]
    montpellier_only = dict(EVERYWHERE, sites=["montpellier"])
    requests = [req("a", availability=montpellier_only), req("b"), req("c"), req("d"), req("e")]
    assert allocation.allocate(requests, places) == [
        ("a", "early"), ("b", "early"), ("c", "beziers"), ("d", "late")]


def test_a_missed_offer_keeps_the_place_once_then_sends_to_the_back():
    first = rules.after_missed_offer({"missed": 0}, TODAY)
    assert first == {"missed": 1}
    second = rules.after_missed_offer({"missed": 1}, TODAY)
    assert second == {"missed": 2, "back_day": TODAY.isoformat()}


windows = st.lists(st.builds(lambda d, h, n: {"weekday": WEEKDAYS[d], "from": f"{h:02d}:00",
                                              "to": f"{min(h + n, 23):02d}:30"},
                             st.integers(0, 6), st.integers(7, 16), st.integers(0, 4)),
                   min_size=1, max_size=4)
availabilities = st.builds(lambda sites, times: {"sites": sites, "times": times},
                           st.lists(st.sampled_from(["montpellier", "beziers"]), min_size=1,
                                    max_size=2, unique=True), windows)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(availabilities, st.one_of(st.none(), st.dates(date(2025, 1, 1), date(2026, 6, 1)))),
                max_size=25),
       st.lists(st.tuples(st.integers(0, 13), st.integers(8, 16), st.sampled_from(["montpellier", "beziers"]),
                          st.integers(1, 3)), max_size=20, unique_by=lambda t: t[:3]),
       st.text(min_size=1, max_size=8))
def test_property_no_place_twice_no_request_two_places_offers_fit_availability(reqs, slots, seed):
    requests = [req(f"r{i}", expiry=e.isoformat() if e else None, availability=a)
                for i, (a, e) in enumerate(reqs)]
    places = [place(f"p{d}-{h}-{s}", TODAY + timedelta(days=d), h, s, free)
              for d, h, s, free in slots]
    record = allocation.draw(requests, TODAY, seed=seed)
    by_id = {r["_id"]: r for r in requests}
    offers = allocation.allocate([by_id[i] for i in record["result"]], places)
    given_places = {}
    for request_id, place_id in offers:
        given_places[place_id] = given_places.get(place_id, 0) + 1
    capacity = {p["id"]: p for p in places}
    assert all(n <= capacity[pid]["free"] for pid, n in given_places.items())  # no place twice
    assert len({r for r, _ in offers}) == len(offers)  # no request holds two places
    for request_id, place_id in offers:
        p = capacity[place_id]
        assert allocation.can_come(by_id[request_id]["availability"], p["site"], p["start"], p["end"])
    # and nobody skipped: a request left out could come to no place left over
    left = dict((p["id"], p["free"] - given_places.get(p["id"], 0)) for p in places)
    served = {r for r, _ in offers}
    for request in requests:
        if request["_id"] not in served:
            assert not any(left[p["id"]] > 0 and allocation.can_come(request["availability"], p["site"],
                                                                 p["start"], p["end"]) for p in places)


def test_the_offer_deadline_comes_before_the_appointment_with_a_floor():
    start = datetime(2025, 6, 17, 7, tzinfo=timezone.utc)

    def deadline(hours_before):
        return rules.offer_deadline(start - timedelta(hours=hours_before), start,
                                    hours=48, margin_hours=24, floor_hours=4)
    # far ahead: the full 48 hours
    assert deadline(100) == start - timedelta(hours=52)
    # closer: 24 hours before the place, so a refusal still leaves the next person time
    assert deadline(60) == start - timedelta(hours=24)
    assert deadline(28) == start - timedelta(hours=24)  # exactly the floor
    # closer still: the floor (4 h to answer), while 4 h remain before the place
    assert deadline(20) == start - timedelta(hours=16)
    assert deadline(8) == start - timedelta(hours=4)
    # too close for anyone to answer and come: not offered
    assert deadline(7.9) is None
    assert deadline(-1) is None
    # never after the place starts, whatever the settings
    for before in (0.5, 3, 9, 30, 47, 49, 200):
        found = deadline(before)
        assert found is None or found <= start - timedelta(hours=4)
