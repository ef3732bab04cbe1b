"""Logging filters and the JSON formatter referenced from deploy/config.yaml."""
import json
import logging
import re
import time

import eventlet.corolocal
from nameko.extensions import DependencyProvider
from nameko.timer import Timer

WORKER_LOG = logging.getLogger("worker")


class DropExpectedErrors(logging.Filter):
    """Drop nameko's per-worker record of an *expected* error (slot full, not found...).

    Those are answers, not faults: in a release burst thousands of "slot full" replies would
    each write a traceback in every process they cross. Unexpected errors are still logged.
    """

    def filter(self, record):
        return not (record.name == "nameko.containers"
                    and str(record.msg).startswith("(expected) error handling worker"))


# -- JSON lines, with the nameko call id stack ---------------------------------------------------
#
# One line per record: time, level, logger, message, the service and the call id stack of the
# worker that logged it. nameko carries the stack from a gateway's HTTP worker through every
# RPC and event it causes, so a search for the gateway's call id finds the lines of every
# service that worked for that request. Personal data is kept out of logs by the services'
# own log calls; the formatter also scrubs e-mail addresses and token parameters, as a net.

EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# ?token=..., "token": "...", X-Booking-Token: ..., Authorization: Bearer ..., password=...
SECRET_PARAM = re.compile(
    r"""(?i)((?:x-booking-)?token|password|secret|authorization)(["']?\s*[:=]\s*["']?)"""
    r"""(?:bearer\s+)?[^\s"'&,;)}\]]+""")
_context = eventlet.corolocal.local()


def scrub(text):
    """`text` without e-mail addresses and the values of token/password parameters."""
    text = EMAIL.sub("[email]", text)
    return SECRET_PARAM.sub(r"\1\2[redacted]", text)


def current_call_ids():
    """The call id stack of the worker running in this green thread ([] outside workers)."""
    return getattr(_context, "call_id_stack", None) or []


class JsonFormatter(logging.Formatter):
    def format(self, record):
        message = record.getMessage()
        line = {
            "ts": _iso_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            # the worker lines are made of names and numbers only (CallIdLogging): nothing to
            # scrub on the line written for every call
            "message": message if record.name == "worker" else scrub(message),
        }
        service = getattr(_context, "service", None)
        if service:
            line["service"] = service
        stack = current_call_ids()
        if stack:
            line["call_id"] = stack[-1]
            line["call_id_stack"] = list(stack)
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def _iso_ms(created):
    """datetime.fromtimestamp(created, utc).isoformat(timespec="milliseconds"), cheaper."""
    seconds = int(created)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((created - seconds) * 1000):03d}+00:00")


class CallIdLogging(DependencyProvider):
    """Keeps the current worker's call id stack where JsonFormatter finds it, and writes one
    line per RPC, event or HTTP request handled (timers' ticks are left out: noise), at
    INFO on the `worker` logger (WORKER_LOG_LEVEL in deploy/config.yaml)."""

    def worker_setup(self, worker_ctx):
        _context.call_id_stack = list(worker_ctx.call_id_stack or [])
        _context.service = self.container.service_name
        _context.started = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        if isinstance(worker_ctx.entrypoint, Timer) or not WORKER_LOG.isEnabledFor(logging.INFO):
            return
        outcome = "ok" if exc_info is None else type(exc_info[1]).__name__
        WORKER_LOG.info("%s.%s %s in %.1f ms", self.container.service_name,
                        worker_ctx.entrypoint.method_name, outcome,
                        (time.perf_counter() - getattr(_context, "started", time.perf_counter())) * 1000)

    def worker_teardown(self, worker_ctx):
        _context.call_id_stack = None
        _context.service = None
