"""The `health` RPC every service answers: its store reachable, and its own backlog.

One shape for all (gateways turn it into /ready and Prometheus gauges, the staff monitoring
page shows it): {"service", "status": "ok" | "unavailable", "store": "ok" | "unreachable",
"backlog": {...}} where the backlog may hold "outbox" ({kind: {state: n}}), "inbox"
({state: n}), "inbox_by_type" ([{event_type, state, count}]), "mail" ({state: n}) and
"review_cases_open" (n). States are services/common/delivery.py's.
"""
import logging

from pymongo.errors import PyMongoError

from services.common.delivery import count_states, count_states_by

log = logging.getLogger(__name__)


def outbox_backlog(outbox):
    return {kind: count_states(outbox.collection, field=f"outbox.{kind}.state")
            for kind in outbox.kinds}


def inbox_backlog(inbox):
    return {"inbox": count_states(inbox.events),
            "inbox_by_type": count_states_by(inbox.events, "event_type")}


def report(service, backlog):
    """The health answer; `backlog()` reads the store (its failure means the store is down)."""
    try:
        return {"service": service, "status": "ok", "store": "ok", "backlog": backlog()}
    except PyMongoError as exc:
        log.warning("health: the %s store did not answer: %s", service, type(exc).__name__)
        return {"service": service, "status": "unavailable", "store": "unreachable",
                "backlog": {}}
