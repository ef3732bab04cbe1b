"""The tests' proof that nothing more was published (tests/helpers.py BusListener.fenced): what
a publisher had confirmed before the fence comes back before it, every time."""
from kombu import Connection, Exchange, Producer

from tests.helpers import BusListener


def test_the_fence_comes_back_after_everything_published_before_it(rabbit_config):
    listener = BusListener(rabbit_config["AMQP_URI"], "probe", "probe_event")
    exchange = Exchange("probe.events", type="topic", durable=True)
    # confirmed publishes, as nameko's event dispatcher makes them
    with Connection(rabbit_config["AMQP_URI"], transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn)
        for n in range(3):
            for i in range(50):
                producer.publish({"n": n, "i": i}, exchange=exchange, routing_key="probe_event",
                                 serializer="json", declare=[exchange])
            received = listener.fenced()
            # all of them, in order, none left for later; an event of another type is not bound
            assert [p for _, p in received] == [{"n": n, "i": i} for i in range(50)]
        producer.publish({"other": True}, exchange=exchange, routing_key="other_event",
                         serializer="json", declare=[exchange])
    assert listener.fenced() == []
    listener.close()
