"""Run the whole system locally: `make run` (and the end-to-end tests) start it through here.

Starts the embedded MongoDB stand-ins (one per service database) unless MONGO_URI is set,
each service as its own `nameko run` process and the public gateway, loads the demo opening
plan into an empty slots database, prints the URLs, and stops everything on Ctrl-C.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
VAR = ROOT / "var"

# one `nameko run` process each: a crash or a restart of one leaves the others running
PROCESSES = {
    "slots": "services.slots.service",
    "booking": "services.booking.service",
    "notify": "services.notify.service",
    "fraud": "services.fraud.service",
    "public_gateway": "gateway.public.service",
}


# Each service owns its database (DESIGN.md section 2); locally each also gets its own
# stand-in process. The stand-in serialises the operations on one database and runs all of
# its databases under one interpreter lock: a service's writes queued behind another's during
# a burst was what kept fraud seconds behind the bookings (tests/bench/fraud_latency.py).
EMBEDDED_MONGO_PORTS = {"slots": 27017, "booking": 27018, "fraud": 27019, "notify": 27020}


def token_secret():
    """BOOKING_TOKEN_SECRET from the environment, else a local secret made once under var/."""
    return local_secret("BOOKING_TOKEN_SECRET")


def local_secret(key):
    """The secret `key` from the environment, else one made once under var/ (its name, lower)."""
    if os.environ.get(key):
        return os.environ[key]
    path = VAR / key.lower()
    if not path.exists():
        VAR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


# Mail can wait a few seconds: during a release, notify (and its store) yield the CPU to the
# rest. Fraud does not: the places it takes back from traffickers are for the same release.
# Measured, alternating runs: fraud at nice 5 left its cancellations 2-3 s (p95) behind the
# bookings, at nice 0 about 1-1.4 s, with no clear change to the booking burst's p99
# (tests/bench/fraud_latency.py and booking_burst.py).
NICENESS = {"notify": 10}


def start_service(name, env, log_file=None):
    out = open(log_file, "ab") if log_file else None
    return subprocess.Popen(
        ["nice", "-n", str(NICENESS.get(name, 0)),
         str(Path(sys.executable).with_name("nameko")), "run", "--config", str(CONFIG),
         PROCESSES[name]],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
    )


def start_mail_sink(maildir, port):
    """The local SMTP server that keeps every message as a file (deploy/mail_sink.py)."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy.mail_sink", "--port", str(port),
                             "--maildir", str(maildir)], cwd=ROOT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the SMTP sink did not start on port {port}")


def wait_for_http(url, timeout=60.0, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a process exited early (code {proc.returncode})")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def rpc_proxy(env, timeout=30):
    from nameko.standalone.rpc import ClusterRpcProxy

    return ClusterRpcProxy({"AMQP_URI": env["AMQP_URI"]}, timeout=timeout)


def demo_plans(today=None):
    spec = json.loads((ROOT / "deploy" / "demo_plan.json").read_text())
    first = (today or date.today()) + timedelta(days=1)
    last = first + timedelta(weeks=spec["weeks"])
    return [dict(plan, **{"from": first.isoformat(), "to": last.isoformat()})
            for plan in spec["plans"]]


def load_demo_plan_if_empty(env):
    with rpc_proxy(env) as rpc:
        if not rpc.slots.is_empty():
            return 0
        return sum(rpc.slots.create_from_plan(plan)["created"] for plan in demo_plans())


def stop_all(procs, timeout=15):
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    # a terminal's Ctrl-C, or a supervisor's SIGTERM: either way stop the children cleanly
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    env.setdefault("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")
    env["BOOKING_TOKEN_SECRET"] = token_secret()
    env["PUBLIC_FORM_SECRET"] = local_secret("PUBLIC_FORM_SECRET")
    procs, backing = [], []
    try:
        mongo_uris = {}  # service -> its own stand-in, when there is no MONGO_URI
        if not env.get("MONGO_URI"):
            from deploy import embedded_mongo

            for name, port in EMBEDDED_MONGO_PORTS.items():
                mongo, mongo_uris[name] = embedded_mongo.start(VAR / "mongo" / name, port,
                                                               niceness=NICENESS.get(name, 0))
                backing.append(mongo)
            env["MONGO_URI"] = mongo_uris["slots"]
            print("embedded MongoDB stand-ins, one per service database (data in var/mongo/): "
                  + ", ".join(f"{name} {uri}" for name, uri in mongo_uris.items()))
        if not env.get("SMTP_HOST"):
            backing.append(start_mail_sink(VAR / "mail", 1025))
            env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", "1025"
            print("SMTP sink on 127.0.0.1:1025, messages in var/mail/new/")
        port = env.get("WEB_SERVER_ADDRESS", "0.0.0.0:8000").rsplit(":", 1)[1]
        services = [start_service(name, dict(env, MONGO_URI=mongo_uris.get(name, env["MONGO_URI"])))
                    for name in PROCESSES]
        procs.extend(services)
        wait_for_http(f"http://127.0.0.1:{port}/health", procs=services)
        created = load_demo_plan_if_empty(env)
        if created:
            print(f"loaded the demo opening plan: {created} slots")
        print(
            "\nThe system is up:\n"
            f"  applicant pages   http://127.0.0.1:{port}/\n"
            f"  public API        http://127.0.0.1:{port}/api/procedures\n"
            f"  free slots        http://127.0.0.1:{port}/api/slots?procedure=renewal\n"
            "  RabbitMQ (bus)    http://127.0.0.1:15672  (guest/guest)\n"
            f"  mail sent         {env['SMTP_HOST']}:{env['SMTP_PORT']}"
            f"{' (files in var/mail/new/)' if (VAR / 'mail').exists() else ''}\n"
            f"  MongoDB           {', '.join(f'{n} {u}' for n, u in mongo_uris.items()) or env['MONGO_URI']}\n"
            "Ctrl-C stops everything.\n", flush=True)
        while all(p.poll() is None for p in services):
            time.sleep(0.5)
        print("a service stopped; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping...", flush=True)
        stop_all(procs)
        stop_all(backing)  # the store last, once nothing writes to it


if __name__ == "__main__":
    sys.exit(main())
