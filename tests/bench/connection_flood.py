#!/usr/bin/env python3
"""Connection flood: an ordinary client's latency while one client holds thousands of idle
connections to the public gateway, and what the reverse proxy costs per request.

Self-contained: its own RabbitMQ vhost and public gateway process (nameko run, through the
benches' shared harness, with the configuration's defaults), and with
--proxy Debian's nginx in front of it (deploy/nginx). Prints /health latency (p50, p95)
before and during the flood, how many flood connections the gateway held, its open file
descriptors, and how long until the idle timeout had closed them all.

    .venv/bin/python tests/bench/connection_flood.py --connections 5000 --proxy
"""
import http.client
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from booking_burst import CpuSteal, pct, print_machine, system_parser  # noqa: E402
from deploy import proxy  # noqa: E402
from tests.bench.harness import OwnSystem, free_port  # noqa: E402


def wait_listening(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def latencies(port, count):
    """Milliseconds of `count` GET /health, each on a new connection as a browser's first."""
    found = []
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        found.append((time.perf_counter() - started) * 1000)
    return found


def show(label, values):
    print(f"{label:34s} p50 {pct(values, 50):7.2f} ms   p95 {pct(values, 95):7.2f} ms")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    parser = system_parser(__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-connections", type=int, default=2000)
    parser.add_argument("--idle-timeout", type=float, default=5)
    parser.add_argument("--proxy", action="store_true", help="also measure through nginx")
    args = parser.parse_args()

    # the gateway alone: the flood and /health never reach a service
    system = OwnSystem({"public_gateway": 1}, name="bench_flood",
                       WEB_MAX_CONNECTIONS=args.max_connections, WEB_IDLE_TIMEOUT=args.idle_timeout)
    gateway, port, work = system.procs[0], system.port, system.work
    nginx = None
    try:
        steal = CpuSteal()
        show("direct, quiet", latencies(port, args.requests))

        if args.proxy and (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
            proxy_port = free_port()
            (work / "nginx.conf").write_text(proxy.render({
                "PROXY_LISTEN": f"127.0.0.1:{proxy_port}", "PUBLIC_GATEWAY": f"127.0.0.1:{port}",
                "PROXY_RUN_DIR": str(work), "PROXY_BURST": "100000"}))
            user = "user root; " if os.geteuid() == 0 else ""
            nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(work / "nginx.conf"),
                                      "-p", str(work), "-e", "stderr",
                                      "-g", f"{user}daemon off; pid {work / 'nginx.pid'};"],
                                     stdout=subprocess.DEVNULL, stderr=open(work / "nginx.log", "wb"))
            wait_listening(proxy_port)
            show("through nginx, quiet", latencies(proxy_port, args.requests))

        started = time.perf_counter()
        flood, refused = [], 0
        for i in range(args.connections):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                flood.append(sock)
            except OSError:
                refused += 1
        print(f"flood: {len(flood)} connections opened ({refused} failed) in "
              f"{time.perf_counter() - started:.2f} s; gateway holds {open_fds(gateway.pid)} descriptors")
        show("direct, during the flood", latencies(port, args.requests))
        print(f"gateway descriptors after        {open_fds(gateway.pid)}")

        started = time.perf_counter()
        poller, alive = select.poll(), {s.fileno(): s for s in flood}
        for fd in alive:
            poller.register(fd, select.POLLIN)
        while alive and time.perf_counter() - started < args.idle_timeout * 4 + 30:
            for fd, _ in poller.poll(200):
                try:
                    data = alive[fd].recv(4096)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    alive.pop(fd).close()
        print(f"flood closed by the gateway:      {len(flood) - len(alive)} of {len(flood)} "
              f"within {time.perf_counter() - started:.2f} s (idle timeout {args.idle_timeout} s)")
        print(f"gateway still running:            {gateway.poll() is None}")
        print_machine(steal.percent(), system.pids())
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        system.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
