"""A replica set's failover as the store sees it, at the wire (issue 23): a TCP double in front
of the MongoDB stand-in drops every connection, then answers every write "not primary"
(NotWritablePrimary, code 10107) for a while, as a set does during an election.

The store's calls try again until the caller's deadline (services/common/mongo.py): a failover
shorter than the deadline costs time, not the booking; a longer one is the usual 503 with
nothing half done (no place held without its booking, no booking without its place).
"""
import socket
import struct
import threading
import time
from datetime import date, timedelta

import bson
import pytest
from pymongo.errors import AutoReconnect

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.common.mongo import Retrying, connect, set_deadline
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.helpers import applicant, plan

OP_MSG = 2013
WRITES = {"insert", "update", "delete", "findandmodify", "findAndModify"}
NOT_PRIMARY = {"ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary"}


class FailoverDouble:
    """127.0.0.1:port → the stand-in; `failover(seconds)` drops the open connections, then
    refuses writes for `seconds` (reads and the handshake go through, as on a secondary)."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refuse_until = 0.0
        self.refused = 0
        self.conns = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def failover(self, seconds):
        with self.lock:
            self.refuse_until = time.time() + seconds
            conns, self.conns = self.conns, set()
        for conn in conns:
            conn.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except (OSError, EOFError):
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.conns.update((client, server))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client), daemon=True).start()

    @staticmethod
    def _read(sock, size):
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _requests(self, client, server):
        try:
            while True:
                header = self._read(client, 16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = self._read(client, length - 16)
                if opcode == OP_MSG and time.time() < self.refuse_until and body[4] == 0:
                    command = next(iter(bson.decode(body[5:5 + struct.unpack("<i", body[5:9])[0]])))
                    if command in WRITES:
                        self.refused += 1
                        reply = struct.pack("<IB", 0, 0) + bson.encode(NOT_PRIMARY)
                        client.sendall(struct.pack("<iiii", 16 + len(reply), 0, request_id,
                                                   OP_MSG) + reply)
                        continue
                server.sendall(header + body)
        except (OSError, EOFError):  # eventlet says EOFError for a socket closed under it
            client.close()
            server.close()

    @staticmethod
    def _replies(server, client):
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except (OSError, EOFError):
            pass
        client.close()
        server.close()

    def close(self):
        self.listener.close()
        self.failover(0)

    def uri(self):
        return f"mongodb://127.0.0.1:{self.port}"


@pytest.fixture
def double(mongo_uri):
    double = FailoverDouble(int(mongo_uri.rsplit(":", 1)[1].split("/")[0]))
    yield double
    double.close()


def test_a_write_waits_out_a_failover_shorter_than_its_deadline(double, db_prefix):
    client = connect(double.uri())
    db = Retrying(client[f"{db_prefix}failover"])
    try:
        db["t"].insert_one({"_id": "warm"})
        set_deadline(time.time() + 8)
        double.failover(1.0)
        started = time.monotonic()
        db["t"].insert_one({"_id": "during"})
        assert time.monotonic() - started >= 0.9  # it waited for the new primary
        assert double.refused >= 1
        assert db["t"].count_documents({"_id": "during"}) == 1

        # a failover that outlasts the deadline: the error, and nothing written
        set_deadline(time.time() + 0.8)
        double.failover(3.0)
        with pytest.raises(AutoReconnect):
            db["t"].find_one_and_update({"_id": "during"}, {"$set": {"late": True}})
        time.sleep(2.5)
        set_deadline(None)
        assert "late" not in db["t"].find_one({"_id": "during"})
        # without the retry, the first refusal is the caller's error
        double.failover(1.0)
        with pytest.raises(AutoReconnect):
            client[f"{db_prefix}failover"]["t"].insert_one({"_id": "raw"})
    finally:
        set_deadline(None)
        client.close()


def test_bookings_through_a_failover_are_made_or_refused_whole(container_factory, config, double,
                                                              mongo, http):
    config = dict(config, RPC_TIMEOUT=3)
    container_factory(SlotsService, config).start()
    container_factory(BookingService, dict(config, MONGO_URI=double.uri())).start()
    container_factory(PublicGateway, config).start()
    from nameko.standalone.rpc import ClusterRpcProxy
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=10), release="now")
        today = date.today()
        slots = rpc.slots.list_open("renewal", today.isoformat(),
                                    (today + timedelta(days=30)).isoformat())["slots"]
    slot = slots[0]

    def book(i):
        return http.post("/api/bookings", json=applicant(
            slot["id"], email=f"p{i}@example.org", family_name="Petit" + "abcdefgh"[i])).status_code

    # shorter than the deadline: every booking made
    double.failover(1.2)
    assert [book(i) for i in range(2)] == [201, 201]
    # longer than the deadline: 503, and nothing half done
    double.failover(8)
    assert book(2) == 503
    time.sleep(6)  # the failover ends; booking's clean-up has given the place back
    held = {h["_id"] for h in mongo("slots")["holds"].find({"slot_id": slot["id"], "state": "held"})}
    stored = {b["_id"] for b in mongo("booking")["bookings"].find({"status": "pending"})}
    assert held == stored and len(stored) == 2
    assert mongo("slots")["slots"].find_one({"_id": slot["id"]})["booked"] == 2
