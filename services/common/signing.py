"""Ed25519 signatures for documents the prefecture hands out (convocations, attestations).

The private key comes from configuration as base64 of its raw 32 bytes or as PEM; whoever
holds only the public key can verify, nobody without the private key can forge. Signatures
travel as unpadded base64url so that they fit a QR code and a barcode scanner types them.
"""
import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_private_key(text):
    """An Ed25519 private key from PEM text or base64 of its raw 32 bytes; ValueError if neither."""
    text = (text or "").strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError("a raw Ed25519 private key is 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def new_private_key_text():
    """A fresh key as base64 of its raw bytes (what deploy/run.py writes under var/)."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def canonical(fields):
    """The exact bytes signed for a dict of fields: sorted keys, no spaces, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text):
    """Bytes from unpadded base64url; ValueError when the text is not that."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("not base64url") from None


def sign(private_key, fields):
    """The signature over `fields` (a dict), as base64url text."""
    return b64url(private_key.sign(canonical(fields)))


def verify(public_key, signature, fields):
    """True when `signature` (base64url text) was made over exactly `fields` by the key's owner."""
    try:
        public_key.verify(unb64url(signature), canonical(fields))
        return True
    except (InvalidSignature, ValueError):
        return False
