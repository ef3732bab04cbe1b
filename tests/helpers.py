"""Test helpers: a raw listener on the bus, the SMTP sink, and plan/booking/event builders."""
import email
import functools
import hashlib
import json
import mailbox
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from email import policy
from unittest.mock import patch

from kombu import Connection, Exchange, Queue

from services.common import contract


class BusListener:
    """Binds its own queue to a service's event exchange and collects what is published.

    Plain kombu, not nameko: it sees exactly what any other subscriber would see on the bus.
    """

    def __init__(self, amqp_uri, service, event_type="#", exchange=None):
        """exchange: another topic exchange than the service's events (e.g. dead-letters)."""
        self.received = queue.Queue()
        self.amqp_uri = amqp_uri
        self.connection = Connection(amqp_uri)
        exchange = Exchange(exchange or f"{service}.events", type="topic", durable=True)
        # named, so that fenced() can send its marker to it
        self.queue = Queue(f"bus-listener-{uuid.uuid4().hex}", exclusive=True, exchange=exchange,
                           routing_key=event_type, auto_delete=True)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self):
        with self.connection.Consumer(self.queue, callbacks=[self._on_message], accept=["json"]):
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.connection.drain_events(timeout=0.2)
                except (TimeoutError, OSError):
                    continue
                except Exception:
                    if self._stop.is_set():
                        return
                    raise

    def _on_message(self, body, message):
        payload = json.loads(body) if isinstance(body, (str, bytes)) else body
        self.received.put((message.delivery_info["routing_key"], payload))
        message.ack()

    def wait_for(self, predicate=lambda event_type, payload: True, timeout=10):
        """The first (event_type, payload) matching predicate, or AssertionError."""
        seen = []
        try:
            while True:
                event_type, payload = self.received.get(timeout=timeout)
                seen.append(event_type)
                if predicate(event_type, payload):
                    return event_type, payload
        except queue.Empty:
            raise AssertionError(f"no matching event within {timeout} s (saw {seen})")

    def drain(self, settle=1.0):
        """Everything received until nothing more arrives for `settle` seconds."""
        events = []
        try:
            while True:
                events.append(self.received.get(timeout=settle))
        except queue.Empty:
            return events

    def fenced(self, timeout=15):
        """Every (event_type, payload) received up to now, proven rather than waited out.

        A marker sent now to this listener's own queue comes after every message already in
        it, and whatever a service published before this call is already in it (nameko
        publishes with confirms: RabbitMQ confirms once the message is queued). So what
        arrives before the marker is all that was published. Call it once the actor that
        could have published has run (its RPC answered, its timer made a pass since).
        """
        fence = {"fence": uuid.uuid4().hex}
        with Connection(self.amqp_uri) as connection:
            connection.Producer().publish(fence, exchange="", routing_key=self.queue.name,
                                          serializer="json")
        events = []
        try:
            while True:
                event_type, payload = self.received.get(timeout=timeout)
                if event_type == self.queue.name and payload == fence:
                    return events
                events.append((event_type, payload))
        except queue.Empty:
            raise AssertionError(f"the fence did not come back within {timeout} s (saw {events})")

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.connection.release()


def plan(procedure="renewal", desks=3, days=14, weekdays=None, hours=None, site="montpellier",
         slot_minutes=30, start=None):
    first = start or date.today() + timedelta(days=1)
    return {
        "site": site,
        "procedure": procedure,
        "from": first.isoformat(),
        "to": (first + timedelta(days=days - 1)).isoformat(),
        "weekdays": weekdays or ["monday", "tuesday", "wednesday", "thursday", "friday"],
        "hours": hours or ["09:00-12:00"],
        "slot_minutes": slot_minutes,
        "desks": desks,
    }


def scheduled_slot_id(config):
    """The id of a renewal slot at Montpellier that its secret schedule has not released yet
    (40 days ahead: its release is due no sooner than 19 days from now)."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy(config, timeout=20) as rpc:
        created = rpc.slots.create_from_plan(
            plan(desks=1, days=7, start=date.today() + timedelta(days=40)))
        assert created["scheduled"] == created["created"] > 0 and created["open"] == 0
        batch = rpc.slots.schedule_for(plan_id=created["plan_id"], limit=1)["batches"][0]
    return batch["slot_ids"][0]


def applicant(slot_id, procedure="renewal", **overrides):
    request = {
        "procedure": procedure,
        "slot_id": slot_id,
        "family_name": "Benali",
        "given_names": "Yasmine",
        "birth_date": "1988-03-14",
        "email": "yasmine.benali@example.org",
        "phone": "+33 6 12 34 56 78",
    }
    request.update(overrides)
    # one person, one booking per procedure (foreigner number included): each person a number
    # of their own unless the test gives one
    request.setdefault("foreigner_number", foreigner_number_of(request))
    return request


def foreigner_number_of(identity):
    """A 10-digit foreigner number that is the same for one person and differs between people
    (the fixed one when a test gives names that are not text: schema tests)."""
    from services.common.exact_names import person_key

    parts = [identity.get(f) for f in ("family_name", "given_names", "birth_date")]
    if not all(isinstance(p, str) or p is None for p in parts):
        return "0123456789"
    key = person_key(*parts).encode("utf-8", "surrogatepass")
    return str(int(hashlib.sha256(key).hexdigest(), 16) % 10**10).zfill(10)


class MailSink:
    """The project's SMTP sink (deploy/mail_sink.py) as a separate process, and its Maildir."""

    def __init__(self, port, maildir, tempfail=0):
        self.port, self.maildir, self.tempfail = port, maildir, tempfail
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.mail_sink", "--port", str(self.port),
             "--maildir", str(self.maildir), "--tempfail", str(self.tempfail)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tempfail = 0  # only the first start refuses
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mail sink did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def messages(self):
        box = mailbox.Maildir(str(self.maildir), create=False) if self.maildir.exists() else {}
        return [email.message_from_bytes(box.get_bytes(key), policy=policy.default)
                for key in (box.keys() if box else [])]

    def wait_for(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{len(self.messages())} messages, expected {count}")


def confirm_token_of(mongo, reference):
    """The token of a booking's confirmation link, as its e-mail carries it (the booking's
    answer never does): made from the stored salt under the test key."""
    from services.booking.references import confirm_subject
    from services.common.tokens import TokenSigner
    from tests.conftest import TOKEN_SECRET

    salt = mongo("booking")["bookings"].find_one({"_id": reference})["token_salt"]
    return TokenSigner(TOKEN_SECRET).token_for(confirm_subject(reference), salt)


def booking_event(reference="RDV-AB12-CD34", event_id=None, name="booking_created", **overrides):
    """A booking event payload built through the bus contract (services/common/contract.py).

    name: booking_created (default), booking_confirmed or booking_cancelled (give reason=...);
    overrides replace or add fields.
    """
    start = datetime(2027, 3, 4, 8, 30, tzinfo=timezone.utc)
    event = {
        "reference": reference,
        "procedure": "renewal",
        "slot_id": "abc",
        "site": "montpellier",
        "slot_start": start.isoformat().replace("+00:00", "Z"),
        "slot_end": (start + timedelta(minutes=20)).isoformat().replace("+00:00", "Z"),
        "email": "yasmine.benali@example.org",
        "email_normalised": "yasmine.benali@example.org",
        "phone": None,
        "identity": {"family_name": "Benali", "given_names": "Yasmine", "birth_date": "1988-03-14",
                     "foreigner_number": "0123456789"},
    }
    if name == "booking_created":
        event.update(client={"ip": "203.0.113.7", "user_agent": "pytest"}, token="secret-token")
    if name == "booking_confirmed":
        event.update(client={"ip": "203.0.113.7", "user_agent": "pytest"},
                     confirmed_at="2027-02-01T10:00:00Z")
    event.update(overrides)
    occurred_at = event.pop("occurred_at", "2027-02-01T10:00:00Z")
    return contract.build(name, event_id=event_id or str(uuid.uuid4()), occurred_at=occurred_at, **event)


def wait_until(condition, timeout=5.0, step=0.05):
    """True once condition() is true, False if it never was within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


class Calls:
    """Records each call of `owner.name` once it has returned, with its instance, arguments and
    result. Services started by `container_factory` run in the test's own process, so a test
    can wait until the actor that could have acted has run (a timer's pass, an event handled)
    and only then assert that nothing happened: proof, where a fixed sleep is a guess.

        with Calls(ScanSchedule, "begin_pass") as passes: ...

    `process(instance)` says which process a call was made in (`by_instance`): the instance
    itself by default (a dependency provider: one per container); for a service's own method,
    whose instance is new for every worker, e.g. `lambda service: service.instance` (its
    InstanceId).
    """

    def __init__(self, owner, name, process=id):
        self.made = []
        self.process = process
        original = getattr(owner, name)

        # wraps: an entrypoint (a timer's method) keeps its nameko marks when patched before
        # its container starts
        @functools.wraps(original)
        def recorded(instance, *args, **kwargs):
            result = original(instance, *args, **kwargs)
            self.made.append((self.process(instance), args, result))
            return result
        self._patch = patch.object(owner, name, recorded)

    def __enter__(self):
        self._patch.start()
        return self

    def __exit__(self, *exc_info):
        self._patch.stop()

    def mark(self):
        """Where "since" starts: calls recorded from now on."""
        return len(self.made)

    def by_instance(self, since=0, match=lambda args, result: True):
        counts = {}
        for process, args, result in self.made[since:]:
            if match(args, result):
                counts[process] = counts.get(process, 0) + 1
        return counts

    def wait_for(self, times, since=0, match=lambda args, result: True, instances=None,
                 timeout=15):
        """Wait until `times` matching calls were made since `since` in all, or, with
        `instances`, by each of that many distinct instances (one per process of a service)."""
        def enough():
            counts = self.by_instance(since, match)
            if instances is None:
                return sum(counts.values()) >= times
            return sum(1 for n in counts.values() if n >= times) >= instances
        assert wait_until(enough, timeout=timeout), (times, instances, self.by_instance(since, match))
