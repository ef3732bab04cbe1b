"""Apply deploy/rabbitmq/definitions.json to one vhost through the management HTTP API.

`rabbitmqctl import_definitions` (deploy/ensure_rabbitmq.sh) and docker-compose load the file
for the vhost "/"; tests run in a vhost of their own (nameko's rabbit_config) and apply the
same exchanges, queues, bindings and policies there with this. Idempotent: PUT only.

    python -m deploy.rabbitmq_definitions [--url http://127.0.0.1:15672] [--vhost /]
"""
import argparse
import json
import os
from pathlib import Path
from urllib.parse import quote

import requests

DEFINITIONS = Path(__file__).resolve().parent / "rabbitmq" / "definitions.json"


def load(path=DEFINITIONS):
    return json.loads(Path(path).read_text())


def apply(url, vhost, auth=("guest", "guest"), definitions=None, timeout=5):
    """PUT every object of the definitions into `vhost`."""
    definitions = definitions or load()
    base, v = url.rstrip("/") + "/api", quote(vhost, safe="")

    def put(path, body):
        answer = requests.put(f"{base}/{path}", json=body, auth=auth, timeout=timeout)
        answer.raise_for_status()

    for ex in definitions.get("exchanges", []):
        put(f"exchanges/{v}/{quote(ex['name'], safe='')}",
            {k: ex[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")})
    for q in definitions.get("queues", []):
        put(f"queues/{v}/{quote(q['name'], safe='')}",
            {k: q[k] for k in ("durable", "auto_delete", "arguments")})
    for b in definitions.get("bindings", []):
        kind = "q" if b["destination_type"] == "queue" else "e"
        answer = requests.post(
            f"{base}/bindings/{v}/e/{quote(b['source'], safe='')}/{kind}/"
            f"{quote(b['destination'], safe='')}",
            json={"routing_key": b["routing_key"], "arguments": b.get("arguments", {})},
            auth=auth, timeout=timeout)
        answer.raise_for_status()
    for p in definitions.get("policies", []):
        put(f"policies/{v}/{quote(p['name'], safe='')}",
            {k: p[k] for k in ("pattern", "definition", "priority", "apply-to")})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=(os.environ.get("RABBITMQ_MANAGEMENT_URL") or "http://127.0.0.1:15672").split(",")[0])
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--user", default=os.environ.get("RABBITMQ_MANAGEMENT_USER") or "guest")
    parser.add_argument("--password", default=os.environ.get("RABBITMQ_MANAGEMENT_PASSWORD") or "guest")
    args = parser.parse_args()
    apply(args.url, args.vhost, (args.user, args.password))


if __name__ == "__main__":
    main()
