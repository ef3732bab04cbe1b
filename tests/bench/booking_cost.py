#!/usr/bin/env python3
"""What a booking costs the whole system (issue 22), beside a single-process baseline in the
same run.

Starts its own system on free ports (slots, booking, fraud, notify, the public gateway, a store
per service, an SMTP sink, a vhost of its own) and tests/bench/baseline.py on the slots store,
releases --slots x --desks places, then for --seconds each:

1. bookings: --clients connections fire booking attempts, each a different person from their
   own address who confirms from the e-mail's link once booked; then waits until the bus is
   drained (every e-mail sent, every event handled);
2. listings: GET /api/slots of the release's day;
3. full-slot attempts: booking attempts on slots that are full.

Each phase runs against the system, then the baseline. Prints attempts/s and p50/p99 of both
and their ratio, the CPU milliseconds each process spent per created-and-confirmed booking
(from /proc/<pid>/stat; RabbitMQ is the machine's shared broker, so its figure includes other
vhosts' traffic), the resident memory of the idle system and after the burst, the load average
and the CPU steal during each phase. Wall-clock figures on a shared machine are noisy: read
them with the load and steal beside them; CPU per booking is the steadier figure.

    .venv/bin/python tests/bench/booking_cost.py --slots 100 --desks 5 --seconds 10 --clients 50

--profile DIR: py-spy (pinned in the test extras) samples each process of the system (the
stand-in stores and the sink are Python too) during the booking phase; DIR gets one collapsed-stack file per process (flamegraph.pl or speedscope read
them), and the functions of the project that took most samples are printed.
"""
import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import requests
from nameko.standalone.rpc import ClusterRpcProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.booking_burst import CpuSteal, error_code, pct, release_slots  # noqa: E402
from tests.bench.harness import API, OwnSystem, People, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[2]
PEOPLE_PER_PHASE = 6000
SERVICES = {"slots": 1, "booking": 1, "fraud": 1, "notify": 1, "public_gateway": 1}


# -- processes: CPU and memory from /proc ---------------------------------------------------

def tree(pid):
    """pid and its descendants (a store may fork helpers)."""
    found, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split())
        except OSError:
            pass
    return found


def cpu_seconds(pid):
    total = 0.0
    for p in tree(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    return total


def rss_mib(pid):
    total = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def rabbit_pid():
    """The broker on 5672: the beam.smp process of the `rabbitmq` user (tests may run other
    RabbitMQ nodes of their own beside it), else the first beam.smp of a RabbitMQ."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            uid = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                       if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if b"beam.smp" in cmd and b"rabbit" in cmd:
            found.append((uid == _uid_of("rabbitmq"), -int(pid)))
    return -max(found)[1] if found else None


def _uid_of(user):
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def named_processes(own, sink):
    """{label: pid} of the system's processes (RabbitMQ apart)."""
    names = {}
    started = [name for name, instances in SERVICES.items() for _ in range(instances)]
    for name, proc in zip(started, own.procs):  # OwnSystem starts them in this order
        names[name] = proc.pid
    stored = [s for s in SERVICES if s in ("slots", "booking", "fraud", "notify", "requests")]
    for db, proc in zip(stored, own.stores):
        names[f"{db} store"] = proc.pid
    names["mail sink"] = sink.pid
    return names


def machine():
    load = open("/proc/loadavg").read().split()[:3]
    return f"load {' '.join(load)}"


# -- firing requests ------------------------------------------------------------------------

def fire(host, port, make_request, clients, seconds, after=None):
    """`clients` threads, each with one connection, send make_request(i) -> (method, path,
    body, headers) until `seconds` have passed; after(conn, status, answer, headers) runs
    for each answer (outside the timed part). (results [(status, error, latency)], elapsed)."""
    results, lock = [], threading.Lock()
    counter = iter(range(10 ** 9))
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            with lock:
                i = next(counter)
            method, path, body, headers = make_request(i)
            conn, status, answer, elapsed = _send(conn, host, port, method, path, body, headers)
            if status == "error":
                error = "error"
            else:
                error = None if status < 300 else error_code(answer, status)
                if after is not None:
                    try:
                        after(conn, status, answer, headers)
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection(host, port, timeout=60)
            with lock:
                results.append((status, error, elapsed))
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    barrier.wait()  # every client connected: go
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def _send(conn, host, port, method, path, body, headers):
    """One request on a client's connection: (connection, status, answer, seconds); a broken
    connection is replaced, its request counted with status "error"."""
    started = time.perf_counter()
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return conn, response.status, response.read(), time.perf_counter() - started
    except (OSError, http.client.HTTPException):
        conn.close()
        return (http.client.HTTPConnection(host, port, timeout=60), "error", b"",
                time.perf_counter() - started)


def summary(results, elapsed):
    latencies = sorted(latency for _, _, latency in results) or [0.0]
    return {"n": len(results), "rate": len(results) / elapsed, "p50": pct(latencies, 50) * 1000,
            "p99": pct(latencies, 99) * 1000,
            "statuses": dict(Counter(str(status) for status, _, _ in results))}


def print_phase(name, system, baseline, load, steal):
    ratio = system["rate"] / baseline["rate"] if baseline["rate"] else float("nan")
    print(f"{name}: system {system['rate']:8.1f}/s p50 {system['p50']:7.1f} ms p99 {system['p99']:7.1f} ms"
          f" | baseline {baseline['rate']:8.1f}/s p50 {baseline['p50']:7.1f} ms p99 {baseline['p99']:7.1f} ms"
          f" | ratio {ratio:.2f} | {load}, steal {steal:.1f} %")
    print(f"  statuses: system {system['statuses']}, baseline {baseline['statuses']}")


def drained(vhost, quiet=2.0, timeout=300):
    """Wait until every queue of the vhost has been empty for `quiet` seconds."""
    deadline, calm_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        queues = requests.get(f"{API}/queues/{quote(vhost, safe='')}", timeout=10).json()
        busy = sum(q.get("messages", 0) + q.get("messages_unacknowledged", 0) for q in queues)
        if busy == 0:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                return True
        else:
            calm_since = None
        time.sleep(0.5)
    return False


def start_profiles(folder, processes, seconds):
    """py-spy record of each process, in collapsed-stack form; {name: (proc, file)}."""
    if not folder:
        return {}
    Path(folder).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    spies = {}
    for name, pid in processes.items():
        out = Path(folder) / f"{name}.txt"
        spies[name] = (subprocess.Popen([str(spy), "record", "--format", "raw", "--rate", "200",
                                         "--nonblocking", "-d", str(int(seconds)), "-o", str(out),
                                         "-p", str(pid)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL), out)
    return spies


def report_profiles(spies, top=10):
    """Per process: the functions that took most samples themselves (leaf), and the project's
    own functions by samples spent in them and what they call."""
    for name, (proc, out) in spies.items():
        proc.wait(120)
        if not out.exists():
            print(f"profile {name}: no samples")
            continue
        leaf, inclusive, total = Counter(), Counter(), 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            count, frames = int(count), [_frame(f) for f in stack.split(";")]
            total += count
            leaf[frames[-1]] += count
            for frame in set(frames):
                if frame.split(" ")[-1].startswith(("services/", "gateway/")):
                    inclusive[frame] += count
        print(f"profile {name}: {total} samples ({out})")
        print("  itself:   " + "; ".join(f"{100 * c / total:.0f}% {f}" for f, c in leaf.most_common(top)))
        print("  project:  " + "; ".join(f"{100 * c / total:.0f}% {f}" for f, c in inclusive.most_common(top)))


def _frame(text):
    """'function (path:line)' as 'function path', the path from the project's root or from
    site-packages."""
    function, _, where = text.partition(" (")
    path = where.split(":")[0]
    path = path.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
    return f"{function} {path}"


def start_baseline(mongo_uri, slots, desks):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("baseline.py")),
                             "--mongo-uri", mongo_uri, "--port", str(port), "--slots", str(slots),
                             "--desks", str(desks)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ids = requests.get(f"http://127.0.0.1:{port}/slot-ids", timeout=2).json()["ids"]
            return proc, port, ids
        except (OSError, requests.RequestException, ValueError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the baseline did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--desks", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle before measuring memory")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each nameko process during the bookings")
    args = parser.parse_args()

    from deploy import run

    sink_port = free_port()
    maildir = Path(tempfile.mkdtemp(prefix="bench-cost-mail-")) / "mail"
    sink = run.start_mail_sink(maildir, sink_port)
    baseline = None
    try:
        # it measures booking slots directly: the procedure open, not allocated by request
        with OwnSystem(SERVICES, name="booking_cost", SMTP_HOST="127.0.0.1",
                       SMTP_PORT=sink_port, PROCEDURE_MODE_DEFAULT="open") as own:
            baseline, baseline_port, baseline_ids = start_baseline(own.uris["slots"], args.slots,
                                                                   args.desks)
            measure(args, own, sink, baseline_port, baseline_ids)
    finally:
        if baseline is not None:
            baseline.kill()
        sink.terminate()
        sink.wait(10)


def measure(args, own, sink, baseline_port, baseline_ids):
    names = named_processes(own, sink)
    beam = rabbit_pid()
    time.sleep(min(5.0, args.idle))  # started: the first timers' passes are not idle
    idle_from, idle_started = {name: cpu_seconds(pid) for name, pid in names.items()}, time.monotonic()
    time.sleep(max(0.0, args.idle - 5.0) or 1.0)
    idle_cpu = {name: (cpu_seconds(pid) - idle_from[name]) * 1000 / (time.monotonic() - idle_started)
                for name, pid in names.items()}
    idle = {name: rss_mib(pid) for name, pid in names.items()}
    print(f"idle resident memory and CPU, timers only ({machine()}):")
    for name, mib in sorted(idle.items()):
        print(f"  {name:24s} {mib:8.1f} MiB  {idle_cpu[name]:6.1f} ms CPU/s")
    print(f"idle system CPU     {sum(idle_cpu.values()):8.1f} ms/s: part of each figure below "
          "(the burst and drain last seconds)")
    print(f"idle system total   {sum(idle.values()):8.1f} MiB (RabbitMQ excluded)")
    if beam:
        print(f"  (RabbitMQ, shared   {rss_mib(beam):8.1f} MiB)")

    host, port = "127.0.0.1", own.port
    day, slot_ids = release_slots(own.amqp_uri, args.slots, args.desks)
    mailbox = own.mailbox()
    people = People()
    base_people = People()
    json_headers = {"Content-Type": "application/json"}

    def booking_request(ids, persons, offset=0):
        def make(i):
            # distinct people (their birth dates stay in the past): the baseline's thousands
            # of attempts a second wrap around, it checks no person twice
            i = offset + i % PEOPLE_PER_PHASE
            address = persons.address(i)
            return ("POST", "/api/bookings",
                    json.dumps(persons.booking(i, "duplicate", random.choice(ids))).encode(),
                    dict(json_headers, **{"X-Forwarded-For": address}))
        return make

    confirmed = Counter()

    def confirm(conn, status, answer, headers):
        if status == 201:
            reference = json.loads(answer)["reference"]
            conn.request("POST", f"/api/bookings/{reference}/confirm", b"",
                         dict(headers, **{"X-Booking-Token": mailbox.booking_confirm_token(reference)}))
            reply = conn.getresponse()
            reply.read()
            confirmed[reply.status] += 1

    # 1. bookings
    pids = dict(names, RabbitMQ=beam) if beam else dict(names)
    spies = start_profiles(args.profile, names, args.seconds + 5)  # the stores are Python too
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    measuring = time.monotonic()
    steal = CpuSteal()
    system = summary(*fire(host, port, booking_request(slot_ids, people), args.clients,
                           args.seconds, after=confirm))
    load, stolen = machine(), steal.percent()
    settled = drained(own.vhost)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    measured = time.monotonic() - measuring
    report_profiles(spies)
    steal = CpuSteal()
    base = summary(*fire(host, baseline_port, booking_request(baseline_ids, base_people),
                         args.clients, args.seconds))
    print_phase("bookings", system, base, load, stolen)
    with ClusterRpcProxy({"AMQP_URI": own.amqp_uri}, timeout=60) as rpc:
        slots = [rpc.slots.get(slot_id) for slot_id in slot_ids]
    overbooked = sum(max(0, s["booked"] - s["capacity"]) for s in slots)
    booked = sum(s["booked"] for s in slots)
    done = confirmed.get(200, 0)
    print(f"booked places     {booked} of {args.slots * args.desks}")
    print(f"overbooked        {overbooked}")
    print(f"confirmed         {done}  (bus drained: {settled})")
    print("CPU per created and confirmed booking (ms), over the burst and until the bus drained:")
    total = 0.0
    for name in sorted(pids, key=lambda n: -(after[n] - before[n])):
        spent = (after[name] - before[name]) * 1000 / max(done, 1)
        if name != "RabbitMQ":
            total += spent
        print(f"  {name:24s} {spent:8.2f}")
    print(f"cpu ms per booking {total:8.2f}  (the system's processes, RabbitMQ apart)")
    print(f"  of which idle timers {sum(idle_cpu.values()) * measured / max(done, 1):6.2f}  "
          f"({measured:.1f} s of burst and drain at the idle rate)")
    if beam:
        whole = total + (after["RabbitMQ"] - before["RabbitMQ"]) * 1000 / max(done, 1)
        print(f"cpu ms per booking with RabbitMQ {whole:8.2f}  (the broker is shared with other vhosts)")

    full_ids = [s["id"] for s in slots if s["free"] == 0]
    if not full_ids:  # a short burst left none full: the bench takes one slot's last places
        fullest = min(slots, key=lambda s: s["free"])
        with ClusterRpcProxy({"AMQP_URI": own.amqp_uri}, timeout=60) as rpc:
            for n in range(fullest["free"]):
                rpc.slots.hold(fullest["id"], f"bench-fill-{n}", "duplicate")
        full_ids = [fullest["id"]]
    base_full = baseline_ids  # its burst filled them: its statuses show the 409s

    # 2. listings
    listing = f"/api/slots?procedure=duplicate&from={day.isoformat()}&to={day.isoformat()}&per_page=50"
    steal = CpuSteal()
    system = summary(*fire(host, port, lambda i: ("GET", listing, None, {}), args.clients,
                           args.seconds))
    load, stolen = machine(), steal.percent()
    base_listing = "/api/slots?procedure=duplicate&per_page=50"
    base = summary(*fire(host, baseline_port, lambda i: ("GET", base_listing, None, {}),
                         args.clients, args.seconds))
    print_phase("listings", system, base, load, stolen)

    # 3. full-slot attempts
    steal = CpuSteal()
    system = summary(*fire(host, port, booking_request(full_ids, people, offset=PEOPLE_PER_PHASE),
                           args.clients, args.seconds))
    load, stolen = machine(), steal.percent()
    base = summary(*fire(host, baseline_port, booking_request(base_full, base_people, PEOPLE_PER_PHASE),
                         args.clients, args.seconds))
    print_phase("full-slot attempts", system, base, load, stolen)

    drained(own.vhost)
    busy = {name: rss_mib(pid) for name, pid in names.items()}
    print(f"resident memory after the burst ({machine()}):")
    for name, mib in sorted(busy.items()):
        print(f"  {name:24s} {mib:8.1f} MiB")
    print(f"after burst total   {sum(busy.values()):8.1f} MiB (RabbitMQ excluded)")


if __name__ == "__main__":
    main()
