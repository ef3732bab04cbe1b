"""Run the whole system locally: `make run` (and the end-to-end tests) start it through here.

Starts the embedded MongoDB stand-ins (one per service database) unless MONGO_URI is set, the
SMTP sink unless SMTP_HOST is set, each service as its own `nameko run` process and the public
gateway; loads the demo opening plan into an empty slots database and prints the URLs.

It supervises: a process that exits is restarted after a back-off (1 s, doubling up to 30 s,
back to 1 s once it has run a minute) and the console says so; the others keep running.

Ctrl-C or SIGTERM stops everything within a few seconds: SIGTERM to every service at once,
SIGKILL to whatever still runs after STOP_GRACE_SECONDS, then the same for the stores and the
sink, last, once nothing writes to them. An idle `nameko run` needs about 4 s to stop cleanly
(its queue consumers notice a stop request at their next 1 s poll, several times in a row).
The old stop took about 19 s because a terminal's Ctrl-C reached every child too: each
`nameko run` then got SIGINT and our SIGTERM, stopped twice, hung on nameko's timer
("re-send() an already-triggered event"), and was killed after 15 s. So the children now run
in one process group of their own, not the terminal's: only this process gets the Ctrl-C, and
each child gets one SIGTERM. `kill -- -<group>` (the group is printed) stops all at once. No
child outlives this process however it ends, even by SIGKILL: every child is started with
PR_SET_PDEATHSIG (the kernel kills it when we die).

It never silently uses a server it did not start: every port it would listen on must be free
first, else it stops with a message and exit code 2, having started nothing.

Environment, besides the services' own settings (deploy/config.yaml):
  RUN_VAR_DIR     where stores, mail and the local token secret live (default: var/)
  RUN_MONGO_PORT  first of the stand-in ports (default 27017: 27017-27023)
  SMTP_PORT       the sink's port when SMTP_HOST is not set (default 1025)
  WEB_SERVER_ADDRESS  the public gateway's address (default 0.0.0.0:8000)
  RUN_INSTANCES   processes of each service (default 1). With 2 or more, each service runs that
                  many `nameko run` processes (their timers single-acting through leases), the
                  public gateway instances listen on 127.0.0.1 from RUN_GATEWAY_PORT (default
                  8010) on, and nginx (deploy/nginx/, Debian's) listens on WEB_SERVER_ADDRESS
                  in front of them. The staff gateway stays one process.
"""
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
VAR = Path(os.environ.get("RUN_VAR_DIR") or ROOT / "var")

# one `nameko run` process each: a crash or a restart of one leaves the others running
PROCESSES = {
    "slots": "services.slots.service",
    "booking": "services.booking.service",
    "notify": "services.notify.service",
    "fraud": "services.fraud.service",
    "requests": "services.requests.service",
    "register": "services.register.service",
    "public_gateway": "gateway.public.service",
    "admin_gateway": "gateway.admin.service",
}

# Each service owns its database (DESIGN.md section 2); locally each also gets its own
# stand-in process. The stand-in serialises the operations on one database and runs all of
# its databases under one interpreter lock: a service's writes queued behind another's during
# a burst was what kept fraud seconds behind the bookings (tests/bench/fraud_latency.py).
# keyed by process; each process's database is named after it, except the staff gateway's
DATABASE_OF = {"admin_gateway": "admin"}
EMBEDDED_MONGO_PORTS = {"slots": 27017, "booking": 27018, "fraud": 27019, "notify": 27020,
                        "admin_gateway": 27021, "requests": 27022, "register": 27023}


def local_secret(key, filename, make=lambda: secrets.token_urlsafe(32)):
    """`key` from the environment, else a local secret made once under var/ (mode 600)."""
    if os.environ.get(key):
        return os.environ[key]
    path = VAR / filename
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()

# RUN_INSTANCES > 1: the processes that run once whatever the count. The staff gateway serves
# a few agents, keeps its monitoring samples in memory and has no proxy in front of it here:
# a second one would need a port and a proxy of its own for little; run.py restarts it.
SINGLE = {"admin_gateway"}
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

STOP_GRACE_SECONDS = 5.0  # an idle service stops in about 4 s; a stuck one is killed
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0


def process_settings(env):
    """Settings of one process of its own, merged over the shared environment.

    The gateways each listen on their own address: the public one on WEB_SERVER_ADDRESS, the
    staff one on ADMIN_SERVER_ADDRESS, internal only by default.
    """
    return {
        "public_gateway": {"WEB_SERVER_ADDRESS": env.get("WEB_SERVER_ADDRESS") or "0.0.0.0:8000"},
        "admin_gateway": {"WEB_SERVER_ADDRESS": env.get("ADMIN_SERVER_ADDRESS") or "127.0.0.1:8001"},
    }


def instance_count(env):
    """RUN_INSTANCES: processes of each service (1 by default)."""
    text = env.get("RUN_INSTANCES") or "1"
    if not text.isdigit() or not 1 <= int(text) <= 9:
        raise ValueError(f"RUN_INSTANCES must be a whole number from 1 to 9, not {text!r}")
    return int(text)


def instances(env):
    """[(label, process name, settings of its own)]: every process to start, one per instance.

    With one instance each, the labels are the process names (as before). With more, the
    labels are `name.1`, `name.2`...; each public gateway instance listens on 127.0.0.1 at
    RUN_GATEWAY_PORT + i - 1, behind nginx (which takes WEB_SERVER_ADDRESS)."""
    count = instance_count(env)
    if count == 1:
        return [(name, name, {}) for name in PROCESSES]
    found = []
    for name in PROCESSES:
        for i in range(1, 1 + (1 if name in SINGLE else count)):
            own = {}
            if name == "public_gateway":
                own = {"WEB_SERVER_ADDRESS": f"127.0.0.1:{gateway_instance_port(env, i)}"}
            found.append((name if name in SINGLE else f"{name}.{i}", name, own))
    return found


def gateway_instance_port(env, i):
    return int(env.get("RUN_GATEWAY_PORT") or 8010) + i - 1


def gateway_instance_addresses(env):
    return [own["WEB_SERVER_ADDRESS"] for _, name, own in instances(env)
            if name == "public_gateway"]


def token_secret():
    """BOOKING_TOKEN_SECRET from the environment, else a local secret made once under var/."""
    return local_secret("BOOKING_TOKEN_SECRET", "booking_token_secret")


def convocation_key():
    """CONVOCATION_SIGNING_KEY (Ed25519, base64 or PEM), else a local key made once under var/."""
    from services.common.signing import new_private_key_text

    return local_secret("CONVOCATION_SIGNING_KEY", "convocation_signing_key", new_private_key_text)


def attestation_key():
    """ATTESTATION_SIGNING_KEY (Ed25519), else a local key made once under var/."""
    from services.common.signing import new_private_key_text

    return local_secret("ATTESTATION_SIGNING_KEY", "attestation_signing_key", new_private_key_text)


# The demo: this share of the demo plan's slots is open at start, the rest goes into the secret
# schedule, compressed by RELEASE_DEMO_MINUTES (a batch about every 3 minutes unless set; 0
# gives the real weekday schedule) so that a person trying the system sees a release happen.
DEMO_OPEN_SHARE = 0.3
DEMO_RELEASE_MINUTES = "3"


# Mail can wait a few seconds: during a release, notify (and its store) yield the CPU to the
# rest. Fraud does not: the places it takes back from traffickers are for the same release.
# Measured, alternating runs: fraud at nice 5 left its cancellations 2-3 s (p95) behind the
# bookings, at nice 0 about 1-1.4 s, with no clear change to the booking burst's p99
# (tests/bench/fraud_latency.py and booking_burst.py).
NICENESS = {"notify": 10}

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: the kernel SIGKILLs the child when the process that started it dies."""
    parent = os.getppid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above: nobody to die with
        os._exit(1)


class ProcessGroup:
    """One process group for every child, apart from the terminal's (see the docstring)."""

    def __init__(self):
        self.pgid = None

    def preexec(self):
        die_with_parent()
        try:
            os.setpgid(0, self.pgid or 0)
        except OSError:  # every earlier member is gone: this child starts the group anew
            os.setpgid(0, 0)

    def joined(self, proc):
        if proc.poll() is None:
            try:
                self.pgid = os.getpgid(proc.pid)
            except OSError:
                pass
        return proc


def start_service(name, env, log_file=None, preexec_fn=die_with_parent, own=None):
    """`nameko run` of one process; `own`: settings of this instance only (its address)."""
    out = open(log_file, "ab") if log_file else None
    env = dict(env, **dict(process_settings(env).get(name, {}), **(own or {})))
    # eventlet's green DNS imports dnspython, about 8 MB in every process, to resolve the few
    # host names a service connects to (at connection time only): the system resolver does
    env.setdefault("EVENTLET_NO_GREENDNS", "yes")
    return subprocess.Popen(
        ["nice", "-n", str(NICENESS.get(name, 0)),
         str(Path(sys.executable).with_name("nameko")), "run", "--config", str(CONFIG),
         PROCESSES[name]],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
        preexec_fn=preexec_fn,
    )


def start_mail_sink(maildir, port, preexec_fn=die_with_parent):
    """The local SMTP server that keeps every message as a file (deploy/mail_sink.py)."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy.mail_sink", "--port", str(port),
                             "--maildir", str(maildir)], cwd=ROOT, preexec_fn=preexec_fn)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the SMTP sink did not start on port {port}")


# Each child's start function is bound to its own values when it is made (functools.partial):
# a closure reading the loop's variables saw them as they were later (the sink, restarted,
# tried the public gateway's port, which `port` named by then, for ever).
def start_store(group, name, port):
    from deploy import embedded_mongo

    return group.joined(embedded_mongo.start(VAR / "mongo" / name, port,
                                             niceness=NICENESS.get(name, 0),
                                             preexec_fn=group.preexec)[0])


def start_sink(group, port):
    return group.joined(start_mail_sink(VAR / "mail", port, preexec_fn=group.preexec))


def start_child_service(group, name, env, own=None):
    return group.joined(start_service(name, env, preexec_fn=group.preexec, own=own))


def nginx_args(folder):
    # one process (no master and workers): PR_SET_PDEATHSIG reaches it, where orphaned
    # workers would outlive a killed run.py; as root it then keeps root's rights over var/
    return [NGINX, "-c", str(folder / "nginx.conf"), "-p", str(folder), "-e", "stderr",
            "-g", f"daemon off; master_process off; pid {folder / 'nginx.pid'};"]


def start_proxy(group, env, folder):
    """nginx (deploy/nginx/nginx.conf.template) on WEB_SERVER_ADDRESS, balancing over the
    public gateway instances; its access log in `folder`/access.log."""
    from deploy import proxy

    folder.mkdir(parents=True, exist_ok=True)
    host, port = gateway_address(env)
    (folder / "nginx.conf").write_text(proxy.render({
        "PROXY_LISTEN": f"{host}:{port}", "PROXY_RUN_DIR": str(folder),
        "PUBLIC_GATEWAY": ",".join(gateway_instance_addresses(env))}))
    log = open(folder / "access.log", "ab")
    return group.joined(subprocess.Popen(nginx_args(folder), stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=group.preexec))


def port_taken(host, port):
    """True when something listens on (host, port) already: we could not bind it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind((host, port))
            return False
        except OSError:
            return True


def wanted_ports(env):
    """(what, host, port, advice) for every port this run would listen on."""
    wanted = []
    if not env.get("MONGO_URI"):
        for name, port in mongo_ports(env).items():
            wanted.append((f"the {name} MongoDB stand-in", "127.0.0.1", port,
                           "a stand-in left from an earlier run, or a real MongoDB? Stop it, "
                           "set MONGO_URI=mongodb://... to use that server, or RUN_MONGO_PORT"))
    if not env.get("SMTP_HOST"):
        wanted.append(("the SMTP sink", "127.0.0.1", sink_port(env),
                       "stop what listens there, set SMTP_HOST to use that server, or SMTP_PORT"))
    host, port = gateway_address(env)
    if instance_count(env) == 1:
        wanted.append(("the public gateway", host, port,
                       "stop what listens there, or set WEB_SERVER_ADDRESS"))
    else:
        wanted.append(("the reverse proxy (nginx)", host, port,
                       "stop what listens there, or set WEB_SERVER_ADDRESS"))
        for address in gateway_instance_addresses(env):
            gw_host, gw_port = address.rsplit(":", 1)
            wanted.append(("a public gateway instance", gw_host, int(gw_port),
                           "stop what listens there, or set RUN_GATEWAY_PORT"))
    host, port = admin_address(env)
    wanted.append(("the staff gateway", host, port,
                   "stop what listens there, or set ADMIN_SERVER_ADDRESS"))
    return wanted


def mongo_ports(env):
    first = int(env.get("RUN_MONGO_PORT") or 27017)
    return {name: first + (port - 27017) for name, port in EMBEDDED_MONGO_PORTS.items()}


def sink_port(env):
    return int(env.get("SMTP_PORT") or 1025)


def gateway_address(env, name="public_gateway"):
    host, port = process_settings(env)[name]["WEB_SERVER_ADDRESS"].rsplit(":", 1)
    return host, int(port)


def admin_address(env):
    return gateway_address(env, "admin_gateway")


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
        return sum(rpc.slots.create_from_plan(plan, release=DEMO_OPEN_SHARE)["created"]
                   for plan in demo_plans())


def wait_for_services(names, amqp_uri, timeout=120):
    """Until every service answers an RPC: "up" means consuming. (A service stopped while its
    consumers are still being set up trips over nameko's stop: a traceback on the way out.)"""
    from deploy.healthcheck import check_service

    deadline = time.monotonic() + timeout
    for name in names:
        while not check_service(name, amqp_uri, timeout=2)[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout} s")
            time.sleep(0.2)


def stop_all(procs, grace=STOP_GRACE_SECONDS):
    """SIGTERM to all at once; SIGKILL to those still running after `grace` seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Supervised:
    """A child process restarted with a back-off whenever it exits."""

    def __init__(self, name, start):
        self.name, self._start = name, start
        self.proc, self.started_at, self.restart_at = None, 0.0, None
        self.backoff = BACKOFF_FIRST

    def start(self):
        self.proc, self.started_at, self.restart_at = self._start(), time.monotonic(), None

    def check(self, now):
        """Restart if due; schedule a restart if the process has just exited."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                print(f"restarting {self.name}", flush=True)
                try:
                    self.start()
                except Exception as exc:  # a store that cannot come up: try again later
                    self._schedule(now, f"could not start ({exc})")
            return
        if self.proc is not None and self.proc.poll() is not None:
            if now - self.started_at >= STABLE_AFTER:
                self.backoff = BACKOFF_FIRST
            self._schedule(now, f"exited with code {self.proc.returncode}")

    def _schedule(self, now, why):
        self.restart_at = now + self.backoff
        print(f"{self.name} {why}; restarting it in {self.backoff:g} s", file=sys.stderr,
              flush=True)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def running(self):
        return [self.proc] if self.proc is not None and self.proc.poll() is None else []


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    # a terminal's Ctrl-C, or a supervisor's SIGTERM: either way stop the children cleanly
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    env.setdefault("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")
    try:
        count = instance_count(env)
    except ValueError as exc:
        print(f"{exc}; nothing was started", file=sys.stderr)
        return 2
    if count > 1 and NGINX is None:
        print("RUN_INSTANCES > 1 puts nginx in front of the public gateways, and nginx is "
              "missing (apt-get install nginx, or make test-tools); nothing was started",
              file=sys.stderr)
        return 2
    taken = [(what, host, port, advice) for what, host, port, advice in wanted_ports(env)
             if port_taken(host, port)]
    if taken:
        for what, host, port, advice in taken:
            print(f"cannot start {what}: port {port} on {host} is already in use ({advice})",
                  file=sys.stderr)
        print("nothing was started", file=sys.stderr)
        return 2
    env["BOOKING_TOKEN_SECRET"] = token_secret()
    env["REQUEST_TOKEN_SECRET"] = local_secret("REQUEST_TOKEN_SECRET", "request_token_secret")
    env["SLOT_ID_SECRET"] = local_secret("SLOT_ID_SECRET", "slot_id_secret")
    env["REGISTER_TOKEN_SECRET"] = local_secret("REGISTER_TOKEN_SECRET", "register_token_secret")
    env["CONVOCATION_SIGNING_KEY"] = convocation_key()
    env["ADMIN_SECRET_KEY"] = local_secret("ADMIN_SECRET_KEY", "admin_secret_key")
    env["ATTESTATION_SIGNING_KEY"] = attestation_key()
    env["PUBLIC_FORM_SECRET"] = local_secret("PUBLIC_FORM_SECRET", "public_form_secret")
    env.setdefault("RELEASE_DEMO_MINUTES", DEMO_RELEASE_MINUTES)
    services, backing, group = [], [], ProcessGroup()
    try:
        mongo_uris = {}  # service -> its own stand-in, when there is no MONGO_URI
        if not env.get("MONGO_URI"):
            for name, port in mongo_ports(env).items():
                mongo_uris[name] = f"mongodb://127.0.0.1:{port}"
                store = Supervised(f"{name} store", partial(start_store, group, name, port))
                backing.append(store)
                store.start()
            env["MONGO_URI"] = mongo_uris["slots"]
            print(f"embedded MongoDB stand-ins, one per service database (data in {VAR}/mongo/): "
                  + ", ".join(f"{name} {uri}" for name, uri in mongo_uris.items()), flush=True)
        if not env.get("SMTP_HOST"):
            port = sink_port(env)
            sink = Supervised("SMTP sink", partial(start_sink, group, port))
            backing.append(sink)
            sink.start()
            env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", str(port)
            print(f"SMTP sink on 127.0.0.1:{port}, messages in {VAR}/mail/new/", flush=True)
        host, port = gateway_address(env)
        for label, name, own in instances(env):
            service_env = dict(env, MONGO_URI=mongo_uris.get(name, env["MONGO_URI"]))
            services.append(Supervised(label, partial(start_child_service, group, name,
                                                      service_env, own)))
            services[-1].start()
        if count > 1:
            for address in gateway_instance_addresses(env):
                wait_for_http(f"http://{address}/health", timeout=120)
            services.append(Supervised("nginx", partial(start_proxy, group, env, VAR / "nginx")))
            services[-1].start()
            print(f"{count} instances of each service; nginx on {host}:{port} in front of the "
                  f"public gateways on {', '.join(gateway_instance_addresses(env))}", flush=True)
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=120)
        admin_host, admin_port = admin_address(env)
        wait_for_http(f"http://127.0.0.1:{admin_port}/health", timeout=120)
        wait_for_services([n for n in PROCESSES if not n.endswith("_gateway")], env["AMQP_URI"])
        created = load_demo_plan_if_empty(env)
        if created:
            print(f"loaded the demo opening plan: {created} slots")
        print(
            "\nThe system is up:\n"
            f"  applicant pages   http://127.0.0.1:{port}/\n"
            f"  public API        http://127.0.0.1:{port}/api/procedures\n"
            f"  free slots        http://127.0.0.1:{port}/api/slots?procedure=renewal\n"
            f"  staff (counter)   http://127.0.0.1:{admin_port}/login\n"
            "  first supervisor  make supervisor USERNAME=<name>   (asks for a password;\n"
            "                    or: python -m gateway.admin.accounts create-supervisor --username <name>)\n"
            f"  RabbitMQ (bus)    {env.get('RABBITMQ_MANAGEMENT_URL') or 'http://127.0.0.1:15672'}"
            "  (guest/guest)\n"
            f"  mail sent         {env['SMTP_HOST']}:{env['SMTP_PORT']}"
            f"{f' (files in {VAR}/mail/new/)' if (VAR / 'mail').exists() else ''}\n"
            f"  MongoDB           {', '.join(f'{n} {u}' for n, u in mongo_uris.items()) or env['MONGO_URI']}\n"
            f"A process that stops is restarted. Ctrl-C stops everything (process group "
            f"{group.pgid}).\n", flush=True)
        while True:
            now = time.monotonic()
            for child in backing + services:
                child.check(now)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all([p for s in services for p in s.running()])
        stop_all([p for s in backing for p in s.running()])  # the stores last
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
