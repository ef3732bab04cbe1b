"""The first supervisor comes from a command, never from a default; the gateway needs its key."""
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from nameko.exceptions import ConfigurationError

from gateway.admin.service import AdminGateway

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
