"""RPC with a deadline.

nameko 2.14's RpcProxy waits forever for a reply. A caller that must answer a person (or that
holds a worker a burst needs) bounds the wait, and the request expires in the queue at the same
deadline so that a service coming back later does not act on a request its caller gave up on.
"""
import eventlet
from nameko.exceptions import UnknownService
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy

from services.common.errors import ServiceUnavailable
from services.common.settings import setting

DEFAULT_TIMEOUT = 5.0


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
        return _BoundedServiceProxy(
            worker_ctx, self.target_service, self.rpc_reply_listener,
            timeout=timeout, **options
        )
