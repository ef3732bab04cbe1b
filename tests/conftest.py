"""Shared fixtures: a real RabbitMQ vhost per test (nameko's rabbit_config), the embedded
MongoDB stand-in for the session (or MONGO_URI), a database prefix per test, a bus listener."""
import json
import os
import socket
import uuid
from pathlib import Path

import pytest
import requests

from services.common.signing import new_private_key_text
from tests.helpers import BusListener

TOKEN_SECRET = "test-only-secret-" + uuid.uuid4().hex
REQUEST_TOKEN_SECRET = "test-only-request-secret-" + uuid.uuid4().hex
REGISTER_TOKEN_SECRET = "test-only-register-secret-" + uuid.uuid4().hex
SLOT_ID_SECRET = "test-only-slot-id-secret-" + uuid.uuid4().hex
ADMIN_SECRET = "test-only-admin-secret-" + uuid.uuid4().hex
# a fresh Ed25519 key per test session: convocations signed in one run verify only in that run
CONVOCATION_KEY = new_private_key_text()
ATTESTATION_KEY = new_private_key_text()
FORM_SECRET = "test-only-form-secret-" + uuid.uuid4().hex
# argon2's cheapest sound parameters (those of partners' keys, services/requests/quota.py)
STAFF_PASSWORD_COSTS = {"ADMIN_PASSWORD_TIME_COST": 1, "ADMIN_PASSWORD_MEMORY_KIB": 8192,
                        "ADMIN_PASSWORD_PARALLELISM": 1}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    from deploy import embedded_mongo

    proc, uri = embedded_mongo.start(tmp_path_factory.mktemp("mongo"), free_port())
    yield uri
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def db_prefix():
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def web_port():
    return free_port()


@pytest.fixture
def config(rabbit_config, mongo_uri, db_prefix, web_port):
    """Service configuration for one test: its own vhost, databases and web port."""
    return dict(
        rabbit_config,
        MONGO_URI=mongo_uri,
        MONGO_DB_PREFIX=db_prefix,
        WEB_SERVER_ADDRESS=f"127.0.0.1:{web_port}",
        BOOKING_TOKEN_SECRET=TOKEN_SECRET,
        REQUEST_TOKEN_SECRET=REQUEST_TOKEN_SECRET,
        SLOT_ID_SECRET=SLOT_ID_SECRET,
        CONVOCATION_SIGNING_KEY=CONVOCATION_KEY,
        ADMIN_SECRET_KEY=ADMIN_SECRET,
        ATTESTATION_SIGNING_KEY=ATTESTATION_KEY,
        PUBLIC_FORM_SECRET=FORM_SECRET,
        RPC_TIMEOUT=3,
        OUTBOX_GRACE_SECONDS=1,
        OUTBOX_RELAY_SECONDS=0.5,
        RELEASE_TIMER_SECONDS=0.3,
        # tests look at listings right after a change; the memory has tests of its own
        SLOT_VIEW_SECONDS=0,
        TRUSTED_PROXIES="127.0.0.1,::1",
        max_workers=30,
        # decoys change every count of a plan: the tests about them ask for them
        SLOTS_DECOY_SHARE=0,
        # many tests book more than these bounds allow, all from 127.0.0.1 at example.org:
        # the tests about them ask for them (tests/integration/test_unconfirmed_bounds.py)
        UNCONFIRMED_PER_CLIENT=0,
        UNCONFIRMED_PER_DOMAIN=0,
        UNCONFIRMED_RELEASE_SHARE=1,
        # requests are the default way in (issue 24); most tests exercise open booking
        # directly, so they ask for it here, and the tests about requests switch to them
        PROCEDURE_MODE_DEFAULT="open",
        REGISTER_TOKEN_SECRET=REGISTER_TOKEN_SECRET,
        # renewals filed in other tests are not in any register: the register's tests ask for
        # the check (tests/integration/test_register.py)
        REGISTER_CHECKED_PROCEDURES="none",
        # nor are first applications' visas: the visas' tests ask for the check
        VISA_CHECKED_PROCEDURES="none",
        # staff log in hundreds of times: argon2 at its production cost (0.2 s of CPU each)
        # would be a large share of the suite. tests/integration/test_admin_accounts.py
        # checks the defaults and the re-hash to them
        **STAFF_PASSWORD_COSTS,
    )


@pytest.fixture
def mongo(mongo_uri, db_prefix):
    """A pymongo client and the test's database prefix, for looking at what services stored."""
    from services.common.mongo import connect

    client = connect(mongo_uri)
    yield lambda name: client[f"{db_prefix}{name}"]
    client.close()


@pytest.fixture
def bus(config):
    """Listen to events on the test's vhost: bus('booking', 'booking_created') -> listener."""
    listeners = []

    def listen(service, event_type="#"):
        listener = BusListener(config["AMQP_URI"], service, event_type)
        listeners.append(listener)
        return listener

    yield listen
    for listener in listeners:
        listener.close()


@pytest.fixture
def http(web_port):
    """A requests session against the gateway under test (nameko's web_session needs Werkzeug<3)."""

    class Session(requests.Session):
        base = f"http://127.0.0.1:{web_port}"

        def request(self, method, url, *args, **kwargs):
            kwargs.setdefault("timeout", 30)
            return super().request(method, self.base + url, *args, **kwargs)

    with Session() as session:
        yield session


# Which shard of `make test` (tests/parallel.py) runs a file: a whole file goes to one shard,
# the heaviest files first, each to the shard with the least load so far. A file weighs its
# measured seconds (tests/durations.json, written by `python -m tests.parallel
# --record-durations`); a file not measured yet, the rough seconds a test of its folder takes
# times its tests.
DURATIONS = Path(__file__).parent / "durations.json"
SHARD_WEIGHTS = {"unit": 0.05, "integration": 3.0, "pages": 4.0, "e2e": 25.0}


def measured_durations(path=DURATIONS):
    """{file: seconds} as recorded, or {} when there is no record (or a broken one)."""
    try:
        recorded = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {f: float(s) for f, s in recorded.items() if isinstance(s, (int, float))} \
        if isinstance(recorded, dict) else {}


def file_weights(test_files, measured):
    """{file: weight} for the collected tests (one file path per test): measured seconds when
    the file has some, else the folder's rough seconds per test times its tests."""
    counts = {}
    for path in test_files:
        counts[path] = counts.get(path, 0) + 1
    weights = {}
    for path, tests in counts.items():
        folder = path.split("/")[1] if path.count("/") > 1 else ""
        weights[path] = measured.get(path, tests * SHARD_WEIGHTS.get(folder, 0.5))
    return weights


def shard_of_files(weights, count):
    """{file: shard}: each file, heaviest first, to the shard with the least weight so far."""
    loads = [0.0] * count
    shards = {}
    for name in sorted(weights, key=lambda f: (-weights[f], f)):
        shard = loads.index(min(loads))
        shards[name] = shard
        loads[shard] += weights[name]
    return shards


def pytest_collection_modifyitems(config, items):
    shard = os.environ.get("TEST_SHARD")
    if not shard:
        return
    index, count = (int(part) for part in shard.split("/"))
    files = [item.nodeid.split("::", 1)[0] for item in items]
    shards = shard_of_files(file_weights(files, measured_durations()), count)
    keep, drop = [], []
    for item, path in zip(items, files):
        (keep if shards[path] == index else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


# `--record-durations` (tests/parallel.py): each shard adds up the seconds of each file's
# tests (set-up, call and tear-down) into TEST_DURATIONS_OUT
_seconds_by_file = {}


def pytest_runtest_logreport(report):
    if os.environ.get("TEST_DURATIONS_OUT"):
        path = report.nodeid.split("::", 1)[0]
        _seconds_by_file[path] = _seconds_by_file.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    out = os.environ.get("TEST_DURATIONS_OUT")
    if out:
        Path(out).write_text(json.dumps(_seconds_by_file))

