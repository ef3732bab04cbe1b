"""A booking's reference (also its hold id) and what its confirmation token signs."""
import secrets

# one derivation of references from idempotency keys for every service
from services.common.idempotency import ALPHABET, derived_chars


# Crockford's alphabet: no I, L, O, U, so a reference read aloud at a counter is unambiguous.
_ALPHABET = ALPHABET


def new_reference():
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return _reference(chars)


def _reference(chars):
    return f"RDV-{chars[:4]}-{chars[4:]}"


def derived_reference(signer, fingerprint, attempt=0):
    """The reference (and hold id) a request with this fingerprint books under, at its
    `attempt`-th try (services/common/idempotency.py)."""
    return _reference(derived_chars(signer, fingerprint, attempt))


def confirm_subject(reference):
    """What the confirmation token signs: not the booking's own token, which its booker gets."""
    return f"{reference}/confirm"
