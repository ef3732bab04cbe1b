"""The gateways' own web server when reached without the reverse proxy: a flood of idle or
half-header connections is dropped, the process survives running out of descriptors, and
ordinary clients are still served."""
import errno
import json
import logging
import resource
import socket
import subprocess
import sys
import time

import pytest
import requests

from gateway.http import JsonWebServer
from tests.helpers import applicant
from tests.integration.test_public_gateway import (  # noqa: F401 (fixtures)
    first_slot_id, gateway, gateway_config, services)

# Holds connections in another process (its own descriptors), half of them having sent only
# part of a request's headers; on "check" it reports how many the server has closed.
FLOOD = r"""
import json, select, socket, sys, time
port, count, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks, refused = [], 0
for i in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    except OSError:
        refused += 1
print(json.dumps({"opened": len(socks), "refused": refused}), flush=True)
sys.stdin.readline()
open_ = {s.fileno(): s for s in socks}
poller = select.poll()
for fd in open_:
    poller.register(fd, select.POLLIN)
deadline = time.monotonic() + wait
while open_ and time.monotonic() < deadline:
    for fd, _ in poller.poll(500):
        try:
            data = open_[fd].recv(4096)
        except OSError:
            data = b""
        if not data:
            poller.unregister(fd)
            open_.pop(fd).close()
print(json.dumps({"still_open": len(open_)}), flush=True)
"""


class Flood:
    def __init__(self, port, count, wait):
        self.proc = subprocess.Popen([sys.executable, "-c", FLOOD, str(port), str(count), str(wait)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.opened = json.loads(self.proc.stdout.readline())

    def still_open(self):
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["still_open"]

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


def web_server(container):
    return next(ep.server for ep in container.entrypoints if isinstance(getattr(ep, "server", None), JsonWebServer))


@pytest.mark.parametrize("gateway_config", [{"WEB_MAX_CONNECTIONS": 300, "WEB_IDLE_TIMEOUT": 3}],
                         indirect=True)
def test_thousands_of_idle_connections_do_not_stop_an_applicant_from_booking(http, services, web_port, gateway):
    flood = Flood(web_port, 3000, 30)
    try:
        assert flood.opened["opened"] >= 2500, flood.opened  # the server kept accepting
        assert web_server(gateway)._live <= 300
        # an ordinary applicant, during the flood
        assert http.get("/health").json() == {"status": "ok"}
        booked = http.post("/api/bookings", json=applicant(first_slot_id(http)))
        assert booked.status_code == 201, booked.text
        # every flood connection ends: made room for others, or timed out
        assert flood.still_open() == 0
    finally:
        flood.close()
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("gateway_config", [{"WEB_IDLE_TIMEOUT": 1}], indirect=True)
def test_idle_and_half_header_connections_are_closed_after_the_timeout(http, gateway, web_port):
    flood = Flood(web_port, 100, 20)
    try:
        assert flood.opened["opened"] == 100
        assert http.get("/health").status_code == 200
        # under the cap (2,000 by default) nothing made room: only the timeout closes them
        assert flood.still_open() == 0
    finally:
        flood.close()


@pytest.mark.parametrize("gateway_config", [{"WEB_IDLE_TIMEOUT": 1}], indirect=True)
def test_keep_alive_clients_and_slow_answers_are_not_cut(gateway, web_port):
    with requests.Session() as session:  # one connection, reused
        for _ in range(3):
            assert session.get(f"http://127.0.0.1:{web_port}/health", timeout=10).status_code == 200
            time.sleep(0.3)


def test_the_accept_loop_outlives_too_many_open_files(http, gateway, caplog):
    server = web_server(gateway)

    class Exhausted:
        """The listening socket as it is when the process has no descriptor left."""

        def __init__(self, sock, failures):
            self.sock, self.failures = sock, failures

        def accept(self):
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.sock.accept()

        def __getattr__(self, name):
            return getattr(self.sock, name)

    real = server._sock
    server._sock = Exhausted(real, 5)
    caplog.set_level(logging.WARNING, logger="gateway.http")
    try:
        for _ in range(3):  # the first is taken by the accept() already waiting
            assert http.get("/health", headers={"Connection": "close"}).status_code == 200
        assert server._sock.failures == 0
        assert any("EMFILE" in record.getMessage() for record in caplog.records)
        assert not gateway._died.ready()
    finally:
        server._sock = real


def test_the_open_files_limit_is_raised_to_the_hard_limit(container_factory, config):
    from gateway.public.service import PublicGateway

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"hard limit {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        container = container_factory(PublicGateway, config)
        container.start()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert web_server(container).max_connections == min(2000, hard - 200)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), hard))


@pytest.mark.parametrize("gateway_config", [{"WEB_IDLE_TIMEOUT": 1}], indirect=True)
def test_a_body_that_stops_halfway_is_400_not_a_hang(gateway, web_port):
    with socket.create_connection(("127.0.0.1", web_port), timeout=30) as sock:
        sock.sendall(b"POST /api/bookings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"procedure\": ")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["fields"] == {"_body": ["Incomplete."]}
