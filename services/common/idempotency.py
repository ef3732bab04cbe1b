"""One effect under redelivery (README, "One effect under redelivery"): a writing RPC given an
idempotency key derives its record's reference from the key and the request's content, so the
same request delivered again (RabbitMQ redelivers it when its consumer dies before acking) or
sent again finds the record it made instead of making a second one.

Shared by booking (bookings, walk-ins, attempts) and requests (filings); each service keeps
its own references' shape and its own signer's key.
"""
import hashlib
import json

# Crockford's alphabet: no I, L, O, U, so a reference read aloud at a counter is unambiguous.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# how many references one idempotency key may go through: the next is used only when the one
# before was given up (fenced, withdrawn) and its hold id is therefore spent in slots
REFERENCE_TRIES = 3


def request_fingerprint(key, data):
    """What a redelivered or resent request shares with the first: its idempotency key and
    its content (the same key with other data is another request, never someone's record)."""
    canonical = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{key}\n{canonical}".encode()).hexdigest()


def derived_chars(signer, fingerprint, attempt=0):
    """Eight characters of ALPHABET for a request with this fingerprint at its `attempt`-th
    try: the same every time it is delivered, unpredictable without the key of `signer`
    (services/common/tokens.py)."""
    bits = int.from_bytes(signer.digest(f"reference:{fingerprint}:{attempt}")[:5], "big")
    return "".join(ALPHABET[(bits >> shift) & 31] for shift in range(35, -1, -5))


def reference_for(signer, fingerprint, shape, find, tries=REFERENCE_TRIES):
    """(reference, the record already made for this request or None).

    shape: eight characters -> the reference; find: reference -> the stored record or None.
    A reference taken by something else (a marker left when it was given up, or, by a 40-bit
    coincidence, another request's record) passes to the next one of the same derivation;
    None as reference when every try is taken."""
    for attempt in range(tries):
        reference = shape(derived_chars(signer, fingerprint, attempt))
        found = find(reference)
        if found is None:
            return reference, None
        if found.get("idempotency") == fingerprint:
            return reference, found
    return None, None


def insert_once(insert, find, record, fingerprint):
    """Store `record` (with its `fingerprint` as `idempotency`, under a sparse unique index)
    by `insert`; None when stored, else the record the same request's other delivery stored
    at the same moment (found by `find`). DuplicateKeyError when its reference is another's."""
    # imported here: the public gateway imports this module (references) and no pymongo else
    from pymongo.errors import DuplicateKeyError

    if fingerprint:
        record["idempotency"] = fingerprint
    try:
        insert(record)
        return None
    except DuplicateKeyError:
        made = find(record["_id"]) if fingerprint else None
        if made is None or made.get("idempotency") != fingerprint:
            raise
        return made
