"""Booking service: bookings, the counter and M7 attempts, one mixin each (bookings.py,
counter.py, attempts.py); here the dependencies they share, the settings, the outbox's routes,
health and figures."""
import logging
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

# mixins with entrypoints, referenced through their modules: imported by name, `nameko run`
# would take each for a service of its own (tests/test_deploy.py)
from services.booking import attempts, bookings, counter, unconfirmed
from services.booking import figures as booking_figures
from services.booking.store import BookingStore
from services.common import health, signing
from services.common.clock import Clock
from services.common.errors import EXPECTED
from services.common.logs import CallIdLogging
from services.common.lease import InstanceId
from services.common.mongo import MongoStore
from services.common.outbox import dispatched
from services.common import relay
from services.common.rpc import BoundedRpcProxy, RequestDeadline, rpc
from services.common.reference_data import PROCEDURES
from services.common import retention
from services.common.schemas import FiguresSchema, validated
from services.common.settings import retention_days, setting
from services.common.tokens import Tokens
from services.common.timers import config_timer
from services.common.timeutil import utcnow

log = logging.getLogger(__name__)

FIGURES = FiguresSchema()


class ConvocationKey(DependencyProvider):
    """The Ed25519 key that signs convocations; the service refuses to start without one."""

    def setup(self):
        try:
            self.key = signing.load_private_key(self.container.config.get("CONVOCATION_SIGNING_KEY"))
        except ValueError as exc:
            raise ConfigurationError(
                f"CONVOCATION_SIGNING_KEY must be an Ed25519 private key (base64 or PEM): {exc}")
        self.public_key = self.key.public_key()

    def get_dependency(self, worker_ctx):
        return self


class AttestationKey(DependencyProvider):
    """The Ed25519 key that signs attestations (M7); the service refuses to start without it."""

    def setup(self):
        try:
            self.key = signing.load_private_key(self.container.config.get("ATTESTATION_SIGNING_KEY"))
        except ValueError as exc:
            raise ConfigurationError(
                f"ATTESTATION_SIGNING_KEY must be an Ed25519 private key (PEM or base64): {exc}")

    def get_dependency(self, worker_ctx):
        return self.key


class UnconfirmedBounds(DependencyProvider):
    """The UNCONFIRMED_* settings (services/booking/unconfirmed.py), read once."""

    def setup(self):
        self.bounds = unconfirmed.Bounds.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.bounds


class BookingService(bookings.Bookings, counter.Counter, attempts.Attempts,
                     relay.OutboxRelay):
    name = "booking"

    store = MongoStore("booking", BookingStore)
    slots = BoundedRpcProxy("slots")
    # giving a place back is not bound by the deadline of the request that gave up on it
    slots_cleanup = BoundedRpcProxy("slots", inherit_deadline=False)
    dispatch = EventDispatcher()
    tokens = Tokens()
    convocation_key = ConvocationKey()
    clock = Clock()
    config = Config()
    # refuses to start with a period below the floor (erasure cannot be undone)
    retention_periods = retention.RetentionPeriods("BOOKING_RETENTION_DAYS")
    instance = InstanceId()
    deadline = RequestDeadline()
    attestation_key = AttestationKey()
    log_context = CallIdLogging()
    unconfirmed_bounds = UnconfirmedBounds()

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, and events not yet announced (services/common/health.py)."""
        def backlog():
            self.store.ping()
            return {"outbox": dict(health.outbox_backlog(self.store.outbox),
                                   **health.outbox_backlog(self.store.attempt_outbox))}
        return health.report(self.name, backlog)

    @rpc(expected_exceptions=EXPECTED)
    def figures(self, days=56):
        """Per procedure over the last `days`: bookings, median wait until the appointment
        (overall and by week), cancellations by reason, failed attempts recorded (M7)
        (services/booking/figures.py)."""
        args = validated(FIGURES, days=days)
        since = utcnow() - timedelta(days=args["days"])
        found = self.store.created_since(since, booking_figures.FIELDS)
        attempts = self.store.attempts_since(since.timestamp())
        return {"days": args["days"],
                "procedures": booking_figures.figures(found, PROCEDURES, attempts)}

    @config_timer("RETENTION_TIMER_SECONDS")
    def erase_expired(self):
        """Erase who the bookings were for BOOKING_RETENTION_DAYS after their appointment day,
        and who recorded attempts that long after (their attestations' records deleted), and
        delete the counters of unconfirmed bookings (keyed by a network address, a mail
        domain) idle that long: services/common/retention.py. One instance per pass (a lease), bounded batches."""
        return retention.run_pass(self.store.leases, "retention", self.instance, self.config,
                                  self._erase)

    def _erase(self, now_ts, limit):
        days = retention_days(self.config, "BOOKING_RETENTION_DAYS")
        now = self.clock.now()
        # the appointment's day ended, and `days` more
        before = retention.days_after_day(now, days)
        before_ts = retention.cutoff_ts(now.timestamp(), days)
        return {"bookings": self.store.erase_bookings(before, now_ts, limit),
                "attempts": self.store.erase_attempts(before_ts, now_ts, limit),
                "attestations": self.store.delete_attestations(before_ts, limit),
                # counters of unconfirmed bookings keyed by a network address or a mail
                # domain, counting nothing for the period
                "claims": self.store.claims.delete_idle(before_ts, limit)}

    def outbox_routes(self):
        """What the relay (services/common/relay.py) sends when a dispatch did not happen; a
        cancellation is finished there too (its place given back, then announced)."""
        outbox, attempts = self.store.outbox, self.store.attempt_outbox
        return [
            (outbox, "created", lambda b: self._announce_created(
                b, self.tokens.token_for(b["_id"], b["token_salt"]))),
            (outbox, "confirmed", self._announce_confirmed),
            (outbox, "cancelled", self._finish_cancel),
            (outbox, "checked_in", self._announce_checked_in),
            (outbox, "reminder", self._announce_reminder),
            (outbox, "restored", self._announce_restored),
            (attempts, "recorded", lambda a: self._announce_attempt(
                a, self.tokens.token_for(a["_id"], a["token_salt"]))),
        ]

    # -- internals ---------------------------------------------------------------------------

    def _grace(self):
        return setting(self.config, "OUTBOX_GRACE_SECONDS")

    def _confirm_minutes(self):
        return setting(self.config, "BOOKING_CONFIRM_MINUTES")

    def _dispatched(self, reference, event_type, payload):
        return dispatched(self.dispatch, event_type, payload, reference)

