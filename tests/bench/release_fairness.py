#!/usr/bin/env python3
"""Who ends up with the places of one release: honest applicants or traffickers?

Self-contained: its own RabbitMQ vhost and MongoDB stand-in (unless MONGO_URI), and the slots,
booking, fraud and public gateway services as `nameko run` processes on a free port
(deploy/run.py), with the configuration's defaults (decoy share, fraud thresholds).

One release of --slots slots x --desks desks, then, over --span seconds (the "first minute",
shortened by default to keep the run short):

honest applicants (at least twice as many as places), who use what a person sees: the
    applicant pages' listing (slots' list_open without decoys), the booking form, the button
    behind the link in their e-mail; each tries up to three times when a slot fills first.
    - own:         each from an address of their own;
    - carrier:     behind one carrier-grade NAT address, same mobile browser;
    - association: booked one after another from one office (not allow-listed), each
                   person with their own e-mail.
traffickers, scripts reading the JSON API (so they can hit decoys), from the first second:
    - one_email:   one e-mail for several people, confirmations sent at once;
    - placeholder: placeholder names;
    - cybercafe:   many real-looking people from one address within seconds;
    - proxies:     residential proxies, one address per booking, re-booking any place that
                   comes free until the span ends.

Prints, per group, the places held at the end, the honest share of held places, honest
applicants cancelled (must be 0), trafficker bookings cancelled and still held (and how many
of those are in a staff review case), and the CPU steal: the machine is shared.

    .venv/bin/python tests/bench/release_fairness.py            # about 1.5 minutes
    .venv/bin/python tests/bench/release_fairness.py --span 60  # the full first minute
    .venv/bin/python tests/bench/release_fairness.py --mode requests

--mode requests (issue 12): the procedure is allocated by request. The same people file a
request instead (honest ones once each; the one-email seller one per buyer on its one
address; placeholders; the cybercafe and the proxies one real-looking person each), confirm it,
and the release is allocated by draw; everybody offered a place accepts it. Speed no longer
counts: a script's share is the share of confirmed requests it can file for distinct people.
"""
import argparse
import http.client
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from booking_burst import CpuSteal, throwaway_secrets  # noqa: E402
from deploy import embedded_mongo, run  # noqa: E402
from tests.conftest import free_port  # noqa: E402

API = "http://guest:guest@127.0.0.1:15672/api"
PROCEDURE, SITE = "duplicate", "montpellier"
HONEST_GROUPS = ("own", "carrier", "association")
TRAFFICKER_GROUPS = ("one_email", "placeholder", "cybercafe", "proxies")
PLACEHOLDERS = [("Test", "Test"), ("xxx", "xxx"), ("Client", "Un"), ("Nom", "Prenom"),
                ("AAAA", "Bbbb"), ("Dupont", "asdf"), ("Inconnu", "Inconnu"), ("Rdv", "Client")]
MOBILE = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def real_names():
    rows = []
    for name in ("real_names.txt", "real_names.heldout.txt"):
        for line in (ROOT / "tests" / "data" / name).read_text(encoding="utf-8").splitlines():
            parts = line.split("|")
            if line and not line.startswith("#") and len(parts) == 2 and all(p.strip() for p in parts):
                rows.append((parts[0].strip(), parts[1].strip()))
    random.shuffle(rows)
    return rows


class Gateway:
    """HTTP to the public gateway, one connection per thread."""

    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None, form=False):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        else:
            data = None
        try:
            conn.request(method, path, data, headers)
            response = conn.getresponse()
            text = response.read().decode()
        except (OSError, http.client.HTTPException):
            self.local.conn = None
            conn.close()
            raise
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


class Mailbox:
    """What the e-mails' links carry (no notify runs here): the tokens as notify writes them,
    from the stored salts and the keys. Everybody here reads their own mailbox: honest people,
    and scripts on mailboxes they own."""

    def __init__(self, env):
        from services.booking.rules import confirm_subject
        from services.common.mongo import connect
        from services.common.tokens import TokenSigner

        dbs = connect(env["MONGO_URI"])
        self.bookings = dbs[env["MONGO_DB_PREFIX"] + "booking"]["bookings"]
        self.requests = dbs[env["MONGO_DB_PREFIX"] + "requests"]["requests"]
        self.booking_signer = TokenSigner(env["BOOKING_TOKEN_SECRET"])
        self.request_signer = TokenSigner(env["REQUEST_TOKEN_SECRET"])
        self.confirm_subject = confirm_subject

    def booking_confirm_token(self, reference):
        salt = self.bookings.find_one({"_id": reference})["token_salt"]
        return self.booking_signer.token_for(self.confirm_subject(reference), salt)

    def request_token(self, reference):
        salt = self.requests.find_one({"_id": reference})["token_salt"]
        return self.request_signer.token_for(reference, salt)


class Release:
    def __init__(self, env, gateway, span, day, decoys):
        self.env, self.gw, self.span, self.day, self.decoys = env, gateway, span, day, decoys
        self.mailbox = Mailbox(env)
        self.lock = threading.Lock()
        self.booked = {}           # reference -> group
        self.slot_of = {}          # reference -> slot id
        self.refused = Counter()   # (group, error) -> count
        self.start = None

    # -- what each kind of client sees ------------------------------------------------------

    def page_slots(self, rpc):
        """What the applicant pages offer: no decoys (list_open's default)."""
        return [s for s in rpc.slots.list_open(PROCEDURE, self.day, self.day, 1, 200)["slots"]
                if s["free"] > 0]

    def json_slots(self):
        status, body = self.gw.request("GET", f"/api/slots?procedure={PROCEDURE}&from={self.day}"
                                              f"&to={self.day}&per_page=200")
        return [s for s in body["slots"] if s["free"] > 0] if status == 200 else []

    def book(self, group, slot_id, family, given, email, ip, agent, birth):
        body = {"procedure": PROCEDURE, "slot_id": slot_id, "family_name": family,
                "given_names": given, "birth_date": birth, "email": email}
        status, answer = self.gw.request("POST", "/api/bookings", body,
                                         {"X-Forwarded-For": ip, "User-Agent": agent})
        if status == 201:
            with self.lock:
                self.booked[answer["reference"]] = group
                self.slot_of[answer["reference"]] = slot_id
            return answer
        with self.lock:
            self.refused[(group, answer.get("error") if isinstance(answer, dict) else status)] += 1
        return None

    def confirm_by_button(self, booked, ip, agent):
        """As a browser does it: the e-mail's link (its token goes into a cookie), the page,
        then its button with the page's CSRF token."""
        with requests.Session() as browser:
            browser.headers.update({"X-Forwarded-For": ip, "User-Agent": agent})
            base = f"http://127.0.0.1:{self.gw.port}/bookings/{booked['reference']}/confirm"
            link_token = self.mailbox.booking_confirm_token(booked["reference"])
            page = browser.get(f"{base}?token={link_token}", timeout=60)
            found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            if found:
                browser.post(base, data={"csrf_token": found.group(1)}, timeout=60)

    def confirm_by_script(self, booked, ip, agent):
        link_token = self.mailbox.booking_confirm_token(booked["reference"])
        self.gw.request("POST", f"/api/bookings/{booked['reference']}/confirm", None,
                        {"X-Booking-Token": link_token, "X-Forwarded-For": ip, "User-Agent": agent})

    def at(self, offset):
        delay = self.start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    # -- the actors ---------------------------------------------------------------------------

    def honest(self, group, who, offset, family, given, ip, agent, birth):
        from nameko.standalone.rpc import ClusterRpcProxy

        self.at(offset)
        email = f"{who}.{uuid.uuid4().hex[:6]}@example.org"
        with ClusterRpcProxy({"AMQP_URI": self.env["AMQP_URI"]}, timeout=30) as rpc:
            for _ in range(3):
                slots = self.page_slots(rpc)
                if not slots:
                    return
                booked = self.book(group, random.choice(slots)["id"], family, given, email, ip,
                                   agent, birth)
                if booked:
                    time.sleep(random.uniform(1, 4))  # opens the e-mail, presses the button
                    self.confirm_by_button(booked, ip, agent)
                    return
                time.sleep(random.uniform(0.5, 2))

    def one_email(self, names, people, offset):
        self.at(offset)
        seller = f"rdv.express.{uuid.uuid4().hex[:4]}@gmail.com"
        slots = self.json_slots()
        made = [self.book("one_email", random.choice(slots)["id"], f, g, seller, "198.18.0.9",
                          DESKTOP, f"19{70 + i}-04-0{1 + i % 9}")
                for i, (f, g) in enumerate(names[:people]) if slots]
        threads = [threading.Thread(target=self.confirm_by_script, args=(b, "198.18.0.9", DESKTOP))
                   for b in made if b]
        for t in threads:  # all at once: some slip past the up-front check, M3 is the net
            t.start()
        for t in threads:
            t.join()

    def placeholder(self, count, offset):
        self.at(offset)
        for i in range(count):
            slots = self.json_slots()
            if not slots:
                return
            family, given = PLACEHOLDERS[i % len(PLACEHOLDERS)]
            booked = self.book("placeholder", random.choice(slots)["id"], family, given,
                               f"holder{i}.{uuid.uuid4().hex[:4]}@example.org",
                               f"198.18.1.{i + 1}", DESKTOP, "1980-01-01")
            if booked:
                self.confirm_by_script(booked, f"198.18.1.{i + 1}", DESKTOP)

    def cybercafe(self, names, offset):
        self.at(offset)
        for i, (family, given) in enumerate(names):
            slots = self.json_slots()
            if not slots:
                return
            booked = self.book("cybercafe", random.choice(slots)["id"], family, given,
                               f"c{i}.{uuid.uuid4().hex[:6]}@example.org", "203.0.113.77",
                               DESKTOP, f"19{75 + i % 20}-0{1 + i % 9}-2{i % 8}")
            if booked:
                self.confirm_by_script(booked, "203.0.113.77", DESKTOP)
            time.sleep(random.uniform(0.2, 1.0))

    def proxies(self, names, target, offset):
        """Keep `target` places, re-booking any place that comes free, until the span ends."""
        self.at(offset)
        held, n = [], 0
        from nameko.standalone.rpc import ClusterRpcProxy

        with ClusterRpcProxy({"AMQP_URI": self.env["AMQP_URI"]}, timeout=30) as rpc:
            while time.monotonic() < self.start + self.span and n < len(names):
                statuses = rpc.booking.statuses(held) if held else {}
                held = [r for r in held if statuses.get(r, {}).get("status") in ("pending", "active")]
                slots = self.json_slots() if len(held) < target else []
                for slot in slots[:target - len(held)]:
                    family, given = names[n]
                    ip = f"100.{64 + n % 50}.{n % 250}.{(n * 7) % 250 + 1}"
                    booked = self.book("proxies", slot["id"], family, given,
                                       f"p{n}.{uuid.uuid4().hex[:6]}@example.org", ip, MOBILE,
                                       f"19{70 + n % 30}-1{n % 3}-1{n % 9}")
                    n += 1
                    if booked:
                        held.append(booked["reference"])
                        self.confirm_by_script(booked, ip, MOBILE)
                time.sleep(1.0)


AVAILABLE = {"sites": [SITE], "times": [{"weekday": d, "from": "08:00", "to": "18:00"} for d in
                                         ("monday", "tuesday", "wednesday", "thursday", "friday")]}


class Requests:
    """--mode requests: who files what, then the draw decides."""

    def __init__(self, release):
        self.release = release
        self.filed = {}  # request reference -> (group, token, headers of the person's device)

    def file(self, group, family, given, email, ip, agent, birth):
        body = {"procedure": PROCEDURE, "family_name": family, "given_names": given,
                "birth_date": birth, "email": email, "availability": AVAILABLE}
        status, answer = self.release.gw.request("POST", "/api/requests", body,
                                                 {"X-Forwarded-For": ip, "User-Agent": agent})
        if status != 201:
            with self.release.lock:
                self.release.refused[(group, answer.get("error") if isinstance(answer, dict) else status)] += 1
            return
        # each person confirms and later accepts from their own device, as they filed
        token = self.release.mailbox.request_token(answer["reference"])
        device = {"X-Forwarded-For": ip, "User-Agent": agent, "X-Request-Token": token}
        self.release.gw.request("POST", f"/api/requests/{answer['reference']}/confirm", None, device)
        with self.release.lock:
            self.filed[answer["reference"]] = (group, token, device)

    def everyone(self, actors, names):
        jobs = [(g, f, gv, f"{who}.{uuid.uuid4().hex[:6]}@example.org", ip, agent, birth)
                for g, who, _, f, gv, ip, agent, birth in actors]
        seller = f"rdv.express.{uuid.uuid4().hex[:4]}@gmail.com"
        jobs += [("one_email", f, g, seller, "198.18.0.9", DESKTOP, f"19{70 + i}-04-0{1 + i % 9}")
                 for i, (f, g) in enumerate(names[-10:][:6])]
        jobs += [("placeholder", f, g, f"holder{i}.{uuid.uuid4().hex[:4]}@example.org",
                  f"198.18.1.{i + 1}", DESKTOP, "1980-01-01") for i, (f, g) in enumerate(PLACEHOLDERS[:6])]
        jobs += [("cybercafe", f, g, f"c{i}.{uuid.uuid4().hex[:6]}@example.org", "203.0.113.77",
                  DESKTOP, f"19{75 + i % 20}-0{1 + i % 9}-2{i % 8}") for i, (f, g) in enumerate(names[-30:-10])]
        jobs += [("proxies", f, g, f"p{n}.{uuid.uuid4().hex[:6]}@example.org",
                  f"100.{64 + n % 50}.{n % 250}.{(n * 7) % 250 + 1}", MOBILE, f"19{70 + n % 30}-1{n % 3}-1{n % 9}")
                 for n, (f, g) in enumerate(names[-90:-30])]
        random.shuffle(jobs)  # arrival order does not matter here: the draw decides
        threads = [threading.Thread(target=self.file, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def accept_all(self, until):
        """Every offered request accepts, until nothing new is offered for a few seconds."""
        done, quiet = set(), time.monotonic()
        while time.monotonic() < until and time.monotonic() - quiet < 15:
            for ref, (group, _, device) in list(self.filed.items()):
                if ref in done:
                    continue
                status, answer = self.release.gw.request("GET", f"/api/requests/{ref}", None, device)
                if status == 200 and answer["state"] == "offered":
                    status, answer = self.release.gw.request(
                        "POST", f"/api/requests/{ref}/accept", None, device)
                    if status == 200:
                        done.add(ref)
                        quiet = time.monotonic()
                        booking = answer["booking"]
                        with self.release.lock:
                            self.release.booked[booking["reference"]] = group
                            self.release.slot_of[booking["reference"]] = booking["slot"]["id"]
            time.sleep(1.0)


def start_system(work, span, mode="open"):
    vhost = f"bench_fair_{uuid.uuid4().hex[:8]}"
    requests.put(f"{API}/vhosts/{vhost}", timeout=5).raise_for_status()
    requests.put(f"{API}/permissions/{vhost}/guest",
                 json={"configure": ".*", "write": ".*", "read": ".*"}, timeout=5).raise_for_status()
    procs = []
    mongo_uri = os.environ.get("MONGO_URI")
    if not mongo_uri:
        mongo, mongo_uri = embedded_mongo.start(work / "mongo", free_port())
        procs.append(mongo)
    port = free_port()
    env = dict(os.environ, AMQP_URI=f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}",
               MONGO_URI=mongo_uri, MONGO_DB_PREFIX=f"fair{uuid.uuid4().hex[:6]}_",
               WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
               LOG_LEVEL="WARNING", RPC_TIMEOUT="10", MAX_WORKERS="40", **throwaway_secrets())
    for name in ("slots", "booking", "fraud", "public_gateway") + (
            ("requests",) if mode == "requests" else ()):
        procs.append(run.start_service(name, env, work / f"{name}.log"))
    run.wait_for_http(f"http://127.0.0.1:{port}/health", procs=procs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # fraud listens before the release starts
        queues = requests.get(f"{API}/queues/{vhost}", timeout=5).json()
        if {"rpc-slots", "rpc-booking", "evt-booking-booking_confirmed--fraud.on_booking_confirmed"} <= {
                q["name"] for q in queues if q.get("consumers", 0) > 0}:
            break
        time.sleep(0.3)
    return vhost, env, port, procs


def release_day():
    day = date.today() + timedelta(days=14)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=12, help="slots in the release")
    parser.add_argument("--desks", type=int, default=3, help="places per slot")
    parser.add_argument("--honest-factor", type=float, default=2.5, help="honest applicants per place")
    parser.add_argument("--span", type=float, default=30.0, help="seconds honest applicants arrive over")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds left to fraud after the span")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mode", choices=("open", "requests"), default="open",
                        help="open: today's booking; requests: allocated by draw (issue 12)")
    args = parser.parse_args()
    if args.seed is not None:
        random.seed(args.seed)

    from nameko.standalone.rpc import ClusterRpcProxy

    work = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    vhost, env, port, procs = start_system(work, args.span, args.mode)
    try:
        day = release_day()
        minutes = 10
        end = 9 * 60 + args.slots * minutes
        if args.mode == "requests":
            return run_requests_mode(args, env, port, day, end)
        with ClusterRpcProxy({"AMQP_URI": env["AMQP_URI"]}, timeout=60) as rpc:
            rpc.slots.create_from_plan({
                "site": SITE, "procedure": PROCEDURE, "from": day, "to": day,
                "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "hours": [f"09:00-{end // 60:02d}:{end % 60:02d}"], "slot_minutes": minutes,
                # the release itself: open at once (plans are scheduled by default since M1)
                "desks": args.desks}, release="now")
            everything = rpc.slots.list_open(PROCEDURE, day, day, 1, 200, include_decoys=True)["slots"]
        decoys = {s["id"] for s in everything if s["decoy"]}
        places = sum(s["capacity"] for s in everything if not s["decoy"])
        release = Release(env, Gateway(port), args.span, day, decoys)
        names = real_names()
        honest_n = int(args.honest_factor * places + 0.999)
        carrier_n, association_n = max(2, honest_n // 6), max(2, honest_n // 10)
        own_n = honest_n - carrier_n - association_n

        actors = []
        pick = iter(names)
        for i in range(own_n):
            family, given = next(pick)
            actors.append(("own", f"own{i}", random.uniform(0, args.span), family, given,
                           f"192.0.{i // 200 + 2}.{i % 200 + 1}", random.choice([MOBILE, DESKTOP]),
                           f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}"))
        for i in range(carrier_n):
            family, given = next(pick)
            actors.append(("carrier", f"carrier{i}", random.uniform(0, args.span), family, given,
                           "100.64.12.34", MOBILE, f"19{65 + i % 35}-0{1 + i % 9}-0{1 + i % 9}"))
        step = args.span / (association_n + 1)
        for i in range(association_n):  # one after another, from the office, a few seconds apart
            family, given = next(pick)
            actors.append(("association", f"assoc{i}", 1 + i * step, family, given,
                           "198.51.100.40", DESKTOP, f"19{55 + i % 40}-1{i % 3}-2{i % 8}"))
        traffickers = [
            (release.one_email, (names[-10:], 6, 0.2)),
            (release.placeholder, (6, 0.3)),
            (release.cybercafe, (names[-30:-10], 0.1)),
            (release.proxies, (names[-90:-30], 10, 0.0)),
        ]
        threads = [threading.Thread(target=release.honest, args=actor) for actor in actors]
        threads += [threading.Thread(target=fn, args=a) for fn, a in traffickers]
        steal = CpuSteal()
        release.start = time.monotonic() + 1.0
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - release.start
        time.sleep(args.settle)
        stolen = steal.percent()

        with ClusterRpcProxy({"AMQP_URI": env["AMQP_URI"]}, timeout=60) as rpc:
            refs = list(release.booked)
            statuses = {}
            for i in range(0, len(refs), 500):
                statuses.update(rpc.booking.statuses(refs[i:i + 500]))
            in_review = {r["id"] for r in rpc.fraud.review_queue("open", 500)}
            cases = rpc.fraud.cases("open", 500)
        report(release, statuses, in_review, cases, release.slot_of, decoys, places, honest_n,
               {"own": own_n, "carrier": carrier_n, "association": association_n},
               elapsed, stolen, args)
    finally:
        run.stop_all(procs)
        requests.delete(f"{API}/vhosts/{vhost}", timeout=5)


def honest_actors(names, places, args):
    honest_n = int(args.honest_factor * places + 0.999)
    carrier_n, association_n = max(2, honest_n // 6), max(2, honest_n // 10)
    own_n = honest_n - carrier_n - association_n
    pick, actors = iter(names), []
    for i in range(own_n):
        family, given = next(pick)
        actors.append(("own", f"own{i}", 0, family, given, f"192.0.{i // 200 + 2}.{i % 200 + 1}",
                       random.choice([MOBILE, DESKTOP]), f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}"))
    for i in range(carrier_n):
        family, given = next(pick)
        actors.append(("carrier", f"carrier{i}", 0, family, given, "100.64.12.34", MOBILE,
                       f"19{65 + i % 35}-0{1 + i % 9}-0{1 + i % 9}"))
    for i in range(association_n):
        family, given = next(pick)
        actors.append(("association", f"assoc{i}", 0, family, given, "198.51.100.40", DESKTOP,
                       f"19{55 + i % 40}-1{i % 3}-2{i % 8}"))
    return actors, honest_n, {"own": own_n, "carrier": carrier_n, "association": association_n}


def run_requests_mode(args, env, port, day, end):
    """Requests filed and confirmed first, then the release, allocated; offers accepted."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy({"AMQP_URI": env["AMQP_URI"]}, timeout=60) as rpc:
        rpc.requests.set_mode(PROCEDURE, "requests", by="bench")
        release = Release(env, Gateway(port), args.span, day, set())
        names = real_names()
        places = args.slots * args.desks
        actors, honest_n, sizes = honest_actors(names, places, args)
        steal = CpuSteal()
        release.start = time.monotonic()
        filing = Requests(release)
        filing.everyone(actors, names)
        rpc.slots.create_from_plan({
            "site": SITE, "procedure": PROCEDURE, "from": day, "to": day,
            "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "hours": [f"09:00-{end // 60:02d}:{end % 60:02d}"], "slot_minutes": 10,
            "desks": args.desks})
        for batch in rpc.slots.schedule_for(procedure=PROCEDURE)["batches"]:
            try:
                rpc.slots.reschedule(batch["id"], time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
            except Exception:  # released already
                pass
        filing.accept_all(time.monotonic() + args.span + 60)
        elapsed = time.monotonic() - release.start
        time.sleep(args.settle)
        stolen = steal.percent()
        refs = list(release.booked)
        statuses = rpc.booking.statuses(refs) if refs else {}
        in_review = {r["id"] for r in rpc.fraud.review_queue("open", 500)}
        cases = rpc.fraud.cases("open", 500)
        everything = rpc.slots.list_open(PROCEDURE, day, day, 1, 200, include_decoys=True,
                                         for_allocation=True)["slots"]
    decoys = {s["id"] for s in everything if s["decoy"]}
    filed = Counter(group for group, _, _ in filing.filed.values())
    print(f"mode requests: confirmed requests per group {dict(filed)}")
    report(release, statuses, in_review, cases, release.slot_of, decoys, places, honest_n, sizes,
           elapsed, stolen, args)


def report(release, statuses, in_review, cases, slot_of, decoys, places, honest_n, sizes,
           elapsed, stolen, args):
    held = {ref for ref, s in statuses.items() if s["status"] in ("pending", "active")}
    real_held = {ref for ref in held if slot_of.get(ref) not in decoys}
    by_group = defaultdict(list)
    for ref, group in release.booked.items():
        by_group[group].append(ref)
    print(f"release: {args.slots} slots x {args.desks} desks = {places} places (+{len(decoys)} "
          f"decoy slot(s)); {honest_n} honest applicants over {args.span:.0f} s; "
          f"arrivals took {elapsed:.1f} s; fraud given {args.settle:.0f} s more")
    print(f"CPU steal {stolen:.1f} % (a machine shared with other engineers' test runs)")
    print()
    print(f"{'group':12s} {'people':>6s} {'bookings':>8s} {'hold place':>10s} {'unconfirmed':>11s} "
          f"{'in review':>9s} {'cancelled':>9s}  cancel reasons / refusals")
    honest_cancelled, honest_held = 0, 0
    for group in HONEST_GROUPS + TRAFFICKER_GROUPS:
        refs = by_group.get(group, [])
        holding = [r for r in refs if r in real_held]
        cancelled = [r for r in refs if statuses.get(r, {}).get("status") == "cancelled"]
        reasons = Counter(statuses[r]["cancel_reason"] for r in cancelled)
        refusals = Counter({e: n for (g, e), n in release.refused.items() if g == group})
        people = sizes.get(group, "")
        if group in HONEST_GROUPS:
            honest_cancelled += len(cancelled)
            honest_held += len(holding)
        unconfirmed = [r for r in holding if statuses[r]["status"] == "pending"]
        print(f"{group:12s} {people!s:>6s} {len(refs):8d} {len(holding):10d} {len(unconfirmed):11d} "
              f"{len([r for r in holding if r in in_review]):9d} {len(cancelled):9d}  "
              f"{dict(reasons)} / {dict(refusals)}")
    trafficker_refs = [r for g in TRAFFICKER_GROUPS for r in by_group.get(g, [])]
    print()
    print(f"places held at the end        {len(real_held)} of {places} ({sum(statuses[r]['status'] == 'pending' for r in real_held)} "
          f"by unconfirmed bookings: released after BOOKING_CONFIRM_MINUTES)")
    print(f"honest share of held places   {100.0 * honest_held / max(1, len(real_held)):.1f} %"
          f"  ({honest_held} places; {honest_held} of {honest_n} honest applicants got one)")
    print(f"honest applicants cancelled   {honest_cancelled}  (must be 0)")
    print(f"trafficker bookings           {len(trafficker_refs)}: cancelled "
          f"{sum(statuses.get(r, {}).get('status') == 'cancelled' for r in trafficker_refs)}, "
          f"still held {sum(r in real_held for r in trafficker_refs)} "
          f"(of which in a review case {sum(r in real_held and r in in_review for r in trafficker_refs)})")
    honest_in_review = sum(r in in_review for g in HONEST_GROUPS for r in by_group.get(g, []))
    print(f"review cases open             {len(cases)} ({sum(len(c['bookings']) for c in cases)} "
          f"bookings, {honest_in_review} of them honest)")
    on_decoys = [r for r in release.booked if slot_of.get(r) in decoys]
    print(f"bookings on decoy slots       {len(on_decoys)} (still held: "
          f"{sum(r in held for r in on_decoys)}; honest: "
          f"{sum(release.booked[r] in HONEST_GROUPS for r in on_decoys)})")


if __name__ == "__main__":
    main()
