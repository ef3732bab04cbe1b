"""Accredited partners (issue 24) as plain functions: who may file, their weekly quota per
procedure, and their API keys.

An association files requests for people who cannot (no e-mail, no computer, no French). A
supervisor gives it a weekly quota per procedure and an expiry; a partner that is suspended or
past its expiry files nothing. The week is the Paris ISO week (Monday to Sunday): a filing
counts in the week it is made, whatever its procedure's draw does later.

API keys are `PTN-XXXX-XXXX.<secret>`: the partner's id (to find its record) and 256 random
bits. Only an argon2 hash of the secret is kept; the key is shown once, at creation or renewal.
"""
import re
import base64
import secrets
from datetime import date, datetime, time, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common import idempotency
from services.common.timeutil import PARIS

PARTNER_ID = re.compile(r"^PTN-[0-9A-Z]{4}-[0-9A-Z]{4}$")
KEY_SHAPE = re.compile(r"^(PTN-[0-9A-Z]{4}-[0-9A-Z]{4})\.([A-Za-z0-9_-]{43})$")
# the secret is 256 random bits, beyond any guessing: the hash guards a leaked database, not a
# weak secret, so argon2's cheapest sound settings do (a filing must not cost a second of CPU)
HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
MAX_QUOTA = 500  # filings a week for one procedure: far above any association's caseload

ACTIVE, SUSPENDED, EXPIRED = "active", "suspended", "expired"


def new_partner_id():
    chars = "".join(secrets.choice(idempotency.ALPHABET) for _ in range(8))
    return f"PTN-{chars[:4]}-{chars[4:]}"


def new_key(partner_id, secret=None):
    """(key, hash): the key to show once, the hash to keep. `secret`: 32 bytes derived from the
    creation request (its idempotency key, under the service's signer), so that the same
    request delivered again answers the same key; random otherwise."""
    body = (base64.urlsafe_b64encode(secret).rstrip(b"=").decode() if secret
            else secrets.token_urlsafe(32))
    key = f"{partner_id}.{body}"
    return key, HASHER.hash(body)


def key_partner(key):
    """The partner id a key names, or None when it is not shaped as one."""
    found = KEY_SHAPE.match(key or "") if isinstance(key, str) else None
    return found.group(1) if found else None


def key_matches(key, key_hash):
    found = KEY_SHAPE.match(key or "") if isinstance(key, str) else None
    if not found or not key_hash:
        return False
    try:
        return HASHER.verify(key_hash, found.group(2))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def paris_day(now):
    return now.astimezone(PARIS).date()


def week_of(day):
    """The Paris ISO week of a day, as text: '2026-W49'."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(day):
    """(Monday, Sunday) of the day's week."""
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def counter_id(partner_id, procedure, day):
    """The quota counter of a partner's procedure for the week of `day`."""
    return f"{partner_id}:{procedure}:{week_of(day)}"


def counter_expiry(day):
    """When the week's counter may go: two weeks after the week ends (the figures read the
    current week only; the filings' audit keeps every filing for good)."""
    _, sunday = week_bounds(day)
    return datetime.combine(sunday + timedelta(days=15), time(0), tzinfo=PARIS)


def state(partner, today):
    """active, suspended or expired (on the day after its expiry date)."""
    if partner.get("suspended"):
        return SUSPENDED
    if date.fromisoformat(partner["expires"]) < today:
        return EXPIRED
    return ACTIVE


def quota(partner, procedure):
    """The partner's weekly quota for a procedure (0: it may not file for it)."""
    return int((partner.get("quotas") or {}).get(procedure, 0))


def refusal(partner, procedure, today):
    """Why the partner may not file for `procedure` today, as (field, reason), or None. The
    quota itself is taken atomically by the store (take_quota), not judged here."""
    current = state(partner, today)
    if current == SUSPENDED:
        return "partner", "This partner account is suspended."
    if current == EXPIRED:
        return "partner", f"This partner account expired on {partner['expires']}."
    if quota(partner, procedure) < 1:
        return "procedure", "No quota for this procedure."
    return None


def usage(partner, used, today):
    """{procedure: {quota, used, left}} for the current week, from the counters' `used`."""
    return {procedure: {"quota": quota(partner, procedure), "used": used.get(procedure, 0),
                        "left": max(0, quota(partner, procedure) - used.get(procedure, 0))}
            for procedure in sorted(partner.get("quotas") or {})}
