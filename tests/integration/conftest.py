"""The counter as staff use it: slots, booking, notify and the admin gateway on a real bus,
staff accounts made through the admin store, and clocks the tests set."""
import functools
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.admin.accounts import hasher, new_account
from gateway.admin.service import AdminGateway
from gateway.admin.store import AdminStore
from services.booking.service import BookingService
from services.common.timeutil import PARIS
from services.notify.schedule import ScanSchedule
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import STAFF_PASSWORD_COSTS, free_port
from tests.helpers import Calls, MailSink, applicant, plan, wait_until

PASSWORD = "correct horse battery staple"
STAFF = {"agent": ("agent", "montpellier"), "beziers": ("agent", "beziers"),
         "chief": ("supervisor", "montpellier")}


@pytest.fixture
def notify_deliveries():
    """Each event delivery notify has taken through its inbox, copies included."""
    with Calls(NotifyService, "take_event") as calls:
        yield calls


@pytest.fixture
def notify_passes():
    """Each look of a notify process's delivery timer at its outbox."""
    with Calls(ScanSchedule, "begin_pass") as calls:
        yield calls


def notify_outbox(config):
    with ClusterRpcProxy(config, timeout=10) as rpc:
        return rpc.notify.outbox_status()


def timers_looked(notify_passes, processes=1):
    """Each of `processes` delivery timers has looked at the outbox twice from now: the first
    look began after this call, the second once the first had ended."""
    notify_passes.wait_for(2, since=notify_passes.mark(), match=lambda args, began: began,
                           instances=processes)


def nothing_left_to_send(config, notify_deliveries, notify_passes, delivered, processes=1):
    """Nothing more can be mailed, proven rather than waited out: notify has taken all
    `delivered` event deliveries (a copy handled again would show here), nothing is left to
    send in its outbox, and its delivery timers have looked at it since."""
    notify_deliveries.wait_for(delivered)
    waiting = ("pending", "in_progress", "retrying")
    assert wait_until(lambda: not any(notify_outbox(config)[s] for s in waiting), timeout=15), \
        notify_outbox(config)
    timers_looked(notify_passes, processes)


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


@functools.lru_cache(maxsize=None)
def staff_account(username):
    """The account as the accounts code makes it, once per test session, hashed with the
    tests' argon2 parameters (those of `config`: no re-hash at each login)."""
    role, site = STAFF[username]
    return new_account(username, PASSWORD, role, site, 0.0, hasher(STAFF_PASSWORD_COSTS))


def add_staff(mongo):
    store = AdminStore(mongo("admin"))
    for username in STAFF:
        store.create_account(dict(staff_account(username), created_ts=time.time()))


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
