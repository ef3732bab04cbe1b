"""Who the client is: its address behind a trusted reverse proxy, and its user agent."""
import ipaddress

from nameko.extensions import DependencyProvider

from services.common.settings import setting

MAX_USER_AGENT = 512


def parse_trusted(text):
    """'127.0.0.1, ::1, 10.0.0.0/8' -> networks; garbage entries are ignored."""
    networks = []
    for part in str(text or "").split(","):
        part = part.strip()
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                continue
    return networks


def _ip(text):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(ip, networks):
    return ip is not None and any(ip in net for net in networks)


def client_address(peer, forwarded_for, trusted):
    """The client's address: the peer's, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right (the nearest hop) and the
    first address not itself a trusted proxy is the client; an address a client wrote at the
    left of the header to pass for someone else is never reached. Malformed headers are ignored.
    """
    peer_ip = _ip(peer or "")
    if not forwarded_for or not _trusted(peer_ip, trusted):
        return str(peer_ip) if peer_ip else (peer or "")
    hops = [_ip(h) for h in forwarded_for.split(",")]
    if any(h is None for h in hops):
        return str(peer_ip)
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return str(hop)
    return str(hops[0])


def client_of(request, trusted):
    return {
        "ip": client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted),
        "user_agent": (request.headers.get("User-Agent") or "")[:MAX_USER_AGENT],
    }


class TrustedProxies(DependencyProvider):
    """TRUSTED_PROXIES, parsed once per process rather than on every request."""

    def setup(self):
        self.networks = parse_trusted(setting(self.container.config, "TRUSTED_PROXIES"))

    def get_dependency(self, worker_ctx):
        return self.networks
