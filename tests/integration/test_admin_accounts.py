"""The first supervisor comes from a command, never from a default; the gateway needs its key."""
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from nameko.exceptions import ConfigurationError

from gateway.admin.accounts import hasher, new_account
from gateway.admin.service import AdminGateway
from gateway.admin.store import AdminStore
from tests.conftest import STAFF_PASSWORD_COSTS

ROOT_CMD = Path(__file__).resolve().parents[2]


def create(mongo_uri, db_prefix, username, password, command="create-supervisor"):
    return subprocess.run(
        [sys.executable, "-m", "gateway.admin.accounts", command, "--username", username,
         "--site", "beziers"], input=password + "\n", capture_output=True, text=True,
        env={"MONGO_URI": mongo_uri, "MONGO_DB_PREFIX": db_prefix, "PATH": "/usr/bin:/bin"},
        cwd=ROOT_CMD, timeout=60)


def test_create_supervisor_command(mongo_uri, db_prefix, mongo):
    made = create(mongo_uri, db_prefix, "boss", "a long enough passphrase")
    assert made.returncode == 0, made.stderr
    account = mongo("admin")["accounts"].find_one({"_id": "boss"})
    assert (account["role"], account["site"]) == ("supervisor", "beziers")
    assert "a long enough passphrase" not in str(account)
    assert PasswordHasher().verify(account["password_hash"], "a long enough passphrase")
    # at the production parameters (the tests' cheaper ones are for their own logins only)
    assert not PasswordHasher().check_needs_rehash(account["password_hash"])
    [entry] = mongo("admin")["audit"].find({"object": "account:boss"})
    assert entry["action"] == "account_created" and entry["who"] == "command-line"
    again = create(mongo_uri, db_prefix, "boss", "another long passphrase")
    assert again.returncode != 0 and "exists already" in again.stderr
    short = create(mongo_uri, db_prefix, "shorty", "short")
    assert short.returncode != 0 and "12 characters" in short.stderr
    assert mongo("admin")["accounts"].find_one({"_id": "shorty"}) is None


@pytest.mark.parametrize("secret", [None, "", "too-short"])
def test_the_gateway_refuses_to_start_without_a_secret_key(container_factory, config, secret):
    with pytest.raises(ConfigurationError, match="ADMIN_SECRET_KEY"):
        container_factory(AdminGateway, dict(config, ADMIN_SECRET_KEY=secret)).start()


def test_staff_passwords_cost_argon2s_defaults_unless_configured():
    default = hasher({})
    assert (default.time_cost, default.memory_cost, default.parallelism) == (3, 65536, 4)
    assert not PasswordHasher().check_needs_rehash(default.hash("a long enough passphrase"))
    cheap = hasher(STAFF_PASSWORD_COSTS)
    assert (cheap.time_cost, cheap.memory_cost, cheap.parallelism) == (1, 8192, 1)


@pytest.mark.parametrize("made_with,gateway", [(STAFF_PASSWORD_COSTS, {}),
                                               ({}, STAFF_PASSWORD_COSTS)])
def test_a_login_re_hashes_a_password_hashed_with_other_parameters(
        container_factory, config, mongo, http, made_with, gateway):
    gateway_config = {key: value for key, value in config.items()
                      if key not in STAFF_PASSWORD_COSTS}
    container_factory(AdminGateway, dict(gateway_config, **gateway)).start()
    store = AdminStore(mongo("admin"))
    store.create_account(new_account("boss", "a long enough passphrase", "supervisor",
                                     "beziers", 0.0, hasher(made_with)))
    answer = http.post("/api/login", json={"username": "boss",
                                            "password": "a long enough passphrase"})
    assert answer.status_code == 201, answer.text
    stored = store.account("boss")["password_hash"]
    assert not hasher(gateway).check_needs_rehash(stored)
    assert hasher(made_with).check_needs_rehash(stored)
    assert hasher(gateway).verify(stored, "a long enough passphrase")
