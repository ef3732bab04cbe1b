"""Fraud screening: the index, the rules and the decisions, as a plain class.

The service's entrypoints (service.py) hand it their store, the booking service's client and
the settings; tests call it directly with the real store and a fake booking service.
"""
import time
import uuid

import eventlet

from services.common import contract
from services.common.outbox import Outbox
from services.common.timeutil import parse_iso
from services.fraud import rules
from services.fraud.names import name_problem
from services.fraud.store import ACTIVE, CANCELLED, group_ids, window_group_ids

NAME_NOT_EXACT = "name_not_exact"
SAME_EMAIL = "multiple_bookings_same_email"
SLOT_GRABBING = "slot_grabbing"
PARALLEL_CANCELS = 8  # a cluster of cancellations at once, without flooding the booking service


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


class Screening:
    """Screens booking events and carries out decisions.

    store: FraudStore; booking: the booking service (statuses, system_cancel); settings: dict
    (see service.Settings); dispatch(event_type, payload): publishes on the bus.
    """

    def __init__(self, store, booking, settings, dispatch):
        self.store, self.booking, self.settings, self.dispatch = store, booking, settings, dispatch

    def screen(self, event):
        settings = self.settings
        entry = index_entry(event, settings)
        self.store.add_booking(entry, settings["group_caps"])
        # the allow-list is read only when a rule fires: most bookings never need it
        problem = name_problem(event["identity"]["family_name"], event["identity"]["given_names"],
                               event["email"], event.get("procedure"))
        if problem and self.not_exempt([entry]):
            field, reason = problem
            self.act(entry["_id"], NAME_NOT_EXACT, rules.CANCEL, {"field": field, "reason": reason})
        # one read for every rule: the groups this booking has just joined, and the window
        watched = watched_groups(entry, settings["window"])
        found = self.store.members([i for ids in watched.values() for i in ids])
        members = {kind: [m for i in ids for m in found[i]] for kind, ids in watched.items()}
        self.check_email(entry, members["email"])
        self.check_grabbing(entry, members["ip"], members["ua"])

    def check_email(self, entry, same):
        # not filtered on our own status: a booking this rule just cancelled must still count
        if len(same) < 2:
            return  # the common case: no further lookup
        same = self.not_exempt(same)
        if len(same) < 2:
            return
        # our index learns of cancellations by event, maybe late: ask the owner which still
        # count. Bookings already cancelled by this rule count too: handlers of the same
        # address run concurrently, and the last one must still see the whole group.
        statuses = self.booking.statuses([b["_id"] for b in same])
        candidates = [{"reference": b["_id"], "identity_key": b["identity_key"],
                       "created_ts": b["created_ts"]}
                      for b in same if _counts_for_email_rule(statuses.get(b["_id"]))]
        self.act_on_all([(reference, SAME_EMAIL, action, dict(evidence, email=entry["email_key"]))
                          for reference, action, evidence in rules.email_decisions(
                              candidates, self.settings["same_person"], self.settings["different_people"])])

    def check_grabbing(self, entry, from_client, from_agent):
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
            if self.not_exempt([entry]):
                self.act(entry["_id"], SLOT_GRABBING, rules.REVIEW, evidence)
            return
        # the whole cluster from that address in the window goes, not only the latest booking
        self.act_on_all([(booking["_id"], SLOT_GRABBING, rules.CANCEL, evidence)
                          for booking in self.not_exempt([b for b in from_client if b["status"] == ACTIVE])])

    def not_exempt(self, bookings):
        """The bookings no allow-list entry covers (their reference, e-mail or address)."""
        def keys(booking):
            found = [f"booking:{booking['_id']}", f"email:{booking['email_key']}"]
            if booking.get("client_ip"):
                found.append(f"client:{booking['client_ip']}")
            return found

        allowed = self.store.allowed_among({key for b in bookings for key in keys(b)})
        return [b for b in bookings if not allowed.intersection(keys(b))]

    def act_on_all(self, decisions):
        """Carry out several decisions at once: each waits on a cancel RPC, not on the others."""
        if len(decisions) == 1:
            self.act(*decisions[0])
        elif decisions:
            pool = eventlet.GreenPool(min(len(decisions), PARALLEL_CANCELS))
            list(pool.starmap(self.act, decisions))  # raises the first error

    def act(self, reference, rule, action, evidence, actor="fraud"):
        """Record the decision (once), carry it out, announce it (once)."""
        decision_id = f"{reference}:{rule}:{action}"
        decision = self.store.add_decision({
            "_id": decision_id, "reference": reference, "rule": rule, "action": action,
            "evidence": evidence, "at_ts": time.time(),
        })
        if action == rules.CANCEL:
            self.booking.system_cancel(reference, rule, decision["evidence"], actor)  # idempotent
            self.store.set_status(reference, CANCELLED)
        else:
            self.store.open_review({"_id": reference, "state": "open", "rule": rule,
                                    "evidence": decision["evidence"], "at_ts": decision["at_ts"]})
        # carried out: now (and only now) the announcement goes into the outbox
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fraud:{decision_id}"))
        recorded = self.store.to_announce(decision_id, Outbox.entry(event_id, time.time(), 5.0))
        if recorded is not None:  # the first to carry it out announces it; the relay, if we die
            self.announce(recorded)

    def announce(self, decision):
        """Publish a decision's `fraud_detected` (again: handlers dedupe on its event_id)."""
        self.dispatch("fraud_detected", contract.build(
            "fraud_detected", event_id=decision["outbox"]["detected"]["event_id"],
            reference=decision["reference"], rule=decision["rule"],
            action="cancelled" if decision["action"] == rules.CANCEL else "review",
            evidence=decision["evidence"]))
        self.store.outbox.sent(decision["_id"], "detected")
