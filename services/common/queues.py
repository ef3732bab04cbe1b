"""The queues the system relies on are quorum queues, replicated on every node of the cluster.

nameko 2.14 declares its queues itself (EventHandler.setup, RpcConsumer.setup) as classic
queues, which live on one node: that node's death loses what they hold and stops their
consumers until it returns. A queue's type is fixed when it is declared (a policy cannot set
it), so the services declare theirs with `x-queue-type: quorum` here: the events' queues and
the RPC request queues. Reply queues live for one process and carry answers nobody waits for
after a reconnection: they stay classic, and exclusive (services/common/rpc.py), so that a
node's death deletes them instead of leaving a durable queue whose home node is down.

`QUEUE_TYPE` (quorum | classic): a broker that already holds these queues as classic ones
refuses to redeclare them with another type (PRECONDITION_FAILED); `classic` keeps such a
broker working until its queues are deleted.
"""
import logging

from kombu import Connection
from nameko import events as nameko_events
from nameko.messaging import QueueConsumer as NamekoQueueConsumer

from services.common.settings import setting

log = logging.getLogger(__name__)

QUEUE_TYPES = ("quorum", "classic")


def queue_type(config):
    kind = str(setting(config, "QUEUE_TYPE")).strip().lower()
    if kind not in QUEUE_TYPES:
        raise ValueError(f"QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, not {kind!r}")
    return kind


def declare_durable(queue, config):
    """Give a durable, shared queue the configured type (in place); others are left as they
    are: a quorum queue cannot be exclusive, auto-deleted or transient."""
    if not queue.durable or queue.exclusive or queue.auto_delete:
        return queue
    queue.queue_arguments = dict(queue.queue_arguments or {}, **{"x-queue-type": queue_type(config)})
    return queue


class ConsumingConnection(Connection):
    """The consumer's connection, which never replaces itself behind its consumers' back.

    kombu's `Connection.connection` reconnects silently (to the next node of AMQP_URI) when
    its transport says it is no longer connected, and py-amqp says so as soon as any write on
    the socket fails: an ack sent by a worker after the node died. The consumer loop's next
    `drain_events` (or heartbeat check) then runs on a new connection with no channel and no
    consumer, and waits there for ever: the process stays up and consumes nothing (seen in
    the cluster kill test: 503 for the whole outage, no "Connection to broker lost" logged).
    Raising a connection error instead sends the loop through kombu's reconnection, which
    sets the consumers up again on the node it reaches."""

    @property
    def connection(self):
        if self._connection is not None and not self._closed and not self.connected:
            raise ConnectionResetError("the consumer's connection to the broker was lost")
        return super().connection


class QueueConsumer(NamekoQueueConsumer):
    """nameko's consumer of a process's queues, surviving the death of the node it was
    connected to: nameko 2.14 ignores amqp's ConnectionError on an ack, not the socket's own
    error (ConnectionResetError, BrokenPipeError), which then kills the whole container. The
    broker has already taken back what a dead connection held unacknowledged and delivers it
    again (handlers are idempotent), so there is nothing to ack: log and go on. The failed
    write leaves the connection marked lost, and `ConsumingConnection` makes the consumer
    loop reconnect from that mark."""

    def create_connection(self):
        # nameko's declaration (URI with its alternates, heartbeat, SSL, transport options),
        # as a connection that does not reconnect silently
        return ConsumingConnection(**self.connection.info())

    def ack_message(self, message):
        try:
            super().ack_message(message)
        except OSError as exc:
            log.warning("ack lost with its connection (%r): the broker delivers it again", exc)

    def requeue_message(self, message):
        try:
            super().requeue_message(message)
        except OSError as exc:
            log.warning("requeue lost with its connection (%r): the broker requeues it", exc)


class EventHandler(nameko_events.EventHandler):
    """nameko's event handler, its queue declared as `declare_durable` says."""

    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        declare_durable(self.queue, self.container.config)


event_handler = EventHandler.decorator  # use instead of nameko.events.event_handler
