"""The reverse proxy (Debian's nginx with deploy/nginx/'s configuration) in front of a real
public gateway: the proxy accepts its configuration, the client's address reaches the
booking event, past the rate limit it answers 429 with Retry-After, and big bodies 413."""
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from requests.adapters import HTTPAdapter

from deploy import proxy as proxy_config
from tests.conftest import free_port
from tests.helpers import applicant
from tests.integration.test_public_gateway import (  # noqa: F401 (fixtures)
    gateway, gateway_config, services)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx missing: make test-tools installs it")
ROOT = Path(__file__).resolve().parents[2]


class Nginx:
    """nginx as this user's subprocess: its prefix, pid and temp files under a test folder."""

    def __init__(self, folder, values):
        self.folder, self.port = folder, free_port()
        self.conf = folder / "nginx.conf"
        self.conf.write_text(proxy_config.render(dict(
            values, PROXY_LISTEN=f"127.0.0.1:{self.port}", PROXY_RUN_DIR=str(folder))))
        # workers run as "nobody" when the master is root, and could not use the test folder
        user = "user root; " if os.geteuid() == 0 else ""
        self.args = [NGINX, "-c", str(self.conf), "-p", str(folder), "-e", "stderr",
                     "-g", f"{user}daemon off; pid {folder / 'nginx.pid'};"]
        self.proc = None

    def check(self):
        return subprocess.run(self.args + ["-t"], capture_output=True, text=True)

    def start(self):
        self.log = open(self.folder / "output.log", "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.folder / "output.log").read_text()
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def output(self):
        return (self.folder / "output.log").read_text(errors="replace")


class FromAddress(HTTPAdapter):
    """Connect from a given loopback address (all of 127.0.0.0/8 is this machine): a client
    the proxy sees as someone other than itself, and other than the gateway's trusted proxy."""

    def __init__(self, source):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def client(nginx, source):
    session = requests.Session()
    session.mount("http://", FromAddress(source))
    session.base = f"http://127.0.0.1:{nginx.port}"
    return session


@pytest.fixture
def start_proxy(tmp_path, web_port):
    started = []

    def start(**values):
        folder = tmp_path / f"nginx{len(started)}"
        folder.mkdir()
        nginx = Nginx(folder, dict(values, PUBLIC_GATEWAY=f"127.0.0.1:{web_port}"))
        started.append(nginx.start())
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


def test_nginx_accepts_the_configuration(tmp_path):
    checked = Nginx(tmp_path, {"PUBLIC_GATEWAY": "127.0.0.1:8000"}).check()
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_nginx_refuses_a_broken_configuration(tmp_path):
    """The check above can fail: a rate nginx does not understand is refused."""
    checked = Nginx(tmp_path, {"PUBLIC_GATEWAY": "127.0.0.1:8000", "PROXY_RATE": "lots"}).check()
    assert checked.returncode != 0 and "rate" in checked.stderr


def test_compose_runs_the_proxy_with_the_same_defaults_and_hides_the_gateway():
    # BaseLoader: the text as written (nameko registers a resolver that fills in ${...})
    services = yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=yaml.BaseLoader)["services"]
    env = services["proxy"]["environment"]
    for key, default in proxy_config.DEFAULTS.items():
        value = str(env[key])
        assert value == default or value == f"${{{key}:-{default}}}", (key, value)
    mount = services["proxy"]["volumes"][0].split(":")
    assert (ROOT / mount[0]).resolve() == proxy_config.TEMPLATE.resolve()
    assert mount[1] == "/etc/nginx/templates/nginx.conf.template"
    assert "ports" not in services["public_gateway"]
    assert services["proxy"]["ports"] == ["${PROXY_PORT:-8080}:8080"]


def test_the_client_address_reaches_the_booking_event_not_one_it_wrote(start_proxy, services, bus):
    nginx = start_proxy()
    listener = bus("booking", "booking_created")
    applicant_client = client(nginx, "127.0.0.2")
    slots = applicant_client.get(applicant_client.base + "/api/slots", params={"procedure": "renewal"})
    assert slots.status_code == 200, slots.text
    booked = applicant_client.post(
        applicant_client.base + "/api/bookings", json=applicant(slots.json()["slots"][0]["id"]),
        headers={"X-Forwarded-For": "203.0.113.9", "User-Agent": "Firefox/140"})
    assert booked.status_code == 201, booked.text
    assert booked.headers["Cache-Control"] == "no-store"
    _, event = listener.wait_for()
    assert event["client"] == {"ip": "127.0.0.2", "user_agent": "Firefox/140"}
    # the access log has the path, never the token of an e-mail link
    reference, token = booked.json()["reference"], booked.json()["token"]
    seen = applicant_client.get(f"{applicant_client.base}/api/bookings/{reference}", params={"token": token})
    assert seen.status_code == 200
    assert f"/api/bookings/{reference}" in nginx.output() and token not in nginx.output()


def test_past_the_burst_an_address_gets_429_with_retry_after_and_others_are_served(start_proxy, gateway):
    nginx = start_proxy(PROXY_RATE="1r/s", PROXY_BURST="5")
    greedy = client(nginx, "127.0.0.3")
    answers = [greedy.get(greedy.base + "/health") for _ in range(30)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:6] == [200] * 6  # the burst lets a shared address's rush through
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(refused) >= 10, statuses
    assert refused[0].headers["Retry-After"] == "1"
    assert refused[0].headers["Content-Type"].startswith("application/json")
    body = refused[0].json()
    assert body["error"] == "too_many_requests" and body["message"] and body["fields"] == {}
    # another address is not held back by this one
    other = client(nginx, "127.0.0.4")
    assert other.get(other.base + "/health").status_code == 200


def test_an_oversized_body_is_refused_by_the_proxy(start_proxy, services):
    nginx = start_proxy()
    session = client(nginx, "127.0.0.5")
    big = session.post(session.base + "/api/bookings", data=b"{" + b" " * 20000 + b"}",
                       headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert big.json()["error"] == "payload_too_large"
    chunked = session.post(session.base + "/api/bookings", data=(b" " * 1024 for _ in range(40)),
                           headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    # a chunked booking of ordinary size goes through (the proxy reads it whole first)
    raw = json.dumps(applicant(first_slot_id_via(session))).encode()
    booked = session.post(session.base + "/api/bookings", data=(raw[i:i + 50] for i in range(0, len(raw), 50)),
                          headers={"Content-Type": "application/json"})
    assert booked.status_code == 201, booked.text


def first_slot_id_via(session):
    return session.get(session.base + "/api/slots", params={"procedure": "renewal"}).json()["slots"][0]["id"]


def test_a_gateway_down_is_a_json_503(start_proxy, tmp_path):
    nginx = start_proxy()  # no gateway started on web_port
    session = client(nginx, "127.0.0.6")
    answer = session.get(session.base + "/health")
    assert answer.status_code == 503 and answer.json()["error"] == "service_unavailable"
