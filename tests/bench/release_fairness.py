#!/usr/bin/env python3
"""Who ends up with the places: real people who come to the counter, or a trafficker's scripts?
(issue 24)

Self-contained: its own RabbitMQ vhost and MongoDB stand-in (unless MONGO_URI), and the slots,
booking, fraud, requests and public gateway services as `nameko run` processes on a free port
(deploy/run.py), with the configuration's defaults (decoy share, fraud thresholds, bounds).

Two phases on one system, one per mode (`open`: slots booked on the pages; `requests`: the one
way in, offers at once when there is room, else by the draw), each with a release of
--slots x --desks places for each kind of procedure (`renewal`, `first_application`), at a
secret instant in the last quarter of --span seconds, over which people come (so most are
there before it, as when places are rare; the last ones come after it). The people of each
phase and procedure:

real people (--real-factor per place), each with a true identity (names, birth date, a
    foreigner number and a true permit expiry for a renewal), who come to the counter with it:
    - honest: file or book themselves on the pages (the forms, with their CSRF tokens; the
      link of their e-mail; the buttons) at human speed: each step takes about --think
      seconds, and they look again (or read their mail) every 3 x --think seconds;
    - buyers (--buyers of them, drawn at random): pay the trafficker, who files or books for
      them under their true identity;
invented people (--invented per place): real-looking identities the trafficker makes up to
    sell the place later; whoever comes with their convocation is someone else, and the
    counter (M4: the name must match the identity document) refuses them: the place is wasted.

The trafficker scripts the pages (never the JSON API, so decoys never catch it): a mailbox of
its own domains for each person (it reads their mail: it confirms at once), residential proxy
addresses, polling every 0.3 s from the first second; for renewals it declares a permit
expiring within days.

The prefecture runs as in production: before the phases, the register of current permits is
imported (the register service's import, as the staff gateway's `POST /api/register/import`
does) with every real person who has a permit to renew, honest or buyer (a buyer's permit is
real), under their true expiry, and never an invented one; renewal requests are checked
against it (REGISTER_CHECKED_PROCEDURES, its default). The export carries no e-mail, so
nobody is invited: everyone files on the pages. Likewise the register of long-stay visas is
imported (as `POST /api/register/visas/import` does) with the visa of every real first
applicant, honest or buyer (a buyer's visa is real, under the true identity the trafficker
files with), never an invented one; first applications are checked against it
(VISA_CHECKED_PROCEDURES, its default): the trafficker types a made-up visa number for the
people it invents, and the form refuses them. (Open mode books slots directly: no check before
the counter there.)

Figures per mode and kind: places; the share that reaches a real person who comes to the
counter; places wasted on invented people; the trafficker's advantage, the chance of a place
for a request (or booking) the trafficker files for a buyer divided by the chance of an honest
person filing alone (the buyers are drawn at random from the same people, so the second is the
chance the same person would have had: 1.0 means speed and scripts buy nothing), with its
95 % interval by chance alone (wide at these sizes: pool several seeds); honest people
cancelled. The targets are printed beside them. In requests mode also: who was in line
(confirmed) at the release and who of them got a place, which tells the draw's fairness apart
from arrival (a script confirms at once, so a buyer who arrives just before the release is in
line when an honest person is still reading the mail); and the places held under mail domains
other than the large providers, by role (what a count per domain would show staff). --seed
fixes the people and their arrival; the draw's seed comes from `secrets`, as in production.

    .venv/bin/python tests/bench/release_fairness.py                 # about 3 minutes
    .venv/bin/python tests/bench/release_fairness.py --slots 12 --desks 3 --span 90
"""
import argparse
import csv
import io
import math
import random
import re
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from booking_burst import CpuSteal  # noqa: E402
from tests.bench.harness import LARGE_PROVIDERS, OwnSystem, real_names  # noqa: E402

SITE = "montpellier"
KINDS = ("renewal", "first_application")
MODES = ("open", "requests")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
TRAFFICKER_DOMAINS = ("rdv-express.fr", "prefecture-rapide.com", "titre-facile.net",
                      "rdv-garanti.fr", "sejour-express.org", "aide-titre.fr")
MOBILE = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
SCRIPT = "python-requests/2.32"
# the targets, printed beside the figures
TARGETS = {
    "renewal": {"invented": "0 places", "advantage": "<= 1.05"},
    "first_application": {"invented": "<= 10 %", "advantage": "<= 1.05"},
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
BOOKING_URL = re.compile(r"/bookings/(RDV-[0-9A-Z]{4}-[0-9A-Z]{4})")


class Person:
    def __init__(self, n, role, kind, family, given, today):
        self.n, self.role, self.kind, self.family, self.given = n, role, kind, family, given
        self.birth = f"{1950 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}"
        self.number = f"{5 + KINDS.index(kind)}{n:09d}" if kind == "renewal" else ""
        # a first applicant's long-stay visa (the sticker's number); the trafficker makes one
        # up for the people it invents, in the same form
        self.visa = f"FRA{random.randint(10 ** 8, 10 ** 9 - 1)}" if kind == "first_application" \
            else ""
        # a renewal's true expiry (the register's): within the next months
        self.permit_expiry = (today + timedelta(days=random.randint(20, 150))).isoformat() \
            if kind == "renewal" else ""
        self.expiry = self.permit_expiry  # what is typed on the form (the trafficker: its own)
        if role == "honest":
            local = re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", family.lower())
                           .encode("ascii", "ignore").decode()) or "x"
            self.email = f"{local}.{uuid.uuid4().hex[:6]}@{random.choice(LARGE_PROVIDERS)}"
            # one in six behind a mobile carrier's shared address
            self.ip = "100.64.12.34" if n % 6 == 0 else f"192.0.{2 + n // 200}.{1 + n % 200}"
            self.agent = random.choice([MOBILE, DESKTOP])
        else:  # the trafficker's: a mailbox of its domains, a residential proxy
            self.email = f"c{n}.{uuid.uuid4().hex[:4]}@{TRAFFICKER_DOMAINS[n % len(TRAFFICKER_DOMAINS)]}"
            self.ip = f"100.{64 + n % 50}.{(n * 7) % 250}.{1 + n % 250}"
            self.agent = SCRIPT
            if kind == "renewal":  # an early expiry, to come first (the register's replaces it)
                self.expiry = (today + timedelta(days=random.randint(1, 10))).isoformat()
        self.booking = None      # reference of the booking this person got
        self.confirmed_at = None  # requests mode: when their request was confirmed (waiting)
        self.steps = Counter()   # what happened, for the refusals line

    def fields(self):
        return {"family_name": self.family, "given_names": self.given, "birth_date": self.birth,
                "email": self.email, "phone": "", "foreigner_number": self.number}


class Browser:
    """One person's browser (or the trafficker's script) on the pages: cookies, CSRF tokens."""

    def __init__(self, base, person):
        self.base, self.session = base, requests.Session()
        self.session.headers.update({"X-Forwarded-For": person.ip, "User-Agent": person.agent})

    def get(self, path):
        return self.session.get(self.base + path, timeout=60)

    def post(self, path, data):
        return self.session.post(self.base + path, data=data, timeout=60)

    def submit(self, page, path, data):
        """POST a form of `page` with its CSRF token (and its idempotency key, if any)."""
        data = list(data) + [("csrf_token", CSRF.search(page.text).group(1))]
        key = KEY.search(page.text)
        if key:
            data.append(("idempotency_key", key.group(1)))
        return self.post(path, data)


class Phase:
    """One mode: the releases of both kinds and everybody acting on them."""

    def __init__(self, mode, args, system, mailbox, day, people):
        self.mode, self.args, self.base = mode, args, system.url
        self.mailbox, self.day, self.people = mailbox, day, people
        self.weekday = WEEKDAYS[date.fromisoformat(day).weekday()]
        self.released = threading.Event()
        self.released_at = None  # monotonic instant of the release
        self.start = None
        self.end = None

    def pause(self, person, factor=1.0):
        if person.role == "honest":
            time.sleep(factor * self.args.think * random.uniform(0.5, 1.5))

    def later(self, person):
        """Until the next look: a person reads the page or the mail now and then; a script
        polls."""
        time.sleep(3 * self.args.think * random.uniform(0.5, 1.5) if person.role == "honest"
                   else 0.3)

    # -- open mode: slots on the pages ----------------------------------------------------------

    def book(self, person):
        browser = Browser(self.base, person)
        slots_page = f"/book/{person.kind}/{SITE}"
        while time.monotonic() < self.end and person.booking is None:
            page = browser.get(slots_page)
            found = re.findall(rf'href="{slots_page}/([^"]+)"', page.text)
            if not found:
                person.steps["nothing listed"] += 1
                self.later(person)
                continue
            slot_id = random.choice(found)
            self.pause(person, 0.3)  # chooses a time
            form = browser.get(f"{slots_page}/{slot_id}")
            if form.status_code != 200 or not CSRF.search(form.text):
                person.steps[f"form {form.status_code}"] += 1
                continue
            self.pause(person)  # fills the form in
            sent = browser.submit(form, f"{slots_page}/{slot_id}", person.fields().items())
            made = BOOKING_URL.search(sent.url)
            if not made:
                person.steps[f"refused {sent.status_code}"] += 1
                continue
            person.booking = made.group(1)
            self.pause(person)  # opens the e-mail
            token = self.mailbox.booking_confirm_token(person.booking)
            link = browser.get(f"/bookings/{person.booking}/confirm?token={token}")
            if CSRF.search(link.text):
                browser.submit(link, f"/bookings/{person.booking}/confirm", [])

    # -- requests mode: the one way in ----------------------------------------------------------

    def file(self, person):
        browser = Browser(self.base, person)
        form = browser.get(f"/request/{person.kind}")
        self.pause(person)  # fills the form in
        data = list(person.fields().items()) + [("permit_expiry", person.expiry),
                                                ("sites", SITE)]
        if person.visa:
            data.append(("visa_number", person.visa))
        data += [("times", f"{self.weekday}-{half}") for half in ("morning", "afternoon")]
        receipt = browser.submit(form, f"/request/{person.kind}", data)
        found = re.search(r'id="request-reference">(REQ-[0-9A-Z-]+)<', receipt.text)
        if not found:
            person.steps[f"not filed {receipt.status_code}"] += 1
            return
        reference = found.group(1)
        self.pause(person)  # opens the e-mail
        token = self.mailbox.request_token(reference)
        page = browser.get(f"/requests/{reference}/confirm?token={token}")
        page = browser.submit(page, f"/requests/{reference}/confirm", [])
        if page.status_code == 200:
            person.confirmed_at = time.monotonic()
        if "/accept" in page.text:
            person.steps["offered at once"] += 1
        while time.monotonic() < self.end:
            if f'action="/requests/{reference}/accept"' in page.text:
                self.pause(person, 0.3)  # reads the offer
                accepted = browser.submit(page, f"/requests/{reference}/accept", [])
                made = BOOKING_URL.search(accepted.url)
                if made:
                    person.booking = made.group(1)
                    return
                person.steps[f"accept refused {accepted.status_code}"] += 1
            self.later(person)
            page = browser.get(f"/requests/{reference}")

    # -- the run --------------------------------------------------------------------------------

    def act(self, person):
        # real people need a place at any moment of the span, a buyer too: the trafficker files
        # for them when they pay, at script speed; it invents people from the first second
        if person.role != "invented":
            time.sleep(random.uniform(0, self.args.span))
        try:
            (self.book if self.mode == "open" else self.file)(person)
        except (requests.RequestException, AttributeError) as error:
            person.steps[type(error).__name__] += 1

    def run(self, rpc):
        for kind in KINDS:
            rpc.requests.set_mode(kind, self.mode, by="bench")
        self.start = time.monotonic()
        self.end = self.start + self.args.span + self.args.settle
        threads = [threading.Thread(target=self.act, args=(p,), daemon=True) for p in self.people]
        for t in threads:
            t.start()
        # the release, at an instant nobody is told, late in the span: places are rare and
        # people need them all the time, so most of those who want one are there before it
        # (a release in the middle would make the bench about who arrived in the last seconds)
        time.sleep(random.uniform(0.75, 1.0) * self.args.span)
        end = 9 * 60 + self.args.slots * 10
        self.released_at = time.monotonic()
        for kind in KINDS:
            rpc.slots.create_from_plan({
                "site": SITE, "procedure": kind, "from": self.day, "to": self.day,
                "weekdays": list(WEEKDAYS), "hours": [f"09:00-{end // 60:02d}:{end % 60:02d}"],
                "slot_minutes": 10, "desks": self.args.desks}, release="now")
        for t in threads:
            t.join(max(0.0, self.end - time.monotonic()) + 60)


def population(kind, args, names, today, first_n):
    places = args.slots * args.desks
    real = math.ceil(args.real_factor * places)
    buyers = set(random.sample(range(real), round(args.buyers * real)))
    people = []
    for i in range(real):
        family, given = next(names)
        people.append(Person(first_n + i, "buyer" if i in buyers else "honest", kind, family,
                             given, today))
    for i in range(round(args.invented * places)):
        family, given = next(names)
        people.append(Person(first_n + real + i, "invented", kind, family, given, today))
    return people


def register_export(people):
    """The register's CSV export (the columns of `POST /api/register/import`): the permits of
    the real people who renew, with their true expiry; invented people have none."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["foreigner_number", "family_name", "given_names", "birth_date",
                     "permit_kind", "expiry"])
    for p in people:
        if p.kind == "renewal" and p.role != "invented":
            writer.writerow([p.number, p.family, p.given, p.birth, "temporary",
                             p.permit_expiry])
    return out.getvalue()


def visa_export(people):
    """The long-stay visas' CSV export (the columns of `POST /api/register/visas/import`):
    the visas of the real people who file a first application; invented people have none."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["visa_number", "family_name", "given_names", "birth_date", "visa_kind",
                     "validity_end"])
    for p in people:
        if p.kind == "first_application" and p.role != "invented":
            writer.writerow([p.visa, p.family, p.given, p.birth, "vls_ts",
                             (date.today() + timedelta(days=30 + p.n % 60)).isoformat()])
    return out.getvalue()


def weekday_after(day, weekday):
    day += timedelta(days=1)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


def ratio(part, whole):
    return part / whole if whole else 0.0


def advantage_interval(held_a, of_a, held_b, of_b):
    """95 % interval of (held_a / of_a) / (held_b / of_b), by the usual normal approximation
    on the log of a ratio of two proportions; None when either proportion is 0. At the bench's
    sizes it is wide: it says how far one run's advantage is from 1.0 by chance alone."""
    if not (held_a and held_b):
        return None
    p_a, p_b = held_a / of_a, held_b / of_b
    spread = 1.96 * math.sqrt((1 - p_a) / held_a + (1 - p_b) / held_b)
    centre = math.log(p_a / p_b)
    return math.exp(centre - spread), math.exp(centre + spread)


def report(mode, kind, people, statuses, places, released_at):
    def held(p):
        return p.booking is not None and statuses.get(p.booking, {}).get("status") in (
            "pending", "active")

    honest = [p for p in people if p.role == "honest"]
    buyers = [p for p in people if p.role == "buyer"]
    invented = [p for p in people if p.role == "invented"]
    real_held = sum(held(p) for p in honest + buyers)
    invented_held = sum(held(p) for p in invented)
    honest_rate = ratio(sum(held(p) for p in honest), len(honest))
    buyer_rate = ratio(sum(held(p) for p in buyers), len(buyers))
    advantage = buyer_rate / honest_rate if honest_rate else float("inf")
    cancelled = sum(p.booking is not None and statuses.get(p.booking, {}).get("status")
                    == "cancelled" for p in honest)
    target = TARGETS[kind]
    interval = advantage_interval(sum(held(p) for p in buyers), len(buyers),
                                  sum(held(p) for p in honest), len(honest))
    print(f"figures {mode} {kind}: places {places}; to real people who come {real_held} "
          f"({100 * ratio(real_held, places):.1f} %); wasted on invented people {invented_held} "
          f"({100 * ratio(invented_held, places):.1f} %; target {target['invented']}); "
          f"advantage {advantage:.2f} (target {target['advantage']}); "
          f"honest cancelled {cancelled} (target 0)")
    print("   advantage's 95 % interval by chance alone: "
          + (f"{interval[0]:.2f}-{interval[1]:.2f}" if interval else "none (a count of 0)"))
    print(f"   honest {sum(held(p) for p in honest)} of {len(honest)} got a place; "
          f"buyers through the trafficker {sum(held(p) for p in buyers)} of {len(buyers)}; "
          f"invented {invented_held} of {len(invented)}")
    lost = Counter(f"{p.role} {statuses.get(p.booking, {}).get('status')}" for p in people
                   if p.booking is not None and not held(p))
    if lost:
        print(f"   bookings made but not held at the end: {dict(sorted(lost.items()))}")
    if mode == "requests":
        # a fair draw gives invented people about their share of the line when places come:
        # what the places wasted on them are measured against
        in_line = [p for p in people
                   if p.confirmed_at is not None and p.confirmed_at <= released_at]
        waiting = Counter(p.role for p in in_line)
        # the draw's own fairness, apart from who was in line when the places came (a person
        # arriving just before the release is in line sooner when a script confirms for them)
        drawn = Counter(p.role for p in in_line if held(p))
        print(f"   in line (confirmed) at the release: {dict(sorted(waiting.items()))}; invented "
              f"{100 * ratio(waiting['invented'], sum(waiting.values())):.1f} % of them; "
              f"of them got a place: {dict(sorted(drawn.items()))}")
    # what counting places per mail domain (other than the large providers) would show staff:
    # evidence for review at most, since a family, a firm or a school share a domain too
    domains = Counter()
    for p in people:
        domain = p.email.rsplit("@", 1)[1]
        if held(p) and domain not in LARGE_PROVIDERS:
            domains[(domain, p.role)] += 1
    by_role = Counter()
    for (_, role), count in domains.items():
        by_role[role] += count
    print(f"   places under mail domains other than the large providers: "
          f"{len({d for d, _ in domains})} domains, {dict(sorted(by_role.items()))}")
    steps = Counter()
    for p in people:
        steps.update({f"{p.role}: {k}": v for k, v in p.steps.items()})
    print(f"   what happened on the way: {dict(sorted(steps.items()))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=6, help="slots per release (10 minutes each)")
    parser.add_argument("--desks", type=int, default=2, help="places per slot")
    for option, default, meaning in (
            ("--real-factor", 2.5, "real people per place (demand: places are short)"),
            ("--buyers", 0.3, "share of the real people who buy the trafficker's service"),
            ("--invented", 0.5, "people the trafficker invents, per place"),
            ("--span", 40.0, "seconds honest people arrive over; the release is within it"),
            ("--settle", 25.0, "seconds after the span to confirm, look again and accept"),
            ("--think", 3.0, "seconds a person takes for one step (a page, the form, the mail)")):
        parser.add_argument(option, type=float, default=default, help=meaning)
    parser.add_argument("--modes", default="open,requests", help="the phases, in this order")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.seed is not None:
        random.seed(args.seed)
    from nameko.standalone.rpc import ClusterRpcProxy

    services = {"slots": 1, "booking": 1, "fraud": 1, "requests": 1, "register": 1,
                "public_gateway": 1}
    names = iter(real_names())
    today = date.today()
    day = today + timedelta(days=14)
    places = args.slots * args.desks
    with OwnSystem(services, name="bench_fair", RPC_TIMEOUT=10, MAX_WORKERS=40) as system:
        mailbox = system.mailbox()
        phases, n = [], 0
        for mode in args.modes.split(","):
            people = []
            for kind in KINDS:
                batch = population(kind, args, names, today, n)
                people, n = people + batch, n + len(batch)
            phases.append((mode, people))
        with ClusterRpcProxy({"AMQP_URI": system.amqp_uri}, timeout=60) as rpc:
            everybody = [p for _, people in phases for p in people]
            imported = rpc.register.import_register(register_export(everybody), by="bench")
            visas = rpc.register.import_visas(visa_export(everybody), by="bench")
        steal = CpuSteal()
        results = []
        for mode, people in phases:
            # each phase its own weekday: a request of one phase can come to its release only
            day = weekday_after(day, (day.weekday() + 1) % 5)
            phase = Phase(mode, args, system, mailbox, day.isoformat(), people)
            with ClusterRpcProxy({"AMQP_URI": system.amqp_uri}, timeout=60) as rpc:
                began = time.monotonic()
                phase.run(rpc)
                refs = [p.booking for p in people if p.booking]
                statuses = rpc.booking.statuses(refs) if refs else {}
            results.append((mode, people, statuses, time.monotonic() - began, phase.released_at))
        stolen = steal.percent()
    print(f"each release: {args.slots} slots x {args.desks} desks = {places} places per kind; "
          f"{math.ceil(args.real_factor * places)} real people per kind "
          f"({args.buyers:.0%} of them buyers), {round(args.invented * places)} invented; "
          f"span {args.span:.0f} s, think {args.think:g} s; register: "
          f"{imported['counts']['permits']} permits (the real people who renew), "
          f"{visas['counts']['visas']} long-stay visas (the real first applicants)")
    print(f"CPU steal {stolen:.1f} % (a machine shared with other engineers' test runs)")
    for mode, people, statuses, took, released_at in results:
        print(f"\nmode {mode} (phase took {took:.0f} s)")
        for kind in KINDS:
            report(mode, kind, [p for p in people if p.kind == kind], statuses, places,
                   released_at)


if __name__ == "__main__":
    main()
