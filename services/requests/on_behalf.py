"""Requests filed on someone's behalf (a mixin of services/requests/service.py).

Issue 24, accredited partners: associations file for people who cannot (no e-mail, no
computer, no French). Supervisors create them (a weekly quota per procedure, an expiry) and may
suspend or renew them; a partner files with its API key (or its pages, which the public gateway
serves under /partners), with the beneficiary's identity and the beneficiary's or its own
mailbox. Each filing takes one place of the week's quota by one conditional update keyed by the
request's reference (quota.py, partner_store.py), so concurrent filings never pass it and a
filing delivered twice counts once; a filing refused afterwards gives its place back.

Issue 21, a person without e-mail: an agent at the desk or on the phone files for them, with a
phone or a postal address. Offers then reach the person by that channel: agents see the offers
to tell people about (`offers_to_tell`), print the letter, and accept for the person when they
call back (`accept_for_person`).

Either way the request is born confirmed (the partner or the agent vouches for the person;
there may be no mailbox to prove) and every identity rule still applies to the person: M4 (the
exact name, before the draw), one open request per person and procedure (folded names and
birth date, foreigner number) and, when the beneficiary's mailbox is given, one per e-mail
(M3). The request records who filed it (`filed_by`) and by which channel. Its booking carries
no network evidence: a partner's office files for many people from one address, and a desk
booking has no network at all (fraud's screens read mailboxes and networks, DESIGN.md s. 8).
"""
import hashlib
import logging
import time
import uuid

from eventlet import tpool
from pymongo.errors import DuplicateKeyError

from services.common import idempotency, one_email
from services.common.errors import (EXPECTED, DomainError, InvalidRequest, NotFound,
                                    PartnerNotAllowed, PartnerUnknown, QuotaReached, Refused,
                                    ServiceUnavailable)
from services.common.exact_names import name_problem, person_key
from services.common.mongo import MongoStore
from services.common.rpc import rpc
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.schemas import load_or_raise, validated
from services.common.tokens import TokenSigner, new_salt
from services.common.views import iso_from_ts
from services.requests import quota, rules
from services.requests.partner_store import PartnerStore
from services.common.request_schemas import (PartnerChangeSchema, PartnerFilingSchema, PartnerSchema,
                                       PersonFilingSchema, availability_doc)

log = logging.getLogger(__name__)

PARTNER, PARTNER_CHANGE = PartnerSchema(), PartnerChangeSchema()
PARTNER_FILING, PERSON_FILING = PartnerFilingSchema(), PersonFilingSchema(exclude=("email",))
NOT_YOURS = "No request of yours has this reference."
TELL_LIMIT = 500


def quota_message(limit, procedure):
    return (f"Quota hebdomadaire atteint pour cette démarche ({limit} demandes par semaine) : "
            f"rien n'a été déposé. / Weekly quota reached for this procedure ({limit} requests "
            f"a week): nothing was filed.")


def partner_view(partner, used=None, today=None):
    """A partner as staff and the partner itself see it (never its key nor its hash)."""
    view = {"id": partner["_id"], "name": partner["name"], "contact_email": partner["contact_email"],
            "contact_phone": partner.get("contact_phone"), "quotas": partner["quotas"],
            "expires": partner["expires"], "suspended": bool(partner.get("suspended")),
            "created_at": iso_from_ts(partner["created_ts"]), "created_by": partner["created_by"],
            # which key is current, not the key: a page session opened with an older key ends
            "key_id": hashlib.sha256(str(partner.get("key_hash")).encode()).hexdigest()[:16]}
    if today is not None:
        view["state"] = quota.state(partner, today)
        view["week"] = quota.week_of(today)
        view["usage"] = quota.usage(partner, used or {}, today)
    return view


class OnBehalf:
    """RPCs for partners and for the desk; the dependencies are RequestsService's, with the
    partners' collections of the same database."""

    partners_db = MongoStore("requests", PartnerStore)

    # -- partners, for supervisors -----------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def create_partner(self, partner, idempotency_key=None):
        """A new accredited partner; its API key is in this answer only.

        idempotency_key (the staff gateway sends one per HTTP request): the partner's id and
        its key's secret are derived from it and the request's content under the service's
        signer, so a second delivery of the same call finds the partner it made and answers
        the same key, instead of making a second partner."""
        data = load_or_raise(PARTNER, partner, InvalidRequest)
        request_key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        fingerprint = idempotency.request_fingerprint(request_key, data) if request_key else None
        secret = None
        if fingerprint:
            partner_id, made = idempotency.reference_for(
                self.tokens, fingerprint, lambda c: f"PTN-{c[:4]}-{c[4:]}", self.partners_db.get)
            if partner_id is None:
                raise ServiceUnavailable("Try again.")
            secret = self.tokens.digest(f"partner-key:{fingerprint}")
            if made is not None:  # delivered again: the same partner, the same key
                return dict(self._partner_view(made), api_key=quota.new_key(partner_id, secret)[0])
        else:
            partner_id = quota.new_partner_id()
        key, key_hash = tpool.execute(quota.new_key, partner_id, secret)
        doc = {"_id": partner_id, "name": data["name"], "contact_email": data["contact_email"],
               "contact_phone": data.get("contact_phone"), "quotas": data["quotas"],
               "expires": data["expires"].isoformat(), "suspended": False,
               "key_hash": key_hash, "created_ts": time.time(), "created_by": data["by"],
               "history": [{"action": "created", "by": data["by"], "at_ts": time.time()}]}
        if fingerprint:
            doc["idempotency"] = fingerprint
        try:
            self.partners_db.create(doc)
        except DuplicateKeyError:  # the other delivery stored it at the same moment
            made = self.partners_db.get(partner_id)
            if not fingerprint or made is None or made.get("idempotency") != fingerprint:
                raise
            doc = made
        return dict(self._partner_view(doc), api_key=key)

    @rpc(expected_exceptions=EXPECTED)
    def partners(self):
        return [self._partner_view(p) for p in self.partners_db.all()]

    @rpc(expected_exceptions=EXPECTED)
    def partner(self, partner_id):
        return self._partner_view(self._partner(partner_id))

    @rpc(expected_exceptions=EXPECTED)
    def suspend_partner(self, partner_id, by):
        data = validated(PARTNER_CHANGE, partner_id=partner_id, by=by)
        self._partner(data["partner_id"])
        changed = self.partners_db.update(data["partner_id"], {"suspended": True},
                                          {"action": "suspended", "by": data["by"], "at_ts": time.time()})
        return self._partner_view(changed)

    @rpc(expected_exceptions=EXPECTED)
    def renew_partner(self, partner_id, by, expires=None, quotas=None, new_key=False):
        """Active again (not suspended), with a new expiry and quotas when given; a new API key
        when asked (the old one stops working), in this answer only."""
        data = validated(PARTNER_CHANGE, partner_id=partner_id, by=by, expires=expires, quotas=quotas)
        self._partner(data["partner_id"])
        changes = {"suspended": False}
        if data.get("expires"):
            changes["expires"] = data["expires"].isoformat()
        if data.get("quotas"):
            changes["quotas"] = data["quotas"]
        key = None
        if new_key:
            key, changes["key_hash"] = tpool.execute(quota.new_key, data["partner_id"])
        changed = self.partners_db.update(data["partner_id"], changes, {
            "action": "renewed", "by": data["by"], "at_ts": time.time(),
            "expires": changes.get("expires"), "new_key": bool(new_key)})
        view = self._partner_view(changed)
        return dict(view, api_key=key) if key else view

    @rpc(expected_exceptions=EXPECTED)
    def partner_filings(self, partner_id, limit=200):
        """The audit of a partner's filings, newest first: request, procedure, mailbox, week,
        when, and the partner's name as it was then."""
        self._partner(partner_id)
        return [{"reference": f["_id"], "partner_id": f["partner_id"], "partner_name": f["partner_name"],
                 "procedure": f["procedure"], "mailbox": f["mailbox"], "week": f["week"],
                 "at": iso_from_ts(f["at_ts"])}
                for f in self.partners_db.filings_of(
                    partner_id, limit if isinstance(limit, int) and 0 < limit <= 1000 else 200)]

    # -- partners, for themselves ------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def partner_login(self, api_key):
        """The partner a key opens (401 for any key that opens none, the same answer for a
        malformed one); suspended and expired partners are answered too (their state says it):
        they may read, never file."""
        partner = self.partners_db.get(quota.key_partner(api_key))
        if partner is None or not tpool.execute(quota.key_matches, api_key, partner.get("key_hash")):
            raise PartnerUnknown()
        return self._partner_view(partner)

    @rpc(expected_exceptions=EXPECTED)
    def partner_file(self, partner_id, request, idempotency_key=None):
        """A partner files for a beneficiary (born confirmed; one place of the week's quota)."""
        partner = self._partner(partner_id)
        today = quota.paris_day(self.clock.now())
        data = load_or_raise(PARTNER_FILING, request, InvalidRequest)
        refused = quota.refusal(partner, data["procedure"], today)
        if refused:
            field, reason = refused
            raise PartnerNotAllowed(f"{reason} / Rien n'a été déposé.", {field: [reason]})
        if data["mailbox"] == "partner":
            data["email"] = partner["contact_email"]
        filed_by = {"kind": "partner", "id": partner["_id"], "name": partner["name"]}
        counter = quota.counter_id(partner["_id"], data["procedure"], today)

        def take(reference):
            limit = quota.quota(partner, data["procedure"])
            if not self.partners_db.take(counter, limit, self.clock.now(), reference,
                                         quota.counter_expiry(today)):
                raise QuotaReached(quota_message(limit, data["procedure"]),
                                   {"procedure": [f"Weekly quota reached ({limit})."]})
            return lambda: self.partners_db.give_back(counter, reference)

        filed = self._file_on_behalf(data, filed_by, "partner", idempotency_key, take,
                                     claim_email=data["mailbox"] == "beneficiary")
        self.partners_db.record_filing({
            "_id": filed["reference"], "partner_id": partner["_id"], "partner_name": partner["name"],
            "procedure": data["procedure"], "mailbox": data["mailbox"], "week": quota.week_of(today),
            "at_ts": time.time()})
        log.info("partner %s filed %s", partner["_id"], filed["reference"])
        return filed

    @rpc(expected_exceptions=EXPECTED)
    def partner_requests(self, partner_id):
        """The partner's requests, newest first, with their state and offer."""
        self._partner(partner_id)
        found = self.store.requests.find({"filed_by.id": partner_id}).sort("filed_ts", -1).limit(TELL_LIMIT)
        return [self._on_behalf_view(r) for r in found]

    @rpc(expected_exceptions=EXPECTED)
    def partner_accept(self, partner_id, reference):
        """The partner accepts an offer for its beneficiary (suspended or expired: refused)."""
        partner = self._partner(partner_id)
        current = quota.state(partner, quota.paris_day(self.clock.now()))
        if current != quota.ACTIVE:
            raise PartnerNotAllowed(f"This partner account is {current}.", {"partner": [current]})
        request = self.store.get(reference) if isinstance(reference, str) else None
        if request is None or (request.get("filed_by") or {}).get("id") != partner_id:
            raise NotFound(NOT_YOURS, {"reference": [NOT_YOURS]})
        return self._accept_on_behalf(request)

    # -- the desk (issue 21) -----------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def file_for_person(self, request, agent, idempotency_key=None):
        """An agent files for a person without e-mail, at the desk or on the phone."""
        data = load_or_raise(PERSON_FILING, request, InvalidRequest)
        if not isinstance(agent, str) or not 0 < len(agent) <= 64:
            raise InvalidRequest("Who files.", {"agent": ["Required."]})
        data["email"] = None
        filed_by = {"kind": "agent", "id": agent, "name": agent}
        return self._file_on_behalf(data, filed_by, data["channel"], idempotency_key, None,
                                    claim_email=False)

    @rpc(expected_exceptions=EXPECTED)
    def offers_to_tell(self):
        """Offers made to people without e-mail (filed at the desk or on the phone): whom to
        call or write to, soonest deadline first."""
        found = self.store.requests.find({"state": rules.OFFERED, "filed_by.kind": "agent"}).limit(TELL_LIMIT)
        views = [self._on_behalf_view(r, staff=True) for r in found]
        offered = [v for v in views if v.get("offer")]
        return sorted(offered, key=lambda v: v["offer"]["deadline"])

    @rpc(expected_exceptions=EXPECTED)
    def person_request(self, reference):
        """A request filed at the desk, as staff see it (the letter to print)."""
        request = self.store.get(reference) if isinstance(reference, str) else None
        if request is None or (request.get("filed_by") or {}).get("kind") != "agent":
            raise NotFound("No request filed at the desk has this reference.",
                           {"reference": ["Unknown."]})
        return self._on_behalf_view(request, staff=True)

    @rpc(expected_exceptions=EXPECTED)
    def accept_for_person(self, reference, agent):
        """The person called back and said yes: the agent accepts the offer for them."""
        request = self.store.get(reference) if isinstance(reference, str) else None
        if request is None or (request.get("filed_by") or {}).get("kind") != "agent":
            raise NotFound("No request filed at the desk has this reference.",
                           {"reference": ["Unknown."]})
        accepted = self._accept_on_behalf(request, accepted_by=agent)
        return accepted

    # -- figures -----------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def partner_figures(self):
        """This week's quotas and their use, per procedure, over active partners (no names):
        what the fairness page shows."""
        today = quota.paris_day(self.clock.now())
        out = {"week": quota.week_of(today), "procedures": {}}
        for partner in self.partners_db.all():
            if quota.state(partner, today) != quota.ACTIVE:
                continue
            for procedure, use in self._usage(partner, today).items():
                entry = out["procedures"].setdefault(procedure, {"partners": 0, "quota": 0, "used": 0})
                entry["partners"] += 1
                entry["quota"] += use["quota"]
                entry["used"] += use["used"]
        return out

    # -- the work ----------------------------------------------------------------------------

    def _file_on_behalf(self, data, filed_by, channel, idempotency_key, take, claim_email):
        """File, born confirmed: the same rules as a request from the site, minus the mailbox
        proof. take(reference): the partner's quota place (a function to give it back), or
        None."""
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        fingerprint = (idempotency.request_fingerprint(key, dict(data, filed_by=filed_by["id"]))
                       if key else None)
        if fingerprint:
            reference, made = idempotency.reference_for(
                self.tokens, fingerprint, lambda chars: f"REQ-{chars[:4]}-{chars[4:]}", self.store.get)
            if reference is None:
                raise ServiceUnavailable("The request was not filed. Please try again.")
            if made is not None and made["state"] != rules.UNCONFIRMED:
                return self._on_behalf_view(made)
        else:
            reference, made = "REQ-" + _service()._code(), None
        procedure = data["procedure"]
        if self.slots.modes()[procedure] != "requests":
            raise Refused("Cette démarche se réserve directement. / This procedure is booked "
                          "directly, not by request.", {"procedure": ["Booked directly."]})
        problem = name_problem(data["family_name"], data["given_names"], data.get("email") or "",
                               procedure)
        if problem:
            field, reason = problem
            raise InvalidRequest("Give the exact name as on the passport or permit.",
                                 {field: [f"Not an exact name ({reason})."]})
        keys = []
        email_key = one_email.mailbox_key(data["email"], self.config) if data.get("email") else None
        if channel == "partner":
            # a partner's renewal matches the register as the site's does, and its first
            # application a long-stay visa (issue 24); an agent at the desk has the permit or
            # the passport in hand, and is the way in when it does not match (or there is no
            # visa). verified_by: the register's book that matched, else who vouched
            data["verified_by"] = self._register_check(data, email_key)[0] or "partner"
        else:
            data["verified_by"] = "desk"
        if claim_email:
            keys.append(f"email:{procedure}:{email_key}")
        if data.get("foreigner_number"):
            keys.append(f"number:{procedure}:{data['foreigner_number']}")
        keys.append(f"person:{procedure}:"
                    f"{person_key(data['family_name'], data['given_names'], data['birth_date'].isoformat())}")
        if made is None:
            taken = self.store.held(keys)
            if taken:
                raise _service()._already_open(taken, _service().ALREADY_OPEN)
        give_back = take(reference) if take else None
        try:
            if made is None:
                made = self._insert_on_behalf(reference, data, filed_by, channel, keys, email_key,
                                              fingerprint)
            request = self._claim_and_confirm(made)
        except Refused:
            # another open request holds the person (or the e-mail): nothing filed, the quota
            # place back; the request is closed so that it never enters a draw
            if give_back:
                give_back()
            closed = self.store.move(reference, [rules.UNCONFIRMED],
                                     {"state": rules.WITHDRAWN, "closed_ts": time.time()})
            if closed is not None:
                self.store.free_keys(closed)
            raise
        except Exception:
            if give_back and self.store.get(reference) is None:
                give_back()
            raise
        return self._on_behalf_view(request)

    def _insert_on_behalf(self, reference, data, filed_by, channel, keys, email_key, fingerprint):
        now = self.clock.now()
        salt = new_salt()
        doc = {
            "_id": reference, "procedure": data["procedure"], "state": rules.UNCONFIRMED,
            "identity": {"family_name": data["family_name"], "given_names": data["given_names"],
                         "birth_date": data["birth_date"].isoformat(),
                         "foreigner_number": data.get("foreigner_number")},
            "permit_expiry": data["permit_expiry"].isoformat() if data.get("permit_expiry") else None,
            "email": data.get("email"), "email_key": email_key, "phone": data.get("phone"),
            "postal_address": (data.get("postal_address") or "").strip() or None,
            "mailbox": data.get("mailbox"), "channel": channel, "filed_by": filed_by,
            "lang": data["lang"], "availability": availability_doc(data["availability"]),
            "filed_ts": now.timestamp(), "filed_day": rules.paris_today(now).isoformat(),
            # confirmed in the same call; a crash before leaves it to expire like any
            "confirm_by_ts": now.timestamp() + 3600 * self._setting("REQUEST_CONFIRM_HOURS"),
            "missed": 0, "claim_keys": keys, "verified_by": data["verified_by"],
            "token_hash": TokenSigner.hash_token(self.tokens.token_for(reference, salt)),
            "token_salt": salt, "outbox": {},
        }
        try:
            made = idempotency.insert_once(self.store.insert, self.store.get, doc, fingerprint)
        except DuplicateKeyError:
            raise ServiceUnavailable("The request was not filed. Please try again.")
        return made or doc

    def _accept_on_behalf(self, request, accepted_by=None):
        """Accept the request's offer as the applicant would (requests.accept), with its
        token rebuilt: the same conditional updates, deadline and booking."""
        token = self.tokens.token_for(request["_id"], request["token_salt"])
        accepted = self.accept(request["_id"], token, {"ip": ""})
        if accepted_by:
            self.store.requests.update_one({"_id": request["_id"]},
                                           {"$set": {"accepted_by": accepted_by}})
        return accepted

    def _book_on_behalf(self, request, offer, booking_ref):
        """The booking of an offer to a request filed on someone's behalf (called by
        _book_offer). The beneficiary's own mailbox: a booking like any, M3 on that e-mail, no
        network address (the partner's office is no evidence against its beneficiaries).
        Otherwise (the partner's mailbox, or no e-mail): a booking without e-mail, marked with
        its channel and who filed it, as the desk's (booking.book_for_person)."""
        identity = request["identity"]
        person = {"procedure": request["procedure"], "slot_id": offer["slot_id"],
                  "family_name": identity["family_name"], "given_names": identity["given_names"],
                  "birth_date": identity["birth_date"],
                  "foreigner_number": identity.get("foreigner_number"),
                  "phone": request.get("phone")}
        held = {"reference": booking_ref, "hold_id": offer["_id"]}
        if request.get("mailbox") == "beneficiary":
            return self.booking.create(dict(person, email=request["email"],
                                            lang=request.get("lang") or "fr"),
                                       {"ip": ""}, offer=held)
        filed_by = request["filed_by"]
        by = f"partner:{filed_by['id']}" if filed_by["kind"] == "partner" else filed_by["id"]
        made = self.booking.book_for_person(dict(person, channel=request["channel"], agent=by,
                                                 postal_address=request.get("postal_address")),
                                            offer=held)
        return {"reference": made["id"], "token": made["token"], "slot": made["slot"],
                "convocation": made["convocation"]}

    def _on_behalf_view(self, request, staff=False):
        view = self._view(request)
        view.update(channel=request.get("channel"), mailbox=request.get("mailbox"),
                    filed_by=request.get("filed_by"))
        if staff or request.get("filed_by", {}).get("kind") == "partner":
            identity = request["identity"]
            view.update(family_name=identity["family_name"], given_names=identity["given_names"],
                        birth_date=identity["birth_date"], phone=request.get("phone"),
                        postal_address=request.get("postal_address"))
        return view

    def _partner(self, partner_id):
        partner = self.partners_db.get(partner_id)
        if partner is None:
            raise NotFound("No partner with this id.", {"partner_id": ["Unknown partner."]})
        return partner

    def _usage(self, partner, today):
        ids = {quota.counter_id(partner["_id"], p, today): p for p in partner.get("quotas") or {}}
        used = self.partners_db.used(ids)
        return quota.usage(partner, {ids[c]: n for c, n in used.items()}, today)

    def _partner_view(self, partner):
        today = quota.paris_day(self.clock.now())
        return partner_view(partner, {p: u["used"] for p, u in self._usage(partner, today).items()},
                            today)


def _service():
    """services/requests/service.py, which imports this module (its helpers, not copies)."""
    from services.requests import service
    return service
