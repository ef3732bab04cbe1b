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


def test_compose_has_the_backing_services_with_no_single_point_of_failure():
    services = compose()["services"]
    rabbits = [services[f"rabbitmq{n}"] for n in (1, 2, 3)]
    for n, node in enumerate(rabbits, 1):
        assert "management" in node["image"] and node["hostname"] == f"rabbitmq{n}"
        # one cookie for the three, and the classic peer discovery naming them
        assert "RABBITMQ_ERLANG_COOKIE" in node["environment"]
        assert any(v.startswith("./deploy/rabbitmq/cluster.conf:") for v in node["volumes"])
    # read as text: once nameko's YAML resolver is registered, loading substitutes the values
    assert "RABBITMQ_ERLANG_COOKIE: ${RABBITMQ_ERLANG_COOKIE:?" in COMPOSE.read_text()
    peers = (ROOT / "deploy" / "rabbitmq" / "cluster.conf").read_text()
    assert "peer_discovery_backend = classic_config" in peers
    assert all(f"rabbit@rabbitmq{n}" in peers for n in (1, 2, 3))
    members = [services[f"mongodb{n}"] for n in (1, 2, 3)]
    assert all(m["image"].startswith("mongo:7") and "--replSet" in m["command"] for m in members)
    init = (ROOT / "deploy" / "mongodb" / "init-replica-set.js").read_text()
    assert all(f"mongodb{n}:27017" in init for n in (1, 2, 3))
    env = compose()["x-app"]["environment"]
    assert env["AMQP_URI"].count(";") == 2 and "replicaSet=rs0" in env["MONGO_URI"]
    assert env["QUEUE_TYPE"] == "quorum"
    # two of every service and of the public gateway (behind nginx); one staff gateway
    for name, svc in app_services().items():
        assert svc["deploy"]["replicas"] == (1 if name == "admin_gateway" else 2), name
    assert services["proxy"]["environment"]["PUBLIC_GATEWAY"] == "public_gateway:8000"


def test_every_app_container_runs_a_module_that_exists_and_is_a_nameko_service():
    apps = app_services()
    assert set(apps) >= {"slots", "booking", "fraud", "notify", "requests", "register",
                         "public_gateway"}
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
    assert "${CONVOCATION_SIGNING_KEY:?" in text and "${ADMIN_SECRET_KEY:?" in text
    assert "${REQUEST_TOKEN_SECRET:?" in text and "${SLOT_ID_SECRET:?" in text
    assert "${REGISTER_TOKEN_SECRET:?" in text
    assert not re.search(r"guest:guest", text)
    # read as text: once nameko's YAML resolver is registered, loading substitutes the values
    config = (ROOT / "deploy" / "config.yaml").read_text()
    for key in ("AMQP_URI", "MONGO_URI", "BOOKING_TOKEN_SECRET", "RPC_TIMEOUT", "TRUSTED_PROXIES"):
        assert re.search(rf"^{key}: \$\{{{key}:", config, re.M), key
    for secret in ("BOOKING_TOKEN_SECRET", "REQUEST_TOKEN_SECRET", "SLOT_ID_SECRET",
                   "CONVOCATION_SIGNING_KEY", "ADMIN_SECRET_KEY", "REGISTER_TOKEN_SECRET"):
        assert re.search(rf"^{secret}: \$\{{{secret}:\}}$", config, re.M), secret  # no default


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


def test_docker_compose_accepts_the_file():
    assert shutil.which("docker-compose"), (
        "docker-compose is missing: `make test-tools` (deploy/ensure_test_tools.sh) installs "
        "Debian's docker-compose, whose `config -q` checks this file without a Docker engine")
    secrets = {"CONVOCATION_SIGNING_KEY": "k" * 44, "ADMIN_SECRET_KEY": "a" * 32,
               "ATTESTATION_SIGNING_KEY": "k", "PUBLIC_FORM_SECRET": "y" * 32,
               "REQUEST_TOKEN_SECRET": "r" * 32, "SLOT_ID_SECRET": "s" * 32,
               "RABBITMQ_ERLANG_COOKIE": "c" * 32,
               "REGISTER_TOKEN_SECRET": "g" * 32}
    env = dict(os.environ, BOOKING_TOKEN_SECRET="x" * 32, RABBITMQ_PASSWORD="p", **secrets)
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                             env={"PATH": os.environ["PATH"], "RABBITMQ_PASSWORD": "p", **secrets},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "BOOKING_TOKEN_SECRET" in missing.stderr + missing.stdout


def test_every_app_container_restarts_and_checks_its_health():
    for name, svc in app_services().items():
        assert svc["restart"] in ("unless-stopped", "always", "on-failure"), name
        test = svc["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "deploy.healthcheck", name], name
        assert svc["healthcheck"]["retries"] >= 1 and svc["healthcheck"]["interval"]


def test_healthcheck_says_whether_a_service_answers(container_factory, config):
    from deploy import healthcheck
    from services.slots.service import SlotsService

    healthy, why = healthcheck.check_service("slots", config["AMQP_URI"], timeout=5)
    assert not healthy and "UnknownService" in why  # nothing runs yet
    container_factory(SlotsService, config).start()
    assert healthcheck.check_service("slots", config["AMQP_URI"], timeout=5) == (
        True, "slots answers")


def test_healthcheck_of_a_gateway_is_its_health_page(container_factory, config):
    from deploy import healthcheck
    from gateway.public.service import PublicGateway

    assert not healthcheck.check_gateway(config["WEB_SERVER_ADDRESS"], timeout=2)[0]
    container_factory(PublicGateway, config).start()
    assert healthcheck.check_gateway(config["WEB_SERVER_ADDRESS"]) == (
        True, f"gateway on port {config['WEB_SERVER_ADDRESS'].rsplit(':', 1)[1]}: HTTP 200")


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
            # each owns one database, its own
            assert [s.name for s in stores] == [run.DATABASE_OF.get(name, name)], name
            owners.add(name)
    assert set(run.EMBEDDED_MONGO_PORTS) == owners
    assert len(set(run.EMBEDDED_MONGO_PORTS.values())) == len(owners)


def test_each_process_module_holds_exactly_one_service():
    """`nameko run MODULE` runs every class with entrypoints it finds at the module's top level:
    a mixin with entrypoints imported by name (the outbox relay, the inbox) would be taken for
    a second service and stop the process at start. Import such mixins' modules instead."""
    from nameko.cli.run import import_service

    from deploy.run import PROCESSES

    for name, module in PROCESSES.items():
        found = import_service(module)
        assert [service.name for service in found] == [name], (module, found)
