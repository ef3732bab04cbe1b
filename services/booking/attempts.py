"""M7: evidence of failed attempts (a mixin of services/booking/service.py): record an attempt
when nothing is bookable, the applicant's file and its signed attestation, staff's look-up and
the penalty waiver's answer (services/common/penalty_waiver.py), anyone's verification (the
rules: evidence.py)."""
import time
import uuid

from pymongo.errors import DuplicateKeyError

from services.booking import evidence
from services.common import attestation_code, idempotency, one_email, penalty_waiver, signing
from services.common.errors import (EXPECTED, InvalidRequest, NotFound, PlacesAvailable,
                                    ServiceUnavailable, TooManyAttempts, UseRequest)
from services.common.one_email import normalise_email
from services.common.outbox import Outbox
from services.common.retention import erased
from services.common.rpc import rpc
from services.common.schemas import (ApplicantLookupSchema, AttemptAccessSchema,
                                     AttemptRequestSchema, AttestationSchema,
                                     PenaltyWaiverSchema, load_or_raise)
from services.common.schemas import idempotency_key as idempotency_key_or_none
from services.common.settings import setting
from services.common.tokens import TokenSigner, new_salt
from services.common.timeutil import utcnow

NOT_RECORDED = "The attempt was not recorded. Please try again."
ATTEMPT_REQUEST, ATTEMPT_ACCESS, ATTESTATION = AttemptRequestSchema(), AttemptAccessSchema(), AttestationSchema()
APPLICANT_LOOKUP = ApplicantLookupSchema()
WAIVER = PenaltyWaiverSchema()
NO_ATTEMPT = "No recorded attempt with this reference and token."


class Attempts:
    """M7 attempts' RPCs; the dependencies and settings are BookingService's."""

    @rpc(expected_exceptions=EXPECTED)
    def record_attempt(self, request, idempotency_key=None):
        """Record that nothing was bookable for a procedure; e-mail a receipt (attempt_recorded).

        Refused for a procedure allocated by request (its request is the evidence), while a
        place is bookable for the procedure (book it instead), and past ATTEMPTS_PER_DAY
        recorded attempts per applicant or ATTEMPTS_PER_EMAIL_PER_DAY per e-mail and Paris day.

        idempotency_key: the caller's key for this request (the public gateway sends one per
        HTTP request, or the applicant's own), as `create`'s: the attempt's reference is
        derived from it and the request's content, so the same request delivered or sent again
        answers the attempt it recorded (the same reference and token) without recording,
        counting or mailing again, even once places have become bookable meanwhile.
        """
        data = load_or_raise(ATTEMPT_REQUEST, request, InvalidRequest)
        key = idempotency_key_or_none(idempotency_key, InvalidRequest)
        fingerprint = idempotency.request_fingerprint(key, data) if key else None
        if fingerprint:
            reference, made = idempotency.reference_for(
                self.tokens, fingerprint, evidence.attempt_reference, self.store.get_attempt)
            if reference is None:
                raise ServiceUnavailable(NOT_RECORDED)
            if made is not None:  # delivered or sent again: the same answer again
                return self._attempt_answer(made)
        else:
            reference = evidence.new_attempt_reference()
        if self.slots.modes()[data["procedure"]] == "requests":
            raise UseRequest(fields={"procedure": ["Allocated by request: file a request."]})
        if self.slots.any_bookable(data["procedure"]):
            raise PlacesAvailable(
                "Places are bookable for this procedure right now: book one instead.",
                {"procedure": ["Places are bookable right now."]})
        now = utcnow()
        # to the millisecond, as stored: the answer given again is the first one
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        number, email = data.get("foreigner_number"), data["email"]
        per_person = setting(self.config, "ATTEMPTS_PER_DAY")
        per_email = setting(self.config, "ATTEMPTS_PER_EMAIL_PER_DAY")
        rules_on = one_email.provider_rules(self.config)
        limits = evidence.daily_limits(number, email, now, per_person, per_email, rules_on)
        # counted under the reference: a delivery again after a crash here counts once
        if not self.store.attempt_days.take_all(limits, now, token=reference):
            raise TooManyAttempts(evidence.too_many_message(per_person, per_email), {})
        salt = new_salt()
        token = self.tokens.token_for(reference, salt)
        attempt = {
            "_id": reference, "file": evidence.file_id(number, email, rules_on),
            "procedure": data["procedure"], "email": email, "foreigner_number": number,
            "lang": data["lang"],  # the receipt's language
            "email_key": normalise_email(email, rules_on),
            "at": now, "at_ts": now.timestamp(),
            "token_hash": TokenSigner.hash_token(token), "token_salt": salt,
            "outbox": {"recorded": Outbox.entry(str(uuid.uuid4()), time.time(), self._grace())},
        }
        try:
            made = idempotency.insert_once(self.store.insert_attempt, self.store.get_attempt,
                                           attempt, fingerprint)
        except DuplicateKeyError:
            raise ServiceUnavailable(NOT_RECORDED)
        if made is not None:  # its other delivery's: its answer (its count is ours)
            return self._attempt_answer(made)
        self._announce_attempt(attempt, token)
        return dict(evidence.attempt_view(attempt), token=token)

    def _attempt_answer(self, attempt):
        """A recorded attempt's answer again, its token rebuilt from the stored salt."""
        return dict(evidence.attempt_view(attempt),
                    token=self.tokens.token_for(attempt["_id"], attempt["token_salt"]))

    @rpc(expected_exceptions=EXPECTED)
    def attempts(self, reference, token):
        """The attempts in the file of the holder of a receipt, oldest first."""
        attempt = self._owned_attempt(reference, token)
        found = self.store.attempts_in(attempt["file"])
        return {"attempts": [evidence.attempt_view(a) for a in found]}

    @rpc(expected_exceptions=EXPECTED)
    def attestation(self, reference, token):
        """The signed attestation of every attempt in the receipt holder's file."""
        attempt = self._owned_attempt(reference, token)
        found = self.store.attempts_in(attempt["file"])
        if not found:  # erased meanwhile
            raise NotFound(NO_ATTEMPT)
        fields = evidence.attestation_fields(found, utcnow())
        issued = self.store.last_attestation(attempt["file"])
        if not evidence.same_attempts(issued, fields):
            signature = signing.sign(self.attestation_key, fields)
            issued = {"_id": attestation_code.attestation_code(signature), "file": attempt["file"],
                      "attestation": fields, "signature": signature, "issued_ts": time.time()}
            self.store.insert_attestation(issued)
        return {"attestation": issued["attestation"], "signature": issued["signature"],
                "code": issued["_id"]}

    @rpc(expected_exceptions=EXPECTED)
    def attestation_by_code(self, code):
        """The attestation on record under this verification code, checked again (signature,
        code, attempts); {found: false} for any code that is not one (anyone may ask)."""
        code = attestation_code.parse_code(code)
        issued = self.store.get_attestation(code) if code else None
        if issued is None:
            return {"found": False}
        fields, signature = issued["attestation"], issued["signature"]
        answer = evidence.check(self.attestation_key.public_key(), fields, signature,
                                self.store.attempts_by_reference(evidence.listed_references(fields)))
        if attestation_code.attestation_code(signature) != code:  # the record was edited
            answer = dict(answer, valid=False, signature_valid=False,
                          message="The code does not match the signature: this record was altered.")
        return dict(answer, found=True, code=code, attestation=fields, signature=signature)

    @rpc(expected_exceptions=EXPECTED)
    def attempts_of(self, foreigner_number=None, email=None):
        """Staff (M7 waiver): the attempts on record for an applicant, by foreigner number
        (AGDREF) or, without one, by e-mail; oldest first."""
        data = load_or_raise(APPLICANT_LOOKUP, {"foreigner_number": foreigner_number,
                                                "email": email}, InvalidRequest)
        found = self.store.attempts_of(data["foreigner_number"],
                                       one_email.mailbox_key(data["email"] or "", self.config),
                                       data["email"])
        return {"attempts": [dict(evidence.attempt_view(a), file=a["file"]) for a in found]}

    @rpc(expected_exceptions=EXPECTED)
    def penalty_waiver(self, foreigner_number=None, email=None, expiry=None, filing=None):
        """Staff (M7): is this applicant's late-filing penalty waived (expiry, filing:
        YYYY-MM-DD)? Answered here, where the attempts are, as the waiver page shows it
        (services/common/penalty_waiver.py)."""
        data = load_or_raise(WAIVER, {"foreigner_number": foreigner_number, "email": email,
                                      "expiry": expiry, "filing": filing}, InvalidRequest)
        found = self.attempts_of(data["foreigner_number"], data["email"])["attempts"]
        return penalty_waiver.waiver(data["expiry"], data["filing"], found)

    @rpc(expected_exceptions=EXPECTED)
    def verify_attestation(self, document):
        """Is this attestation ours, unchanged, and are its attempts on record? (staff, anyone)"""
        data = load_or_raise(ATTESTATION, document, InvalidRequest)
        fields = data["attestation"]
        return evidence.check(self.attestation_key.public_key(), fields, data["signature"],
                              self.store.attempts_by_reference(evidence.listed_references(fields)))

    # -- internals ---------------------------------------------------------------------------

    def _owned_attempt(self, reference, token):
        access = load_or_raise(ATTEMPT_ACCESS, {"reference": reference, "token": token},
                               InvalidRequest)
        attempt = self.store.get_attempt(access["reference"])
        # an erased attempt (past its retention) is nobody's any more: its token hash stays
        # for the audit, but its file is gone, so it lists and attests nothing (as a wrong token)
        if attempt is None or erased(attempt) or not attempt.get("file") \
                or not self.tokens.matches(access["token"], attempt["token_hash"]):
            raise NotFound(NO_ATTEMPT)
        return attempt

    def _announce_attempt(self, attempt, token):
        if self._dispatched(attempt["_id"], "attempt_recorded", evidence.recorded_event(attempt, token)):
            self.store.attempt_outbox.sent(attempt["_id"], "recorded")
