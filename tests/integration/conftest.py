"""The counter as staff use it: slots, booking, notify and the admin gateway on a real bus,
staff accounts made through the admin store, and clocks the tests set."""
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.admin.accounts import new_account
from gateway.admin.service import AdminGateway
from gateway.admin.store import AdminStore
from services.booking.service import BookingService
from services.common.timeutil import PARIS
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.helpers import MailSink, applicant, plan

PASSWORD = "correct horse battery staple"
STAFF = {"agent": ("agent", "montpellier"), "beziers": ("agent", "beziers"),
         "chief": ("supervisor", "montpellier")}


class FixedClock:
    """Stands in for services/common/clock.py's SystemClock: now() is whatever the test set."""

    def __init__(self, at=None):
        self.at = at or datetime.now(timezone.utc)

    def now(self):
        return self.at


def paris(day, hour, minute=0):
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=PARIS).astimezone(timezone.utc)


@pytest.fixture
def sink(tmp_path):
    started = MailSink(free_port(), tmp_path / "mail").start()
    yield started
    started.stop()


class Counter:
    def __init__(self, rpc, http, desk_clock, booking_clock, slot):
        self.rpc, self.http = rpc, http
        self.desk_clock, self.booking_clock = desk_clock, booking_clock
        self.slot = slot  # the first free slot; the desk clock stands on its day
        self.day = datetime.fromisoformat(slot["start"]).astimezone(PARIS).date()
        self._emails = 0

    def bearer(self, username):
        answer = self.http.post("/api/login", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def book(self, **overrides):
        """A booking on the counter's slot, and its convocation as the applicant gets it."""
        self._emails += 1
        overrides.setdefault("email", f"applicant{self._emails}@example.org")
        created = self.rpc.booking.create(applicant(self.slot["id"], **overrides), {"ip": "203.0.113.9"})
        # confirmed from its e-mail, as an applicant who comes to the desk has done
        self.rpc.booking.confirm(created["reference"], created["confirm_token"])
        conv = self.rpc.booking.convocation(created["reference"], created["token"])
        return dict(conv, token=created["token"])


@pytest.fixture
def counter_config(config, sink):
    return dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
                NOTIFY_RETRY_BASE_SECONDS=0.2, NOTIFY_RETRY_MAX_SECONDS=1,
                ADMIN_MAX_FAILED_LOGINS=3, ADMIN_LOCKOUT_SECONDS=600,
                WALK_IN_HOURS="08:30-12:00")


def start_counter(container_factory, counter_config, with_notify=True):
    booking_clock, desk_clock = FixedClock(), FixedClock()
    container_factory(SlotsService, counter_config).start()
    booking = container_factory(BookingService, counter_config)
    replace_dependencies(booking, clock=booking_clock)
    booking.start()
    if with_notify:
        container_factory(NotifyService, counter_config).start()
    admin = container_factory(AdminGateway, counter_config)
    replace_dependencies(admin, clock=desk_clock)
    admin.start()
    return booking_clock, desk_clock


def add_staff(mongo):
    store = AdminStore(mongo("admin"))
    for username, (role, site) in STAFF.items():
        store.create_account(new_account(username, PASSWORD, role, site, time.time()))


@pytest.fixture
def counter(container_factory, counter_config, mongo, http):
    booking_clock, desk_clock = start_counter(container_factory, counter_config)
    add_staff(mongo)
    with ClusterRpcProxy(counter_config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=4, days=7, start=date.today() + timedelta(days=1)), release="now")
        today = date.today()
        slot = rpc.slots.list_open("renewal", today.isoformat(),
                                   (today + timedelta(days=10)).isoformat())["slots"][0]
        counter = Counter(rpc, http, desk_clock, booking_clock, slot)
        desk_clock.at = paris(counter.day, 10)
        yield counter
