"""Issue 23 as plain functions: which queues are quorum queues, the cluster nodes' alarms, the
vhost of a cluster's AMQP_URI."""
import pytest
from kombu import Exchange, Queue

from gateway.admin.monitoring import NODE_ALARM, NODE_DOWN, node_alarms, node_view, vhost_of
from services.common.queues import declare_durable, queue_type


def test_shared_durable_queues_get_the_configured_type_and_others_stay_classic():
    exchange = Exchange("booking.events", type="topic")
    shared = declare_durable(Queue("evt-booking-booking_created--notify.x", exchange,
                                   durable=True), {"QUEUE_TYPE": "quorum"})
    assert shared.queue_arguments == {"x-queue-type": "quorum"}
    kept = declare_durable(Queue("rpc-slots", exchange, durable=True,
                                 queue_arguments={"x-expires": 5}), {})  # the default: quorum
    assert kept.queue_arguments == {"x-expires": 5, "x-queue-type": "quorum"}
    # a quorum queue cannot be exclusive, auto-deleted or transient: those are left alone
    for other in (Queue("r", exchange, exclusive=True), Queue("a", exchange, auto_delete=True),
                  Queue("t", exchange, durable=False)):
        assert not (declare_durable(other, {}).queue_arguments or {}).get("x-queue-type")
    classic = declare_durable(Queue("rpc-x", exchange, durable=True), {"QUEUE_TYPE": "Classic"})
    assert classic.queue_arguments == {"x-queue-type": "classic"}
    with pytest.raises(ValueError, match="QUEUE_TYPE"):
        queue_type({"QUEUE_TYPE": "stream"})


def test_a_node_down_or_in_alarm_is_an_alarm():
    nodes = [node_view({"name": "a@h", "running": True}),
             node_view({"name": "b@h", "running": False}),
             node_view({"name": "c@h", "running": True, "mem_alarm": True}),
             node_view({"name": "d@h", "running": True, "partitions": ["a@h"]})]
    assert [(a["kind"], a["queue"]) for a in node_alarms(nodes)] == [
        (NODE_DOWN, "b@h"), (NODE_ALARM, "c@h"), (NODE_ALARM, "d@h")]
    assert node_alarms(nodes[:1]) == []


def test_the_vhost_of_a_cluster_uri_is_its_first_alternate():
    uri = "pyamqp://g:g@127.0.0.1:1/v%2F1;pyamqp://g:g@127.0.0.1:2/v%2F1"
    assert vhost_of(uri) == "v/1"
    assert vhost_of("pyamqp://g:g@127.0.0.1:1/;pyamqp://g:g@127.0.0.1:2/") == "/"
