"""Staff accounts: argon2 password hashes, log-in with lock-out, and the command that creates
the first supervisor (there is no default account or password anywhere).

    python -m gateway.admin.accounts create-supervisor --username alice [--site montpellier]

reads the password from standard input when it is not a terminal, else prompts twice. It
writes to the admin database at MONGO_URI (default: the stand-in `make run` starts for the
admin gateway, mongodb://127.0.0.1:27021) with MONGO_DB_PREFIX.
"""
import argparse
import functools
import getpass
import os
import sys
import time

from argon2 import PasswordHasher
from eventlet import tpool
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.reference_data import SITES
from services.common.settings import setting

ROLES = ("agent", "supervisor")
MIN_PASSWORD_LENGTH = 12


@functools.lru_cache(maxsize=None)
def _hasher(time_cost, memory_kib, parallelism):
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher(config=None):
    """The argon2 hasher of ADMIN_PASSWORD_* (default: argon2-cffi's own, RFC 9106's low-memory
    choice). Only the tests lower them, to log in hundreds of times; a login re-hashes a
    password whose hash was made with other parameters."""
    config = config or {}
    return _hasher(setting(config, "ADMIN_PASSWORD_TIME_COST"),
                   setting(config, "ADMIN_PASSWORD_MEMORY_KIB"),
                   setting(config, "ADMIN_PASSWORD_PARALLELISM"))


@functools.lru_cache(maxsize=None)
def dummy_hash(password_hasher):
    # verified against when the username is unknown, so that a wrong name costs the same time
    # as a wrong password and does not reveal which accounts exist
    return password_hasher.hash("not-a-password-of-anyone")


class LoginFailed(Exception):
    """Wrong username or password (the same answer for both); `known`: the account exists."""

    def __init__(self, known):
        super().__init__(known)
        self.known = known


class AccountLocked(Exception):
    """Too many failures in a row: locked until `until_ts` (or by a supervisor)."""

    def __init__(self, until_ts):
        super().__init__(until_ts)
        self.until_ts = until_ts


def password_problem(password):
    """Why a new password is refused, or None."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        return f"At least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 256:
        return "At most 256 characters."
    return None


def new_account(username, password, role, site, now_ts, password_hasher=None):
    if role not in ROLES:
        raise ValueError(f"role is one of {ROLES}")
    if site not in SITES:
        raise ValueError(f"site is one of {sorted(SITES)}")
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    password_hasher = password_hasher or hasher()
    return {"_id": username, "role": role, "site": site,
            "password_hash": password_hasher.hash(password),
            "failed_logins": 0, "locked_until_ts": 0, "created_ts": now_ts}


def authenticate(store, username, password, now_ts, max_failures, lock_seconds,
                 password_hasher=None):
    """The account when the password is right; LoginFailed or AccountLocked otherwise.

    After `max_failures` wrong passwords in a row the account locks for `lock_seconds`
    (a supervisor's lock lasts until unlocked: locked_until_ts is then infinite).
    """
    password_hasher = password_hasher or hasher()
    account = store.account(username) if isinstance(username, str) else None
    if account is None:
        _verify(password_hasher, dummy_hash(password_hasher), password)
        raise LoginFailed(known=False)
    if account.get("locked_until_ts", 0) > now_ts:
        raise AccountLocked(account["locked_until_ts"])
    if not _verify(password_hasher, account["password_hash"], password):
        after = store.record_failure(username, now_ts)
        if after is not None and after.get("failed_logins", 0) >= max_failures:
            store.lock(username, now_ts + lock_seconds)
            raise AccountLocked(now_ts + lock_seconds)
        raise LoginFailed(known=True)
    if account.get("failed_logins"):
        store.reset_failures(username)
    if password_hasher.check_needs_rehash(account["password_hash"]):
        store.set_password_hash(username, password_hasher.hash(password))
    return account


def _verify(password_hasher, password_hash, password):
    try:
        # argon2 takes most of a second of CPU on purpose: in a real thread (the C code lets go
        # of the GIL), so the gateway's other requests go on meanwhile
        return tpool.execute(password_hasher.verify, password_hash, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# -- the command line ------------------------------------------------------------------------

def _read_password():
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password (12 characters or more): ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("The two passwords differ.")
    return first


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gateway.admin.accounts",
                                     description="Create a staff account in the admin database.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("create-supervisor", "create-agent"):
        one = sub.add_parser(command)
        one.add_argument("--username", required=True)
        one.add_argument("--site", default="montpellier", choices=sorted(SITES))
    args = parser.parse_args(argv)

    from gateway.admin.auth import audit_entry
    from gateway.admin.store import AccountExists, AdminStore
    from services.common.mongo import connect

    password = _read_password()
    role = "supervisor" if args.command == "create-supervisor" else "agent"
    try:
        # the gateway's own parameters (it would re-hash at the first login otherwise)
        account = new_account(args.username, password, role, args.site, time.time(),
                              hasher(os.environ))
    except ValueError as exc:
        raise SystemExit(f"Refused: {exc}")
    client = connect(os.environ.get("MONGO_URI") or "mongodb://127.0.0.1:27021")
    try:
        store = AdminStore(client[f"{os.environ.get('MONGO_DB_PREFIX') or ''}admin"])
        store.create_account(account)
        store.append_audit(audit_entry("command-line", "account_created",
                                       f"account:{args.username}", None,
                                       {"role": role, "site": args.site}))
    except AccountExists:
        raise SystemExit(f"An account named {args.username!r} exists already.")
    finally:
        client.close()
    print(f"{role} {args.username!r} created for site {args.site}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
