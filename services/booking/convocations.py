"""Convocation codes: what the signature covers and the text of the QR code the desk scans
(signed and verified with the CONVOCATION_SIGNING_KEY: services/common/signing.py)."""
from services.common.timeutil import iso_utc


CODE_SEPARATOR = "."


def convocation_fields(booking):
    """What a convocation's signature covers: the reference, the exact name and the slot."""
    slot, identity = booking["slot"], booking["identity"]
    return {"reference": booking["_id"], "family_name": identity["family_name"],
            "given_names": identity["given_names"], "slot_id": slot["id"],
            "slot_start": iso_utc(slot["start"])}


def convocation_code(reference, signature):
    """Compact text for the QR code and the scanner: `RDV-XXXX-XXXX.<base64url signature>`."""
    return f"{reference}{CODE_SEPARATOR}{signature}"


def parse_code(code):
    """(reference, signature) from a scanned or typed code; ValueError when it is not one."""
    reference, sep, signature = (code or "").strip().partition(CODE_SEPARATOR)
    if not sep or not reference or not signature:
        raise ValueError("not a convocation code")
    return reference.upper(), signature
