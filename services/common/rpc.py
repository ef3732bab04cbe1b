"""RPC with a deadline, and lighter messages.

nameko 2.14's RpcProxy waits forever for a reply. A caller that must answer a person (or that
holds a worker a burst needs) bounds the wait, and the request expires in the queue at the same
deadline so that a service coming back later does not act on a request its caller gave up on.

Requests and replies live for seconds and only matter to a caller still waiting: they are not
persisted, and replies go without publisher confirms (requests keep theirs: nameko detects an
unknown service through them). A reply the broker loses ends its caller's bounded wait in a
503, as a slow service would. Events, which carry the outbox's promises, keep both.
"""
import eventlet
from nameko import rpc as nameko_rpc
from nameko.amqp.publish import Publisher
from nameko.constants import (AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, DEFAULT_SERIALIZER,
                              LOGIN_METHOD_CONFIG_KEY, SERIALIZER_CONFIG_KEY)
from nameko.exceptions import UnknownService
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy, get_rpc_exchange

from services.common.errors import ServiceUnavailable
from services.common.settings import setting

DEFAULT_TIMEOUT = 5.0
TRANSIENT = 1  # AMQP delivery mode: kept in memory only


class _ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = TRANSIENT


class _Responder(nameko_rpc.Responder):
    publisher_cls = _ReplyPublisher


class _RpcConsumer(nameko_rpc.RpcConsumer):
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


rpc = Rpc.decorator  # use instead of nameko.rpc.rpc


class _BoundedMethodProxy(MethodProxy):
    def __init__(self, *args, timeout, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout

    def __call__(self, *args, **kwargs):
        try:
            reply = self._call(*args, **kwargs)
        except UnknownService:
            raise ServiceUnavailable(f"the {self.service_name} service is not running")
        except (IOError, OSError) as exc:  # broker unreachable
            raise ServiceUnavailable(f"message bus unavailable: {exc}")
        timer = eventlet.Timeout(self.timeout)
        try:
            return reply.result()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self._forget(reply)
            raise ServiceUnavailable(
                f"the {self.service_name} service did not answer within {self.timeout:g} s"
            )
        finally:
            timer.cancel()

    def _forget(self, reply):
        # the listener keeps one pending event per call; drop ours so timeouts do not leak
        events = self.reply_listener._reply_events
        for correlation_id, event in list(events.items()):
            if event is reply.reply_event:
                events.pop(correlation_id, None)


class _BoundedServiceProxy(ServiceProxy):
    def __init__(self, *args, timeout, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout

    def __getattr__(self, name):
        return _BoundedMethodProxy(
            self.worker_ctx, self.service_name, name, self.reply_listener,
            timeout=self.timeout, **self.options
        )


class BoundedRpcProxy(RpcProxy):
    """RpcProxy whose calls raise ServiceUnavailable after RPC_TIMEOUT seconds (config)."""

    def get_dependency(self, worker_ctx):
        timeout = setting(self.container.config, "RPC_TIMEOUT", DEFAULT_TIMEOUT)
        options = dict(self.options)
        # kombu takes the per-message TTL in seconds
        options.setdefault("expiration", timeout)
        options.setdefault("delivery_mode", TRANSIENT)
        return _BoundedServiceProxy(
            worker_ctx, self.target_service, self.rpc_reply_listener,
            timeout=timeout, **options
        )
