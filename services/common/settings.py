"""Reading the nameko configuration: one place for defaults and types."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def as_bool(value):
    """YAML gives booleans, a dict from a test or an operator may give "false": both mean it."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError(f"not a yes/no value: {value!r}")
    return bool(value)


def setting(config, key, default, cast=None):
    """config[key] converted with `cast` (default: the default's type); default when unset."""
    value = config.get(key)
    if value is None or value == "":
        return default
    cast = cast or (as_bool if isinstance(default, bool) else type(default))
    return cast(value)
