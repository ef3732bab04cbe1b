"""Shared fixtures: a real RabbitMQ vhost per test (nameko's rabbit_config), the embedded
MongoDB stand-in for the session (or MONGO_URI), a database prefix per test, a bus listener."""
import os
import socket
import uuid

import pytest
import requests

from services.common.signing import new_private_key_text
from tests.helpers import BusListener

TOKEN_SECRET = "test-only-secret-" + uuid.uuid4().hex
REQUEST_TOKEN_SECRET = "test-only-request-secret-" + uuid.uuid4().hex
SLOT_ID_SECRET = "test-only-slot-id-secret-" + uuid.uuid4().hex
ADMIN_SECRET = "test-only-admin-secret-" + uuid.uuid4().hex
# a fresh Ed25519 key per test session: convocations signed in one run verify only in that run
CONVOCATION_KEY = new_private_key_text()
ATTESTATION_KEY = new_private_key_text()
FORM_SECRET = "test-only-form-secret-" + uuid.uuid4().hex


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
        SLOT_LISTING_CACHE_SECONDS=0,
        TRUSTED_PROXIES="127.0.0.1,::1",
        max_workers=30,
        # decoys change every count of a plan: the tests about them ask for them
        SLOTS_DECOY_SHARE=0,
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
