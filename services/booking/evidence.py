"""Evidence of failed booking attempts (M7) as plain functions: who, which file, what is signed.

An applicant who finds nothing bookable records the attempt; the prefecture waives the
late-filing penalty for a permit that expired less than two months ago when such attempts are
on record. Who the applicant is: their foreigner number (AGDREF) when they have one, else
their e-mail. Their attempts form a file keyed by that and the e-mail together, so that
knowing someone's foreigner number alone never shows their file; each receipt carries a
secret token (only its hash is stored) that opens the file, and the attestation of it is
signed with the prefecture's Ed25519 key (services/common/signing.py).

Each attestation issued is kept, under a short verification code derived from its signature
(`attestation_code`): typed or scanned on the verify pages, the code finds the attestation on
record, which is then checked again (signature, code, attempts) before anything is shown.
"""
import hashlib
import secrets

from services.common import signing
from services.booking.references import _ALPHABET
from services.common import contract
from services.common.daily_limit import day_key
from services.common.one_email import normalise_email
from services.common.timeutil import iso_utc

ATTESTATION_TYPE = "failed_booking_attempts"
ISSUER = "Préfecture de l'Hérault"


def new_attempt_reference():
    return attempt_reference("".join(secrets.choice(_ALPHABET) for _ in range(8)))


def attempt_reference(chars):
    return f"ATT-{chars[:4]}-{chars[4:]}"


def applicant_key(foreigner_number, email, provider_rules):
    """The person the daily limit counts: the foreigner number, else the mailbox key
    (`provider_rules`: the EMAIL_PROVIDER_RULES setting, services/common/one_email.py)."""
    return (f"agdref:{foreigner_number}" if foreigner_number
            else f"email:{normalise_email(email, provider_rules)}")


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def file_id(foreigner_number, email, provider_rules):
    """The applicant's evidence file: their key and their e-mail together (pseudonymous)."""
    return "file-" + _digest(f"{applicant_key(foreigner_number, email, provider_rules)}|"
                             f"{normalise_email(email, provider_rules)}")[:24]


def daily_limits(foreigner_number, email, now, per_person, per_email, provider_rules=True):
    """[(counter id, limit)] an attempt counts under on `now`'s Paris day: the person's (the
    foreigner number, else the e-mail), and the e-mail's whatever number is given, so that
    changing the number does not lift the e-mail's limit (the receipts go there)."""
    person = day_key(applicant_key(foreigner_number, email, provider_rules), now)
    mailbox = day_key(applicant_key(None, email, provider_rules), now)
    if person == mailbox:
        return [(person, min(per_person, per_email))]
    return [(person, per_person), (mailbox, per_email)]


def too_many_message(per_person, per_email):
    return (f"Au plus {per_person} tentatives par personne (numéro d'étranger) et {per_email} par "
            "adresse électronique peuvent être enregistrées chaque jour ; celles déjà enregistrées "
            "sont conservées. Pour aller au-delà, adressez-vous au personnel de la préfecture "
            f"(accueil des étrangers). / At most {per_person} attempts per person (foreigner "
            f"number) and {per_email} per e-mail address can be recorded each day; the ones "
            "already recorded are kept. If you need more, ask the prefecture's staff "
            "(foreigners' desk).")


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
        lang=attempt.get("lang") or "fr",
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
    """True when every attempt the attestation lists is on record, as listed, in that file
    (a file, not None, and none of them erased)."""
    if not isinstance(claimed, list) or not claimed:
        return False
    for item in claimed:
        if not isinstance(item, dict) or not isinstance(item.get("reference"), str):
            return False
        stored = stored_by_reference.get(item["reference"])
        # an erased attempt (file None, erased_ts) is no longer on record for anyone
        if stored is None or stored.get("erased_ts") or not file or stored.get("file") != file \
                or attempt_view(stored) != item:
            return False
    return True


def same_attempts(issued, fields):
    """True when an attestation already issued lists exactly the attempts of `fields`: it is
    handed out again (same code) rather than a new one signed at every view."""
    return issued is not None and issued["attestation"].get("attempts") == fields["attempts"] \
        and issued["attestation"].get("applicant") == fields["applicant"]


def check(public_key, fields, signature, stored_by_reference):
    """Is this attestation ours, unchanged, and are its attempts on record?"""
    signed = signing.verify(public_key, signature, fields)
    on_record = signed and attempts_match(fields.get("attempts"), stored_by_reference,
                                          fields.get("file"))
    if not signed:
        message = "The signature does not match: this attestation was not issued as shown."
    elif not on_record:
        message = "The signature is valid, but its attempts are not all on record."
    else:
        message = "Valid: issued by the prefecture, and every attempt is on record."
    return {"valid": bool(signed and on_record), "signature_valid": signed,
            "attempts_on_record": bool(on_record), "message": message}


def listed_references(fields):
    """The attempt references an attestation lists (at most 500), to look them up."""
    listed = fields.get("attempts")
    if not isinstance(listed, list):
        return []
    return [a["reference"] for a in listed[:500]
            if isinstance(a, dict) and isinstance(a.get("reference"), str)]
