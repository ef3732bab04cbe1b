"""The system on a three-node RabbitMQ cluster (deploy/rabbitmq_cluster.sh, its own nodes on
free ports): one node `kill -9`ed during a booking burst, then brought back. Every booking
answered 201 is stored and holds its place, no place is lost or overbooked, every
booking_created event is handled once (one e-mail each), the processes carry on without a
restart, and the monitoring shows the node down, then no alarm once it is back.

The first node is the one killed: kombu tries the alternates of AMQP_URI in order, so every
process is connected to it, and the quorum queues declared through it have their leaders there.
"""
import os
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from deploy import rabbitmq_definitions, run
from tests.conftest import ADMIN_SECRET, free_port
from tests.e2e.conftest import System
from tests.helpers import MailSink, applicant, plan
from tests.integration.conftest import PASSWORD, add_staff

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq_cluster.sh"


class Cluster:
    def __init__(self, path):
        self.path = path

    def run(self, *args, timeout=300):
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              timeout=timeout, check=True).stdout

    def start(self):
        # the nodes are stopped and their folder removed even if this process is killed (a
        # pytest-timeout, a Ctrl-C twice): a watcher in a session of its own waits for it
        subprocess.Popen(["bash", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; "
                          f"done; exec bash {SCRIPT} stop {self.path}"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        env = dict(re.findall(r"export (\w+)='([^']*)'", self.run("start", str(self.path))))
        self.amqp_uri = env["AMQP_URI"]
        self.management = env["RABBITMQ_MANAGEMENT_URL"]
        assert self.amqp_uri.count(";") == 2 and self.management.count(",") == 2
        return self

    def kill(self, node):
        self.run("kill", str(self.path), str(node))

    def start_node(self, node):
        self.run("start-node", str(self.path), str(node))

    def stop(self):
        self.run("stop", str(self.path), timeout=120)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "rabbitmq")
    try:
        yield cluster.start()
    finally:
        cluster.stop()  # the nodes stopped (kill -9 if they do not) and their folder removed
        assert not cluster.path.exists()


def queue_types(management):
    answer = requests.get(f"{management.split(',')[1]}/api/queues/%2F",
                          params={"columns": "name,type"}, auth=("guest", "guest"), timeout=10)
    return {q["name"]: q["type"] for q in answer.json()}


@pytest.mark.timeout(480)  # three nodes to start on a shared machine, twice for one of them
def test_a_node_killed_mid_burst_loses_nothing(cluster, config, mongo, tmp_path):
    rabbitmq_definitions.apply(cluster.management.split(",")[0], "/")
    sink = MailSink(free_port(), tmp_path / "mail").start()
    admin = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    system = System(dict(config, AMQP_URI=cluster.amqp_uri, SMTP_PORT=sink.port,
                         RABBITMQ_MANAGEMENT_URL=cluster.management), tmp_path / "logs")
    system.env.update(RABBITMQ_MANAGEMENT_URL=cluster.management, ADMIN_SECRET_KEY=ADMIN_SECRET,
                      ADMIN_SERVER_ADDRESS=admin.split("//")[1], MONITOR_HTTP_TIMEOUT="1",
                      RPC_TIMEOUT="6")
    try:
        for name in ("slots", "booking", "notify", "public_gateway", "admin_gateway"):
            system.start(name)
        system.wait_ready()
        run.wait_for_http(f"{admin}/health", procs=system.procs)
        types = queue_types(cluster.management)
        assert types["rpc-booking"] == types["rpc-slots"] == "quorum"
        assert types["evt-booking-booking_created--notify.on_booking_created"] == "quorum"
        assert types["dead-letters.events"] == "quorum"
        add_staff(mongo)
        staff = requests.Session()
        login = staff.post(f"{admin}/api/login", json={"username": "chief", "password": PASSWORD},
                           timeout=30)
        assert login.status_code == 201, login.text
        staff.headers["Authorization"] = f"Bearer {login.json()['token']}"

        def node_alarms():
            bus = staff.get(f"{admin}/api/monitoring", timeout=30).json()["bus"]
            return [a["queue"] for a in bus["alarms"] if a["kind"] == "node_down"]

        assert node_alarms() == []

        day = date.today() + timedelta(days=7)
        while day.weekday() != 1:  # a Tuesday: the one-day plan makes slots
            day += timedelta(days=1)
        with system.rpc() as rpc:
            rpc.slots.create_from_plan(dict(plan(desks=10, days=1, start=day,
                                                 hours=["09:00-11:30"])), release="now")
            slots = rpc.slots.list_open("renewal", day.isoformat(), day.isoformat())["slots"]
        places = sum(s["capacity"] for s in slots)
        assert len(slots) == 5 and places == 50

        # more people than places, each request with its key: 60 for the first four slots
        # in the burst, 20 for the last one while the node is down
        wanted = [(uuid.uuid4().hex, applicant(
            slots[i % 4 if i < 60 else 4]["id"], email=f"person{i}@example.org",
            family_name="Martin" + "abcdefghij"[i % 10] * (1 + i // 10))) for i in range(80)]
        answers, killed = {}, threading.Event()
        base = f"http://{config['WEB_SERVER_ADDRESS']}"

        def book(item):
            key, body = item
            try:
                answer = requests.post(f"{base}/api/bookings", json=body, timeout=60,
                                       headers={"Idempotency-Key": key})
                answers[key] = (answer.status_code, answer.json())
            except requests.RequestException as exc:
                answers[key] = (None, repr(exc))
            if len(answers) == 20 and not killed.is_set():
                killed.set()
                cluster.kill(1)  # mid-burst: 40 requests still to come, some in flight

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(book, wanted[:60]))
        assert killed.is_set()

        # the monitoring names the dead node
        deadline = time.monotonic() + 60
        while not node_alarms() and time.monotonic() < deadline:
            time.sleep(1)
        down = node_alarms()
        assert len(down) == 1 and down[0].endswith("-1@localhost"), down

        # with the node still down, the system books: each request answered 201 or 409, sent
        # again with its key when a reconnection cost it its answer (with classic queues,
        # whose only copy was on the dead node, every one of them is a 503)
        for key, body in wanted[60:]:
            for _ in range(3):
                answer = requests.post(f"{base}/api/bookings", json=body, timeout=60,
                                       headers={"Idempotency-Key": key})
                answers[key] = (answer.status_code, answer.json())
                if answer.status_code != 503:
                    break
        during = Counter(answers[key][0] for key, _ in wanted[60:])
        assert during == {201: 10, 409: 10}, (during, system.logs())
        assert node_alarms() == down  # still down: it was the cluster's two others

        cluster.start_node(1)
        deadline = time.monotonic() + 90
        while node_alarms() and time.monotonic() < deadline:
            time.sleep(1)
        assert node_alarms() == []

        # whoever got no answer sends the same request with the same key again
        for key, body in wanted:
            if answers[key][0] not in (201, 409):
                answer = requests.post(f"{base}/api/bookings", json=body, timeout=60,
                                       headers={"Idempotency-Key": key})
                answers[key] = (answer.status_code, answer.json())
        final = Counter(status for status, _ in answers.values())
        # every place booked once: none lost, none overbooked
        assert final == {201: places, 409: 80 - places}, (final, system.logs())
        assert all(body["error"] == "slot_full" for status, body in answers.values()
                   if status == 409)

        # every 201 is a stored booking holding its place, and nothing else is
        booked = {body["reference"]: body for status, body in answers.values() if status == 201}
        bookings_db, slots_db = mongo("booking"), mongo("slots")
        stored = {b["_id"]: b for b in bookings_db["bookings"].find({"status": "pending"})}
        assert set(stored) == set(booked)
        for slot in slots:
            record = slots_db["slots"].find_one({"_id": slot["id"]})
            # live holds: held, or marked booked once the sweeper has seen their booking
            holds = {h["_id"] for h in slots_db["holds"].find(
                {"slot_id": slot["id"], "state": {"$in": ["held", "booked"]}})}
            on_slot = {ref for ref, b in stored.items() if b["slot"]["id"] == slot["id"]}
            assert record["booked"] == len(holds) == len(on_slot) == record["capacity"]
            assert holds == on_slot and record["free"] == 0

        # each booking_created handled once with effect: one e-mail per booking, no other
        emails = {body["email"] for key, body in wanted if answers[key][0] == 201}
        try:
            found = sink.wait_for(places, timeout=90)
        except AssertionError as missing:  # which part stopped: its log says
            raise AssertionError(f"{missing}\n{system.logs()}") from missing
        received = Counter(str(m["To"]) for m in found)
        time.sleep(2)  # a duplicate would come now
        received = Counter(str(m["To"]) for m in sink.messages())
        assert set(received) == emails and set(received.values()) == {1}, received

        # no process was restarted: each is the one started at the beginning
        assert [p.poll() for p in system.procs] == [None] * len(system.procs), system.logs()
    finally:
        system.stop()
        sink.stop()
