"""A parked event made visible on the bus: a copy to the dead-letter exchange.

The inbox (services/common/inbox.py) parks an event that failed for good in the service's own
database, where staff replay it. Operators watch the bus: the same parking also publishes (in
every service that takes events: inbox.py's TakesEvents) a
short notice to the `dead-letters` exchange (deploy/rabbitmq/definitions.json routes it to
the `dead-letters.events` queue), so the monitoring page and RabbitMQ's dashboard count it.
The notice names the event (id, type, service) and the reason in headers, never the payload:
booking events carry personal data, and the parked record in the database keeps it.

Best effort: the event is parked whatever happens to the notice; a broker that does not
answer within a second costs a log line, not the handling.
"""
import logging
import time

from kombu import Connection, Exchange, Producer

from services.common.logs import scrub

log = logging.getLogger(__name__)

EXCHANGE = Exchange("dead-letters", type="topic", durable=True)
ROUTING_KEY = "parked.{service}.{event_type}"
MAX_REASON = 300


def notice(service, event_id, event_type, reason, now_ts):
    """(body, headers, routing key) of the notice for one parked event."""
    reason = scrub(str(reason))[:MAX_REASON]
    headers = {"x-parked-reason": reason, "x-service": service, "x-event-type": str(event_type),
               "x-event-id": str(event_id)}
    body = {"service": service, "event_id": str(event_id), "event_type": str(event_type),
            "reason": reason, "parked_at": now_ts}
    return body, headers, ROUTING_KEY.format(service=service, event_type=event_type)


def publish_parked(amqp_uri, service, event_id, event_type, reason, timeout=1.0):
    body, headers, routing_key = notice(service, event_id, event_type, reason, time.time())
    try:
        with Connection(amqp_uri, connect_timeout=timeout, transport_options={
                "max_retries": 0}) as connection:
            producer = Producer(connection.default_channel, exchange=EXCHANGE)
            # declared as the definitions file declares it, in case they were never loaded
            producer.publish(body, routing_key=routing_key, headers=headers, declare=[EXCHANGE],
                             serializer="json", delivery_mode=2, retry=False)
    except Exception as exc:  # the event stays parked in the database: log and go on
        log.warning("parked event %s (%s): notice not published on the bus: %r", event_id,
                    event_type, exc)
