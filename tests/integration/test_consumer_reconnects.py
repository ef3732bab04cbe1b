"""A process whose consumer connection is lost while a worker acks carries on consuming
(issue 23, services/common/queues.py).

When a RabbitMQ node dies, the ack a worker sends on the dead socket may be the first write to
fail; py-amqp then marks the connection not connected, and kombu used to replace it silently
with a fresh connection that had no consumer on it: the process stayed up and never consumed
again (the cluster kill test's 503s for the whole outage). Here a worker marks its connection
lost exactly as py-amqp's failed write does, and the next events must still be handled."""
import eventlet
from nameko.standalone.events import event_dispatcher

from services.common.queues import event_handler

HANDLED = []
QUEUE_CONSUMER = []  # the test container's QueueConsumer


class Listener:
    name = "reconnect_listener"

    @event_handler("reconnect_source", "ping")
    def on_ping(self, payload):
        HANDLED.append(payload)
        if payload == "break":
            # what amqp.transport.write does when the socket's write fails: the connection
            # is marked lost, the exception goes to the worker (swallowed by ack_message);
            # the socket itself is left as it is
            for consumer in QUEUE_CONSUMER[0]._consumers.values():
                consumer.channel.connection.transport.connected = False


def wait_for(predicate, timeout=20.0):
    deadline = eventlet.hubs.get_hub().clock() + timeout
    while not predicate():
        if eventlet.hubs.get_hub().clock() > deadline:
            return False
        eventlet.sleep(0.05)
    return True


def test_a_connection_lost_under_a_worker_is_reconnected_with_its_consumers(container_factory,
                                                                            rabbit_config):
    HANDLED.clear()
    container = container_factory(Listener, rabbit_config)
    container.start()
    queue_consumer = next(ext for ext in container.extensions
                          if type(ext).__name__ == "QueueConsumer")
    QUEUE_CONSUMER[:] = [queue_consumer]
    dispatch = event_dispatcher(rabbit_config)

    dispatch("reconnect_source", "ping", "first")
    assert wait_for(lambda: "first" in HANDLED)
    dispatch("reconnect_source", "ping", "break")
    assert wait_for(lambda: "break" in HANDLED)

    # events after the loss are consumed: the consumer reconnected with its consumers
    for n in range(3):
        dispatch("reconnect_source", "ping", f"after-{n}")
    assert wait_for(lambda: {"after-0", "after-1", "after-2"} <= set(HANDLED)), HANDLED
    # and on a connection that carries them: a channel with the consumer on it
    channel = next(iter(queue_consumer._consumers.values())).channel
    assert channel.connection is not None and channel.connection.transport.connected
