"""The deployment files describe the system that the code is."""
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def app_services():
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("image") == "prefecture-rdv:latest"}


def test_compose_has_the_backing_services():
    services = compose()["services"]
    assert "management" in services["rabbitmq"]["image"]
    assert services["mongodb"]["image"].startswith("mongo:7")


def test_every_app_container_runs_a_module_that_exists_and_is_a_nameko_service():
    apps = app_services()
    assert set(apps) >= {"slots", "booking", "fraud", "notify", "public_gateway"}
    for name, svc in apps.items():
        command = svc["command"]
        assert command[:4] == ["nameko", "run", "--config", "deploy/config.yaml"], name
        module = command[4]
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
        loaded = importlib.import_module(module)
        assert any(getattr(obj, "name", None) == name for obj in vars(loaded).values()
                   if isinstance(obj, type)), f"{module} has no nameko service named {name}"
    assert (ROOT / compose()["x-app"]["build"]["dockerfile"]).exists()


def test_configuration_comes_from_the_environment_only():
    text = COMPOSE.read_text()
    # secrets are required variables, not values written here
    assert "${BOOKING_TOKEN_SECRET:?" in text and "${RABBITMQ_PASSWORD:?" in text
    assert not re.search(r"guest:guest", text)
    # read as text: once nameko's YAML resolver is registered, loading substitutes the values
    config = (ROOT / "deploy" / "config.yaml").read_text()
    for key in ("AMQP_URI", "MONGO_URI", "BOOKING_TOKEN_SECRET", "RPC_TIMEOUT", "TRUSTED_PROXIES"):
        assert re.search(rf"^{key}: \$\{{{key}:", config, re.M), key
    assert re.search(r"^BOOKING_TOKEN_SECRET: \$\{BOOKING_TOKEN_SECRET:\}$", config, re.M)  # no default


def test_nameko_config_substitutes_environment(monkeypatch):
    from nameko.cli.main import setup_yaml_parser

    setup_yaml_parser()
    monkeypatch.setenv("MONGO_URI", "mongodb://db.example:27017")
    monkeypatch.setenv("MAX_WORKERS", "7")
    monkeypatch.delenv("BOOKING_TOKEN_SECRET", raising=False)
    loaded = yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text())
    assert loaded["MONGO_URI"] == "mongodb://db.example:27017"
    assert loaded["max_workers"] == 7
    assert loaded["BOOKING_TOKEN_SECRET"] is None


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file():
    env = dict(os.environ, BOOKING_TOKEN_SECRET="x" * 32, PUBLIC_FORM_SECRET="y" * 32,
               RABBITMQ_PASSWORD="p")
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                             env={"PATH": os.environ["PATH"], "RABBITMQ_PASSWORD": "p",
                                  "PUBLIC_FORM_SECRET": "y" * 32},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "BOOKING_TOKEN_SECRET" in missing.stderr + missing.stdout


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_run_gives_every_service_that_stores_data_its_own_embedded_store():
    from deploy import run
    from services.common.mongo import MongoStore

    owners = set()
    for name, module in run.PROCESSES.items():
        loaded = importlib.import_module(module)
        service = next(obj for obj in vars(loaded).values()
                       if isinstance(obj, type) and getattr(obj, "name", None) == name)
        stores = [v for v in vars(service).values() if isinstance(v, MongoStore)]
        if stores:
            assert [s.name for s in stores] == [name], name  # each owns one database, its own
            owners.add(name)
    assert set(run.EMBEDDED_MONGO_PORTS) == owners
    assert len(set(run.EMBEDDED_MONGO_PORTS.values())) == len(owners)
