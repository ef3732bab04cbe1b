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
    # a key handed to a helper that reads it: requests' _setting, an RPC bound
    re.compile(r"""(?:_setting\(|timeout_key=)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
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


def yaml_defaults():
    """deploy/config.yaml as `nameko run --config` loads it with none of its variables set."""
    import os
    from unittest import mock

    import yaml
    from nameko.cli.main import setup_yaml_parser

    text = (ROOT / "deploy" / "config.yaml").read_text()
    setup_yaml_parser()
    unset = {key: "" for key in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):", text)}
    with mock.patch.dict(os.environ, unset):
        for key in unset:
            del os.environ[key]
        loaded = yaml.safe_load(text)
    loaded.pop("LOGGING")
    return loaded


def test_config_yaml_defaults_are_the_codes_table():
    # one default per key: the code's table (services/common/settings.py) and config.yaml's
    # `${KEY:default}` cannot disagree, nor either declare a key the other lacks
    from services.common.settings import DEFAULTS, setting

    loaded = yaml_defaults()
    assert set(loaded) == set(DEFAULTS)
    for key, value in loaded.items():
        assert value == DEFAULTS[key], key
        # and as the code reads it: a float stays a float, "false" stays False
        assert type(setting({key: value}, key)) is type(setting({}, key)), key


def calls(name):
    import ast

    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and name in (getattr(node.func, "id", None),
                                                       getattr(node.func, "attr", None)):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def test_no_read_passes_a_default_of_its_own():
    import ast

    from services.common.settings import DEFAULTS

    own = [where for where, node in calls("setting") if len(node.args) != 2 or node.keywords]
    own += [where for where, node in calls("config_timer") if len(node.args) != 1]
    own += [where for name in ("BoundedRpcProxy", "InboxSettings") for where, node in calls(name)
            if any("default" in (k.arg or "") for k in node.keywords)]
    assert own == [], f"a default outside services/common/settings.py: {own}"
    keys = {node.args[1 if name == "setting" else 0].value
            for name in ("setting", "config_timer") for _, node in calls(name)
            if isinstance(node.args[1 if name == "setting" else 0], ast.Constant)}
    assert keys and keys <= set(DEFAULTS), keys - set(DEFAULTS)
