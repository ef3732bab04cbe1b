"""Fraud service: takes back the slots traffickers hold (DESIGN.md M3, M4), spares honest people.

Entrypoints only: the screening (index, rules, decisions) is services/fraud/screening.py. It
decides from its own index, built from booking events, never from the booking database;
cancels through the booking service's system_cancel; stores each decision with its evidence
and announces it as `fraud_detected` through its outbox. Events come in through the inbox
(services/common/inbox.py): one handling per event id, bounded retries, then parked.
"""
import logging
import time

from marshmallow import Schema, fields, validate
from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider

from services.common import health, one_email, retention
from services.common.timers import config_timer
from services.common.logs import CallIdLogging
from services.common.errors import EXPECTED, InvalidRequest, NotFound, Refused
from services.common.lease import InstanceId
from services.common import inbox as event_inbox
from services.common.inbox import InboxSettings
from services.common.mongo import MongoStore
from services.common import relay
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.schemas import ListingSchema, SafeString, validated
from services.common.settings import retention_days, setting
from services.common.views import staff_view
from services.common.queues import event_handler
from services.fraud import rules
from services.fraud.screening import SLOT_GRABBING, Screening
from services.fraud.store import FraudStore

log = logging.getLogger(__name__)

ALLOW_KINDS = ("booking", "email", "client")
ADDRESS_GROUP_CAP = 500  # bookings kept per address and window bucket: evidence for a cluster


class Settings(DependencyProvider):
    """Fraud's policy and thresholds, from configuration."""

    def setup(self):
        config = self.container.config
        self.settings = {
            "provider_rules": one_email.provider_rules(config),
            "same_person": setting(config, "FRAUD_SAME_EMAIL_SAME_PERSON"),
            "different_people": setting(config, "FRAUD_SAME_EMAIL_DIFFERENT_PEOPLE"),
            "window": setting(config, "FRAUD_WINDOW_SECONDS"),
            "release_window": setting(config, "FRAUD_RELEASE_WINDOW_SECONDS"),
            "fast_seconds": setting(config, "FRAUD_FAST_SECONDS"),
            "quick_seconds": setting(config, "FRAUD_QUICK_SECONDS"),
            "agent_identities": setting(config, "FRAUD_AGENT_IDENTITIES"),
            "cancel_score": setting(config, "FRAUD_CANCEL_SCORE"),
            "review_score": setting(config, "FRAUD_REVIEW_SCORE"),
        }
        # the user-agent rule only asks "at least agent_identities?": a few times that is enough
        self.settings["group_caps"] = {"ip": ADDRESS_GROUP_CAP,
                                       "ua": max(20, 3 * self.settings["agent_identities"])}

    def get_dependency(self, worker_ctx):
        return self.settings


class Allow(Schema):
    kind = SafeString(required=True, validate=validate.OneOf(ALLOW_KINDS))
    value = SafeString(required=True, validate=validate.Length(min=1, max=320))
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))
    why = SafeString(required=True, validate=validate.Length(min=1, max=500))
    # until when the exemption holds (an association's office for a season); none: until removed
    until = fields.AwareDateTime(load_default=None, allow_none=True)


class Disallow(Schema):
    kind = SafeString(required=True, validate=validate.OneOf(ALLOW_KINDS))
    value = SafeString(required=True, validate=validate.Length(min=1, max=320))
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))


class ReviewListing(ListingSchema):
    state = SafeString(load_default="open", validate=validate.OneOf(("open", "cancelled", "cleared")))


class CaseListing(ListingSchema):
    state = SafeString(load_default="open", validate=validate.OneOf(("open", "decided")))


class DecideCase(Schema):
    case_id = SafeString(required=True, validate=validate.Length(min=1, max=400))
    decision = SafeString(required=True, validate=validate.OneOf(("cancel", "clear")))
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))
    note = SafeString(load_default="", validate=validate.Length(max=1000))


class Decide(Schema):
    reference = SafeString(required=True, validate=validate.Length(min=1, max=64))
    decision = SafeString(required=True, validate=validate.OneOf(("cancel", "clear")))
    by = SafeString(required=True, validate=validate.Length(min=1, max=100))
    note = SafeString(load_default="", validate=validate.Length(max=1000))


class Period(Schema):
    since = fields.AwareDateTime(required=True)
    until = fields.AwareDateTime(required=True)


ALLOW, REVIEWS, DECIDE, PERIOD = Allow(), ReviewListing(), Decide(), Period()
CASES, DECIDE_CASE, DISALLOW = CaseListing(), DecideCase(), Disallow()


def case_view(case, reviews):
    """A review case as staff see it: its evidence in plain words and its bookings."""
    view = staff_view(case)
    view["bookings"] = [{"reference": r["_id"], "state": r["state"], "rule": r["rule"],
                         "summary": (r.get("evidence") or {}).get("summary") or [],
                         "evidence": r.get("evidence") or {}, "decided_by": r.get("decided_by"),
                         "note": r.get("note")}
                        for r in sorted(reviews, key=lambda r: (r["at_ts"], r["_id"]))]
    return view


class FraudService(relay.OutboxRelay, event_inbox.TakesEvents):
    name = "fraud"

    store = MongoStore("fraud", FraudStore)
    booking = BoundedRpcProxy("booking")
    dispatch = EventDispatcher()
    settings = Settings()
    instance = InstanceId()
    inbox_settings = InboxSettings("FRAUD_MAX_ATTEMPTS")
    log_context = CallIdLogging()
    config = Config()
    # refuses to start with a period below the floor (erasure cannot be undone)
    retention_periods = retention.RetentionPeriods("BOOKING_RETENTION_DAYS")

    @config_timer("RETENTION_TIMER_SECONDS")
    def erase_expired(self):
        """BOOKING_RETENTION_DAYS after a booking was made (its appointment long past), it
        leaves fraud's index and groups; decisions and decided reviews that old keep their
        booking, rule and action, not their evidence: services/common/retention.py. One
        instance per pass (a lease), bounded batches."""
        return retention.run_pass(self.store.leases, "retention", self.instance, self.config,
                                  self._erase)

    def _erase(self, now_ts, limit):
        before_ts = retention.cutoff_ts(time.time(),
                                        retention_days(self.config, "BOOKING_RETENTION_DAYS"))
        return {"index": self.store.erase_index(before_ts, limit),
                "decisions": self.store.erase_decisions(before_ts, now_ts, limit),
                "reviews": self.store.erase_reviews(before_ts, now_ts, limit),
                "events": self.store.inbox.erase_before(before_ts, now_ts, limit)}

    # requeue on error: the inbox counts the tries and parks the event after FRAUD_MAX_ATTEMPTS.
    # Fraud screens confirmed bookings only: a pending booking (anyone can type someone
    # else's e-mail) counts for nothing until the owner of the mailbox confirms it.
    @event_handler("booking", "booking_confirmed", requeue_on_error=True)
    def on_booking_confirmed(self, event):
        self.take_event("booking_confirmed", event)

    @event_handler("booking", "booking_cancelled", requeue_on_error=True)
    def on_booking_cancelled(self, event):
        self.take_event("booking_cancelled", event)

    @event_handler("booking", "booking_restored", requeue_on_error=True)
    def on_booking_restored(self, event):
        self.take_event("booking_restored", event)

    def inbox_handlers(self):
        screening = self._screening()
        return {"booking_confirmed": screening.screen, "booking_cancelled": screening.booking_cancelled,
                "booking_restored": screening.booking_restored}

    def outbox_routes(self):
        """The decisions carried out whose `fraud_detected` was not sent (crash, broker), for
        the relay (services/common/relay.py)."""
        return [(self.store.outbox, "detected", self._screening().announce)]

    # -- staff RPC ---------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def allow(self, kind, value, by, why, until=None):
        """Exempt a booking, an e-mail or a client address from the automatic rules, until
        `until` (ISO 8601 with offset) or until removed."""
        args = validated(ALLOW, kind=kind, value=value, by=by, why=why, until=until)
        now = time.time()
        if args["until"] is not None and args["until"].timestamp() <= now:
            raise InvalidRequest("An exemption must end in the future.",
                                 {"until": ["Must be in the future."]})
        value = self._allow_value(args["kind"], args["value"])
        entry = {"_id": f"{args['kind']}:{value}", "kind": args["kind"], "value": value,
                 "by": args["by"], "why": args["why"], "at_ts": now,
                 "until_ts": args["until"].timestamp() if args["until"] else None}
        self.store.allow(entry)
        return staff_view(entry)

    @rpc(expected_exceptions=EXPECTED)
    def disallow(self, kind, value, by):
        """Remove an allow-list entry; the entry as it was."""
        args = validated(DISALLOW, kind=kind, value=value, by=by)
        removed = self.store.disallow(f"{args['kind']}:{self._allow_value(args['kind'], args['value'])}")
        if removed is None:
            raise NotFound("No allow-list entry for this value.", {"value": ["Not on the list."]})
        log.info("allow-list entry of kind %s removed by %s", args["kind"], args["by"])
        return staff_view(removed)

    @rpc(expected_exceptions=EXPECTED)
    def allow_list(self):
        now = time.time()
        return [dict(staff_view(e), expired=bool(e.get("until_ts") and e["until_ts"] <= now))
                for e in self.store.allow_entries()]

    def _allow_value(self, kind, value):
        return one_email.normalise_email(value, self.settings["provider_rules"]) if kind == "email" else value

    @rpc(expected_exceptions=EXPECTED)
    def review_queue(self, state="open", limit=100):
        args = validated(REVIEWS, state=state, limit=limit)
        return [staff_view(r) for r in self.store.review_queue(args["state"], args["limit"])]

    @rpc(expected_exceptions=EXPECTED)
    def decide(self, reference, decision, by, note=""):
        """Staff settle a case from the review queue: cancel it or clear it."""
        args = validated(DECIDE, reference=reference, decision=decision, by=by, note=note)
        cancel = args["decision"] == "cancel"
        state = "cancelled" if cancel else "cleared"
        review = self.store.close_review(args["reference"], state, args["by"], args["note"],
                                         time.time())
        if review is None:
            # a second delivery (or a double click): the same decision is answered as the first
            # and carried out again (idempotent), which finishes one cut short by a crash
            review = self.store.review(args["reference"])
            if review is None or review["state"] == "open":
                raise NotFound("No open review for this booking.")
            if review["state"] != state:
                done = {"cancelled": ("annulé", "cancelled"), "cleared": ("levé", "cleared")}
                fr, en = done.get(review["state"], (review["state"], review["state"]))
                raise Refused(f"Ce cas est déjà tranché : {fr}. / This case was already "
                              f"decided: {en}.", {"decision": [f"Déjà {fr}. / Already {en}."]})
        self._carry_out(review, cancel, args["by"], args["note"])
        if review.get("case_id"):
            self.store.close_case_if_done(review["case_id"], args["by"], args["note"], time.time())
        return staff_view(review)

    @rpc(expected_exceptions=EXPECTED)
    def cases(self, state="open", limit=100):
        """Review cases (a cluster's bookings together), strong ones first, each with its
        evidence in plain words and its bookings."""
        args = validated(CASES, state=state, limit=limit)
        found = self.store.cases_in(args["state"], args["limit"])
        reviews = self.store.reviews_of([c["_id"] for c in found])
        found.sort(key=lambda c: (not c.get("strong"), c["at_ts"]))
        return [case_view(c, reviews.get(c["_id"], [])) for c in found]

    @rpc(expected_exceptions=EXPECTED)
    def decide_case(self, case_id, decision, by, note=""):
        """Staff settle a whole case: every booking still open in it is cancelled or cleared.
        (One booking alone: `decide`.)"""
        args = validated(DECIDE_CASE, case_id=case_id, decision=decision, by=by, note=note)
        case = self.store.case(args["case_id"])
        if case is None:
            raise NotFound("No review case with this id.")
        cancel = args["decision"] == "cancel"
        now = time.time()
        for review in self.store.reviews_of([case["_id"]])[case["_id"]]:
            state = "cancelled" if cancel else "cleared"
            closed = self.store.close_review(review["_id"], state, args["by"], args["note"], now)
            if closed is None and review["state"] == state:
                closed = review  # closed by a delivery cut short: carried out again (idempotent)
            if closed is not None:
                self._carry_out(closed, cancel, args["by"], args["note"])
        self.store.close_case_if_done(case["_id"], args["by"], args["note"], now)
        return case_view(self.store.case(case["_id"]), self.store.reviews_of([case["_id"]])[case["_id"]])

    @rpc(expected_exceptions=EXPECTED)
    def decisions_for(self, reference):
        if not isinstance(reference, str):
            raise InvalidRequest("A booking reference.", {"reference": ["Not a string."]})
        return [staff_view(d) for d in self.store.decisions_for(reference)]

    @rpc(expected_exceptions=EXPECTED)
    def counts(self, since, until):
        """Decisions by rule and action over [since, until) (ISO 8601 timestamps)."""
        args = validated(PERIOD, since=since, until=until)
        counts = {}
        for decision in self.store.decisions_between(args["since"].timestamp(), args["until"].timestamp()):
            by_action = counts.setdefault(decision["rule"], {})
            by_action[decision["action"]] = by_action.get(decision["action"], 0) + 1
        return counts

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        """Store reachable, decisions not yet announced, events parked or retrying, review
        cases open (services/common/health.py)."""
        def backlog():
            return dict(health.inbox_backlog(self.store.inbox),
                        outbox=health.outbox_backlog(self.store.outbox),
                        review_cases_open=self.store.count_open_cases())
        return health.report(self.name, backlog)

    # -- internals ---------------------------------------------------------------------------

    def _screening(self):
        return Screening(self.store, self.booking, self.settings, self.dispatch)

    def _carry_out(self, review, cancel, by, note):
        # a review closed because its booking was cancelled elsewhere: nothing to carry out
        if cancel and not review.get("cancelled_elsewhere"):
            self._screening().act(review["_id"], SLOT_GRABBING, rules.CANCEL,
                                  dict(review.get("evidence") or {}, decided_by=by, note=note),
                                  actor=by)
