"""Comparison forms for e-mails and names (DESIGN.md section 3). Stored values stay as given."""
import re
import unicodedata

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


_SEPARATORS = re.compile(r"[\s\-‐‑‒–—'’‘`´ʼ.]+")


def normalise_name(name):
    """Case, accents, hyphens, apostrophes and spaces folded away.

    "N'Diaye", "NDIAYE" and "Ndiaye" compare equal, as do "Jean-Pierre" and "Jean Pierre":
    the same person writes their name differently on different forms.
    """
    decomposed = unicodedata.normalize("NFKD", name or "")
    without_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = without_marks.casefold().replace("ß", "ss").replace("ø", "o").replace("æ", "ae")
    folded = folded.replace("œ", "oe").replace("ł", "l").replace("đ", "d").replace("ı", "i")
    return _SEPARATORS.sub("", folded)
