"""What unconfirmed (pending) bookings may hold at once: plain functions the service and the
tests share.

A pending booking holds its place until confirmed from its mailbox or expired
(BOOKING_CONFIRM_MINUTES): no proof of anything yet. So before a place is held, a new pending
booking takes a claim under each key below; past a key's bound it is refused (429) and nothing
is held. A claim ends when its booking leaves `pending` (confirmed, cancelled, expired).

- Per client address: generous, because a mobile carrier's NAT or an association's office
  puts many honest people behind one address. IPv6 addresses count by their /64: one
  subscriber gets a whole /64 and could otherwise take a new address for each booking.
- Per mailbox domain: a domain of one's own costs little to make and nothing to read, so a
  trafficker with many addresses on few domains is bounded here. The large public providers,
  which millions of honest people share (gmail.com, orange.fr...), are left out of this bound:
  there it would refuse strangers for each other; the per-address bound still applies.
"""
import ipaddress

from services.common.settings import setting

TOO_MANY_FROM_CLIENT = (
    "Trop de rendez-vous pris depuis cette connexion attendent encore leur confirmation. "
    "Confirmez-les avec le lien reçu par courriel, ou réessayez plus tard. / Too many bookings "
    "made from this connection are still waiting for their confirmation. Confirm them with the "
    "link sent by e-mail, or try again later.")
TOO_MANY_ON_DOMAIN = (
    "Trop de rendez-vous pour des adresses de ce domaine attendent encore leur confirmation. "
    "Réessayez plus tard, ou utilisez une autre adresse électronique. / Too many bookings for "
    "addresses at this domain are still waiting for their confirmation. Try again later, or "
    "use another e-mail address.")


class Bounds:
    def __init__(self, per_client, per_domain, large_providers):
        self.per_client, self.per_domain = per_client, per_domain
        self.large_providers = large_providers

    @classmethod
    def from_config(cls, config):
        large = setting(config, "UNCONFIRMED_LARGE_DOMAINS")
        return cls(setting(config, "UNCONFIRMED_PER_CLIENT"),
                   setting(config, "UNCONFIRMED_PER_DOMAIN"),
                   frozenset(d.strip().lower() for d in large.split(",") if d.strip()))


def client_key(ip):
    """The address a client is counted by: IPv4 as it is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6:
        if address.ipv4_mapped is not None:  # an IPv4 client seen through an IPv6 socket
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def email_domain(email_key):
    return email_key.rsplit("@", 1)[1].lower() if "@" in email_key else None


def claims(bounds, email_key, client):
    """[(key, bound, why)] a new pending booking must take a claim under; a bound of 0 (or
    less) turns that kind off."""
    found = []
    address = client_key((client or {}).get("ip") or "")
    if bounds.per_client > 0 and address:
        found.append((f"client:{address}", bounds.per_client, "client"))
    domain = email_domain(email_key)
    if bounds.per_domain > 0 and domain and domain not in bounds.large_providers:
        found.append((f"domain:{domain}", bounds.per_domain, "domain"))
    return found


def refusal_fields(why):
    """The message and fields of the 429 for the bound `why` ("client" or "domain")."""
    if why == "domain":
        return TOO_MANY_ON_DOMAIN, {"email": ["Too many unconfirmed bookings at this domain."]}
    return TOO_MANY_FROM_CLIENT, {"_client": ["Too many unconfirmed bookings from this address."]}
