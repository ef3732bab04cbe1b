"""`python -m deploy.run` (what `make run` runs) as a subprocess, on free ports and its own vhost.

It supervises (a service killed with -9 comes back and the system serves again), stops
everything within seconds on SIGTERM, leaves nothing behind when itself killed with SIGKILL,
and refuses to start next to a server it did not start.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import requests

from deploy import run as run_module

from tests.conftest import TOKEN_SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent.parent


def free_run(count):
    """`count` consecutive free ports (the stand-ins take a range)."""
    for _ in range(50):
        first = free_port()
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                socks.append(sock)
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no range of free ports")


def descendants(pid):
    """Pids of every process below `pid`, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Run:
    """deploy.run in a subprocess; its console collected line by line."""

    def __init__(self, rabbit_config, tmp_path, terminal=False, **extra):
        self.web_port = free_port()
        self.env = dict(
            os.environ, AMQP_URI=rabbit_config["AMQP_URI"], RUN_VAR_DIR=str(tmp_path / "var"),
            RUN_MONGO_PORT=str(free_run(len(run_module.EMBEDDED_MONGO_PORTS))), SMTP_PORT=str(free_port()),
            WEB_SERVER_ADDRESS=f"127.0.0.1:{self.web_port}",
            ADMIN_SERVER_ADDRESS=f"127.0.0.1:{free_port()}", BOOKING_TOKEN_SECRET=TOKEN_SECRET,
            LOG_LEVEL="WARNING")
        self.env.update(extra)
        self.web_port = int(self.env["WEB_SERVER_ADDRESS"].rsplit(":", 1)[1])
        for key in ("MONGO_URI", "SMTP_HOST"):
            self.env.pop(key, None)
        self.lines = []
        # terminal: in a process group of its own, as a shell runs a foreground job, so that a
        # test can send SIGINT to the whole group as a terminal's Ctrl-C does
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy.run"], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=terminal)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def console(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"never said {text!r}:\n{self.console()[-5000:]}")

    def serves(self):
        try:
            return requests.get(f"http://127.0.0.1:{self.web_port}/api/slots?procedure=renewal",
                                timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def service_pid(self, module):
        for pid in descendants(self.proc.pid):
            try:
                if module in Path(f"/proc/{pid}/cmdline").read_text():
                    return pid
            except OSError:
                continue
        return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def make_run(rabbit_config, tmp_path):
    runs = []

    def start(**extra):
        runs.append(Run(rabbit_config, tmp_path / str(len(runs)), **extra))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def all_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_a_killed_service_is_restarted_and_sigterm_stops_everything_quickly(make_run):
    run = make_run(PROCEDURE_MODE_DEFAULT="open")  # it books a slot directly
    run.wait_for("The system is up")
    assert run.serves()
    children = descendants(run.proc.pid)
    assert len(children) >= 10  # 4 stand-ins, the sink, 5 services (each maybe with a helper)

    booking = run.service_pid("services.booking.service")
    os.kill(booking, signal.SIGKILL)
    run.wait_for("booking exited with code -9; restarting it in 1 s")
    run.wait_for("restarting booking")
    # the others kept running, and the system serves bookings again
    assert all(alive(pid) for pid in children if pid != booking)
    slot_list = requests.get(f"http://127.0.0.1:{run.web_port}/api/slots?procedure=renewal",
                             timeout=10).json()["slots"]
    from tests.helpers import applicant

    deadline = time.monotonic() + 60
    while True:
        response = requests.post(f"http://127.0.0.1:{run.web_port}/api/bookings",
                                 json=applicant(slot_list[0]["id"]), timeout=30)
        if response.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 201, (response.text, run.console()[-3000:])

    children = descendants(run.proc.pid)
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(15) == 0
    took = time.monotonic() - started
    assert all_gone(children, 2), [pid for pid in children if alive(pid)]
    assert took < 10, took
    print(f"SIGTERM to all stopped: {took:.1f} s")


def test_ctrl_c_in_a_terminal_stops_everything_quickly(make_run):
    """The terminal sends SIGINT to its whole foreground group: only run.py must act on it
    (services that got it too, then run.py's SIGTERM, hung for 15 s before being killed)."""
    run = make_run(terminal=True)
    run.wait_for("The system is up")
    children = descendants(run.proc.pid)
    assert all(os.getpgid(pid) != run.proc.pid for pid in children)  # not in the terminal's
    started = time.monotonic()
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.proc.wait(15) == 0
    took = time.monotonic() - started
    assert all_gone(children, 2), [pid for pid in children if alive(pid)]
    assert "Traceback" not in run.console(), run.console()[-3000:]
    assert took < 10, took
    print(f"Ctrl-C stopped all: {took:.1f} s")


def test_nothing_outlives_run_killed_with_sigkill(make_run):
    run = make_run()
    run.wait_for("The system is up")
    children = descendants(run.proc.pid)
    assert len(children) >= 10
    run.proc.kill()
    run.proc.wait()
    assert all_gone(children, 5), [pid for pid in children if alive(pid)]


@pytest.mark.parametrize("which", ["mongo", "sink", "gateway"])
def test_a_port_already_taken_stops_it_before_anything_starts(make_run, which):
    run = None
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the run's ports are chosen first; then something else takes one of them
        run_env = dict(RUN_MONGO_PORT=str(free_run(len(run_module.EMBEDDED_MONGO_PORTS))),
                       SMTP_PORT=str(free_port()), ADMIN_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
        gateway_port = free_port()
        ports = {"mongo": int(run_env["RUN_MONGO_PORT"]) + 2, "sink": int(run_env["SMTP_PORT"]),
                 "gateway": gateway_port}
        squatter.bind(("127.0.0.1", ports[which]))
        squatter.listen()
        run = make_run(**run_env, WEB_SERVER_ADDRESS=f"127.0.0.1:{gateway_port}")
        assert run.proc.wait(30) == 2
        run.reader.join(5)
        console = run.console()
    assert f"port {ports[which]} on 127.0.0.1 is already in use" in console
    assert "nothing was started" in console
    assert not (Path(run.env["RUN_VAR_DIR"]) / "mongo").exists()  # no store was started


def children_of(pid):
    """{pid: command line} of the processes `pid` started itself (what run.py supervises)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_text().split("\0")
        except OSError:
            continue
    return found


def mongo_answers(port):
    import pymongo

    try:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=1000,
                                 connectTimeoutMS=1000) as client:
            client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False


def smtp_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"220")
    except OSError:
        return False


def http_health(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_every_supervised_child_killed_comes_back_on_its_own_port(make_run):
    """kill -9 of every child in one pass: each stand-in, the sink, each service and gateway is
    restarted by its own start function (a restart closure read a reassigned loop variable: the
    sink came back on the public gateway's port, for ever)."""
    from deploy.healthcheck import check_service

    run = make_run()
    run.wait_for("The system is up")
    env = run.env
    mongo_first = int(env["RUN_MONGO_PORT"])
    admin_port = int(env["ADMIN_SERVER_ADDRESS"].rsplit(":", 1)[1])
    # what each child must answer again, and where: a stand-in on its own port, the sink on
    # SMTP_PORT, a service over RPC, each gateway's /health on its own address
    checks = {f"{name} store": partial(mongo_answers, port)
              for name, port in run_module.mongo_ports(env).items()}
    checks["SMTP sink"] = partial(smtp_answers, int(env["SMTP_PORT"]))
    for name in run_module.PROCESSES:
        if not name.endswith("_gateway"):
            checks[name] = partial(check_service, name, env["AMQP_URI"], 2)
    checks["public_gateway"] = partial(http_health, run.web_port)
    checks["admin_gateway"] = partial(http_health, admin_port)

    def which(cmdline):
        text = " ".join(cmdline)
        if "nx-27017" in text:
            port = int(cmdline[cmdline.index("-p") + 1])
            return next(n for n, p in run_module.mongo_ports(env).items() if p == port) + " store"
        if "deploy.mail_sink" in text:
            return "SMTP sink"
        return next((n for n, module in run_module.PROCESSES.items() if module in cmdline), None)

    before = {which(cmd): pid for pid, cmd in children_of(run.proc.pid).items()}
    assert set(checks) <= set(before), (sorted(before), sorted(checks))
    for name in checks:
        os.kill(before[name], signal.SIGKILL)
    assert all_gone([before[name] for name in checks], 10)

    pending = dict(checks)
    deadline = time.monotonic() + 180
    while pending and time.monotonic() < deadline:
        pending = {name: check for name, check in pending.items() if not check()}
        if pending:
            time.sleep(0.5)
    assert not pending, (sorted(pending), run.console()[-5000:])
    after = {which(cmd): pid for pid, cmd in children_of(run.proc.pid).items()}
    assert all(after.get(name) not in (None, before[name]) for name in checks), (before, after)
    assert "already in use" not in run.console(), run.console()[-5000:]


def test_run_instances_two_starts_each_service_twice_behind_nginx(make_run):
    """RUN_INSTANCES=2: two processes of each service, two public gateways on ports of their
    own and nginx on the public address; what each does under a kill is test_instances.py's."""
    if run_module.NGINX is None:
        pytest.skip("nginx missing: make test-tools installs it")
    gateways = free_run(2)
    run = make_run(RUN_INSTANCES="2", RUN_GATEWAY_PORT=str(gateways))
    run.wait_for("The system is up")
    assert "2 instances of each service; nginx on" in run.console()
    assert run.serves()  # through nginx
    started = [" ".join(cmd) for cmd in children_of(run.proc.pid).values()]
    for module in ("services.slots.service", "services.booking.service", "services.notify.service",
                   "services.fraud.service", "services.requests.service", "gateway.public.service"):
        assert sum(module in cmd for cmd in started) == 2, (module, started)
    assert sum("gateway.admin.service" in cmd for cmd in started) == 1
    assert sum("nginx" in cmd for cmd in started) == 1
    for port in (gateways, gateways + 1):
        assert http_health(port)
