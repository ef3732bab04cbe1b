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
from services.common.exact_names import identity_key, name_problem
from services.common.one_email import normalise_email
from services.fraud.store import ACTIVE, CANCELLED, group_ids, window_group_ids

NAME_NOT_EXACT = "name_not_exact"
SAME_EMAIL = "multiple_bookings_same_email"
SAME_PERSON = "multiple_bookings_same_person"
SLOT_GRABBING = "slot_grabbing"
PARALLEL_CANCELS = 8  # a cluster of cancellations at once, without flooding the booking service


def index_entry(event, settings):
    """What fraud keeps of a booking: only what its rules need, and the groups it joins."""
    # an accepted offer was given, not raced for (issue 24): where it was accepted from says
    # nothing, and honest people behind one carrier address must not make an address case
    client = {} if event.get("offer_id") else (event.get("client") or {})
    entry = {
        "_id": event["reference"],
        "status": ACTIVE,
        "email_key": normalise_email(event["email"], settings["provider_rules"]),
        "identity_key": identity_key(event["identity"]),
        "client_ip": client.get("ip") or "",
        "user_agent": client.get("user_agent") or "",
        "created_ts": parse_iso(event["occurred_at"]).timestamp(),
        # an allocated offer was given, not raced for: its speed says nothing about a script
        "seconds_after_publication": (None if event.get("offer_id")
                                      else event.get("seconds_after_publication")),
        "decoy": bool(event.get("decoy")),
        "slot_id": event.get("slot_id"),
        "procedure": event.get("procedure"),
        "foreigner_number": event["identity"].get("foreigner_number") or "",
    }
    entry["groups"] = group_ids(entry, settings["window"])
    return entry


def watched_groups(entry, window):
    """The groups the rules read for this booking: its e-mail, its person, and its address and
    user agent over the window before it."""
    since, until = entry["created_ts"] - window, entry["created_ts"]
    ids = {"email": [f"email:{entry['email_key']}"], "person": [f"person:{entry['identity_key']}"],
           "number": [f"number:{entry['foreigner_number']}"] if entry["foreigner_number"] else [],
           "ip": [], "ua": []}
    if entry["client_ip"]:
        ids["ip"] = window_group_ids("ip", entry["client_ip"], since, until, window)
    if entry["user_agent"]:
        ids["ua"] = window_group_ids("ua", entry["user_agent"], since, until, window)
    return ids


def _counts_for_rule(status, rule):
    """A booking still counts for a "one of each" rule when active, or cancelled by that rule
    (handlers of one group run concurrently: the last must still see the whole group)."""
    return status is not None and (status["status"] == ACTIVE or status["cancel_reason"] == rule)


def decoy_evidence(booking, decoy):
    """The review evidence for a booking linked to one that booked a decoy slot, or None when
    nothing links them (rules.decoy_linked says how)."""
    link = rules.decoy_linked(booking, decoy)
    if link is None:
        return None
    said = {"email": "Same e-mail address as", "identity+address": "Same person, from the same address, as",
            "identity": "Same person (another e-mail, another address) as",
            "address": "Only the network address is shared with"}[link]
    evidence = {"decoy_slot": decoy.get("slot_id"), "linked_to": decoy["_id"], "link": link,
                "summary": [f"{said} booking {decoy['_id']}, which booked a decoy slot."]}
    return evidence


class Screening:
    """Screens booking events and carries out decisions.

    store: FraudStore; booking: the booking service (statuses, system_cancel); settings: dict
    (see service.Settings); dispatch(event_type, payload): publishes on the bus.
    """

    def __init__(self, store, booking, settings, dispatch):
        self.store, self.booking, self.settings, self.dispatch = store, booking, settings, dispatch
        self.cancelled = set()  # by this screening: later rules of the same event skip them

    def screen(self, event):
        settings = self.settings
        entry = index_entry(event, settings)
        # M4 needs nothing but the booking itself: decided and carried out before the index
        # is written (two round trips less before the cancellation, issue 22), the entry
        # then written as cancelled. The allow-list is read only when a rule fires: most
        # bookings never need it.
        problem = name_problem(event["identity"]["family_name"], event["identity"]["given_names"],
                               event["email"], event.get("procedure"))
        if problem and self.not_exempt([entry]):
            field, reason = problem
            try:
                self.act(entry["_id"], NAME_NOT_EXACT, rules.CANCEL,
                         {"field": field, "reason": reason}, indexed=False)
            except Exception:
                # booking down or slow: the booking is live, so it is indexed as it stands
                # (active, visible to the other rules) before the error goes up; the
                # redelivery cancels it and writes it cancelled. Else, once the event is
                # parked, a live booking would never be indexed at all
                self.store.add_booking(entry, settings["group_caps"])
                raise
            entry.update(status=CANCELLED, status_ts=time.time())  # as set_status writes it
        decided = entry["status"]
        # the entry then says what the index holds: a cancellation handled before this
        # confirmation (the events come on separate queues) is kept
        if not self.store.add_booking(entry, settings["group_caps"]) and decided == CANCELLED \
                and entry["status"] != CANCELLED:
            # indexed before as active (a copy handled again, or an entry written by an earlier
            # version): its state follows, as act() would have written it
            entry["status"] = self.store.set_status(entry["_id"], CANCELLED)
        # one read for every rule: the groups this booking has just joined, and the window
        watched = watched_groups(entry, settings["window"])
        found = self.store.members([i for ids in watched.values() for i in ids])
        members = {kind: [m for i in ids for m in found[i]] for kind, ids in watched.items()}
        self.check_email(entry, members["email"])
        self.check_person(entry, members["person"], members["number"])
        self.check_decoy(entry, members)
        self.check_grabbing(entry, members["ip"], members["ua"])

    def booking_cancelled(self, event):
        """booking_cancelled: the booking no longer counts, and an open review of it is closed
        (nothing left for staff to decide). Handled before the booking's confirmation (another
        queue), the entry is written with the status alone, and the confirmation keeps it
        (store.add_booking); a booking never confirmed (was_confirmed false: pending, expired)
        is never screened, so it is not written."""
        status = self.store.set_status(event["reference"], CANCELLED,
                                       parse_iso(event["occurred_at"]).timestamp(),
                                       create=bool(event.get("was_confirmed")))
        if status == CANCELLED:  # not when a later restoration was handled first
            self.store.close_cancelled_review(event["reference"], time.time(), event.get("reason"))

    def booking_restored(self, event):
        """booking_restored (an undone counter cancellation): the booking counts again for the
        one-of-each rules (M3), or a second booking of the same person would pass unseen.
        Handled before the cancellation it undoes, or before the confirmation, it still wins:
        the later event does (rules.supersedes)."""
        status = self.store.set_status(event["reference"], ACTIVE,
                                       parse_iso(event["occurred_at"]).timestamp(), create=True)
        if status == ACTIVE:  # a review its cancellation closed waits for staff again
            self.store.reopen_cancelled_review(event["reference"])

    def check_decoy(self, entry, members):
        """A decoy slot is shown by the JSON API only. Booking one was once cancelled at sight;
        measured, scripts tell decoys apart (the pages never list them) while honest people and
        associations using the documented API book them (issue 24). So a decoy booking is
        evidence for staff, never a cancellation: it goes to a strong review case with what is
        linked to it (same e-mail, same person, same address), and staff decide.

        Judged from both sides, so that the order of two confirmations at the same instant
        never changes the outcome: a decoy booking takes the linked bookings it finds, and any
        other booking looks for a decoy booking it is linked to. Both write their index entry
        before reading, so of two concurrent handlers at least one sees the other."""
        window = self.settings["window"]
        others = {b["_id"]: b for kind in ("email", "person", "ip") for b in members[kind]
                  if b["_id"] != entry["_id"]
                  and (kind != "ip" or abs(b["created_ts"] - entry["created_ts"]) <= window)}
        if entry["decoy"]:
            linked = [(b, entry) for b in others.values() if b.get("status") == ACTIVE]
        else:  # the common case: no decoy among its groups, no further lookup
            linked = [(entry, b) for b in others.values() if b.get("decoy")]
            if not linked:
                return
        # the allow-list is read only now: exempt bookings neither take nor are taken
        exempt_free = {b["_id"] for b in self.not_exempt([entry] + [b for pair in linked for b in pair])}
        if entry["_id"] not in exempt_free:
            return
        review = []
        if entry["decoy"]:
            review.append((entry, entry, {
                "decoy_slot": entry["slot_id"], "reference": entry["_id"],
                "summary": ["Booked a decoy slot: the applicant pages never list it, the JSON "
                            "API does. A script, or someone using the API honestly."]}))
        for booking, decoy in linked:
            if not {booking["_id"], decoy["_id"]} <= exempt_free:
                continue
            evidence = decoy_evidence(booking, decoy)
            if evidence is not None:
                review.append((booking, decoy, evidence))
        for booking, decoy, evidence in review:
            # cancelled by a booking-tied rule already, or known cancelled (its cancellation
            # handled before its confirmation): nothing left for staff to decide
            if booking["_id"] in self.cancelled or booking.get("status") != ACTIVE:
                continue
            case = self.address_case(decoy, [
                f"Booking {decoy['_id']} booked a decoy slot (shown by the JSON API only); these "
                f"bookings share its e-mail, its person or its address."], strong=True)
            self.act(booking["_id"], SLOT_GRABBING, rules.REVIEW, evidence, case=case)

    def address_case(self, entry, summary, strong=False, evidence=None):
        case_id = (rules.address_case_id(entry["client_ip"], entry["created_ts"], self.settings["window"])
                   if entry.get("client_ip") else f"booking:{entry['_id']}")
        return {"_id": case_id, "kind": "address", "client_ip": entry.get("client_ip") or "",
                "summary": summary, "evidence": evidence or {}, "strong": bool(strong)}

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
                      for b in same if _counts_for_rule(statuses.get(b["_id"]), SAME_EMAIL)]
        self.act_on_all([(reference, SAME_EMAIL, action, dict(evidence, email=entry["email_key"]))
                          for reference, action, evidence in rules.email_decisions(
                              candidates, self.settings["same_person"], self.settings["different_people"])])

    def check_person(self, entry, same_names, same_number):
        """M3 by identity: one person, one booking per procedure, whatever the e-mail. The
        booking service refuses a second one up front; two confirmed at the same instant both
        pass it, and the later one is cancelled here. Decoy bookings are the decoy rule's (it
        sends the same person from elsewhere to review): left out, so that the order in which
        the two are screened never changes the outcome."""
        same, matched_by = {}, set()
        for kind, group in (("names and birth date", same_names), ("foreigner number", same_number)):
            for b in group:
                if b.get("procedure") == entry["procedure"] and not b.get("decoy"):
                    same[b["_id"]] = b
                    if b["_id"] != entry["_id"]:
                        matched_by.add(kind)
        if len(same) < 2:
            return  # the common case: no further lookup
        same = self.not_exempt(list(same.values()))
        if len(same) < 2:
            return
        # as for M3 by e-mail: ask the owner which still count, this rule's own included
        statuses = self.booking.statuses([b["_id"] for b in same])
        candidates = [{"reference": b["_id"], "created_ts": b["created_ts"]}
                      for b in same if _counts_for_rule(statuses.get(b["_id"]), SAME_PERSON)]
        self.act_on_all([(reference, SAME_PERSON, action, evidence) for reference, action, evidence
                         in rules.person_decisions(candidates, sorted(matched_by))])

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
        if rules.grabbing_action(score, settings) is None:
            return
        # network evidence only: the cluster's active bookings go to one review case, never to
        # cancellation (an address is not a person); allow-listed addresses skip this entirely
        cluster = self.not_exempt([b for b in from_client if b.get("status") == ACTIVE
                                   and b["_id"] not in self.cancelled])
        if not cluster:
            return
        summary = rules.describe_signals(signals, settings)
        tied = self.store.booking_tied_cancellations(sorted(b["_id"] for b in from_client))
        if tied:
            summary.append(f"{len(tied)} other booking(s) from this address were cancelled for "
                           f"evidence of their own ({', '.join(sorted(set(tied.values())))}); "
                           f"the ones here carry none.")
        evidence = {"score": score, "signals": signals, "client_ip": entry["client_ip"],
                    "bookings_from_address": sorted(b["_id"] for b in from_client),
                    "summary": summary}
        case = self.address_case(entry, summary, strong=rules.strong(score, settings) or bool(tied),
                                 evidence={"score": score, "signals": signals})
        # each booking of a growing cluster would otherwise re-decide all the earlier ones
        reviewed = self.store.reviewed_among([b["_id"] for b in cluster])
        for booking in cluster:
            if booking["_id"] not in reviewed:
                self.act(booking["_id"], SLOT_GRABBING, rules.REVIEW, evidence, case=case)

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

    def act(self, reference, rule, action, evidence, actor="fraud", case=None, indexed=True):
        """Record the decision (once), carry it out, announce it (once). A review joins `case`.
        indexed: the booking has its index entry (else its status is the caller's to write)."""
        decision_id = f"{reference}:{rule}:{action}"
        decision = self.store.add_decision({
            "_id": decision_id, "reference": reference, "rule": rule, "action": action,
            "evidence": evidence, "at_ts": time.time(),
        })
        if action == rules.CANCEL:
            self.booking.system_cancel(reference, rule, decision["evidence"], actor)  # idempotent
            if indexed:
                self.store.set_status(reference, CANCELLED)
            self.cancelled.add(reference)
        else:
            self.store.open_review({"_id": reference, "state": "open", "rule": rule,
                                    "evidence": decision["evidence"], "at_ts": decision["at_ts"]},
                                   case=case)
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
