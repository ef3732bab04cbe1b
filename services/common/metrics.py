"""Prometheus metrics of a gateway process, served at /metrics in the text format.

Kept here, with the shared helpers: gateway/http.py counts requests and
services/common/rpc.py times RPCs into it (a service's own figures are never served).

One registry per gateway container (never prometheus_client's global one): tests run several
containers in one process, and each gateway reports only what it saw. Labels are bounded and
carry no personal data: the route is the URL rule (`/api/bookings/<reference>`), never the
raw path; RPC labels are service and method names from the code; event types and states come
from the bus contract and services/common/delivery.py.

Counted as they happen: requests by route, method and status, with latency histograms; RPC
calls by service, method and outcome, with latency histograms (services/common/rpc.py records
them). Read at scrape time from the services' `health` RPCs (services/common/health.py), as
gauges: whether each service and its store answer, outbox records by service, kind and state,
inbox events by service, type and state (events handled by type and outcome), mail by state
(done = sent, parked = failed for good), review cases open, holds not yet checked.
"""
from nameko.extensions import DependencyProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from werkzeug.wrappers import Response

UNMATCHED = "<unmatched>"  # the route label of requests no URL rule matched (404, 405)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("http_requests", "HTTP requests answered, by route (URL rule), "
                                "method and status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("http_request_duration_seconds", "Time to answer an HTTP "
                                 "request, by route and method", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rpc = Histogram("rpc_duration_seconds", "Time an RPC took, by service, method and "
                             "outcome (ok, unavailable, error)", ["service", "method", "outcome"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.up = Gauge("service_up", "1 when the service answered its health RPC with its "
                        "store reachable", ["service"], registry=r)
        self.outbox = Gauge("outbox_records", "Events a service announces, by kind and state",
                            ["service", "kind", "state"], registry=r)
        self.inbox = Gauge("inbox_events", "Events a service received, by type and state "
                           "(done: handled; retrying; parked: failed for good)",
                           ["service", "event_type", "state"], registry=r)
        self.mail = Gauge("mail_messages", "Notify's messages by state (done: sent; parked: "
                          "failed for good; pending, retrying: backlog)", ["state"], registry=r)
        self.review = Gauge("fraud_review_cases_open", "Fraud review cases waiting for staff",
                            registry=r)
        self.holds = Gauge("slots_holds_unchecked", "Holds the slots sweeper has not yet "
                           "checked", registry=r)

    def observe_request(self, route, method, status, seconds):
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def observe_rpc(self, service, method, outcome, seconds):
        self.rpc.labels(service, method, outcome).observe(seconds)

    def set_health(self, reports):
        """Gauges from the services' health reports ({service: report})."""
        for gauge in (self.outbox, self.inbox, self.mail):
            gauge.clear()  # a state or service gone since the last scrape is not kept
        for service, report in reports.items():
            self.up.labels(service).set(1 if report.get("status") == "ok" else 0)
            backlog = report.get("backlog") or {}
            for kind, states in (backlog.get("outbox") or {}).items():
                for state, n in states.items():
                    self.outbox.labels(service, kind, state).set(n)
            for row in backlog.get("inbox_by_type") or []:
                self.inbox.labels(service, str(row["event_type"]), row["state"]).set(row["count"])
            for state, n in (backlog.get("mail") or {}).items():
                self.mail.labels(state).set(n)
            if "review_cases_open" in backlog:
                self.review.set(backlog["review_cases_open"])
            if "holds_held" in backlog:
                self.holds.set(backlog["holds_held"])

    def response(self):
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})


def metrics_for(container):
    """The metrics of this container (made on first use, kept on the container itself: they
    live and go with it)."""
    metrics = getattr(container, "gateway_metrics", None)
    if metrics is None:
        metrics = container.gateway_metrics = GatewayMetrics()
    return metrics


class Metrics(DependencyProvider):
    """Inject the container's GatewayMetrics."""

    def get_dependency(self, worker_ctx):
        return metrics_for(self.container)
