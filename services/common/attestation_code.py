"""The short verification code of an M7 attestation: derived by booking from the signature,
typed or scanned by staff and the public on the verify pages, read by both gateways (issue 21).
Crockford base32 (services/common/idempotency.py's alphabet), as XXXX-XXXX-XXXX-XXXX."""
import hashlib
from urllib.parse import parse_qs, urlsplit

from services.common import signing
from services.common.idempotency import ALPHABET

CODE_LENGTH = 16  # Crockford base32: 80 bits, far beyond guessing (README, "Attestations")
_CODE_DOMAIN = b"attestation-code:"
# what people and scanners get wrong: lower case, O for 0, I and L for 1, spaces and dashes
_CODE_READING = str.maketrans({"O": "0", "I": "1", "L": "1"})


def attestation_code(signature):
    """The verification code of the attestation with this signature (base64url text):
    80 bits of SHA-256 over the signature, in ALPHABET, as XXXX-XXXX-XXXX-XXXX."""
    digest = hashlib.sha256(_CODE_DOMAIN + signing.unb64url(signature)).digest()
    number = int.from_bytes(digest[:CODE_LENGTH * 5 // 8], "big")
    chars = "".join(ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH)))
    return "-".join(chars[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def parse_code(text):
    """The code as attestation_code writes it, from what a person typed or a scanner read (the
    QR holds the verify page's address with ?code=); None when it cannot be a code."""
    if not isinstance(text, str) or len(text) > 300:
        return None
    text = text.strip()
    if "code=" in text:
        found = parse_qs(urlsplit(text).query).get("code")
        text = found[0] if found else ""
    chars = "".join(text.upper().split()).replace("-", "").translate(_CODE_READING)
    if len(chars) != CODE_LENGTH or any(c not in ALPHABET for c in chars):
        return None
    return "-".join(chars[i:i + 4] for i in range(0, CODE_LENGTH, 4))
