"""Every configuration key the code reads is declared in deploy/config.yaml with its default:
a key read but not declared cannot be set under `nameko run --config` at all."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for folder in ("services", "gateway") for p in (ROOT / folder).rglob("*.py")]
READS = [
    re.compile(r"""setting\(\s*[\w.\[\]{}()]+\s*,\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""config(?:\.get\(|\[)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""config_timer\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
]


def keys_read():
    found = {}
    for path in CODE:
        text = path.read_text()
        for pattern in READS:
            for key in pattern.findall(text):
                found.setdefault(key, set()).add(str(path.relative_to(ROOT)))
    return found


def keys_declared():
    text = (ROOT / "deploy" / "config.yaml").read_text()
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", text, re.M))


def test_the_scan_finds_what_the_code_reads():
    # the scan itself must see reads of each shape, or the next test proves nothing
    read = keys_read()
    assert {"RPC_TIMEOUT", "NOTIFY_LEASE_SECONDS", "OUTBOX_RELAY_SECONDS", "MONGO_URI",
            "AMQP_POOL_LIMIT"} <= set(read)


def test_every_key_read_is_declared_with_a_default():
    declared = keys_declared()
    missing = {key: sorted(paths) for key, paths in keys_read().items() if key not in declared}
    assert missing == {}, f"read by the code but not in deploy/config.yaml: {missing}"


def test_every_declared_key_has_an_environment_default():
    text = (ROOT / "deploy" / "config.yaml").read_text()
    for key in keys_declared() - {"LOGGING"}:
        assert re.search(rf"^{key}: \$\{{[A-Z_]+:", text, re.M), f"{key} takes no value from the environment"
