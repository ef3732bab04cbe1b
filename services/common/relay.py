"""The outbox relay: one per service, declared once (the outbox itself: outbox.py).

A service that announces events through an outbox inherits `OutboxRelay` and lists in
`outbox_routes()` what it relays: (outbox, kind, announce) where `announce(doc)` publishes the
document's event and marks it sent (outbox.py's `announce`). The timer fires every
OUTBOX_RELAY_SECONDS in every instance; one instance at a time passes the lease
(`outbox_relay` in the service's `store.leases`, owned by its `instance`), and each record is
claimed besides (`Outbox.due`), so that a pass overlapping a slow one elsewhere never sends a
record twice. A record whose announcement fails stays pending: its claim runs out and a later
pass tries it again; the others go on.
"""
import logging
import time

from nameko.extensions import DependencyProvider

from services.common.settings import setting
from services.common.timers import config_timer

log = logging.getLogger(__name__)

JOB = "outbox_relay"


class RelayInterval(DependencyProvider):
    """OUTBOX_RELAY_SECONDS, which the relay's lease outlives three times."""

    def setup(self):
        self.seconds = setting(self.container.config, "OUTBOX_RELAY_SECONDS")

    def get_dependency(self, worker_ctx):
        return self.seconds


def relay_pass(leases, owner, interval, routes, clock=time.time):
    """Announce what is due on every route, if this owner holds the lease; records sent, or
    None when another instance holds it."""
    if not leases.acquire(JOB, owner, 3 * interval, clock()):
        return None
    sent = 0
    for outbox, kind, announce in routes:
        for doc in outbox.due(kind, clock()):
            try:
                announce(doc)
                sent += 1
            except Exception:  # this one waits for its claim to run out; the others go on
                log.exception("outbox %s of %s not relayed; a later pass retries", kind,
                              doc.get("_id"))
    return sent


class OutboxRelay:
    """Mixin: the service's one outbox relay. The service has `store` (with `leases`),
    `instance` (services/common/lease.py's InstanceId) and `outbox_routes()`."""

    relay_interval = RelayInterval()

    @config_timer("OUTBOX_RELAY_SECONDS")
    def relay_outbox(self):
        """Send the events whose dispatch did not happen (crash, broker down)."""
        relay_pass(self.store.leases, self.instance, self.relay_interval, self.outbox_routes())

    def outbox_routes(self):
        """[(outbox, kind, announce(doc))]: what this service announces through its outbox."""
        raise NotImplementedError
