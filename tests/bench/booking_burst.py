#!/usr/bin/env python3
"""Booking burst against the running system (`make run` in another terminal), or with
--start its own slots, booking, fraud and gateway processes, stores and vhost on free ports.

Releases N fresh slots through the slots service, then fires M booking attempts over HTTP
from C concurrent clients, as happens in the seconds after a release: each attempt a different
person from an address of their own, who confirms from the e-mail's link once booked. Prints
attempts/s, bookings/s, latency percentiles (of the booking requests), refusals by reason,
overbooked places and the peak memory of each process.

    .venv/bin/python tests/bench/booking_burst.py --slots 20 --desks 3 --attempts 2000 --clients 100
"""
import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

from nameko.standalone.rpc import ClusterRpcProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.harness import People, run_on_system  # noqa: E402


def release_slots(amqp_uri, n_slots, desks, tries=20):
    """A plan on a random far weekday whose opening window holds exactly n_slots new slots."""
    minutes, start_h = 5, 8
    end_total = start_h * 60 + n_slots * minutes
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
        for _ in range(tries):  # a day an earlier run already used would hold full slots
            day = date.today() + timedelta(days=random.randint(60, 360))
            if day.weekday() >= 5:
                continue
            plan = {
                "site": "beziers", "procedure": "duplicate",
                "from": day.isoformat(), "to": day.isoformat(),
                "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "hours": [f"{start_h:02d}:00-{end_total // 60:02d}:{end_total % 60:02d}"],
                "slot_minutes": minutes, "desks": desks,
            }
            if rpc.slots.create_from_plan(plan, release="now")["created"] == n_slots:
                slots = rpc.slots.list_open("duplicate", day.isoformat(), day.isoformat(), 1, 200)["slots"]
                return day, [s["id"] for s in slots]
    raise SystemExit("no free day found for the release; clear var/mongo")


def body(people, slot_id, i):
    """Person i of the run, from their own address: a plausible applicant, so that the fraud
    rules (which run too) leave the booking alone, and a distinct one, so that one booking per
    person and the bounds on unconfirmed bookings leave them alone too."""
    return json.dumps(people.booking(i, "duplicate", slot_id)).encode(), people.address(i)


def fire(host, port, jobs, clients, mailbox):
    """Each client keeps one HTTP connection and takes jobs until none are left; results are
    (status, error code, latency of the booking request)."""
    results, lock = [], threading.Lock()
    jobs = list(jobs)
    barrier = threading.Barrier(clients)

    def client():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        barrier.wait()
        while True:
            with lock:
                if not jobs:
                    break
                payload, address = jobs.pop()
            # each applicant from their own address (the gateway trusts loopback's header)
            headers = {"Content-Type": "application/json", "X-Forwarded-For": address}
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/bookings", payload, headers)
                response = conn.getresponse()
                answer = response.read()
                status = response.status
                elapsed = time.perf_counter() - started
                if status == 201:
                    # confirmed at once: pending bookings may hold only half a release
                    # (UNCONFIRMED_RELEASE_SHARE), and people do confirm
                    reference = json.loads(answer)["reference"]
                    conn.request("POST", f"/api/bookings/{reference}/confirm", b"",
                                 dict(headers, **{"X-Booking-Token": mailbox.booking_confirm_token(reference)}))
                    conn.getresponse().read()
                    error = None
                else:
                    error = error_code(answer, status)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
                status = error = "error"
                elapsed = time.perf_counter() - started
            with lock:
                results.append((status, error, elapsed))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def error_code(body, status):
    try:
        return json.loads(body).get("error", status)
    except ValueError:
        return status


def peak_memory(pids=None):
    """VmHWM (peak resident memory) of the system's processes, by what they are; pids: only
    those (a bench's own system: the machine runs other people's too)."""
    found = {}
    for pid in pids or filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if "nameko run" in cmd:
            name = cmd.split()[-1]
        elif "nx-27017" in cmd or "nx_27017" in cmd:
            data_dir = cmd.split("--data-dir", 1)[1].split()[0] if "--data-dir" in cmd else ""
            name = f"mongodb stand-in (nx-27017) {Path(data_dir).name}"
        elif "beam.smp" in cmd and "rabbit" in cmd:
            name = "rabbitmq"
        else:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                kb = int(line.split()[1])
                found[f"{name} [{pid}]"] = kb
    return found


class CpuSteal:
    """Share of the machine's CPU time the hypervisor gave to others during a run.

    On a shared virtual machine the same code measures tens of percent slower when neighbours
    are busy: print it with the figures, so that runs can be compared honestly.
    """

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
        return sum(fields), fields[7]  # total and steal, in clock ticks

    def percent(self):
        total, steal = self._read()
        return 100.0 * (steal - self.start[1]) / max(1, total - self.start[0])


def print_machine(stolen, pids=None):
    """The CPU steal during the run and the peak memory of every process of the system."""
    print(f"CPU steal         {stolen:8.1f} %  (taken by the hypervisor during the burst)")
    print("peak memory (VmHWM):")
    for name, kb in sorted(peak_memory(pids).items()):
        print(f"  {name:60s} {kb / 1024:8.1f} MiB")


def pct(values, q):
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def system_parser(doc):
    """Arguments every benchmark against the running system takes: where it is."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"))
    return parser


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--desks", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--start", action="store_true", help="start an own system on free ports")
    args = parser.parse_args()

    run_on_system(args, burst, {"slots": 1, "booking": 1, "fraud": 1, "public_gateway": 1},
                  "booking_burst", PROCEDURE_MODE_DEFAULT="open")  # it measures booking slots directly


def burst(args, mailbox, pids=None):
    host, port = args.url.split("://")[1].split(":")
    day, slot_ids = release_slots(args.amqp_uri, args.slots, args.desks)
    people = People()
    jobs = [body(people, random.choice(slot_ids), i) for i in range(args.attempts)]
    steal = CpuSteal()
    results, elapsed = fire(host, int(port), jobs, args.clients, mailbox)
    stolen = steal.percent()

    statuses = Counter(status for status, _, _ in results)
    latencies = sorted(latency for _, _, latency in results)
    with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=60) as rpc:
        slots = [rpc.slots.get(slot_id) for slot_id in slot_ids]
    overbooked = sum(max(0, s["booked"] - s["capacity"]) for s in slots)
    capacity = args.slots * args.desks

    print(f"released {args.slots} slots x {args.desks} desks = {capacity} places on {day}")
    print(f"{len(results)} attempts from {args.clients} concurrent clients in {elapsed:.2f} s")
    print(f"attempts/s        {len(results) / elapsed:8.1f}")
    print(f"bookings/s        {statuses.get(201, 0) / elapsed:8.1f}  ({statuses.get(201, 0)} booked)")
    print(f"statuses          {dict(statuses)}")
    print(f"refused           {dict(Counter(error for _, error, _ in results if error))}")
    print(f"latency p50       {pct(latencies, 50) * 1000:8.1f} ms")
    print(f"latency p95       {pct(latencies, 95) * 1000:8.1f} ms")
    print(f"latency p99       {pct(latencies, 99) * 1000:8.1f} ms")
    for status in sorted(statuses, key=str):
        of_status = sorted(latency for st, _, latency in results if st == status)
        print(f"  {status}: p50 {pct(of_status, 50) * 1000:.1f} ms, p99 {pct(of_status, 99) * 1000:.1f} ms,"
              f" max {of_status[-1] * 1000:.1f} ms")
    print(f"booked places     {sum(s['booked'] for s in slots)} of {capacity}")
    print(f"overbooked        {overbooked}")
    print_machine(stolen, pids)


if __name__ == "__main__":
    main()
