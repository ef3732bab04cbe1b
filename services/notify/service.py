"""Notify service: tells applicants what happened to their booking, exactly once per event.

Events come in through the inbox (services/common/inbox.py: checked against the bus contract,
once per event id, retried, parked). Each event becomes one outbox record (its key: event id
and message kind) before anything is sent. A message is sent by whoever atomically claims it, immediately by the event handler or
later by the delivery timer; failures wait out a backoff, and after NOTIFY_MAX_ATTEMPTS the
message is parked as failed for staff, blocking nothing behind it.
"""
import functools
import logging
import time
from datetime import timedelta
from email.utils import parseaddr

import eventlet
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from pymongo.errors import PyMongoError

from services.common import health, retention
from services.common.lease import InstanceId
from services.common.timers import config_timer
from services.common.daily_limit import day_key
from services.common import inbox as event_inbox
from services.common.logs import CallIdLogging
from services.common.errors import EXPECTED, NotFound, describe
from services.common.mongo import MongoStore
from services.common import one_email
from services.common.one_email import normalise_email
from services.common.rpc import rpc
from services.common.schemas import ListingSchema, validated
from services.common.settings import retention_days, setting
from services.common.timeutil import utcnow
from services.common.views import staff_view
from services.common.queues import event_handler
from services.notify import rules
from services.notify.compose import KIND_FOR_EVENT, compose, message_id, to_mime
from services.notify.mailer import Mailer
from services.notify.schedule import ScanSchedule
from services.notify.schemas import MessageKey, Resend
from services.notify.store import OutboxStore

log = logging.getLogger(__name__)

BATCH = 400  # messages a delivery tick sends at most
CLAIM_BATCH = 25


class Settings(DependencyProvider):
    """Notify's settings, read once from configuration."""

    def setup(self):
        config = self.container.config
        self.settings = {
            "public_base_url": setting(config, "PUBLIC_BASE_URL"),
            "report_url": setting(config, "REPORT_URL"),
            "report_email": setting(config, "REPORT_EMAIL"),
            "mail_domain": setting(config, "MAIL_DOMAIN"),
            "mail_from": setting(config, "MAIL_FROM"),
            "max_attempts": setting(config, "NOTIFY_MAX_ATTEMPTS"),
            "retry_base": setting(config, "NOTIFY_RETRY_BASE_SECONDS"),
            "retry_cap": setting(config, "NOTIFY_RETRY_MAX_SECONDS"),
            "lease": setting(config, "NOTIFY_LEASE_SECONDS"),
            "senders": max(1, setting(config, "NOTIFY_SENDERS")),
            "sweep": setting(config, "NOTIFY_SWEEP_SECONDS"),
            # messages the public can trigger, per address and Paris day (rules.PUBLIC_KINDS)
            "per_address_per_day": setting(config, "MAIL_PER_ADDRESS_PER_DAY"),
            "provider_rules": one_email.provider_rules(config),
        }

    def get_dependency(self, worker_ctx):
        return self.settings


class Schedule(DependencyProvider):
    """This process's ScanSchedule (services/notify/schedule.py)."""

    def setup(self):
        self.schedule = ScanSchedule(setting(self.container.config, "NOTIFY_SWEEP_SECONDS"))

    def get_dependency(self, worker_ctx):
        return self.schedule


MESSAGE_FIELDS = ("_id", "kind", "to", "reference", "state", "attempts", "last_error",
                  "event_type", "failed_ts", "sent_ts", retention.ERASED)
LISTING, MESSAGE_KEY, RESEND = ListingSchema(), MessageKey(), Resend()


def message_view(record):
    return staff_view({key: record[key] for key in MESSAGE_FIELDS if key in record})


class NotifyService(event_inbox.TakesEvents):
    name = "notify"

    store = MongoStore("notify", OutboxStore)
    mail = Mailer()
    settings = Settings()
    schedule = Schedule()
    log_context = CallIdLogging()
    config = Config()
    # refuses to start with a period below the floor (erasure cannot be undone)
    retention_periods = retention.RetentionPeriods("NOTIFY_RETENTION_DAYS")
    instance = InstanceId()

    # requeue: an event is only acked once its message is safely in the outbox
    @event_handler("booking", "booking_created", requeue_on_error=True)
    def on_booking_created(self, event):
        self.take_event("booking_created", event)

    @event_handler("booking", "booking_confirmed", requeue_on_error=True)
    def on_booking_confirmed(self, event):
        self.take_event("booking_confirmed", event)

    @event_handler("booking", "booking_cancelled", requeue_on_error=True)
    def on_booking_cancelled(self, event):
        self.take_event("booking_cancelled", event)

    @event_handler("booking", "booking_restored", requeue_on_error=True)
    def on_booking_restored(self, event):
        self.take_event("booking_restored", event)

    @event_handler("booking", "booking_reminder_due", requeue_on_error=True)
    def on_booking_reminder_due(self, event):
        self.take_event("booking_reminder_due", event)

    @event_handler("booking", "attempt_recorded", requeue_on_error=True)
    def on_attempt_recorded(self, event):
        self.take_event("attempt_recorded", event)

    @event_handler("requests", "request_filed", requeue_on_error=True)
    def on_request_filed(self, event):
        self.take_event("request_filed", event)

    @event_handler("requests", "offer_made", requeue_on_error=True)
    def on_offer_made(self, event):
        self.take_event("offer_made", event)

    @event_handler("register", "renewal_invitation", requeue_on_error=True)
    def on_renewal_invitation(self, event):
        self.take_event("renewal_invitation", event)

    def inbox_handlers(self):
        """Each event becomes its message in the outbox (`_accept`)."""
        return {name: functools.partial(self._accept, name) for name in KIND_FOR_EVENT}

    @timer(interval=0.5)
    def deliver_due(self):
        """Retries, backlog after an outage, and messages whose sender died mid-send.

        Looks at the outbox only when work can be there (a retry comes due, the server is
        back, the last pass found work) or every NOTIFY_SWEEP_SECONDS for other processes'
        leftovers: each look is a scan on the embedded stand-in.
        """
        now, mail, schedule = time.time(), self.mail, self.schedule
        if mail.down and self._server_back():
            schedule.scan_by(now)
        if not schedule.begin_pass(now):
            return
        recovered = self.store.recover_abandoned(now)
        if recovered:
            log.warning("%d messages abandoned mid-send are queued again", recovered)
        if mail.down:
            self._defer_all_due()
            return
        # several senders, each with its own connection: one alone waits on round trips
        senders = eventlet.GreenPool(self.settings["senders"])
        drained = list(senders.imap(lambda _: self._drain(BATCH // self.settings["senders"]),
                                    range(self.settings["senders"])))
        if sum(drained):
            schedule.scan_by(now)  # there may be more: look again at the next tick

    @config_timer("RETENTION_TIMER_SECONDS")
    def erase_expired(self):
        """Erase the recipient and body of the messages made NOTIFY_RETENTION_DAYS ago (sent,
        parked or capped): services/common/retention.py. One instance per pass (a lease),
        bounded batches."""
        return retention.run_pass(self.store.leases, "retention", self.instance, self.config,
                                  self._erase)

    def _erase(self, now_ts, limit):
        days = retention_days(self.config, "NOTIFY_RETENTION_DAYS")
        before_ts = (utcnow() - timedelta(days=days)).timestamp()
        return {"messages": self.store.erase_before(before_ts, now_ts, limit),
                "events": self.store.inbox.erase_before(before_ts, now_ts, limit)}

    @rpc(expected_exceptions=EXPECTED)
    def outbox_status(self):
        """Messages by state (services/common/delivery.py), zero included."""
        return self.store.counts()

    @rpc(expected_exceptions=EXPECTED)
    def failed_messages(self, limit=50):
        """Messages parked after their last attempt failed, newest first, with the last error."""
        args = validated(LISTING, limit=limit)
        return [message_view(r) for r in self.store.failed(args["limit"])]

    @rpc(expected_exceptions=EXPECTED)
    def resend(self, key, idempotency_key=None):
        """Staff send a parked, sent or capped message again. With `idempotency_key` (the staff
        gateway sends one per request), a second delivery of the call answers the message as it
        stands and sends nothing more."""
        args = validated(RESEND, key=key, idempotency_key=idempotency_key)
        record = self.store.resend(args["key"], time.time(), args["idempotency_key"])
        if record is None:
            again = args["idempotency_key"] and self.store.get(args["key"])
            if again and args["idempotency_key"] in (again.get("resent_by") or {}):
                return message_view(again)
            raise NotFound("No failed or sent message with this key.")
        self._deliver_one(args["key"])
        return message_view(self.store.get(args["key"]))

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, mail by state (pending and retrying: the backlog; done: sent;
        parked: failed for good), events parked or retrying (services/common/health.py)."""
        return health.report(self.name, lambda: dict(health.inbox_backlog(self.store.inbox),
                                                     mail=self.store.counts()))

    # -- internals ---------------------------------------------------------------------------

    def _accept(self, event_type, event):
        if not rules.sends_message(event_type, event):
            return
        kind = KIND_FOR_EVENT[event_type]
        key = rules.idempotency_key(event.get("event_id"), kind)
        now = time.time()
        record = {"_id": key, "event_type": event_type, "reference": event.get("reference"),
                  "attempts": 0, "next_attempt_ts": now, "created_at": utcnow(),
                  "last_error": None}
        try:
            record.update(compose(event_type, event, self.settings), state=rules.PENDING)
        except Exception as exc:  # an event the templates cannot render: park it for staff
            log.exception("cannot compose a message for %s %s", event_type, key)
            record.update(state=rules.PARKED, last_error=f"cannot compose: {exc!r}",
                          event=event, failed_ts=time.time())
        try:
            if record["state"] == rules.PENDING and rules.counts_against_limit(kind, event) \
                    and not self._within_daily_limit(record["to"], key):
                # never the address in the log: the key says which event
                log.warning("message %s not sent: its address reached its daily limit", key)
                record.update(state=rules.CAPPED, capped_ts=now,
                              last_error="daily limit of messages to this address reached")
            elif record["state"] == rules.PENDING and not self.mail.down:
                # stored already claimed by this worker: the insert that wins is the claim,
                # one round trip fewer; if we die mid-send, the lease runs out and it is retried
                record.update(state=rules.IN_PROGRESS, lease_until_ts=now + self.settings["lease"],
                              attempts=1)
            added = self.store.add(record)
        except PyMongoError:
            eventlet.sleep(1)  # the database is down: pause before the event is requeued
            raise
        if added and record["state"] == rules.IN_PROGRESS:
            self._send_all([record])
        elif added and record["state"] == rules.PENDING:
            self.schedule.scan_by(time.time())  # the server is down: the timer records the attempt

    def _within_daily_limit(self, address, key):
        """Count this message against its address's Paris day; False past the limit. The
        message key is the count's token: the same event handled again is not counted twice."""
        day = day_key("mail:" + normalise_email(address, self.settings["provider_rules"]), utcnow())
        return self.store.daily.take(day, self.settings["per_address_per_day"], utcnow(), token=key)

    def _deliver_one(self, key):
        record = self.store.claim(time.time(), self.settings["lease"], key)
        if record is not None:
            self._send_all([record])

    def _drain(self, limit):
        """Send due messages, claimed a few at a time, until `limit` or none is due."""
        done = 0
        while done < limit and not self.mail.down:
            batch = self.store.claim_batch(time.time(), self.settings["lease"], CLAIM_BATCH)
            if not batch:
                break
            self._send_all(batch)
            done += len(batch)
        return done

    def _send_all(self, records):
        """Send claimed messages over one session (kept afterwards for the next ones).

        If the server cannot be reached, the remaining messages record that failed attempt
        without trying again: each waits out its own backoff (and is parked once out of
        attempts) while the timer probes the server.
        """
        settings, connection, unreachable = self.settings, None, None
        sender = parseaddr(settings["mail_from"])[1]
        try:
            for record in records:
                if unreachable is not None:
                    self._failed(record, unreachable)
                    continue
                try:
                    if connection is None:
                        connection = self.mail.connect()
                    mime = to_mime(record, settings["mail_from"],
                                   message_id(record["_id"], settings["mail_domain"]))
                    connection.send(mime, sender, record["to"])
                except Exception as exc:
                    self._failed(record, exc)
                    if connection is not None:
                        connection.close()
                        connection = None
                    if rules.is_connection_error(exc):
                        self.mail.down, unreachable = True, exc
                        self.mail.last_error = describe(exc)
                    continue
                self.store.mark_sent(record["_id"], time.time())
        except BaseException:
            if connection is not None:
                connection.close()  # interrupted: the session's state is unknown
            raise
        if connection is not None:
            self.mail.keep(connection)

    def _server_back(self):
        """Probe a server last seen down; when it answers, all waiting messages are due now."""
        try:
            self.mail.keep(self.mail.connect())
        except Exception as exc:
            self.mail.last_error = describe(exc)
            return False
        self.mail.down = False
        woken = self.store.wake_waiting(time.time())
        log.warning("mail server is back; %d waiting messages are due now", woken)
        return True

    def _defer_all_due(self):
        settings = self.settings
        deferred, parked = self.store.defer_due(
            time.time(), self.mail.last_error, settings["max_attempts"],
            lambda attempts: rules.backoff(attempts, settings["retry_base"], settings["retry_cap"]))
        self.schedule.scan_by(time.time() + settings["retry_base"])
        if deferred or parked:
            log.warning("mail server unreachable (%s): %d messages wait, %d parked as failed",
                        self.mail.last_error, deferred, parked)

    def _failed(self, record, exc):
        settings, error = self.settings, describe(exc)
        if rules.is_transient(exc) and record["attempts"] < settings["max_attempts"]:
            wait = rules.backoff(record["attempts"], settings["retry_base"], settings["retry_cap"])
            self.store.retry_later(record["_id"], time.time() + wait, error)
            self.schedule.scan_by(time.time() + wait)
            log.warning("message %s not sent (%s); retry in %.1f s", record["_id"], error, wait)
        else:
            self.store.park(record["_id"], error, time.time())
            log.error("message %s parked as failed after %d attempts: %s",
                      record["_id"], record["attempts"], error)
