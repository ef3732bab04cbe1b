"""RPC with a deadline, and lighter messages.

nameko 2.14's RpcProxy waits forever for a reply. A caller that must answer a person (or that
holds a worker a burst needs) bounds the wait. The deadline travels with the request, twice:
- as the queue TTL, so a request still queued when its caller gives up is dropped by the broker;
- as an absolute time in the `x-rpc-deadline` header, because a message already delivered to a
  consumer (prefetched by a process that then stalls) no longer expires by TTL. The consumer
  acks and drops an expired request before doing anything (a reply would reach nobody), and the
  worker of a live one can read its deadline (`RequestDeadline`) before a write that its caller
  must not be surprised by. A call made by such a worker inherits the tighter deadline.
Deadlines are wall-clock epoch seconds: machines that talk over one bus keep their clocks synced.

Requests and replies live for seconds and only matter to a caller still waiting: they are not
persisted, and replies go without publisher confirms (requests keep theirs: nameko detects an
unknown service through them). A reply the broker loses ends its caller's bounded wait in a
503, as a slow service would. Events, which carry the outbox's promises, keep both.
"""
import logging
import time
from contextlib import contextmanager
from functools import partial

import eventlet
from kombu import Connection
from kombu.pools import producers
from nameko import rpc as nameko_rpc
from nameko.amqp import publish as nameko_publish
from nameko.amqp.publish import Publisher
from nameko.constants import (AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, DEFAULT_SERIALIZER,
                              LOGIN_METHOD_CONFIG_KEY, SERIALIZER_CONFIG_KEY)
from nameko.exceptions import ContainerBeingKilled, MalformedRequest, UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy, get_rpc_exchange

from services.common.errors import ServiceUnavailable
from services.common.metrics import metrics_for
from services.common.queues import QueueConsumer, declare_durable
from services.common.settings import setting

log = logging.getLogger(__name__)

TRANSIENT = 1  # AMQP delivery mode: kept in memory only
# absolute deadline of a request (epoch seconds); not a `nameko.` header, so that it is not
# copied into the worker's context data and from there into every event the worker sends
DEADLINE_HEADER = "x-rpc-deadline"


def deadline_of(message):
    """The request's deadline (epoch seconds), or None when its caller set none."""
    try:
        value = (message.headers or {}).get(DEADLINE_HEADER)
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # a malformed header is no reason to refuse the request


_POOL_KEYS = {}


@contextmanager
def _get_producer(amqp_uri, confirms=True, ssl=None, login_method=None, transport_options=None):
    """nameko's get_producer, with the kombu Connection that names the producer pool made once
    per set of arguments: nameko builds one for every message (half a millisecond each, the
    URI parsed again), only to look its pool up; the pool's own connections are unchanged."""
    options = dict(transport_options or nameko_publish.DEFAULT_TRANSPORT_OPTIONS,
                   confirm_publish=confirms)
    key = (amqp_uri, repr(ssl), login_method, repr(sorted(options.items())))
    connection = _POOL_KEYS.get(key)
    if connection is None:
        connection = _POOL_KEYS[key] = Connection(amqp_uri, transport_options=options, ssl=ssl,
                                                  login_method=login_method)
    with producers[connection].acquire(block=True) as producer:
        yield producer


# every publish of the process goes through it: RPC requests and replies, events
nameko_publish.get_producer = _get_producer


class _ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = TRANSIENT


class _Responder(nameko_rpc.Responder):
    publisher_cls = _ReplyPublisher


class _RpcConsumer(nameko_rpc.RpcConsumer):
    queue_consumer = QueueConsumer()  # one per process with the reply listener's and events'

    def setup(self):
        super().setup()
        declare_durable(self.queue, self.container.config)  # a quorum queue (queues.py)

    def handle_message(self, body, message):
        deadline = deadline_of(message)
        if deadline is not None and time.time() >= deadline:
            # the caller has given up (and told its user so): doing the work now would act
            # behind their back. No reply either: nobody waits for it.
            self.queue_consumer.ack_message(message)
            log.info("dropped %s: its caller gave up %.1f s ago",
                     message.delivery_info.get("routing_key"), time.time() - deadline)
            return
        super().handle_message(body, message)

    def handle_result(self, message, result, exc_info):
        # nameko's RpcConsumer.handle_result, with our responder
        config = self.container.config
        responder = _Responder(
            config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class Rpc(nameko_rpc.Rpc):
    rpc_consumer = _RpcConsumer()

    def unpack_message_headers(self, message):
        data = super().unpack_message_headers(message)
        data.pop(DEADLINE_HEADER, None)
        return data

    def handle_message(self, body, message):
        # nameko's Rpc.handle_message, keeping the worker's context so that it knows its deadline
        try:
            args, kwargs = body["args"], body["kwargs"]
        except KeyError:
            raise MalformedRequest("Message missing `args` or `kwargs`")
        self.check_signature(args, kwargs)
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self.handle_result, message)
        try:
            worker_ctx = self.container.spawn_worker(self, args, kwargs, context_data=context_data,
                                                     handle_result=handle_result)
        except ContainerBeingKilled:
            self.rpc_consumer.requeue_message(message)
            return
        # set before the worker's green thread first runs (it runs at our next yield)
        worker_ctx.rpc_deadline = deadline_of(message)


rpc = Rpc.decorator  # use instead of nameko.rpc.rpc


class Deadline:
    """When the caller of the current RPC stops waiting (epoch seconds; None: no deadline)."""

    def __init__(self, at):
        self.at = at

    def remaining(self, now=None):
        if self.at is None:
            return float("inf")
        return self.at - (time.time() if now is None else now)


class RequestDeadline(DependencyProvider):
    """Inject the current request's `Deadline` (always present; unbounded outside RPCs)."""

    def get_dependency(self, worker_ctx):
        return Deadline(getattr(worker_ctx, "rpc_deadline", None))


class _BoundedMethodProxy(MethodProxy):
    def __init__(self, *args, timeout, inherit_deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.inherited = getattr(self.worker_ctx, "rpc_deadline", None) if inherit_deadline else None

    def __call__(self, *args, **kwargs):
        # timed for the caller's /metrics (gateway/metrics.py): service and method names only
        started, outcome = time.perf_counter(), "error"
        try:
            result = self._bounded_call(*args, **kwargs)
            outcome = "ok"
            return result
        except ServiceUnavailable:
            outcome = "unavailable"
            raise
        finally:
            metrics_for(self.worker_ctx.container).observe_rpc(
                self.service_name, self.method_name, outcome, time.perf_counter() - started)

    def _bounded_call(self, *args, **kwargs):
        now = time.time()
        # the tighter of our own bound and the deadline of the request we are working for
        self.deadline = min(now + self.timeout, self.inherited or float("inf"))
        wait = self.deadline - now
        if wait <= 0:
            raise ServiceUnavailable(f"no time left to ask the {self.service_name} service")
        self.publisher.expiration = wait  # kombu takes the per-message TTL in seconds
        try:
            reply = self._call(*args, **kwargs)
        except UnknownService:
            raise ServiceUnavailable(f"the {self.service_name} service is not running")
        except (IOError, OSError) as exc:  # broker unreachable
            raise ServiceUnavailable(f"message bus unavailable: {exc}")
        timer = eventlet.Timeout(max(0.0, self.deadline - time.time()))
        try:
            return reply.result()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self._forget(reply)
            raise ServiceUnavailable(
                f"the {self.service_name} service did not answer in time"
            )
        finally:
            timer.cancel()

    def get_message_headers(self, worker_ctx):
        headers = super().get_message_headers(worker_ctx)
        headers[DEADLINE_HEADER] = self.deadline
        return headers

    def _forget(self, reply):
        # the listener keeps one pending event per call; drop ours so timeouts do not leak
        events = self.reply_listener._reply_events
        for correlation_id, event in list(events.items()):
            if event is reply.reply_event:
                events.pop(correlation_id, None)


class _BoundedServiceProxy(ServiceProxy):
    def __init__(self, *args, timeout, inherit_deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.inherit_deadline = inherit_deadline

    def __getattr__(self, name):
        return _BoundedMethodProxy(
            self.worker_ctx, self.service_name, name, self.reply_listener,
            timeout=self.timeout, inherit_deadline=self.inherit_deadline, **self.options
        )


class _ReplyListener(nameko_rpc.ReplyListener):
    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        # exclusive (so transient): deleted with its connection, or with its node when that
        # node dies, and declared again on the node reconnected to. nameko's durable one
        # would stay bound to a dead node, and every redeclaration refused until it returns.
        self.queue.durable, self.queue.exclusive, self.queue.auto_delete = False, True, True


class BoundedRpcProxy(RpcProxy):
    """RpcProxy whose calls raise ServiceUnavailable after RPC_TIMEOUT seconds (config), or at
    the deadline of the request being worked for, if sooner. `inherit_deadline=False` for
    clean-up calls (giving a place back) that must run even when the caller gave up."""

    rpc_reply_listener = _ReplyListener()

    def __init__(self, target_service, inherit_deadline=True, timeout_key="RPC_TIMEOUT", **options):
        super().__init__(target_service, **options)
        self.inherit_deadline = inherit_deadline
        # another bound than RPC_TIMEOUT: health checks (HEALTH_RPC_TIMEOUT) answer faster
        self.timeout_key = timeout_key

    def setup(self):
        super().setup()
        # read once: every worker of the service gets a proxy of each RpcProxy it declares
        self.timeout = setting(self.container.config, self.timeout_key)
        self.proxy_options = dict(self.options)
        self.proxy_options.setdefault("delivery_mode", TRANSIENT)

    def get_dependency(self, worker_ctx):
        return _BoundedServiceProxy(
            worker_ctx, self.target_service, self.rpc_reply_listener,
            timeout=self.timeout, inherit_deadline=self.inherit_deadline, **self.proxy_options
        )
