"""Fraud service: takes back the slots traffickers hold (DESIGN.md M3, M4), spares honest people.

It decides from its own index, built from booking events, never from the booking database;
cancels through the booking service's system_cancel; stores each decision with its evidence
and announces it as `fraud_detected`. Every step is idempotent, so an event delivered twice,
or replayed after a restart, yields one decision and one cancellation.
"""
import logging
import time
import uuid

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.extensions import DependencyProvider

from services.common.errors import EXPECTED, InvalidRequest, NotFound, describe
from services.common.events import envelope
from services.common.mongo import MongoStore
from services.common.rpc import BoundedRpcProxy, rpc
from services.common.settings import setting
from services.common.timeutil import parse_iso
from services.fraud import rules
from services.fraud.names import name_problem
from services.fraud.store import ACTIVE, CANCELLED, FraudStore, group_ids, window_group_ids

log = logging.getLogger(__name__)

NAME_NOT_EXACT = "name_not_exact"
SAME_EMAIL = "multiple_bookings_same_email"
SLOT_GRABBING = "slot_grabbing"
ALLOW_KINDS = ("booking", "email", "client")
ADDRESS_GROUP_CAP = 500  # bookings kept per address and window bucket: evidence for a cluster
EVENT_LEASE_SECONDS = 120  # longer than any handling, retries' backoff included
PARALLEL_CANCELS = 8  # a cluster of cancellations at once, without flooding the booking service


class Settings(DependencyProvider):
    """Fraud's policy and thresholds, from configuration."""

    def setup(self):
        config = self.container.config
        self.settings = {
            "provider_rules": setting(config, "FRAUD_EMAIL_PROVIDER_RULES", True),
            "same_person": setting(config, "FRAUD_SAME_EMAIL_SAME_PERSON", rules.KEEP_EARLIEST),
            "different_people": setting(config, "FRAUD_SAME_EMAIL_DIFFERENT_PEOPLE", rules.CANCEL_ALL),
            "window": setting(config, "FRAUD_WINDOW_SECONDS", 600.0),
            "release_window": setting(config, "FRAUD_RELEASE_WINDOW_SECONDS", 120.0),
            "fast_seconds": setting(config, "FRAUD_FAST_SECONDS", 2.0),
            "quick_seconds": setting(config, "FRAUD_QUICK_SECONDS", 10.0),
            "agent_identities": setting(config, "FRAUD_AGENT_IDENTITIES", 10),
            "cancel_score": setting(config, "FRAUD_CANCEL_SCORE", 0.8),
            "review_score": setting(config, "FRAUD_REVIEW_SCORE", 0.4),
            "max_attempts": setting(config, "FRAUD_MAX_ATTEMPTS", 6),
        }
        # the user-agent rule only asks "at least agent_identities?": a few times that is enough
        self.settings["group_caps"] = {"ip": ADDRESS_GROUP_CAP,
                                       "ua": max(20, 3 * self.settings["agent_identities"])}

    def get_dependency(self, worker_ctx):
        return self.settings


def index_entry(event, settings):
    """What fraud keeps of a booking: only what its rules need, and the groups it joins."""
    entry = {
        "_id": event["reference"],
        "status": ACTIVE,
        "email_key": rules.email_key(event["email"], settings["provider_rules"]),
        "identity_key": rules.identity_key(event["identity"]),
        "client_ip": (event.get("client") or {}).get("ip") or "",
        "user_agent": (event.get("client") or {}).get("user_agent") or "",
        "created_ts": parse_iso(event["occurred_at"]).timestamp(),
        "seconds_after_publication": event.get("seconds_after_publication"),
    }
    entry["groups"] = group_ids(entry, settings["window"])
    return entry


def watched_groups(entry, window):
    """The groups the rules read for this booking: its e-mail, and its address and user agent
    over the window before it."""
    since, until = entry["created_ts"] - window, entry["created_ts"]
    ids = {"email": [f"email:{entry['email_key']}"], "ip": [], "ua": []}
    if entry["client_ip"]:
        ids["ip"] = window_group_ids("ip", entry["client_ip"], since, until, window)
    if entry["user_agent"]:
        ids["ua"] = window_group_ids("ua", entry["user_agent"], since, until, window)
    return ids


def _counts_for_email_rule(status):
    return status is not None and (status["status"] == ACTIVE or
                                   status["cancel_reason"] == SAME_EMAIL)


def _view(doc):
    return {k: v for k, v in doc.items() if k != "_id"} | {"id": doc["_id"]}


class FraudService:
    name = "fraud"

    store = MongoStore("fraud", FraudStore)
    booking = BoundedRpcProxy("booking")
    dispatch = EventDispatcher()
    settings = Settings()

    # requeue on error: _guarded counts the tries and parks the event after FRAUD_MAX_ATTEMPTS
    @event_handler("booking", "booking_created", requeue_on_error=True)
    def on_booking_created(self, event):
        self._guarded(event, self._screen)

    @event_handler("booking", "booking_cancelled", requeue_on_error=True)
    def on_booking_cancelled(self, event):
        self._guarded(event, lambda e: self.store.set_status(e["reference"], CANCELLED))

    # -- staff RPC ---------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def allow(self, kind, value, by, why):
        """Exempt a booking, an e-mail or a client address from the automatic rules."""
        if kind not in ALLOW_KINDS:
            raise InvalidRequest("Unknown kind.", {"kind": [f"One of {', '.join(ALLOW_KINDS)}."]})
        if not by or not why:
            raise InvalidRequest("Say who allows it and why.", {"by": ["Required."], "why": ["Required."]})
        if kind == "email":
            value = rules.email_key(value, self.settings["provider_rules"])
        entry = {"_id": f"{kind}:{value}", "kind": kind, "value": value, "by": by, "why": why,
                 "at_ts": time.time()}
        self.store.allow(entry)
        return _view(entry)

    @rpc(expected_exceptions=EXPECTED)
    def allow_list(self):
        return [_view(e) for e in self.store.allow_entries()]

    @rpc(expected_exceptions=EXPECTED)
    def review_queue(self, state="open", limit=100):
        return [_view(r) for r in self.store.review_queue(state, max(1, min(int(limit), 500)))]

    @rpc(expected_exceptions=EXPECTED)
    def decide(self, reference, decision, by, note=""):
        """Staff settle a case from the review queue: cancel it or clear it."""
        if decision not in ("cancel", "clear"):
            raise InvalidRequest("Decide cancel or clear.", {"decision": ["cancel or clear."]})
        review = self.store.close_review(reference, "cancelled" if decision == "cancel" else "cleared",
                                         by, note, time.time())
        if review is None:
            raise NotFound("No open review for this booking.")
        if decision == "cancel":
            self._act(reference, SLOT_GRABBING, rules.CANCEL,
                      dict(review.get("evidence") or {}, decided_by=by, note=note), actor=by)
        return _view(review)

    @rpc(expected_exceptions=EXPECTED)
    def decisions_for(self, reference):
        return [_view(d) for d in self.store.decisions_for(reference)]

    @rpc(expected_exceptions=EXPECTED)
    def counts(self, since, until):
        """Decisions by rule and action over [since, until) (ISO 8601 timestamps)."""
        try:
            since_ts, until_ts = parse_iso(since).timestamp(), parse_iso(until).timestamp()
        except (TypeError, ValueError):
            raise InvalidRequest("Timestamps are ISO 8601 with an offset.", {"since": ["Invalid."]})
        counts = {}
        for decision in self.store.decisions_between(since_ts, until_ts):
            by_action = counts.setdefault(decision["rule"], {})
            by_action[decision["action"]] = by_action.get(decision["action"], 0) + 1
        return counts

    @rpc(expected_exceptions=EXPECTED)
    def parked_events(self, limit=100):
        return [_view(f) for f in self.store.parked(max(1, min(int(limit), 500)))]

    @rpc(expected_exceptions=EXPECTED)
    def replay(self, event_id):
        """Run a parked event again (once its cause, say the booking service, is fixed)."""
        failure = self.store.unpark(event_id)
        if failure is None:
            raise NotFound("No parked event with this id.")
        self._guarded(failure["event"], self._screen)
        return {"event_id": event_id, "replayed": True}

    # -- internals ---------------------------------------------------------------------------

    def _guarded(self, event, handle):
        """Handle an event once; on error retry a bounded number of times, then park it."""
        event_id = event.get("event_id") or "missing"
        if self.store.begin(event_id, time.time(), EVENT_LEASE_SECONDS) != "go":
            return  # handled already, or being handled by another worker
        try:
            handle(event)
        except Exception as exc:
            try:
                self.store.release(event_id)
                attempts = self.store.record_failure(event_id, event, describe(exc), time.time())
            except Exception:
                eventlet.sleep(1)  # the database itself is down: pause, then requeue
                raise exc
            if attempts >= self.settings["max_attempts"]:
                self.store.park(event_id)
                log.error("event %s parked after %d tries: %r", event_id, attempts, exc)
                return  # acked: staff see it in parked_events and can replay it
            eventlet.sleep(min(5.0, 0.2 * 2 ** attempts))
            raise
        self.store.finish(event_id)

    def _screen(self, event):
        settings = self.settings
        entry = index_entry(event, settings)
        self.store.add_booking(entry, settings["group_caps"])
        # the allow-list is read only when a rule fires: most bookings never need it
        problem = name_problem(event["identity"]["family_name"], event["identity"]["given_names"],
                               event["email"], event.get("procedure"))
        if problem and self._not_exempt([entry]):
            field, reason = problem
            self._act(entry["_id"], NAME_NOT_EXACT, rules.CANCEL, {"field": field, "reason": reason})
        # one read for every rule: the groups this booking has just joined, and the window
        watched = watched_groups(entry, settings["window"])
        found = self.store.members([i for ids in watched.values() for i in ids])
        members = {kind: [m for i in ids for m in found[i]] for kind, ids in watched.items()}
        self._check_email(entry, members["email"])
        self._check_grabbing(entry, members["ip"], members["ua"])

    def _check_email(self, entry, same):
        # not filtered on our own status: a booking this rule just cancelled must still count
        if len(same) < 2:
            return  # the common case: no further lookup
        same = self._not_exempt(same)
        if len(same) < 2:
            return
        # our index learns of cancellations by event, maybe late: ask the owner which still
        # count. Bookings already cancelled by this rule count too: handlers of the same
        # address run concurrently, and the last one must still see the whole group.
        statuses = self.booking.statuses([b["_id"] for b in same])
        candidates = [{"reference": b["_id"], "identity_key": b["identity_key"],
                       "created_ts": b["created_ts"]}
                      for b in same if _counts_for_email_rule(statuses.get(b["_id"]))]
        self._act_on_all([(reference, SAME_EMAIL, action, dict(evidence, email=entry["email_key"]))
                          for reference, action, evidence in rules.email_decisions(
                              candidates, self.settings["same_person"], self.settings["different_people"])])

    def _check_grabbing(self, entry, from_client, from_agent):
        settings = self.settings
        since = entry["created_ts"] - settings["window"]
        from_client = [b for b in from_client if b["created_ts"] >= since] or [entry]
        from_agent = [b for b in from_agent if b["created_ts"] >= since] or [entry]
        after_release = [b for b in from_client if b.get("seconds_after_publication") is not None
                         and b["seconds_after_publication"] <= settings["release_window"]]
        score, signals = rules.grabbing_score(
            entry["seconds_after_publication"],
            len({b["identity_key"] for b in from_client}),
            len({b["identity_key"] for b in from_agent}),
            len(after_release), settings)
        action = rules.grabbing_action(score, settings)
        if action is None:
            return
        evidence = {"score": score, "signals": signals, "client_ip": entry["client_ip"],
                    "bookings_from_address": sorted(b["_id"] for b in from_client)}
        if action == rules.REVIEW:
            if self._not_exempt([entry]):
                self._act(entry["_id"], SLOT_GRABBING, rules.REVIEW, evidence)
            return
        # the whole cluster from that address in the window goes, not only the latest booking
        self._act_on_all([(booking["_id"], SLOT_GRABBING, rules.CANCEL, evidence)
                          for booking in self._not_exempt([b for b in from_client if b["status"] == ACTIVE])])

    def _not_exempt(self, bookings):
        """The bookings no allow-list entry covers (their reference, e-mail or address)."""
        def keys(booking):
            found = [f"booking:{booking['_id']}", f"email:{booking['email_key']}"]
            if booking.get("client_ip"):
                found.append(f"client:{booking['client_ip']}")
            return found

        allowed = self.store.allowed_among({key for b in bookings for key in keys(b)})
        return [b for b in bookings if not allowed.intersection(keys(b))]

    def _act_on_all(self, decisions):
        """Carry out several decisions at once: each waits on a cancel RPC, not on the others."""
        if len(decisions) == 1:
            self._act(*decisions[0])
        elif decisions:
            pool = eventlet.GreenPool(min(len(decisions), PARALLEL_CANCELS))
            list(pool.starmap(self._act, decisions))  # raises the first error

    def _act(self, reference, rule, action, evidence, actor="fraud"):
        """Record the decision (once), carry it out, announce it (once)."""
        decision_id = f"{reference}:{rule}:{action}"
        decision = self.store.add_decision({
            "_id": decision_id, "reference": reference, "rule": rule, "action": action,
            "evidence": evidence, "at_ts": time.time(), "announced": False,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fraud:{decision_id}")),
        })
        if action == rules.CANCEL:
            self.booking.system_cancel(reference, rule, decision["evidence"], actor)  # idempotent
            self.store.set_status(reference, CANCELLED)
        else:
            self.store.open_review({"_id": reference, "state": "open", "rule": rule,
                                    "evidence": decision["evidence"], "at_ts": decision["at_ts"]})
        if not decision.get("announced"):
            self.dispatch("fraud_detected", envelope(
                event_id=decision["event_id"], reference=reference, rule=rule,
                action="cancelled" if action == rules.CANCEL else "review",
                evidence=decision["evidence"]))
            self.store.mark_announced(decision_id)
