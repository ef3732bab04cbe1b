"""Evidence of failed booking attempts (M7) as plain functions: who, which file, what is signed.

An applicant who finds nothing bookable records the attempt; the prefecture waives the
late-filing penalty for a permit that expired less than two months ago when such attempts are
on record. Who the applicant is: their foreigner number (AGDREF) when they have one, else
their e-mail. Their attempts form a file keyed by that and the e-mail together, so that
knowing someone's foreigner number alone never shows their file; each receipt carries a
secret token (only its hash is stored) that opens the file, and the attestation of it is
signed with the prefecture's Ed25519 key (services/common/signing.py).
"""
import hashlib
import secrets
from services.booking.rules import _ALPHABET
from services.common import contract
from services.common.normalise import normalise_email
from services.common.timeutil import PARIS, iso_utc

ATTESTATION_TYPE = "failed_booking_attempts"
ISSUER = "Préfecture de l'Hérault"


def new_attempt_reference():
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"ATT-{chars[:4]}-{chars[4:]}"


def applicant_key(foreigner_number, email):
    """The person the daily limit counts: the foreigner number, else the normalised e-mail."""
    return f"agdref:{foreigner_number}" if foreigner_number else f"email:{normalise_email(email)}"


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def file_id(foreigner_number, email):
    """The applicant's evidence file: their key and their e-mail together (pseudonymous)."""
    return "file-" + _digest(f"{applicant_key(foreigner_number, email)}|{normalise_email(email)}")[:24]


def day_key(foreigner_number, email, now):
    """Counter id for one applicant's attempts on one Paris day (no personal data in it)."""
    day = now.astimezone(PARIS).date().isoformat()
    return f"{_digest(applicant_key(foreigner_number, email))[:32]}:{day}"


def attempt_view(attempt):
    """What the applicant (holder of a receipt token) sees of one attempt."""
    return {"reference": attempt["_id"], "procedure": attempt["procedure"],
            "at": iso_utc(attempt["at"])}


def recorded_event(attempt, token):
    return contract.build(
        "attempt_recorded",
        event_id=attempt["outbox"]["recorded"]["event_id"],
        occurred_at=attempt["at"],
        reference=attempt["_id"],
        procedure=attempt["procedure"],
        email=attempt["email"],
        foreigner_number=attempt.get("foreigner_number"),
        recorded_at=iso_utc(attempt["at"]),
        token=token,
    )


def attestation_fields(attempts, now):
    """The signed content: who, and every attempt on record in their file, oldest first."""
    first = attempts[0]
    return {
        "type": ATTESTATION_TYPE,
        "issuer": ISSUER,
        "file": first["file"],
        "applicant": {"foreigner_number": first.get("foreigner_number"), "email": first["email"]},
        "attempts": [attempt_view(a) for a in attempts],
        "issued_at": iso_utc(now),
    }


def attempts_match(claimed, stored_by_reference, file):
    """True when every attempt the attestation lists is on record, as listed, in that file."""
    if not isinstance(claimed, list) or not claimed:
        return False
    for item in claimed:
        if not isinstance(item, dict) or not isinstance(item.get("reference"), str):
            return False
        stored = stored_by_reference.get(item["reference"])
        if stored is None or stored["file"] != file or attempt_view(stored) != item:
            return False
    return True
