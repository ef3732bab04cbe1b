"""Staff sessions, roles and CSRF for the admin gateway.

A session is a random id kept server-side (under its hash) so that log-out and a lock revoke
it at once; the browser holds it signed and time-limited in an HttpOnly, SameSite=Strict
cookie, an API client as `Authorization: Bearer <the same signed value>`. Forms carry a CSRF
token bound to the session id (gateway/csrf.py); the log-in form, before any session, to a
random per-browser cookie.
"""
import hashlib
import secrets
import time
import uuid

from itsdangerous import BadSignature, URLSafeTimedSerializer
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from gateway.admin.accounts import dummy_hash, hasher
from gateway.csrf import CsrfTokens
from services.common.errors import DomainError
from services.common.settings import setting

COOKIE = "staff_session"
LOGIN_CSRF_COOKIE = "staff_login_csrf"
ROLE_RANK = {"agent": 1, "supervisor": 2}


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401
    default_message = "Log in first. / Connectez-vous."


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    default_message = "Your role does not allow this. / Votre rôle ne le permet pas."


class Locked(DomainError):
    code = "account_locked"
    status = 423
    default_message = ("Compte verrouillé après trop d'échecs : réessayez plus tard ou "
                       "demandez à un superviseur. / Account locked.")


class CsrfRefused(DomainError):
    code = "csrf_refused"
    status = 403
    default_message = "Le formulaire a expiré : rechargez la page. / The form expired: reload."


def session_key(session_id):
    return hashlib.sha256(session_id.encode()).hexdigest()


def allowed(role, needed):
    return ROLE_RANK.get(role, 0) >= ROLE_RANK[needed]


def audit_entry(who, action, obj, before=None, after=None, now_ts=None):
    """One line of the audit log: who did what, when, to which object, before and after."""
    return {"_id": str(uuid.uuid4()), "who": who, "action": action, "object": obj,
            "before": before, "after": after, "at_ts": now_ts if now_ts is not None else time.time()}


class Settings:
    def __init__(self, config):
        secret = config.get("ADMIN_SECRET_KEY")
        if not secret or len(str(secret)) < 16:
            raise ConfigurationError(
                "ADMIN_SECRET_KEY must be set to a secret of at least 16 characters")
        self.session_seconds = setting(config, "ADMIN_SESSION_SECONDS")
        self.max_failures = setting(config, "ADMIN_MAX_FAILED_LOGINS")
        self.lock_seconds = setting(config, "ADMIN_LOCKOUT_SECONDS")
        self.cookie_secure = setting(config, "ADMIN_COOKIE_SECURE")
        self.register_import_max_bytes = setting(config, "REGISTER_IMPORT_MAX_BYTES")
        self.password_hasher = hasher(config)
        # made now, not at the first unknown name (whose answer would then take longer)
        dummy_hash(self.password_hasher)
        self._signer = URLSafeTimedSerializer(str(secret), salt="admin-session")
        self.csrf = CsrfTokens(str(secret))

    # sessions --------------------------------------------------------------------------------

    def new_session(self, account, now_ts):
        """(signed value for cookie or bearer, record to store)."""
        session_id = secrets.token_urlsafe(32)
        record = {"_id": session_key(session_id), "username": account["_id"],
                  "role": account["role"], "site": account["site"], "session_id_for_csrf": None,
                  "created_ts": now_ts, "expires_ts": now_ts + self.session_seconds}
        # CSRF tokens are bound to a value derived from the id, never to the id itself
        record["session_id_for_csrf"] = session_key("csrf:" + session_id)
        return self._signer.dumps(session_id), record

    def session_id(self, signed):
        """The session id inside a signed value, or None if forged or expired."""
        if not signed or not isinstance(signed, str) or len(signed) > 512:
            return None
        try:
            return self._signer.loads(signed, max_age=self.session_seconds)
        except BadSignature:  # SignatureExpired is one
            return None

    def cookie(self, response, signed):
        response.set_cookie(COOKIE, signed, max_age=self.session_seconds, httponly=True,
                            samesite="Strict", secure=self.cookie_secure, path="/")

    def clear_cookie(self, response):
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                               secure=self.cookie_secure)


class AdminSettings(DependencyProvider):
    """The gateway's secrets and limits from configuration; it refuses to start without a key."""

    def setup(self):
        self.settings = Settings(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.settings
