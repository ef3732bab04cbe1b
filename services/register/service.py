"""Register service (issue 24): the prefecture's register of current permits and of
long-stay visas.

Supervisors import the register (a CSV export) through the staff gateway; an import is whole
or nothing, answers its diff (added, changed, removed), and can be previewed without being
applied. Requests asks `match` before it accepts a renewal: the foreigner number, the birth
date and the folded family name must be those of a permit in force, and the priority is the
register's expiry. Nothing here answers the public: the staff gateway and requests call it
over RPC, and `match` says only whether there is a match (and the permit's expiry when there
is).

Long-stay visas (VLS-TS and the like: most first applications follow one) are a second book
imported the same way (`import_visas`, `visa_status`: the same reading, diff and switch,
`_import`); requests asks `match_visa` before it accepts a first application (the visa
number, the birth date and the folded family name), and the answer is as `match`'s.

Invitations: a timer (one instance through a lease) takes the permits expiring within the
renewal window that have an e-mail, soonest expiry first, and records one invitation per
permit (unique id derived from the number and the expiry), announced through its outbox as
`renewal_invitation`; notify mails it once per event id. The invitation's link carries a
token (HMAC under REGISTER_TOKEN_SECRET, only its hash stored) that requests redeems with
`invitation`: a request filed with it from the invited mailbox needs no e-mail confirmation.
"""
import logging
import time
import uuid

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher

from services.common import contract, health
from services.common import relay, retention
from services.common.clock import Clock
from services.common.errors import EXPECTED, InvalidRequest, NotFound, Refused
from services.common.lease import InstanceId
from services.common.logs import CallIdLogging
from services.common.mongo import MongoStore
from services.common.outbox import Outbox, announce
from services.common.rpc import rpc
from services.common.schemas import ListingSchema, load_or_raise, validated
from services.common.settings import retention_days, setting
from services.common.timers import config_timer
from services.common.timeutil import PARIS
from services.common.tokens import Tokens, TokenSigner, new_salt
from services.common.views import iso_from_ts
from services.register import rules
from services.register.schemas import (ImportSchema, InvitationSchema, MatchSchema,
                                       VisaMatchSchema)
from services.register.store import RegisterStore, SwitchRefused

log = logging.getLogger(__name__)

IMPORT, MATCH, INVITATION, LISTING = ImportSchema(), MatchSchema(), InvitationSchema(), ListingSchema()
VISA_MATCH = VisaMatchSchema()
DIFF_SHOWN = 1000  # numbers listed per kind of change (the counts are whole)
INVITE_JOB = "invite"
NO_INVITATION = "No invitation with this reference and token, or its permit changed."


def _shown(diff):
    return {kind: diff[kind][:DIFF_SHOWN] for kind in ("added", "changed", "removed")}


class RegisterService(relay.OutboxRelay):
    name = "register"

    store = MongoStore("register", RegisterStore)
    dispatch = EventDispatcher()
    tokens = Tokens("REGISTER_TOKEN_SECRET")
    clock = Clock()
    config = Config()
    # refuses to start with a period below the floor (erasure cannot be undone)
    retention_periods = retention.RetentionPeriods("REQUEST_RETENTION_DAYS")
    instance = InstanceId()
    log_context = CallIdLogging()

    # -- supervisors (through the staff gateway) ----------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def import_register(self, csv, by, apply=True):
        """Read an export whole, diff it against the register in force, and (apply) make it
        the register. A bad line refuses the whole file (400, the line and the reason)."""
        return self._import(rules.PERMITS, self.store, csv, by, apply)

    @rpc(expected_exceptions=EXPECTED)
    def import_visas(self, csv, by, apply=True):
        """The long-stay visas' export, as import_register (its own book, diff and records)."""
        return self._import(rules.VISAS, self.store.visas, csv, by, apply)

    def _import(self, book, generations, csv, by, apply):
        """An export of `book` read whole, diffed against `generations` (its store) in force,
        and (apply) switched in: the same for permits and visas."""
        args = validated(IMPORT, csv=csv, by=by, apply=apply)
        try:
            incoming = rules.parse_export(args["csv"], self._setting("REGISTER_MAX_LINES"), book)
        except rules.ImportProblem as problem:
            raise InvalidRequest(
                f"Ligne {problem.line} : {problem.reason}. Rien n'a été importé. / Line "
                f"{problem.line}: {problem.reason}. Nothing was imported.",
                {"csv": [f"line {problem.line}, {problem.field}: {problem.reason}"]})
        current = generations.current()
        base = current["generation"] if current else None
        diff = rules.diff(generations.current_entries(base), incoming, book)
        counts = {book.name: len(incoming), **{k: len(v) for k, v in diff.items()}}
        answer = {"applied": False, "counts": counts, "diff": _shown(diff),
                  "previous": base}
        if not args["apply"]:
            return answer
        generation = uuid.uuid4().hex
        docs = [dict(entry, _id=f"{generation}:{number}", generation=generation, number=number,
                     match=book.digest(number, entry))
                for number, entry in incoming.items()]
        generations.write_generation(generation, docs)
        now = time.time()
        record = {"generation": generation, "at_ts": now, "by": args["by"], "counts": counts}
        try:
            generations.switch(base, record)
        except SwitchRefused:
            generations.drop_generation(generation)
            raise Refused("Un autre import a été appliqué entre-temps : importez à nouveau pour "
                          "voir ses différences. / Another import was applied meanwhile: import "
                          "again to see its differences.", {"csv": ["The register changed."]})
        generations.record_import(dict(record, _id=generation, previous=base))
        if base is not None:
            generations.drop_generation(base)
        # counts only: never a number or a name in the log
        log.info("register (%s) imported by %s: %s", book.name, args["by"], counts)
        return dict(answer, applied=True, generation=generation, at=iso_from_ts(now))

    @rpc(expected_exceptions=EXPECTED)
    def status(self, limit=10):
        """The register in force (when, by whom, how many permits) and the last imports with
        their counts; never an entry."""
        return dict(self._status(rules.PERMITS, self.store, limit),
                    invitations=self.store.count_invitations())

    @rpc(expected_exceptions=EXPECTED)
    def visa_status(self, limit=10):
        """The long-stay visas in force (when, by whom, how many) and their last imports."""
        return self._status(rules.VISAS, self.store.visas, limit)

    def _status(self, book, generations, limit):
        args = validated(LISTING, limit=limit)
        current = generations.current()
        imports = [{"generation": r["_id"], "at": iso_from_ts(r["at_ts"]), "by": r["by"],
                    "counts": r["counts"]} for r in generations.recent_imports(args["limit"])]
        return {"current": {"generation": current["generation"], "at": iso_from_ts(current["at_ts"]),
                            "by": current["by"], book.name: current["counts"][book.name]}
                if current else None,
                "imports": imports}

    # -- requests -----------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def match(self, foreigner_number, birth_date, family_name):
        """{"matched": True, "expiry", "permit_kind", "procedure"} for a permit in force with
        this number, birth date and folded family name; {"matched": False} otherwise, the same
        answer and the same two reads whichever differs (or with no register yet)."""
        args = validated(MATCH, foreigner_number=foreigner_number, birth_date=birth_date,
                         family_name=family_name)
        current = self.store.current() or {}
        digest = rules.lookup_match(args["foreigner_number"], args["birth_date"].isoformat(),
                                    args["family_name"])
        entry = self.store.find_match(current.get("generation"), digest)
        if entry is None:
            return {"matched": False}
        return {"matched": True, "expiry": entry["expiry"], "permit_kind": entry["permit_kind"],
                "procedure": rules.procedure_for(entry)}

    @rpc(expected_exceptions=EXPECTED)
    def match_visa(self, visa_number, birth_date, family_name):
        """{"matched": True, "validity_end", "visa_kind", "procedure"} for a long-stay visa
        in the register with this number, birth date and folded family name; {"matched":
        False} otherwise, as `match` (the same answer and reads whichever differs)."""
        args = validated(VISA_MATCH, visa_number=visa_number, birth_date=birth_date,
                         family_name=family_name)
        current = self.store.visas.current() or {}
        digest = rules.lookup_visa_match(args["visa_number"], args["birth_date"].isoformat(),
                                         args["family_name"])
        entry = self.store.visas.find_match(current.get("generation"), digest)
        if entry is None:
            return {"matched": False}
        return {"matched": True, "validity_end": entry["validity_end"],
                "visa_kind": entry["visa_kind"], "procedure": rules.VISA_KINDS[entry["visa_kind"]]}

    @rpc(expected_exceptions=EXPECTED)
    def invitation(self, invitation, token):
        """What an invitation vouches for, to its token's holder: the permit's identity, the
        invited e-mail, the procedure and the register's expiry. NotFound (one answer) for a
        wrong token or a permit no longer in force as it was invited."""
        args = load_or_raise(INVITATION, {"invitation": invitation, "token": token}, InvalidRequest)
        doc = self.store.get_invitation(args["invitation"])
        # erased past REQUEST_RETENTION_DAYS: nobody left to vouch for (the same answer)
        if doc is None or retention.erased(doc) or not self.tokens.matches(args["token"],
                                                                           doc["token_hash"]):
            raise NotFound(NO_INVITATION)
        current = self.store.current() or {}
        entry = self.store.find_number(current.get("generation"), doc["number"])
        if entry is None or entry["expiry"] != doc["expiry"]:
            raise NotFound(NO_INVITATION)
        return {"invitation": doc["_id"], "procedure": rules.procedure_for(entry),
                # the mailbox the invitation went to: following its link proved it
                "email": doc["email"], "expiry": entry["expiry"],
                "identity": {"family_name": entry["family_name"],
                             "given_names": entry["given_names"],
                             "birth_date": entry["birth_date"],
                             "foreigner_number": entry["number"]}}

    @rpc(expected_exceptions=EXPECTED)
    def health(self):
        return health.report(self.name, lambda: {
            "outbox": health.outbox_backlog(self.store.invitation_outbox)})

    # -- invitations --------------------------------------------------------------------------

    @config_timer("REGISTER_INVITE_TIMER_SECONDS")
    def invite(self):
        interval = self._setting("REGISTER_INVITE_TIMER_SECONDS")
        if not self.store.leases.acquire(INVITE_JOB, self.instance, 3 * interval, time.time()):
            return
        try:
            self.invite_pass()
        finally:
            self.store.leases.release(INVITE_JOB, self.instance)

    @config_timer("RETENTION_TIMER_SECONDS")
    def erase_expired(self):
        """Erase who the invitations were for REQUEST_RETENTION_DAYS after they were sent
        (services/common/retention.py): one instance per pass (a lease), bounded batches. The
        register itself holds only the permits in force: each import replaces it whole."""
        return retention.run_pass(self.store.leases, "retention", self.instance, self.config,
                                  self._erase)

    def _erase(self, now_ts, limit):
        before_ts = retention.cutoff_ts(self.clock.now().timestamp(),
                                        retention_days(self.config, "REQUEST_RETENTION_DAYS"))
        return {"invitations": self.store.erase_invitations(before_ts, now_ts, limit)}

    def invite_pass(self):
        """Invitations for the permits due one, soonest expiry first; the number recorded.
        Safe without the lease too: each permit's invitation is one unique insert."""
        current = self.store.current()
        if current is None:
            return 0
        today = self.clock.now().astimezone(PARIS).date()
        first, last = rules.invitation_window(today, self._setting("RENEWAL_WINDOW_FROM_DAYS"),
                                              self._setting("RENEWAL_WINDOW_TO_DAYS"))
        candidates = self.store.in_window(current["generation"], first, last)
        ids = {number: rules.permit_id(self.tokens.digest, number, entry)
               for number, entry in candidates}
        invited = self.store.invited(ids.values())
        fresh = [(n, e) for n, e in candidates if ids[n] not in invited]
        made = 0
        for number, entry in rules.due_invitations(
                fresh, today, self._setting("RENEWAL_WINDOW_FROM_DAYS"),
                self._setting("RENEWAL_WINDOW_TO_DAYS"), self._setting("REGISTER_INVITATIONS_PER_PASS")):
            salt = new_salt()
            doc = {"_id": ids[number], "number": number, "expiry": entry["expiry"],
                   "email": entry["email"], "procedure": rules.procedure_for(entry),
                   "family_name": entry["family_name"], "given_names": entry["given_names"],
                   "at_ts": time.time(), "token_salt": salt,
                   "token_hash": TokenSigner.hash_token(self.tokens.token_for(ids[number], salt)),
                   "outbox": {"sent": Outbox.entry(str(uuid.uuid4()), time.time(),
                                                   self._setting("OUTBOX_GRACE_SECONDS"))}}
            if self.store.add_invitation(doc):
                self._announce(doc)
                made += 1
        if made:
            log.info("%d renewal invitations recorded", made)
        return made

    def _announce(self, doc):
        payload = contract.build(
            "renewal_invitation", event_id=doc["outbox"]["sent"]["event_id"],
            invitation=doc["_id"], procedure=doc["procedure"], email=doc["email"],
            family_name=doc["family_name"], given_names=doc["given_names"],
            expiry=doc["expiry"], token=self.tokens.token_for(doc["_id"], doc["token_salt"]))
        announce(self.dispatch, self.store.invitation_outbox, "sent", doc["_id"],
                 "renewal_invitation", payload)

    def outbox_routes(self):
        return [(self.store.invitation_outbox, "sent", self._announce)]

    def _setting(self, key):
        return setting(self.config, key)
