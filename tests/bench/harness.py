"""What the benchmarks share: their own system on free ports (`--start`), distinct applicants,
and the confirmation link of a booking's e-mail.

Distinct people matter since the bounds on unconfirmed bookings (per client address, per
mailbox domain, per release), one booking per person and procedure, and the daily mail
ceiling per address: a bench firing many bookings from one address, one domain or one
identity would measure those refusals instead of what an applicant meets.
"""
import os
import random
import sys
import tempfile
import uuid
from datetime import date, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402,F401  (benches import it from here)
from tests.helpers import foreigner_number_of  # noqa: E402

API = "http://guest:guest@127.0.0.1:15672/api"
# public providers left out of the per-domain bound (UNCONFIRMED_LARGE_DOMAINS): where most
# applicants' mailboxes are
LARGE_PROVIDERS = ("gmail.com", "orange.fr", "laposte.net", "free.fr", "outlook.fr", "yahoo.fr",
                   "hotmail.fr", "sfr.fr")
# services that own a database, each given a store of its own as `make run` does
STORED = ("slots", "booking", "fraud", "notify", "requests", "register")


def throwaway_secrets(register=False):
    """Every key the services refuse to start without, made fresh for one benchmark run.
    register: a register process runs, so renewals (and first applications, against its
    long-stay visas) are checked against it (the production default); without one, such a
    request would be 503 (the register not answering)."""
    from services.common.signing import new_private_key_text

    return {"BOOKING_TOKEN_SECRET": uuid.uuid4().hex, "REQUEST_TOKEN_SECRET": uuid.uuid4().hex,
            "PUBLIC_FORM_SECRET": uuid.uuid4().hex, "ADMIN_SECRET_KEY": uuid.uuid4().hex,
            "SLOT_ID_SECRET": uuid.uuid4().hex, "REGISTER_TOKEN_SECRET": uuid.uuid4().hex,
            "CONVOCATION_SIGNING_KEY": new_private_key_text(),
            "ATTESTATION_SIGNING_KEY": new_private_key_text(),
            **({} if register else {"REGISTER_CHECKED_PROCEDURES": "none",
                                    "VISA_CHECKED_PROCEDURES": "none"})}


def new_vhost(prefix):
    """A RabbitMQ vhost of the bench's own; (vhost, AMQP URI)."""
    vhost = f"{prefix}_{uuid.uuid4().hex[:8]}"
    requests.put(f"{API}/vhosts/{vhost}", timeout=10).raise_for_status()
    requests.put(f"{API}/permissions/{vhost}/guest", timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    return vhost, f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"


def drop_vhost(vhost):
    requests.delete(f"{API}/vhosts/{vhost}", timeout=10)


class OwnSystem:
    """The services a bench needs as `nameko run` processes (deploy/run.py), on a vhost, stores
    (one per service database, unless MONGO_URI) and a gateway port of their own.

    services: {name: instances}; settings: configuration over the defaults of
    deploy/config.yaml, which the benches otherwise keep (the bounds included).
    """

    def __init__(self, services, name="bench", **settings):
        from deploy import embedded_mongo, run

        self.run = run
        self.vhost, self.amqp_uri = new_vhost(name)
        self.work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs, self.stores, self.uris = [], [], {}
        try:
            shared = os.environ.get("MONGO_URI")
            for db in (s for s in services if s in STORED):
                if shared:
                    self.uris[db] = shared
                else:
                    # dies with the bench, as the services do, however the bench ends
                    proc, self.uris[db] = embedded_mongo.start(self.work / db, free_port(),
                                                               preexec_fn=run.die_with_parent)
                    self.stores.append(proc)
            self.env = dict(os.environ, AMQP_URI=self.amqp_uri, WEB_SERVER_ADDRESS=f"127.0.0.1:{self.port}",
                            MONGO_DB_PREFIX=f"{name}{uuid.uuid4().hex[:6]}_", LOG_LEVEL="WARNING",
                            **throwaway_secrets(register="register" in services))
            self.env.update({key: str(value) for key, value in settings.items()})
            any_store = next(iter(self.uris.values()), "mongodb://127.0.0.1:1")
            for service, instances in services.items():
                for i in range(instances):
                    self.procs.append(run.start_service(
                        service, dict(self.env, MONGO_URI=self.uris.get(service, any_store)),
                        self.work / f"{service}-{i}.log"))
            if "public_gateway" in services:
                run.wait_for_http(f"{self.url}/health", timeout=120, procs=self.procs)
            # "up" is answering an RPC: a release before fraud consumes would go unscreened
            run.wait_for_services([s for s in services if not s.endswith("_gateway")],
                                  self.amqp_uri)
        except BaseException:
            self.stop()
            raise

    def mailbox(self):
        return Mailbox(self.uris.get("booking"), self.uris.get("requests"),
                       self.env["MONGO_DB_PREFIX"], self.env["BOOKING_TOKEN_SECRET"],
                       self.env["REQUEST_TOKEN_SECRET"])

    def pids(self):
        return [str(proc.pid) for proc in self.procs + self.stores]

    def stop(self):
        self.run.stop_all(self.procs)
        self.run.stop_all(self.stores)
        drop_vhost(self.vhost)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_on_system(args, bench, services, name, **settings):
    """bench(args, mailbox, pids) against `make run`'s system (args.url, args.amqp_uri), or with
    args.start against an OwnSystem of `services` (pids: its processes, for their memory)."""
    if not args.start:
        return bench(args, running_mailbox(), None)
    with OwnSystem(services, name=name, **settings) as own:
        args.url, args.amqp_uri = own.url, own.amqp_uri
        return bench(args, own.mailbox(), own.pids())


def running_mailbox():
    """The Mailbox of the system `make run` started: its stores and the secrets under var/."""
    from deploy import run

    env = os.environ
    ports = run.mongo_ports(env)
    uri = env.get("MONGO_URI")
    return Mailbox(uri or f"mongodb://127.0.0.1:{ports['booking']}",
                   uri or f"mongodb://127.0.0.1:{ports['requests']}",
                   env.get("MONGO_DB_PREFIX", ""), run.token_secret(),
                   run.local_secret("REQUEST_TOKEN_SECRET", "request_token_secret"))


class Mailbox:
    """What the e-mails' links carry, without waiting for notify: the tokens as notify writes
    them, from the stored salts and the keys. Everybody reads their own mailbox: honest people,
    and scripts on mailboxes they own."""

    def __init__(self, booking_uri, requests_uri, prefix, booking_secret, request_secret):
        from services.booking.references import confirm_subject
        from services.common.mongo import connect
        from services.common.tokens import TokenSigner

        self.bookings = connect(booking_uri)[prefix + "booking"]["bookings"] if booking_uri else None
        self.requests = connect(requests_uri)[prefix + "requests"]["requests"] if requests_uri else None
        self.booking_signer = TokenSigner(booking_secret)
        self.request_signer = TokenSigner(request_secret)
        self.confirm_subject = confirm_subject

    def booking_confirm_token(self, reference):
        salt = self.bookings.find_one({"_id": reference})["token_salt"]
        return self.booking_signer.token_for(self.confirm_subject(reference), salt)

    def request_token(self, reference):
        salt = self.requests.find_one({"_id": reference})["token_salt"]
        return self.request_signer.token_for(reference, salt)


def real_names(heldout=True):
    """(family, given) of real people, shuffled: the fraud rules leave these names alone."""
    rows = []
    for name in ("real_names.txt",) + (("real_names.heldout.txt",) if heldout else ()):
        for line in (ROOT / "tests" / "data" / name).read_text(encoding="utf-8").splitlines():
            parts = line.split("|")
            if line and not line.startswith("#") and len(parts) == 2 and all(p.strip() for p in parts):
                rows.append((parts[0].strip(), parts[1].strip()))
    random.shuffle(rows)
    return rows


class People:
    """Distinct applicants of one run: person i has a real name, a birth date and a foreigner
    number no other person of the run has, a mailbox of their own at a large provider, and an
    address of their own. New for each run: the stores of `make run` outlive a run, and a
    person who holds a booking for the procedure cannot book it again."""

    def __init__(self, names=None):
        self.names = names or real_names()
        self.run = f"{random.getrandbits(32):08x}"
        self.first_birth = date(1945, 1, 1) + timedelta(days=random.randrange(9000))
        self.net = random.randrange(256)

    def address(self, i):
        return f"10.{self.net}.{i // 250 % 256}.{i % 250 + 1}"

    def identity(self, i):
        family, given = self.names[i % len(self.names)]
        person = {"family_name": family, "given_names": given,
                  "birth_date": (self.first_birth + timedelta(days=i)).isoformat(),
                  "email": f"p{i}.{self.run}@{LARGE_PROVIDERS[i % len(LARGE_PROVIDERS)]}"}
        person["foreigner_number"] = foreigner_number_of(person)
        return person

    def booking(self, i, procedure, slot_id):
        return dict(self.identity(i), procedure=procedure, slot_id=slot_id)
