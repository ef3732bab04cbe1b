"""CSRF protection for HTML forms, shared by both gateways.

A form carries a token signed with the gateway's secret and bound to something the browser
sends back on its own: the staff session id on the admin gateway, a random per-browser cookie
on the public one (signed double submit). Another site can make a browser post a form, but
cannot read the page to learn the token, nor forge one without the secret.
"""
import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

COOKIE = "csrf_id"
MAX_AGE_SECONDS = 4 * 3600


def new_binding():
    """A random value for the per-browser cookie of a gateway without sessions."""
    return secrets.token_urlsafe(24)


class CsrfTokens:
    def __init__(self, secret, max_age=MAX_AGE_SECONDS):
        if not secret or len(str(secret)) < 16:
            raise ValueError("a CSRF secret of at least 16 characters is required")
        self._serializer = URLSafeTimedSerializer(str(secret), salt="csrf")
        self.max_age = max_age

    def issue(self, binding):
        return self._serializer.dumps(binding)

    def valid(self, token, binding):
        """True when `token` was issued by us for `binding` and has not expired."""
        if not token or not binding or not isinstance(token, str):
            return False
        try:
            bound = self._serializer.loads(token, max_age=self.max_age)
        except (BadSignature, SignatureExpired):
            return False
        return isinstance(bound, str) and hmac.compare_digest(bound, binding)
