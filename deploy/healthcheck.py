"""Container health: `python -m deploy.healthcheck <service>` exits 0 when it answers.

A service is healthy when it takes an RPC off its queue and answers. The check asks for a
method no service has (`health_check`): nameko's own "method not found" reply proves the
process is connected and consuming without adding an endpoint to every service. (With several
instances of one service, whichever is free answers: the check says the service answers.)
A gateway is healthy when its GET /health answers 200.

Configuration from the environment, as the services: AMQP_URI, WEB_SERVER_ADDRESS.
"""
import os
import sys

import requests

GATEWAYS = {"public_gateway", "admin_gateway"}
TIMEOUT = 5


def check_service(name, amqp_uri, timeout=TIMEOUT):
    from nameko.exceptions import MethodNotFound
    from nameko.standalone.rpc import ClusterRpcProxy

    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout) as rpc:
            getattr(rpc, name).health_check()
    except MethodNotFound:
        return True, f"{name} answers"
    except Exception as exc:  # unknown service, timeout, broker down: not healthy
        return False, f"{name} does not answer: {type(exc).__name__}: {exc}"
    return True, f"{name} answers"


def check_gateway(address, timeout=TIMEOUT):
    port = address.rsplit(":", 1)[1]
    try:
        response = requests.get(f"http://127.0.0.1:{port}/health", timeout=timeout)
    except requests.RequestException as exc:
        return False, f"gateway on port {port} does not answer: {exc}"
    return response.status_code == 200, f"gateway on port {port}: HTTP {response.status_code}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m deploy.healthcheck <service>", file=sys.stderr)
        return 2
    name = argv[0]
    if name in GATEWAYS:
        healthy, why = check_gateway(os.environ.get("WEB_SERVER_ADDRESS") or "0.0.0.0:8000")
    else:
        healthy, why = check_service(
            name, os.environ.get("AMQP_URI") or "pyamqp://guest:guest@127.0.0.1:5672/")
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
