"""The reverse proxy's configuration (deploy/nginx/nginx.conf.template) with its values filled in.

docker-compose.yml has the nginx image fill in the same placeholders from its environment;
this does it everywhere else (the tests, a local nginx):

    PUBLIC_GATEWAY=127.0.0.1:8000 PROXY_LISTEN=8080 python -m deploy.proxy > var/nginx.conf

PUBLIC_GATEWAY may list several gateways, comma-separated (`make run` with RUN_INSTANCES=2):
the template's upstream line is repeated for each. In compose one name does it (Docker's DNS
answers every replica's address, and nginx balances over all of them).
"""
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).parent / "nginx" / "nginx.conf.template"

# the same defaults as docker-compose.yml's proxy service (a test checks they agree)
DEFAULTS = {
    "PROXY_LISTEN": "8080",
    "PUBLIC_GATEWAY": "public_gateway:8000",
    "PROXY_RUN_DIR": "/var/cache/nginx",
    "PROXY_RATE": "50r/s",
    "PROXY_BURST": "500",
    "PROXY_CONNECTIONS_PER_ADDRESS": "300",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def render(values=None):
    """The configuration text; values override DEFAULTS. Unknown names are an error."""
    values = dict(DEFAULTS, **(values or {}))
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"not a proxy setting: {sorted(unknown)}")
    gateways = [g.strip() for g in str(values["PUBLIC_GATEWAY"]).split(",") if g.strip()]
    lines = []
    for line in TEMPLATE.read_text().splitlines(keepends=True):
        if "${PUBLIC_GATEWAY}" in line:
            lines.extend(line.replace("${PUBLIC_GATEWAY}", gateway) for gateway in gateways)
        else:
            lines.append(line)
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), "".join(lines))


def main():
    sys.stdout.write(render({key: os.environ[key] for key in DEFAULTS if os.environ.get(key)}))


if __name__ == "__main__":
    main()
