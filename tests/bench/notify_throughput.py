#!/usr/bin/env python3
"""Notify throughput: booking events in, SMTP accepts out, and recovery from a mail outage.

Self-contained: its own RabbitMQ vhost, MongoDB stand-in (unless MONGO_URI), SMTP sink and
notify process. Prints messages/s from event to SMTP accept, then the backlog drain time after
the mail server was down for --outage seconds during a burst, and checks nothing was lost or
sent twice.

    .venv/bin/python tests/bench/notify_throughput.py --messages 1000 --outage 30
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.harness import API, OwnSystem, free_port  # noqa: E402
from tests.helpers import MailSink, booking_event  # noqa: E402


def wait_for_consumer(vhost, queue_prefix, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = requests.get(f"{API}/queues/{vhost}", timeout=5).json()
        if any(q["name"].startswith(queue_prefix) and q.get("consumers", 0) > 0 for q in queues):
            return
        time.sleep(0.3)
    raise RuntimeError("notify did not start consuming")


def delivered(maildir):
    new = Path(maildir) / "new"
    return len(os.listdir(new)) if new.exists() else 0


def wait_delivered(maildir, count, timeout):
    deadline = time.monotonic() + timeout
    while delivered(maildir) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {delivered(maildir)} of {count} delivered")
        time.sleep(0.05)
    return time.monotonic()


def peak_memory_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=30)
    args = parser.parse_args()

    from nameko.standalone.events import event_dispatcher

    sink = MailSink(free_port(), Path(tempfile.mkdtemp(prefix="bench-notify-")) / "mail")
    sink.start()
    system = None
    try:
        system = OwnSystem({"notify": 1}, name="bench_notify", SMTP_HOST="127.0.0.1",
                           SMTP_PORT=sink.port)
        notify, amqp = system.procs[0], system.amqp_uri
        # answering an RPC is not yet consuming every event queue
        wait_for_consumer(system.vhost, "evt-booking-booking_created--notify")
        dispatch = event_dispatcher({"AMQP_URI": amqp})

        # 1. throughput: a burst of events, time until the SMTP server accepted them all
        n = args.messages
        started = time.monotonic()
        for i in range(n):
            # one address each: one address gets at most MAIL_PER_ADDRESS_PER_DAY
            dispatch("booking", "booking_created", booking_event(
                reference=f"RDV-{i:04d}-TPUT", email=f"tput{i}@example.org"))
        published = time.monotonic()
        done = wait_delivered(sink.maildir, n, timeout=600)
        print(f"{n} confirmations: published in {published - started:.2f} s, "
              f"all accepted by SMTP after {done - started:.2f} s")
        print(f"messages/s (event to SMTP accept)  {n / (done - started):8.1f}")

        # 2. outage: the mail server goes down during a burst, comes back after --outage s
        sink.stop()
        outage_started = time.monotonic()
        for i in range(n):
            dispatch("booking", "booking_created", booking_event(
                reference=f"RDV-{i:04d}-OUTG", email=f"outg{i}@example.org"))
        time.sleep(max(0.0, args.outage - (time.monotonic() - outage_started)))
        sink.start()
        back = time.monotonic()
        done = wait_delivered(sink.maildir, 2 * n, timeout=900)
        print(f"mail server down {back - outage_started:.1f} s during a burst of {n}; "
              f"backlog drained {done - back:.2f} s after it came back")
        time.sleep(2)
        got = [message["Subject"] for message in sink.messages()]
        refs = [s.split(" – ")[1] for s in got]
        print(f"delivered {len(got)} of {2 * n}; duplicates {len(refs) - len(set(refs))}; "
              f"lost {2 * n - len(set(refs))}")
        print(f"notify peak memory (VmHWM)  {peak_memory_mib(notify.pid):.1f} MiB")
    finally:
        sink.stop()
        if system:
            system.stop()


if __name__ == "__main__":
    main()
