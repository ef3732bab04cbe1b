"""services/booking/unconfirmed.py: whom a pending booking is counted against."""
from services.booking import unconfirmed
from services.booking.unconfirmed import Bounds, claims, client_key

BOUNDS = Bounds(per_client=20, per_domain=10, large_providers=frozenset({"gmail.com"}))


def test_ipv4_counts_as_it_is_ipv6_by_its_64():
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"  # an IPv4 client seen over IPv6
    assert client_key("") is None and client_key("not an address") is None


def test_claims_per_address_and_per_small_domain_only():
    assert claims(BOUNDS, "a@asso.example", {"ip": "203.0.113.7"}) == [
        ("client:203.0.113.7", 20, "client"), ("domain:asso.example", 10, "domain")]
    # a large public provider: the address only
    assert claims(BOUNDS, "a@gmail.com", {"ip": "203.0.113.7"}) == [
        ("client:203.0.113.7", 20, "client")]
    # no address known (a trusted caller): the domain only
    assert claims(BOUNDS, "a@asso.example", {}) == [("domain:asso.example", 10, "domain")]
    # 0 turns a bound off
    assert claims(Bounds(0, 0, frozenset()), "a@asso.example", {"ip": "203.0.113.7"}) == []


def test_the_configured_list_of_large_providers():
    bounds = Bounds.from_config({"UNCONFIRMED_LARGE_DOMAINS": " Example.net , gmail.com,"})
    assert bounds.large_providers == {"example.net", "gmail.com"}
    defaults = Bounds.from_config({})
    assert {"gmail.com", "orange.fr", "laposte.net"} <= defaults.large_providers
    assert (defaults.per_client, defaults.per_domain) == (20, 10)


def test_each_refusal_names_its_field_in_both_languages():
    message, fields = unconfirmed.refusal_fields("domain")
    assert "email" in fields and "domaine" in message and "domain" in message
    message, fields = unconfirmed.refusal_fields("client")
    assert "_client" in fields and "connexion" in message and "connection" in message
