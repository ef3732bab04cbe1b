"""Secret links' tokens: HMACs of a reference and a per-record salt under a configured key.

Only a hash of the token is stored, yet a relay can rebuild the token for a delayed event
(notify puts the link in its e-mail) without the plaintext ever sitting in a database.
Booking tokens and request tokens are made the same way, each under its own key
(BOOKING_TOKEN_SECRET, REQUEST_TOKEN_SECRET): one key leaked forges one kind of link.
"""
import hashlib
import hmac
import secrets
from base64 import urlsafe_b64encode

from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider


class TokenSigner:
    def __init__(self, secret):
        self._key = secret.encode()

    def token_for(self, reference, salt):
        return urlsafe_b64encode(self.digest(f"{reference}:{salt}")).decode().rstrip("=")

    def digest(self, text):
        """The HMAC-SHA256 of `text` under the key: also what makes a reference from a request's
        idempotency key (services/booking/references.py), so that nobody can predict it."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()

    @staticmethod
    def hash_token(token):
        return hashlib.sha256(token.encode()).hexdigest()

    def matches(self, token, token_hash):
        if not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(self.hash_token(token), token_hash)


def same_token(given, expected):
    """Constant-time comparison of a token as sent (any text: compare_digest refuses non-ASCII
    str, so bytes) with the one expected."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def new_salt():
    return secrets.token_hex(8)


class Secret(DependencyProvider):
    """A secret from the configuration key `key`; a service using it refuses to start without
    one of at least 16 characters."""

    def __init__(self, key):
        self.key = key

    def setup(self):
        secret = self.container.config.get(self.key)
        if not secret or len(str(secret)) < 16:
            raise ConfigurationError(
                f"{self.key} must be set to a secret of at least 16 characters")
        self.value = str(secret)

    def get_dependency(self, worker_ctx):
        return self.value


class Tokens(Secret):
    """The token signer, keyed from the configuration key `key`."""

    def __init__(self, key="BOOKING_TOKEN_SECRET"):
        super().__init__(key)

    def setup(self):
        super().setup()
        self.signer = TokenSigner(self.value)

    def get_dependency(self, worker_ctx):
        return self.signer
