"""M3 one e-mail: the one form a mailbox is known by, for every service that keys on it
(booking's one-booking-per-mailbox and unconfirmed claims, fraud's M3 screening, requests'
one-request-per-mailbox, notify's daily limit), under one setting, EMAIL_PROVIDER_RULES
(DESIGN.md section 3). Stored values stay as given."""
from services.common.settings import setting

# Providers that deliver "a.b+tag@gmail.com" to "ab@gmail.com": one mailbox, many spellings.
PLUS_TAG_PROVIDERS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "outlook.fr", "hotmail.com", "hotmail.fr",
    "live.com", "live.fr", "icloud.com", "me.com", "protonmail.com", "proton.me",
    "fastmail.com", "yahoo.com", "yahoo.fr",
})
DOTLESS_PROVIDERS = frozenset({"gmail.com", "googlemail.com"})
DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}


def normalise_email(email, provider_rules=True):
    """Lower-cased and trimmed; with provider_rules, plus-tags and Gmail dots removed."""
    address = (email or "").strip().lower()
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address
    if provider_rules:
        if domain in PLUS_TAG_PROVIDERS:
            local = local.split("+", 1)[0]
        if domain in DOTLESS_PROVIDERS:
            local = local.replace(".", "")
        domain = DOMAIN_ALIASES.get(domain, domain)
    return f"{local}@{domain}"


def provider_rules(config):
    """The one setting every mailbox key obeys: fold provider plus-tags and Gmail dots or not.
    Read by each service that keys on a mailbox, so that their keys agree."""
    return setting(config, "EMAIL_PROVIDER_RULES")


def mailbox_key(email, config):
    """The key of `email`'s mailbox under this process's configuration."""
    return normalise_email(email, provider_rules(config))
